#!/usr/bin/env python3
"""Two replicas sharing one budget through Redis (limits.backend = "redis"), measured in one run.

1. Shaping across replicas: Redis, ../shared/bench/fake_notion.py (strict GCRA, 3/s, burst 3
   per token, like gatebench's `shape`) and two gateways sharing budgets; 60 GETs with one
   token at once, 30 to each replica. Prints the utilization of the shared budget (ideal
   makespan (60 - burst) / rate over the measured one) and Notion's 429s.
2. Cost: examples/loadgen against the static upstream through a gateway with the local
   backend and through one with the Redis backend (budget raised so nothing waits), one
   after the other, three rounds, with 1 connection (the added latency of one admitted
   request: a Redis round trip) and with 32 (one token's releases are serial per replica);
   prints req/s and p50/p99 and their ratios (redis / local).

    cargo build --release --bins --examples
    python3 bench/replicas.py          # needs redis-server, python3-aiohttp; about 60 s
"""
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target/release"
FAKE = ROOT.parent / "shared/bench/fake_notion.py"
TOKEN = "ntn_replicas_bench_token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv, env=None):
    return subprocess.Popen(argv, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_listening(port, proc, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def gateway(port, upstream, env):
    return start([str(RELEASE / "notion-gateway"), "--listen", f"127.0.0.1:{port}",
                  "--upstream", upstream], {"NOTION_GATEWAY_LOG__LEVEL": "warn", **env})


async def get(port, path):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                 "Notion-Version: 2022-06-28\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return int(data.split(b" ", 2)[1]), time.monotonic()


async def shape(ports):
    t0 = time.monotonic()
    calls = [get(ports[i % 2], f"/v1/pages/{i:032x}") for i in range(60)]
    res = await asyncio.gather(*calls)
    return res, t0


def load(port, seconds, connections):
    out = subprocess.run([str(RELEASE / "examples/loadgen"), f"http://127.0.0.1:{port}/v1/users/me",
                          str(connections), str(seconds)], check=True, capture_output=True, text=True)
    r = json.loads(out.stdout)
    if r["errors"]:
        raise SystemExit(f"errors: {r}")
    return r


def main():
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    for b in ("notion-gateway", "examples/loadgen", "examples/static_upstream"):
        if not (RELEASE / b).exists():
            raise SystemExit(f"{RELEASE / b} missing: cargo build --release --bins --examples")
    procs = []
    tmp = tempfile.mkdtemp(prefix="ngw-replicas-")
    try:
        rport = free_port()
        procs.append(start(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no", "--dir", tmp]))
        wait_listening(rport, procs[-1])
        shared = {"NOTION_GATEWAY_LIMITS__BACKEND": "redis",
                  "NOTION_GATEWAY_LIMITS__REDIS_URL": f"redis://127.0.0.1:{rport}"}

        # 1. shaping across two replicas
        fport = free_port()
        procs.append(start([sys.executable, str(FAKE), "--port", str(fport), "--rate", "3",
                            "--burst", "3"]))
        wait_listening(fport, procs[-1])
        ports = []
        for _ in range(2):
            p = free_port()
            procs.append(gateway(p, f"http://127.0.0.1:{fport}", shared))
            wait_listening(p, procs[-1])
            ports.append(p)
        res, t0 = asyncio.run(shape(ports))
        makespan = max(t for _, t in res) - t0
        ok = sum(1 for s, _ in res if s == 200)
        stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{fport}/__stats"))
        ideal = (60 - 3) / 3.0
        print(f"shape over 2 replicas: {ok}/60 answered 200, Notion's 429s "
              f"{stats['totals'].get('sent_429', 0)}, makespan {makespan:.2f} s, ideal {ideal:.2f} s,"
              f" utilization {ideal / makespan:.3f}", flush=True)

        # 2. cost of the Redis round trip per released request
        uport = free_port()
        procs.append(start([str(RELEASE / "examples/static_upstream"), f"127.0.0.1:{uport}"]))
        wait_listening(uport, procs[-1])
        unpaced = {"NOTION_GATEWAY_LIMITS__RATE": "1000000",
                   "NOTION_GATEWAY_LIMITS__BURST": "1000000"}
        targets = {}
        for name, env in (("local", unpaced), ("redis", {**unpaced, **shared})):
            p = free_port()
            procs.append(gateway(p, f"http://127.0.0.1:{uport}", env))
            wait_listening(p, procs[-1])
            targets[name] = p
            load(p, 1, 32)
        med = {}
        for conns in (1, 32):
            runs = {n: [] for n in targets}
            for rnd in range(3):
                for name, p in targets.items():
                    r = load(p, 5, conns)
                    runs[name].append(r)
                    print(f"{conns:2d} connection(s), round {rnd + 1} {name:6s} {r['rps']:8.0f} req/s"
                          f"  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms", flush=True)
            m = {n: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
                 for n, rs in runs.items()}
            med[conns] = m
            lo, re_ = m["local"], m["redis"]
            print(f"redis / local, {conns} connection(s), medians of 3 rounds: req/s "
                  f"{re_['rps'] / lo['rps']:.2f}x, p50 {re_['p50_ms'] / lo['p50_ms']:.2f}x "
                  f"({re_['p50_ms'] - lo['p50_ms']:+.3f} ms), p99 {re_['p99_ms'] / lo['p99_ms']:.2f}x",
                  flush=True)
        print(json.dumps({"shape": {"ok": ok, "upstream_429": stats["totals"].get("sent_429", 0),
                                    "makespan_s": round(makespan, 3),
                                    "utilization": round(ideal / makespan, 3)},
                          "load_medians": med}))
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
