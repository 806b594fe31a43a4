"""Helpers shared by the load benchmarks (bench/load.py, bench/replicas.py)."""
import json
import os
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target/release"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv, env=None):
    return subprocess.Popen(argv, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
    raise SystemExit(f"nothing listens on {port} after {timeout} s")


def require_built(*binaries):
    for b in binaries:
        if not (RELEASE / b).exists():
            raise SystemExit(f"{RELEASE / b} missing: cargo build --release --bins --examples")


def load(port, connections, seconds):
    """examples/loadgen against GET /v1/users/me; refuses a run with any non-200 answer."""
    out = subprocess.run(
        [str(RELEASE / "examples/loadgen"), f"http://127.0.0.1:{port}/v1/users/me",
         str(connections), str(seconds)],
        check=True, capture_output=True, text=True)
    r = json.loads(out.stdout)
    if r["errors"] or not r["requests"]:
        raise SystemExit(f"run against port {port} had {r['errors']} errors: {r}\n"
                         f"{out.stderr[-2000:]}")
    return r
