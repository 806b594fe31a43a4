#!/usr/bin/env python3
"""`notion-gateway report` over a large request log: throughput (MB/s) and peak memory.

Writes a log of --size-mb megabytes (default 1000) in the gateway's log.file format (JSON
request events, as src/telemetry.rs writes them: several routes, sizes up to 5 MB, a 502
storm in some hours, retries, Notion request ids), then times, in the same run:

  baseline  `wc -l` over the file (reading it and finding its lines, nothing more)
  report    `notion-gateway report --json` over it

and prints both, the report's MB/s, its ratio against the baseline, and its peak RSS (the
bound on memory: it should not grow with the file). The file is deleted afterwards unless
--keep.

    cargo build --release && python3 bench/report.py [--size-mb 1000] [--runs 3]
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target/release/notion-gateway"

ROUTES = [("GET", "/v1/pages/{id}"), ("POST", "/v1/data_sources/{id}/query"),
          ("PATCH", "/v1/blocks/{id}/children"), ("POST", "/v1/pages"), ("GET", "/v1/users/me"),
          ("POST", "/v1/search"), ("PATCH", "/v1/pages/{id}"), ("POST", "/v1/file_uploads/{id}/send")]


def event(rng, hour, i):
    method, route = rng.choice(ROUTES)
    storm = hour % 7 == 3
    size = 0 if method == "GET" else int(rng.choice([300, 2_000, 40_000, 700_000, 2_500_000,
                                                       5_000_000]) * rng.random())
    if storm and rng.random() < 0.3:
        status, failed = 502, "502," * rng.randint(0, 5)
    elif size > 1_000_000 and rng.random() < 0.2:
        status, failed = 504, ""
    elif rng.random() < 0.01:
        status, failed = 429, ""
    else:
        status, failed = 200, ("502," if storm and rng.random() < 0.3 else "")
    failed = failed.rstrip(",")
    attempts = 1 + (failed.count(",") + 1 if failed else 0)
    return json.dumps({
        "timestamp": f"2026-11-{20 + hour // 24:02d}T{hour % 24:02d}:{rng.randint(0, 59):02d}:"
                     f"{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d}Z",
        "level": "INFO", "message": "request", "method": method, "route": route,
        "path": route.replace("{id}", "59833787-2cf9-4fdf-8782-e53db20768a5"),
        "status": status, "duration_ms": round(rng.lognormvariate(5, 1), 3),
        "request_id": f"6f1c8a2e-0000-4000-8000-{i:012d}",
        "notion_request_id": "" if status == 504 else f"nrq-{rng.getrandbits(48):012x}",
        "integration": rng.choice(["sync-job", "wiki-bot", "3fa4c1d2e5b6"]),
        "request_bytes": size, "queue_wait_ms": round(rng.random() * 300, 3),
        "attempts": attempts, "failed_attempts": failed, "upstream_status": status,
        "error": "", "target": "notion_gateway::access"}, separators=(",", ":")) + "\n"


def write_log(path, size_mb):
    rng = random.Random(16)
    hours = 24 * 5
    # A pool of pre-rendered events per hour, written over and over: generation stays fast.
    pool = [[event(rng, h, h * 1000 + i) for i in range(400)] for h in range(hours)]
    target = size_mb * 1_000_000
    written = 0
    with open(path, "w") as f:
        while written < target:
            for h in range(hours):
                chunk = "".join(pool[h])
                f.write(chunk)
                written += len(chunk)
                if written >= target:
                    break
    return written


def timed(argv):
    """Wall time, stdout, and peak RSS in kB (VmHWM of the running program, polled: the
    rusage of a child would count the Python process it was forked from)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(argv, stdout=out)
        peak = 0
        while p.poll() is None:
            try:
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.02)
        took = time.perf_counter() - t0
        if p.returncode != 0:
            sys.exit(f"{argv} exited with {p.returncode}")
        out.seek(0)
        return took, out.read(), peak


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if not BINARY.exists():
        sys.exit(f"{BINARY} missing: cargo build --release")
    fd, path = tempfile.mkstemp(prefix="ngw-report-", suffix=".jsonl")
    os.close(fd)
    try:
        t0 = time.perf_counter()
        size = write_log(path, a.size_mb)
        print(f"wrote {size / 1e6:.0f} MB in {time.perf_counter() - t0:.0f} s: {path}", flush=True)
        base, rep, rss = [], [], []
        for r in range(a.runs):
            took, _, _ = timed(["wc", "-l", path])
            base.append(took)
            took, out, peak = timed([str(BINARY), "report", "--json", path])
            rep.append(took)
            rss.append(peak)
            print(f"run {r + 1}: wc -l {base[-1]:.2f} s, report {rep[-1]:.2f} s", flush=True)
        summary = json.loads(out)
        b, t = statistics.median(base), statistics.median(rep)
        print(f"\nlog: {size / 1e6:.0f} MB, {summary['lines']['read']} lines, "
              f"{summary['requests']} requests, {summary['errors']} errors")
        print(f"baseline wc -l: {b:.2f} s ({size / 1e6 / b:.0f} MB/s)")
        print(f"report:         {t:.2f} s ({size / 1e6 / t:.0f} MB/s), {t / b:.1f}x the baseline's time")
        print(f"report peak RSS: {max(rss) / 1024:.1f} MB (VmHWM, largest of {a.runs} runs)")
    finally:
        if not a.keep:
            os.unlink(path)


if __name__ == "__main__":
    main()
