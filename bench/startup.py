#!/usr/bin/env python3
"""Binary size and start-up time (process start to accepting connections) of the release build.

    cargo build --release && python3 bench/startup.py [--runs 20]
"""
import argparse
import os
import socket
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_once(binary):
    port = free_port()
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
                return time.perf_counter() - t0
            except OSError:
                if p.poll() is not None:
                    raise SystemExit(f"{binary} exited with {p.returncode}")
                time.sleep(0.0005)
    finally:
        p.terminate()
        p.wait(5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--binary", default=str(ROOT / "target/release/notion-gateway"))
    a = ap.parse_args()
    size = os.path.getsize(a.binary)
    times = [start_once(a.binary) for _ in range(a.runs)]
    print(f"binary size: {size / 1e6:.1f} MB ({size} bytes)")
    print(f"start-up to accepting connections over {a.runs} runs: median "
          f"{statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
