#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by callgrind.

Requests per second on a shared 2-core machine move by 15 % from run to run; instruction
counts do not. This is the tool for telling whether a change to the request path made it
cheaper. It does not see kernel time (the same syscalls cost the same for every variant).

For each proxy variant: start a small keep-alive HTTP upstream (a thread of this script), run
the proxy under `valgrind --tool=callgrind`, warm it up, zero the counters, send --requests
sequential GETs over one keep-alive connection, dump the counters, print Ir per request.

    cargo build --release --bins --examples
    python3 bench/instructions.py   # gateway (defaults, log off, 2 threads), bare hyper proxy

Needs valgrind (callgrind_control). Prints one line per variant and a JSON line at the end.
"""
import argparse
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps({"object": "user", "id": "bench", "name": "x" * 900}).encode()


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/v1/users/me", headers={"authorization": "Bearer ntn_bench"})
            if c.getresponse().read() is not None:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"proxy on port {port} did not answer")


def send(port, n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(n):
        c.request("GET", "/v1/users/me", headers={"authorization": "Bearer ntn_bench"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"proxy answered {r.status}")
    c.close()


def measure(name, cmd, env, requests, workdir):
    port = free_port()
    out = Path(workdir) / f"{name}.cg"
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + [
        a.replace("{port}", str(port)) for a in cmd
    ]
    log = open(Path(workdir) / f"{name}.log", "w")
    p = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(port)
        send(port, 200)  # warm up: pool, allocator, lazy statics
        subprocess.run(["callgrind_control", "-z", str(p.pid)], check=True, capture_output=True)
        send(port, requests)
        subprocess.run(["callgrind_control", "-d", str(p.pid)], check=True, capture_output=True)
        dump = Path(f"{out}.1")
        for _ in range(50):
            if dump.exists() and "totals:" in dump.read_text(errors="replace"):
                break
            time.sleep(0.1)
        total = next(
            int(line.split()[1])
            for line in dump.read_text(errors="replace").splitlines()
            if line.startswith("totals:")
        )
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    return total / requests


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--gateway", default=str(ROOT / "target/release/notion-gateway"))
    ap.add_argument("--bare", default=str(ROOT / "target/release/examples/bare_proxy"))
    a = ap.parse_args()

    up_port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", up_port), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{up_port}"

    gw = [a.gateway, "--listen", "127.0.0.1:{port}", "--upstream", upstream]
    # One token sends thousands of requests: raise its budget so the shaper admits each at
    # once (the fast path) instead of pacing them at Notion's 3/s.
    unpaced = {"NOTION_GATEWAY_LIMITS__RATE": "1000000", "NOTION_GATEWAY_LIMITS__BURST": "1000000"}
    variants = [
        ("gateway", gw, unpaced),
        ("gateway_log_off", gw, {**unpaced, "RUST_LOG": "warn"}),
        ("gateway_2_threads", gw, {**unpaced, "NOTION_GATEWAY_SERVER__WORKER_THREADS": "2"}),
        ("bare_hyper_proxy", [a.bare, "127.0.0.1:{port}", upstream], {}),
    ]
    results = {}
    with tempfile.TemporaryDirectory(prefix="ngw-instructions-") as tmp:
        for name, cmd, env in variants:
            if not Path(cmd[0]).exists():
                print(f"{name:18s} skipped: {cmd[0]} not built", file=sys.stderr)
                continue
            per_req = measure(name, cmd, env, a.requests, tmp)
            results[name] = round(per_req)
            print(f"{name:18s} {per_req:10.0f} instructions/request", flush=True)
    if "gateway" in results and "bare_hyper_proxy" in results:
        print(f"gateway / bare hyper proxy: {results['gateway'] / results['bare_hyper_proxy']:.2f}x")
    print(json.dumps({"requests": a.requests, "instructions_per_request": results}))
    server.shutdown()


if __name__ == "__main__":
    main()
