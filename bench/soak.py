#!/usr/bin/env python3
"""Bounded soak: the release binary under mixed hostile traffic for N minutes (issue 14, item 10).

    cargo build --release --bins
    python3 bench/soak.py [--minutes 10] [--tokens 20000] [--interval 30]

Starts bench/fake_notion.py (no limiter; faults switched on and off at run time through its
/__config) and the release gateway with its defaults plus `--upstream` pointing at the fake and
a config file naming the steady callers' tokens as `[[integrations]]` (by SHA-256), then drives
it from this one asyncio process (raw sockets, so the gateway, not the driver, is measured):

* steady callers (--steady, 4): configured integrations on one keep-alive connection each,
  --steady-rate requests per second (2, under the standard plan's 3/s), GETs of pages and
  database queries; the fake never faults them (--clean-prefix). Their worst latency is the
  "no request slower than 1 s" figure; any answer but 200 is an error;
* a flood of random bearer tokens (--tokens distinct ones over the run, never printed), one to
  three requests per connection, each with a new token, GETs and small POSTs; 20 % of them
  invalid at the fake (401) during warm-up and churn;
* faults from the fake (warm-up and churn): 1 % 429 with `Retry-After: 1`, 2 % CDN 502,
  3 % answered 2 s late;
* slow clients (--slow, 8): half send a request head one byte every 100 ms, half start a
  POST upload and stall it; each starts again when answered or closed;
* idle connections (--idle, 300): connect and send nothing (every third half a head); each
  reconnects when the gateway closes it (server.idle_timeout);
* a /healthz probe every 100 ms on a fresh connection.

Phases: warm-up (--warmup s: everything running, flood at 20 tokens/s), then "fill" (faults
and invalid tokens off, new tokens only, at --fill-rate per second, until /status counts
limits.max_tokens tokens): bytes per idle key = RSS delta / tokens added in that phase; then
"churn" (faults on, the rest of --tokens spread evenly over the rest of the run: the token
table, bounded at max_tokens, evicts least-recently-used tokens all along).

Every --interval seconds one line: elapsed, phase, the gateway's RSS (VmRSS) and open fds,
`/metrics` size, /status tokens_total, worst /healthz probe and worst steady-caller latency
in the interval, errors in the interval (steady non-200, failed probes, flood connections that
broke). At the end one JSON line and PASS/FAIL against the issue's figures: /metrics < 1 MB,
RSS growth after warm-up < 40 MB, no probe and no steady request slower than 1 s.

The fake answers GET /v1/users/me without a workspace by default (--workspaces none: every
random token stays a lone `other` token); --workspaces per-token gives each token a workspace of
its own, which the gateway discovers and labels (see the second run below).

Figures, 2026-12-02, a shared 2-core VM (Intel Xeon, 24 GB, Linux 6.18; another session's
benchmarks running at times, load average 0.5-3.6), release build of commit 30ac591's src/:

  python3 bench/soak.py --minutes 10
    fill: 9360 tokens added (640 -> 10000), RSS 16.2 -> 41.5 MB: 2829 bytes per idle key
    (nginx documents 128 bytes per limit_req_zone state on 64-bit platforms: "One megabyte zone
    can keep about 16 thousand 64-byte states or about 8 thousand 128-byte states"; 22x that)
    20 002 random tokens, 4 800 steady requests, 5 952 probes: /metrics at most 29 213 bytes
    (5 integration labels), /status at most 10 395 bytes, RSS 16.2 MB after warm-up -> 42.5 MB
    at most (+26.2 MB, all of it the fill; +1.0 MB over the 10 000 churned tokens after it),
    331 fds at the end, worst /healthz probe 14.5 ms, worst steady request 8.1 ms (the
    driver's own event loop was up to 21 ms late), 0 errors; the token table stayed at
    10 000 (10 309 lanes evicted) and went down to 6 398 once the fill's tokens were idle for
    300 s; 156 slow heads answered 200, 76 stalled uploads answered 408. PASS.

  python3 bench/soak.py --minutes 4 --interval 20 --workspaces per-token
    6784 bytes per idle key (a lane and a workspace each); /metrics 7 384 134 bytes at the end
    with 17 728 integration labels while /status knew 10 000 tokens and 9 218 workspaces (the
    series of workspaces that left stay), /status 2 951 268 bytes (every workspace listed),
    RSS 16.8 -> 99.9 MB at most (+83.1 MB), worst probe 500 ms, worst steady request 387 ms
    (the driver up to 110 ms late), 0 errors. FAIL (/metrics, RSS).

  python3 bench/soak.py --minutes 3 --interval 20 --idle 600   (more than server.max_connections)
    3022 bytes per idle key; /metrics at most 27 747 bytes, RSS 21.6 -> 50.4 MB (+28.8 MB),
    worst probe 18.2 ms, worst steady request 13.2 ms, 0 errors; 22 538 connections evicted
    (the idle ones, reconnecting within 0.2-1.2 s, over and over), and with them every slow
    head (156 closed, none answered); stalled uploads still answered 408 (20). PASS.
"""
import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import RELEASE, ROOT, free_port, start, stop, wait_listening

