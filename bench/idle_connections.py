#!/usr/bin/env python3
"""Idle connections cannot lock new clients out: with more idle connections than
server.max_connections, how long a new client and /healthz wait for their answer.

    cargo build --release --bin notion-gateway && python3 bench/idle_connections.py [--idle 600]

Starts the release binary (default server.max_connections = 512) in front of a small local
upstream, measures a new client's GET /v1/users/me and GET /healthz on a fresh connection with
no idle connections (the baseline), then opens --idle connections that send nothing or half a
request head, and measures the same again. Prints the medians, the worst, the ratio against the
baseline of the same run, and how many idle connections the gateway closed to make room. Needs
a file-descriptor limit above 2 x --idle (`ulimit -n`).
"""
import argparse
import http.server
import json
import resource
import socket
import statistics
import threading
import time

from common import RELEASE, free_port, start, stop, wait_listening


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Headers and body go in two writes: without this, Nagle and delayed ACKs add 40 ms.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        body = b'{"object":"user","id":"bench"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def one_request(port, path):
    """Seconds from connect to the whole answer, on a new connection."""
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer ntn_bench_idle\r\n"
              "Connection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    took = time.perf_counter() - t0
    status = data.split(b" ", 2)[1] if data.startswith(b"HTTP/1.1 ") else b"none"
    if status != b"200":
        raise SystemExit(f"GET {path}: {data[:300]!r}")
    return took


def measure(port, rounds):
    out = {}
    for path in ("/v1/users/me", "/healthz"):
        times = [one_request(port, path) for _ in range(rounds)]
        out[path] = (statistics.median(times), max(times))
    return out


def still_open(conns):
    """How many of `conns` the gateway has not closed."""
    n = 0
    for c in conns:
        c.setblocking(False)
        try:
            if c.recv(1) == b"":
                continue  # closed
        except BlockingIOError:
            pass
        except OSError:
            continue
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--idle", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--binary", default=str(RELEASE / "notion-gateway"))
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * a.idle + 200
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    up_port = free_port()
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", up_port), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    gw = start([a.binary, "--listen", f"127.0.0.1:{port}",
                "--upstream", f"http://127.0.0.1:{up_port}"],
               # A budget far above the probes' rate: this measures connections, not shaping.
               env={"NOTION_GATEWAY_SERVER__MAX_CONNECTIONS": "512",
                    "NOTION_GATEWAY_LIMITS__RATE": "10000",
                    "NOTION_GATEWAY_LIMITS__BURST": "10000"})
    try:
        wait_listening(port, gw)
        one_request(port, "/v1/users/me")  # warm the upstream pool
        base = measure(port, a.rounds)

        idle = []
        t0 = time.perf_counter()
        for i in range(a.idle):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if i % 3 == 1:
                s.sendall(b"GET /v1/users/me HTTP/1.1\r\nHost: b")  # half a head
            idle.append(s)
        opened = time.perf_counter() - t0
        time.sleep(0.5)
        loaded = measure(port, a.rounds)
        open_now = still_open(idle)

        print(f"idle connections opened: {a.idle} in {opened:.2f} s "
              f"(server.max_connections = 512); still open after the probes: {open_now}")
        for path in base:
            (b_med, b_max), (l_med, l_max) = base[path], loaded[path]
            print(f"GET {path:13} new connection, {a.rounds} rounds: no idle: median "
                  f"{b_med * 1000:.2f} ms, max {b_max * 1000:.2f} ms | {a.idle} idle: median "
                  f"{l_med * 1000:.2f} ms, max {l_max * 1000:.2f} ms "
                  f"(x{l_med / b_med:.2f} of the baseline)")
        worst = max(v[1] for v in loaded.values())
        print(json.dumps({"idle": a.idle, "worst_new_client_s": round(worst, 4),
                          "within_2s": worst < 2.0, "still_open": open_now}))
        for s in idle:
            s.close()
        if worst >= 2.0:
            raise SystemExit(f"a new client waited {worst:.2f} s")
    finally:
        stop(gw)
        upstream.shutdown()


if __name__ == "__main__":
    main()
