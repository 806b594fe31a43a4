#!/usr/bin/env python3
"""Memory of the gateway holding many queued requests (issue 3: 10 000 across 1 000 tokens).

Starts a trivial upstream and the release binary with a budget so small that nothing but each
token's first request leaves the queue, spends every token's burst, then opens one client
connection per queued request and sends one GET on each. Prints the gateway's resident memory
before and with everything queued (VmRSS from /proc), and the difference per queued request.
Each queued request holds a client connection (socket buffers in the kernel are not counted
in RSS; hyper's per-connection buffers are), a task and a queue entry.

    cargo build --release && python3 bench/queue_memory.py [--tokens 1000] [--per-token 10]
"""
import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def upstream(port):
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)


def status(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status") as r:
        return json.load(r)


async def main():
    # Connections torn down at the end are not worth a traceback.
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: None)
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=1000)
    p.add_argument("--per-token", type=int, default=10)
    a = p.parse_args()
    total = a.tokens * a.per_token
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = total + 1000
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))

    up_port, gw_port = free_port(), free_port()
    server = await upstream(up_port)
    env = dict(os.environ,
               NOTION_GATEWAY_LIMITS__RATE="0.01", NOTION_GATEWAY_LIMITS__BURST="1",
               NOTION_GATEWAY_LIMITS__MAX_QUEUE=str(a.per_token + 1),
               NOTION_GATEWAY_LIMITS__MAX_WAIT="50m",
               NOTION_GATEWAY_SERVER__REQUEST_TIMEOUT="1h",
               NOTION_GATEWAY_SERVER__MAX_CONNECTIONS=str(total + 100),
               NOTION_GATEWAY_LOG__LEVEL="warn")
    gw = subprocess.Popen([str(ROOT / "target/release/notion-gateway"),
                           "--listen", f"127.0.0.1:{gw_port}",
                           "--upstream", f"http://127.0.0.1:{up_port}"], env=env)
    try:
        for _ in range(100):
            try:
                status(gw_port)
                break
            except OSError:
                time.sleep(0.05)

        def request(token):
            return (f"GET /v1/users/me HTTP/1.1\r\nhost: x\r\n"
                    f"authorization: Bearer ntn_memory_{token:06d}\r\n\r\n").encode()

        # Spend each token's burst, so the following requests all wait.
        for t in range(a.tokens):
            r, w = await asyncio.open_connection("127.0.0.1", gw_port)
            w.write(request(t))
            await r.readuntil(b"\r\n\r\n")
            w.close()
        await asyncio.sleep(0.5)
        before = rss_kib(gw.pid)

        conns = []
        for i in range(total):
            r, w = await asyncio.open_connection("127.0.0.1", gw_port)
            w.write(request(i % a.tokens))
            conns.append((r, w))
        queued, deadline = 0, time.monotonic() + 120
        while time.monotonic() < deadline:
            queued = sum(t["queued"] for t in status(gw_port)["tokens"])
            if queued >= total:
                break
            await asyncio.sleep(0.5)
        after = rss_kib(gw.pid)
        per = (after - before) * 1024 / max(queued, 1)
        print(f"tokens {a.tokens}, queued {queued} (of {total} sent)")
        print(f"gateway RSS: {before} KiB with every token known, {after} KiB with all queued")
        print(f"bytes per queued request (RSS difference / queued): {per:.0f}")
        for _, w in conns:
            w.close()
    finally:
        gw.kill()
        gw.wait(timeout=10)
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