FAKE = ROOT / "bench/fake_notion.py"
STEADY_PREFIX = "ntn_steady_"
FAULTS_ON = {"p429": 0.01, "p502": 0.02, "p_slow": 0.03, "slow_ms": 2000, "invalid_share": 0.2}
FAULTS_OFF = {"p429": 0.0, "p502": 0.0, "p_slow": 0.0, "invalid_share": 0.0}
MB = 1 << 20


def rss_bytes(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


async def read_response(reader):
    """(status, body) of one HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return status, bytes(body)
    n = int(headers.get("content-length", "0") or 0)
    return status, (await reader.readexactly(n) if n else b"")


def request(method, path, token=None, body=b"", close=False):
    h = [f"{method} {path} HTTP/1.1", "Host: gateway", "Notion-Version: 2022-06-28"]
    if token:
        h.append(f"Authorization: Bearer {token}")
    if body or method in ("POST", "PATCH"):
        h += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    if close:
        h.append("Connection: close")
    return ("\r\n".join(h) + "\r\n\r\n").encode() + body


async def one_shot(port, method, path, token=None, body=b"", timeout=30.0):
    """(status, body, seconds) on a fresh connection."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(request(method, path, token, body, close=True))
        status, data = await asyncio.wait_for(read_response(reader), timeout)
        return status, data, time.perf_counter() - t0
    finally:
        writer.close()


def random_token(rng):
    return "ntn_" + "%040x" % rng.getrandbits(160)


class Soak:
    def __init__(self, a, port, fport, pid):
        self.a, self.port, self.fport, self.pid = a, port, fport, pid
        self.rng = random.Random(a.seed)
        self.t0 = time.monotonic()
        self.phase = "warmup"
        self.stop = False
        self.tokens_sent = 0
        self.flood_status = Counter()
        self.slow_outcomes = Counter()
        self.idle_closed = 0
        self.iv = self.new_interval()
        self.total = {"probe_worst_s": 0.0, "steady_worst_s": 0.0, "errors": 0,
                      "steady_requests": 0, "probes": 0, "metrics_max_bytes": 0, "lag_worst_s": 0.0,
                      "status_max_bytes": 0,
                      "rss_max": 0}
        self.flood_rate = a.warmup_rate

    @staticmethod
    def new_interval():
        return {"probe_worst": 0.0, "steady_worst": 0.0, "lag_worst": 0.0, "errors": Counter()}

    def elapsed(self):
        return time.monotonic() - self.t0

    def error(self, kind):
        self.iv["errors"][kind] += 1
        self.total["errors"] += 1

    async def configure_fake(self, settings):
        await one_shot(self.fport, "POST", "/__config", body=json.dumps(settings).encode())

    # ---------------------------------------------------------------- traffic

    async def steady(self, i):
        token = f"{STEADY_PREFIX}{i}_" + hashlib.sha256(f"steady{i}".encode()).hexdigest()[:32]
        period = 1.0 / self.a.steady_rate
        reader = writer = None
        n = 0
        next_at = time.monotonic() + self.rng.random() * period
        while not self.stop:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += period
            n += 1
            if n % 4 == 0:
                req = request("POST", f"/v1/databases/{i:08x}-0000-4000-8000-000000000001/query",
                              token, b'{"page_size": 10}')
            else:
                req = request("GET", f"/v1/pages/{n:08x}-0000-4000-8000-{i:012x}", token)
            t = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(req)
                status, _ = await asyncio.wait_for(read_response(reader), 60)
                if status != 200:
                    self.error(f"steady_{status}")
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                self.error("steady_broken")
                if writer is not None:
                    writer.close()
                reader = writer = None
            took = time.perf_counter() - t
            self.total["steady_requests"] += 1
            self.iv["steady_worst"] = max(self.iv["steady_worst"], took)
            self.total["steady_worst_s"] = max(self.total["steady_worst_s"], took)

    async def flood_connection(self, sem):
        """One connection, one to three requests, each with a new random token."""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            self.error("flood_connect")
            sem.release()
            return
        try:
            for k in range(self.rng.randint(1, 3)):
                self.tokens_sent += 1
                token = random_token(self.rng)
                if self.phase != "fill" and self.rng.random() < 0.25:
                    req = request("POST", "/v1/search", token, b'{"query": "soak"}')
                else:
                    req = request("GET", f"/v1/pages/{self.rng.getrandbits(128):032x}", token)
                writer.write(req)
                status, _ = await asyncio.wait_for(read_response(reader), 120)
                self.flood_status[status] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            self.error("flood_broken")
        finally:
            writer.close()
            sem.release()

    async def flood(self):
        sem = asyncio.Semaphore(self.a.flood_concurrency)
        credit, last = 0.0, time.monotonic()
        while not self.stop:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            credit += (now - last) * self.flood_rate
            last = now
            # about two tokens per connection
            while credit >= 2.0 and self.tokens_sent < self.a.tokens and not self.stop:
                credit -= 2.0
                await sem.acquire()
                asyncio.ensure_future(self.flood_connection(sem))

    async def slow_client(self, i):
        token = f"ntn_slowclient_{i}_" + "%032x" % random.Random(i).getrandbits(128)
        kind = "slow_head" if i % 2 == 0 else "stalled_upload"
        while not self.stop:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                if kind == "slow_head":
                    for b in request("GET", "/v1/users/me", token):
                        writer.write(bytes([b]))
                        await writer.drain()
                        await asyncio.sleep(0.1)
                        if self.stop:
                            break
                else:
                    head = request("POST", "/v1/pages", token).replace(
                        b"Content-Length: 0", b"Content-Length: 2000")
                    writer.write(head + b'{"parent": {"page_id": "')
                    await writer.drain()
                status, _ = await asyncio.wait_for(read_response(reader), 120)
                self.slow_outcomes[f"{kind}_{status}"] += 1
                writer.close()
            except (asyncio.IncompleteReadError, ConnectionError):
                self.slow_outcomes[f"{kind}_closed"] += 1
            except (OSError, asyncio.TimeoutError, ValueError):
                self.slow_outcomes[f"{kind}_error"] += 1
            await asyncio.sleep(0.5)

    async def idle(self, i):
        while not self.stop:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                if i % 3 == 1:
                    writer.write(b"GET /v1/users/me HTTP/1.1\r\nHost: b")
                while not self.stop and await reader.read(4096):
                    pass
                writer.close()
                if not self.stop:
                    self.idle_closed += 1
            except OSError:
                pass
            await asyncio.sleep(0.2 + self.rng.random())

    async def probe(self):
        while not self.stop:
            t = time.monotonic()
            try:
                status, _, took = await one_shot(self.port, "GET", "/healthz", timeout=10)
                if status != 200:
                    self.error(f"probe_{status}")
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                self.error("probe_broken")
                took = time.monotonic() - t
            self.total["probes"] += 1
            self.iv["probe_worst"] = max(self.iv["probe_worst"], took)
            self.total["probe_worst_s"] = max(self.total["probe_worst_s"], took)
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - t)))

    # ---------------------------------------------------------------- measurement

    async def status(self, raw=False):
        _, body, _ = await one_shot(self.port, "GET", "/status")
        return (json.loads(body), len(body)) if raw else json.loads(body)

    async def sample(self):
        rss = rss_bytes(self.pid)
        fds = open_fds(self.pid)
        _, metrics, mtime = await one_shot(self.port, "GET", "/metrics")
        st, st_bytes = await self.status(raw=True)
        self.total["metrics_max_bytes"] = max(self.total["metrics_max_bytes"], len(metrics))
        self.total["status_max_bytes"] = max(self.total["status_max_bytes"], st_bytes)
        return {"rss": rss, "fds": fds, "metrics_bytes": len(metrics), "metrics_s": mtime,
                "tokens_total": st.get("tokens_total"), "workspaces": len(st.get("workspaces", [])),
                "status_bytes": st_bytes, "metrics": metrics}

    async def lag_watch(self):
        """How late this process's own event loop wakes up (the driver's share of a latency)."""
        while not self.stop:
            t = time.monotonic()
            await asyncio.sleep(0.05)
            late = time.monotonic() - t - 0.05
            self.iv["lag_worst"] = max(self.iv["lag_worst"], late)
            self.total["lag_worst_s"] = max(self.total["lag_worst_s"], late)

    async def rss_watch(self):
        while not self.stop:
            self.total["rss_max"] = max(self.total["rss_max"], rss_bytes(self.pid))
            await asyncio.sleep(1.0)

    async def reporter(self):
        print("elapsed  phase   rss_MB  fds  metrics_B  status_B  tokens  workspaces  "
              "probe_worst_ms  steady_worst_ms  driver_lag_ms  tokens_sent  errors", flush=True)
        while not self.stop:
            await asyncio.sleep(self.a.interval)
            s = await self.sample()
            iv, self.iv = self.iv, self.new_interval()
            errs = ",".join(f"{k}={v}" for k, v in sorted(iv["errors"].items())) or "0"
            print(f"{self.elapsed():6.0f}s  {self.phase:6s}  {s['rss'] / MB:6.1f}  {s['fds']:4d}  "
                  f"{s['metrics_bytes']:9d}  {s['status_bytes']:8d}  {s['tokens_total']:6d}  "
                  f"{s['workspaces']:10d}  "
                  f"{iv['probe_worst'] * 1000:14.1f}  {iv['steady_worst'] * 1000:15.1f}  "
                  f"{iv['lag_worst'] * 1000:13.1f}  {self.tokens_sent:11d}  {errs}", flush=True)

    # ---------------------------------------------------------------- run

    async def run(self):
        a = self.a
        total_s = a.minutes * 60
        await self.configure_fake(FAULTS_ON)
        tasks = [asyncio.ensure_future(c) for c in
                 [self.steady(i) for i in range(a.steady)]
                 + [self.slow_client(i) for i in range(a.slow)]
                 + [self.idle(i) for i in range(a.idle)]
                 + [self.flood(), self.probe(), self.rss_watch(), self.lag_watch(),
                    self.reporter()]]
        out = {}
        try:
            await asyncio.sleep(a.warmup)
            # fill: only new idle tokens arrive
            await self.configure_fake(FAULTS_OFF)
            self.phase = "fill"
            await asyncio.sleep(2.0)  # let the warm-up's slow answers finish
            s0 = await self.sample()
            max_tokens = (await self.status())["limits"]["max_tokens"]
            sent0 = self.tokens_sent
            self.flood_rate = a.fill_rate
            fill_deadline = time.monotonic() + max(10.0, total_s / 3)
            while time.monotonic() < fill_deadline:
                await asyncio.sleep(1.0)
                if (await self.status())["tokens_total"] >= max_tokens:
                    break
            self.flood_rate = 0.0
            await asyncio.sleep(3.0)  # the last answers and workspace look-ups
            s1 = await self.sample()
            added = s1["tokens_total"] - s0["tokens_total"]
            out["fill"] = {"tokens_before": s0["tokens_total"], "tokens_after": s1["tokens_total"],
                           "tokens_sent": self.tokens_sent - sent0,
                           "rss_before_mb": round(s0["rss"] / MB, 2),
                           "rss_after_mb": round(s1["rss"] / MB, 2),
                           "bytes_per_key": round((s1["rss"] - s0["rss"]) / added) if added else None}
            print(f"fill: {added} tokens added ({s0['tokens_total']} -> {s1['tokens_total']}), RSS "
                  f"{s0['rss'] / MB:.1f} -> {s1['rss'] / MB:.1f} MB: "
                  f"{out['fill']['bytes_per_key']} bytes per idle key", flush=True)
            # churn: the rest of the tokens over the rest of the run, faults on
            await self.configure_fake(FAULTS_ON)
            self.phase = "churn"
            left_s = total_s - self.elapsed()
            self.flood_rate = max(1.0, (a.tokens - self.tokens_sent) / max(1.0, left_s - 5))
            print(f"churn: {a.tokens - self.tokens_sent} more tokens over {left_s:.0f} s "
                  f"({self.flood_rate:.0f} per second), faults on", flush=True)
            await asyncio.sleep(max(0.0, left_s))
            end = await self.sample()
            fstats = json.loads((await one_shot(self.fport, "GET", "/__stats"))[1])
        finally:
            self.stop = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        base = s0["rss"]
        evicted = sum(float(line.rsplit(" ", 1)[1]) for line in end["metrics"].decode().splitlines()
                      if line.startswith("notion_gateway_lanes_evicted_total"))
        conn_evicted = sum(float(line.rsplit(" ", 1)[1])
                           for line in end["metrics"].decode().splitlines()
                           if line.startswith("notion_gateway_connections_evicted_total"))
        labels = {line.split('integration="', 1)[1].split('"', 1)[0]
                  for line in end["metrics"].decode().splitlines()
                  if 'integration="' in line and not line.startswith("#")}
        out.update({
            "metrics_integration_labels_end": len(labels),
            "minutes": a.minutes, "workspaces": a.workspaces, "tokens_sent": self.tokens_sent,
            "distinct_tokens_at_fake": fstats["distinct_tokens"],
            "tokens_total_end": end["tokens_total"], "lanes_evicted": evicted,
            "connections_evicted": conn_evicted,
            "rss_after_warmup_mb": round(base / MB, 2), "rss_end_mb": round(end["rss"] / MB, 2),
            "rss_max_mb": round(self.total["rss_max"] / MB, 2),
            "rss_growth_mb": round((max(self.total["rss_max"], end["rss"]) - base) / MB, 2),
            "fds_end": end["fds"], "metrics_max_bytes": self.total["metrics_max_bytes"],
            "status_max_bytes": self.total["status_max_bytes"], "workspaces_end": end["workspaces"],
            "metrics_end_bytes": end["metrics_bytes"],
            "probe_worst_s": round(self.total["probe_worst_s"], 4), "probes": self.total["probes"],
            "steady_worst_s": round(self.total["steady_worst_s"], 4),
            "steady_requests": self.total["steady_requests"], "errors": self.total["errors"],
            "driver_lag_worst_s": round(self.total["lag_worst_s"], 4),
            "flood_status": dict(sorted(self.flood_status.items())),
            "slow_clients": dict(sorted(self.slow_outcomes.items())),
            "idle_reconnects": self.idle_closed, "fake": fstats["totals"],
            "nginx_bytes_per_key_64bit": 128,
        })
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--tokens", type=int, default=20000)
    ap.add_argument("--interval", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=30.0)
    ap.add_argument("--warmup-rate", type=float, default=20.0, help="new tokens per second")
    ap.add_argument("--fill-rate", type=float, default=250.0, help="new tokens per second")
    ap.add_argument("--flood-concurrency", type=int, default=64)
    ap.add_argument("--steady", type=int, default=4)
    ap.add_argument("--steady-rate", type=float, default=2.0)
    ap.add_argument("--slow", type=int, default=8)
    ap.add_argument("--idle", type=int, default=300)
    ap.add_argument("--workspaces", choices=("none", "per-token"), default="none",
                    help="what the fake's GET /v1/users/me tells: no workspace (default), or "
                         "a workspace of its own for every token")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--binary", default=str(RELEASE / "notion-gateway"))
    a = ap.parse_args()
    if not Path(a.binary).exists():
        raise SystemExit(f"{a.binary} missing: cargo build --release --bins")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 8192), hard), hard))

    tmp = tempfile.mkdtemp(prefix="ngw-soak-")
    conf = Path(tmp) / "soak.toml"
    conf.write_text("".join(
        f'[[integrations]]\nname = "steady-{i}"\ntoken_sha256 = "'
        + hashlib.sha256((f"{STEADY_PREFIX}{i}_"
                          + hashlib.sha256(f"steady{i}".encode()).hexdigest()[:32]).encode())
        .hexdigest() + '"\n\n' for i in range(a.steady)))
    fport, port = free_port(), free_port()
    procs = [start([sys.executable, str(FAKE), "--port", str(fport), "--rate", "0",
                    "--clean-prefix", STEADY_PREFIX]
                   + (["--workspaces"] if a.workspaces == "per-token" else []))]
    try:
        wait_listening(fport, procs[0])
        procs.append(start([a.binary, "--config", str(conf), "--listen", f"127.0.0.1:{port}",
                            "--upstream", f"http://127.0.0.1:{fport}"]))
        wait_listening(port, procs[1])
        gw = procs[1]
        print(f"soak: {a.minutes:g} min, {a.tokens} random tokens (workspaces: {a.workspaces}), "
              f"{a.steady} steady callers at "
              f"{a.steady_rate:g}/s, {a.slow} slow clients, {a.idle} idle connections, probes every "
              f"100 ms; load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
              flush=True)
        out = asyncio.run(Soak(a, port, fport, gw.pid).run())
        alive = gw.poll() is None
    finally:
        for p in reversed(procs):
            stop(p)
    checks = {
        "metrics_under_1MB": out["metrics_max_bytes"] < MB,
        "rss_growth_under_40MB": out["rss_growth_mb"] < 40,
        "no_probe_over_1s": out["probe_worst_s"] < 1.0,
        "no_steady_request_over_1s": out["steady_worst_s"] < 1.0,
        "gateway_alive": alive,
    }
    out["checks"] = checks
    out["load_average_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(json.dumps(out), flush=True)
    verdict = "PASS" if all(checks.values()) else "FAIL"
    print(f"{verdict}: " + ", ".join(f"{k}={'ok' if v else 'FAIL'}" for k, v in checks.items()))
    sys.exit(0 if verdict == "PASS" else 1)


if __name__ == "__main__":
    main()
