#!/usr/bin/env python3
"""Two replicas sharing one budget through Redis (limits.backend = "redis"), measured in one run.

1. Shaping across replicas: Redis, bench/fake_notion.py (strict GCRA, 3/s, burst 3 per
   token; the gateways' limits.rate/burst set to the same, on top of the standard plan's window)
   and two gateways sharing budgets; 60 GETs with one token at once, 30 to each
   replica. Prints the utilization of the shared budget (ideal makespan (60 - burst) / rate
   over the measured one) and Notion's 429s.
2. Cost: examples/loadgen against the static upstream through a gateway with the local
   backend and through one with the Redis backend (window and rate raised so nothing waits), one
   after the other, three rounds, with 1 connection (the added latency of one admitted
   request: a Redis call) and with 32 (a lone token's call takes slots for the requests that
   follow too); prints req/s and p50/p99 and their ratios (redis / local), and the script
   calls Redis ran for the Redis gateway's requests (INFO commandstats).

    cargo build --release --bins --examples
    python3 bench/replicas.py          # needs redis-server; about 60 s
"""
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import RELEASE, ROOT, free_port, load, require_built, start, stop, wait_listening
FAKE = ROOT / "bench/fake_notion.py"
TOKEN = "ntn_replicas_bench_token"


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], check=True,
                          capture_output=True, text=True).stdout


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


def main():
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    require_built("notion-gateway", "examples/loadgen", "examples/static_upstream")
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
        # The fake's limit as the gateway's smoothing (3/s, burst 3) on top of the standard
        # plan's window: without it the window lets 30 go at once (13 of Notion's 429s).
        paced = {**shared, "NOTION_GATEWAY_LIMITS__RATE": "3", "NOTION_GATEWAY_LIMITS__BURST": "3"}
        ports = []
        for _ in range(2):
            p = free_port()
            procs.append(gateway(p, f"http://127.0.0.1:{fport}", paced))
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
        unpaced = {"NOTION_GATEWAY_LIMITS__PER_MINUTE": "100000000",
                   "NOTION_GATEWAY_LIMITS__RATE": "1000000",
                   "NOTION_GATEWAY_LIMITS__BURST": "1000000"}
        targets = {}
        for name, env in (("local", unpaced), ("redis", {**unpaced, **shared})):
            p = free_port()
            procs.append(gateway(p, f"http://127.0.0.1:{uport}", env))
            wait_listening(p, procs[-1])
            targets[name] = p
            load(p, 32, 1)
        med = {}
        calls = {}
        for conns in (1, 32):
            redis_cli(rport, "CONFIG", "RESETSTAT")
            runs = {n: [] for n in targets}
            for rnd in range(3):
                for name, p in targets.items():
                    r = load(p, conns, 5)
                    runs[name].append(r)
                    print(f"{conns:2d} connection(s), round {rnd + 1} {name:6s} {r['rps']:8.0f} req/s"
                          f"  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms", flush=True)
            m = {n: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
                 for n, rs in runs.items()}
            # Only the Redis gateway calls Redis: its script calls against its requests.
            cmdstats = redis_cli(rport, "INFO", "commandstats")
            n_calls = next((int(l.split("calls=")[1].split(",")[0]) for l in cmdstats.splitlines()
                            if l.startswith("cmdstat_evalsha:")), 0)
            usec = next((float(l.split("usec_per_call=")[1].split(",")[0])
                         for l in cmdstats.splitlines() if l.startswith("cmdstat_evalsha:")), 0.0)
            reqs = sum(r["requests"] for r in runs["redis"])
            calls[conns] = {"script_calls": n_calls, "requests": reqs,
                            "requests_per_call": round(reqs / max(n_calls, 1), 1),
                            "usec_per_call": usec}
            print(f"{conns:2d} connection(s), redis: {n_calls} script calls for {reqs} requests "
                  f"({reqs / max(n_calls, 1):.1f} per call), {usec:.1f} us per call in Redis",
                  flush=True)
            med[conns] = m
            lo, re_ = m["local"], m["redis"]
            print(f"redis / local, {conns} connection(s), medians of 3 rounds: req/s "
                  f"{re_['rps'] / lo['rps']:.2f}x, p50 {re_['p50_ms'] / lo['p50_ms']:.2f}x "
                  f"({re_['p50_ms'] - lo['p50_ms']:+.3f} ms), p99 {re_['p99_ms'] / lo['p99_ms']:.2f}x",
                  flush=True)
        print(json.dumps({"shape": {"ok": ok, "upstream_429": stats["totals"].get("sent_429", 0),
                                    "makespan_s": round(makespan, 3),
                                    "utilization": round(ideal / makespan, 3)},
                          "load_medians": med, "redis_calls": calls}))
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
