#!/usr/bin/env python3
"""Load benchmark: requests/s and p50/p99 latency through the gateway, as ratios against going
direct to the same upstream, measured in one run.

Starts a static upstream (examples/static_upstream.rs, a fixed 1 KB JSON answer), then for
each round and each target runs the closed-loop load generator (examples/loadgen.rs) against:

  direct    the upstream itself (the baseline every ratio divides by)
  gateway   notion-gateway with its defaults, except a budget high enough that the shaper
            admits every request at once (this measures the proxy, not Notion's 3 req/s)
  gw-tN     the same with server.worker_threads = N, for each N of --threads (default 2 and
            0 = one per core; the default is 1, which is `gateway`)
  bare      the simplest hyper reverse proxy (examples/bare_proxy.rs): the stack's own floor
  nginx     nginx as a keep-alive reverse proxy with retries on 502/503/504, when installed

Targets alternate within each round, and the figures are medians over the rounds, because
this machine is shared and its speed drifts. Every run must answer 200 to every request.

    cargo build --release --bins --examples
    python3 bench/load.py [--rounds 3] [--seconds 5] [--connections 32] [--threads 2,0]

--baseline PATH adds `gw-base`: another notion-gateway binary (an earlier build kept aside)
with the same settings as `gateway`, for a before/after comparison in one run.
"""
import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import RELEASE, free_port, load, require_built, start, stop, wait_listening

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream notion {{ server 127.0.0.1:{upstream} max_fails=0; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://notion;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502 http_503 http_504;
            proxy_next_upstream_tries 4;
            proxy_connect_timeout 5s;
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--no-nginx", action="store_true", help="leave nginx out even if installed")
    ap.add_argument("--threads", default="2,0",
                    help="server.worker_threads values to compare with the default (\"\": none)")
    ap.add_argument("--baseline", default="",
                    help="another notion-gateway binary to run beside `gateway` (as gw-base)")
    a = ap.parse_args()

    require_built("notion-gateway", "examples/loadgen", "examples/static_upstream",
                  "examples/bare_proxy")

    up_port = free_port()
    upstream = start([str(RELEASE / "examples/static_upstream"), f"127.0.0.1:{up_port}"])
    procs = [upstream]
    tmp = tempfile.mkdtemp(prefix="ngw-load-")
    try:
        wait_listening(up_port, upstream)
        targets = {"direct": up_port}
        unpaced = {"NOTION_GATEWAY_LIMITS__PER_MINUTE": "100000000",
                   "NOTION_GATEWAY_LIMITS__RATE": "1000000",
                   "NOTION_GATEWAY_LIMITS__BURST": "1000000"}
        port = free_port()
        procs.append(start([str(RELEASE / "notion-gateway"), "--listen", f"127.0.0.1:{port}",
                            "--upstream", f"http://127.0.0.1:{up_port}"], unpaced))
        wait_listening(port, procs[-1])
        targets["gateway"] = port
        if a.baseline:
            port = free_port()
            procs.append(start([a.baseline, "--listen", f"127.0.0.1:{port}",
                                "--upstream", f"http://127.0.0.1:{up_port}"], unpaced))
            wait_listening(port, procs[-1])
            targets["gw-base"] = port
        for n in [t.strip() for t in a.threads.split(",") if t.strip()]:
            port = free_port()
            procs.append(start([str(RELEASE / "notion-gateway"), "--listen", f"127.0.0.1:{port}",
                                "--upstream", f"http://127.0.0.1:{up_port}"],
                               {**unpaced, "NOTION_GATEWAY_SERVER__WORKER_THREADS": n}))
            wait_listening(port, procs[-1])
            targets[f"gw-t{n}"] = port
        port = free_port()
        procs.append(start([str(RELEASE / "examples/bare_proxy"), f"127.0.0.1:{port}",
                            f"http://127.0.0.1:{up_port}"]))
        wait_listening(port, procs[-1])
        targets["bare"] = port
        nginx = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx")
        if nginx and not a.no_nginx:
            port = free_port()
            Path(tmp, "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, upstream=up_port,
                                                                 port=port))
            procs.append(start([nginx, "-p", tmp + "/", "-e", f"{tmp}/error.log", "-c",
                                f"{tmp}/nginx.conf"]))
            wait_listening(port, procs[-1])
            targets["nginx"] = port
        else:
            print("nginx: not installed, left out", file=sys.stderr)

        for name, port in targets.items():  # warm-up: connections, pools, caches
            load(port, a.connections, 1)
        runs = {name: [] for name in targets}
        for rnd in range(a.rounds):
            for name, port in targets.items():
                r = load(port, a.connections, a.seconds)
                runs[name].append(r)
                print(f"round {rnd + 1} {name:8s} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:6.2f} ms"
                      f"  p99 {r['p99_ms']:6.2f} ms", flush=True)
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)

    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
           for name, rs in runs.items()}
    base = med["direct"]
    print(f"\nmedians over {a.rounds} rounds, {a.connections} connections, {a.seconds:g} s each;"
          " ratios against direct in the same run")
    print(f"{'target':8s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s}   {'req/s':>7s} {'p50':>6s} {'p99':>6s}")
    for name, m in med.items():
        print(f"{name:8s} {m['rps']:9.0f} {m['p50_ms']:8.2f} {m['p99_ms']:8.2f}   "
              f"{m['rps'] / base['rps']:6.2f}x {m['p50_ms'] / base['p50_ms']:5.2f}x "
              f"{m['p99_ms'] / base['p99_ms']:5.2f}x")
    print(json.dumps({"connections": a.connections, "seconds": a.seconds, "rounds": a.rounds,
                      "medians": med}))


if __name__ == "__main__":
    main()
