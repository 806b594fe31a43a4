#!/usr/bin/env python3
"""Memory of the gateway holding many queued requests (issue 3: 10 000 across 1 000 tokens).

Starts a trivial upstream and the release binary with a budget so small that nothing but each
token's first request leaves the queue, spends every token's burst, then opens one client
connection per queued request and sends one GET on each. Prints the gateway's resident memory
before and with everything queued (VmRSS from /proc), and the difference per queued request.
Each queued request holds a client connection (socket buffers in the kernel are not counted
in RSS; hyper's per-connection buffers are), a task and a queue entry.

    cargo build --release && python3 bench/queue_memory.py [--tokens 1000] [--per-token 10]

With --floor (needs `cargo build --release --examples`), the same run then holds the same
number of connections, each with the same request in progress, in examples/hold_server.rs:
hyper's HTTP/1 server built as the gateway builds it with a service that never answers
(`hyper`), the same with a touched 4 KiB heap block per request (`hyper-boxed`: what a request
future of that size adds), and tokio tasks that only read the request (`tcp`). The difference
between the gateway's figure and `hyper`'s is what the gateway itself holds per queued request.
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


KERNEL_SLABS = ("TCP", "sock_inode_cache", "dentry", "filp", "eventpoll_epi")


def kernel_per_socket():
    """What the kernel allocates for one more accepted TCP socket outside the process (not in
    its RSS): the slab objects' sizes from /proc/slabinfo (needs root), and the TCP socket
    buffers' pages from /proc/net/sockstat."""
    sizes = {}
    try:
        for line in Path("/proc/slabinfo").read_text().splitlines():
            f = line.split()
            if f and f[0] in KERNEL_SLABS:
                sizes[f[0]] = int(f[3])
    except OSError:
        pass
    return sizes


def tcp_mem_pages():
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            f = line.split()
            return int(f[f.index("mem") + 1])
    return 0


def request(token):
    return (f"GET /v1/users/me HTTP/1.1\r\nhost: x\r\n"
            f"authorization: Bearer ntn_memory_{token:06d}\r\n\r\n").encode()


def status(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status") as r:
        return json.load(r)


async def main():
    # Connections torn down at the end are not worth a traceback.
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: None)
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=1000)
    p.add_argument("--per-token", type=int, default=10)
    p.add_argument("--gateway", default=str(ROOT / "target/release/notion-gateway"))
    p.add_argument("--massif", default="",
                   help="run the gateway under valgrind's massif and write a detailed heap "
                        "snapshot with everything queued to this file (then see "
                        "bench/heap_sites.py); use fewer requests, e.g. --tokens 100")
    p.add_argument("--floor", action="store_true",
                   help="also measure examples/hold_server holding the same connections")
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
    wrap = (["valgrind", "--tool=massif", "--vgdb=yes", "--depth=40",
             f"--massif-out-file={a.massif}.final"] if a.massif else [])
    gw = subprocess.Popen(wrap + [a.gateway,
                           "--listen", f"127.0.0.1:{gw_port}",
                           "--upstream", f"http://127.0.0.1:{up_port}"], env=env)
    try:
        for _ in range(1200):
            try:
                status(gw_port)
                break
            except OSError:
                time.sleep(0.05)

        # Spend each token's burst, so the following requests all wait.
        for t in range(a.tokens):
            r, w = await asyncio.open_connection("127.0.0.1", gw_port)
            w.write(request(t))
            await r.readuntil(b"\r\n\r\n")
            w.close()
        await asyncio.sleep(0.5)
        before = rss_kib(gw.pid)
        pages_before = tcp_mem_pages()

        conns = []
        for i in range(total):
            r, w = await asyncio.open_connection("127.0.0.1", gw_port)
            w.write(request(i % a.tokens))
            conns.append((r, w))
        queued, deadline = 0, time.monotonic() + 120
        while time.monotonic() < deadline:
            # /status lists only the most recently used unconfigured tokens; the queued
            # requests of all of them are counted in `queued_other_tokens` (no integration is
            # configured here).
            st = status(gw_port)
            queued = st.get("queued_other_tokens",
                            sum(t["queued"] for t in st["tokens"]))
            if queued >= total:
                break
            await asyncio.sleep(0.5)
        after = rss_kib(gw.pid)
        pages_after = tcp_mem_pages()
        per = (after - before) * 1024 / max(queued, 1)
        print(f"tokens {a.tokens}, queued {queued} (of {total} sent)")
        print(f"gateway RSS: {before} KiB with every token known, {after} KiB with all queued")
        print(f"bytes per queued request (RSS difference / queued): {per:.0f}")
        slabs = kernel_per_socket()
        if slabs:
            parts = " + ".join(f"{k} {v}" for k, v in slabs.items())
            print(f"kernel, beside RSS, per accepted socket: {parts} = {sum(slabs.values())} "
                  f"bytes of slab objects (/proc/slabinfo object sizes)")
        print(f"TCP socket buffers (/proc/net/sockstat, both ends of every connection): "
              f"{pages_before} -> {pages_after} pages, "
              f"{(pages_after - pages_before) * 4096 / max(queued, 1):.0f} bytes per connection")
        if a.massif:
            subprocess.run(["vgdb", f"--pid={gw.pid}", "detailed_snapshot", a.massif],
                           check=True, capture_output=True)
            print(f"massif snapshot with {queued} queued: {a.massif}")
        for _, w in conns:
            w.close()
    finally:
        gw.kill()
        gw.wait(timeout=10)
        server.close()
    if a.floor:
        for mode in ("hyper", "hyper-boxed", "tcp"):
            await floor(mode, a.tokens, total, request)


async def floor(mode, tokens, total, request):
    """Bytes per held request of examples/hold_server in `mode`, measured like the gateway."""
    port = free_port()
    srv = subprocess.Popen([str(ROOT / "target/release/examples/hold_server"),
                            f"127.0.0.1:{port}", mode], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        # As the gateway's warm-up: as many connections opened, sent a request and closed.
        for t in range(tokens):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(request(t))
            await w.drain()
            w.close()
        await asyncio.sleep(1.0)
        before = rss_kib(srv.pid)
        conns = []
        for i in range(total):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(request(i % tokens))
            conns.append((r, w))
        for w in conns:
            await w[1].drain()
        # Settled when RSS stops growing.
        last, after = -1, rss_kib(srv.pid)
        while after != last:
            await asyncio.sleep(1.0)
            last, after = after, rss_kib(srv.pid)
        per = (after - before) * 1024 / total
        print(f"floor {mode:11s}: RSS {before} KiB -> {after} KiB holding {total}: "
              f"{per:.0f} bytes per held request")
        for _, w in conns:
            w.close()
    finally:
        srv.kill()
        srv.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
