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

With --groups, also prints where each variant's instructions go: the self cost of every
function (callgrind_annotate), summed per group of symbol names (GROUPS below) and divided by
the requests. Function names need a binary with its symbol table: the release profile strips
it, so build with

    CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --bins --examples

(the same code: `strip` only drops the symbol table at the link). With fat LTO much is inlined:
a function's cost is counted in the group of the outermost function it was inlined into
(tracing's field visitor, for one, runs inside `notion_gateway::telemetry`).

With --by-source, also prints where the instructions go by the source line they come from,
inlined code included: summed per crate (the registry directory a file is in), the standard
library, libc, and each of the gateway's own files. This needs line tables; build them into a
separate target directory and point the script at it:

    CARGO_TARGET_DIR=target/lines CARGO_PROFILE_RELEASE_STRIP=false \
      CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --bins --examples
    python3 bench/instructions.py --by-source --only gateway,bare_hyper_proxy \
      --gateway target/lines/release/notion-gateway --bare target/lines/release/examples/bare_proxy
"""
import argparse
import http.client
import http.server
import json
import os
import re
import shutil
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


# Symbol-name patterns (regular expressions, searched in order; the first that matches wins).
GROUPS = [
    ("memcpy/memmove/memset", r"^(__)?mem(cpy|move|set|cmp)|^__memcpy|^__memmove|^__memset|^bcmp"),
    ("allocation (malloc/free)", r"malloc|^free$|^cfree|_int_free|realloc|^__libc_calloc|calloc|"
                                 r"tcache|^__rust_(alloc|dealloc|realloc)|alloc::alloc::|"
                                 r"RawVec.*grow|raw_vec::"),
    ("access log (tracing, fmt, telemetry)", r"tracing|notion_gateway::telemetry|core::fmt|"
                                             r"<.* as core::fmt::|::fmt::|BatchWriter|"
                                             r"^std::io::Write|^<?time::|SystemTime|clock_gettime|"
                                             r"__tz|localtime|gmtime|ryu|itoa"),
    ("metrics", r"metrics|quanta|notion_gateway::metrics|sketches|portable_atomic"),
    ("shaper", r"notion_gateway::shaper|notion_gateway::rate_limit"),
    ("token hash (sha2)", r"sha2|notion_gateway::identity"),
    ("routing/catalogue", r"notion_gateway::catalogue|notion_gateway::path|matchit|axum::routing"),
    ("hyper/http (server, client, pool)", r"hyper|httparse|^http::|<http::|h1::|want::|"
                                          r"try_lock|http_body"),
    ("tokio (runtime, timers, io)", r"tokio|mio::|epoll|^__libc_(recv|send|read|write)|"
                                    r"^(recv|send|read|write|sendto|recvfrom|writev)$"),
    ("gateway (other)", r"notion_gateway"),
    ("hashing (std, foldhash)", r"Hash|hash|sip|foldhash"),
]


def cost_lines(dump):
    """The self costs (Ir) in a callgrind dump, as (source file, function, Ir): every cost line
    of a function but the inclusive costs of its calls (the line after `calls=`). `fl=` names a
    function's file, `fi=`/`fe=` the file of the inlined lines that follow (until the next
    function); files and functions are compressed in separate name spaces. callgrind_annotate is
    not used: it counts the calls still in progress at the dump (main, the runtime's loop) as
    self cost."""
    files, fns = {}, {}
    name_re = re.compile(r"^\((\d+)\)(?: (.*))?$")

    def named(space, ref):
        m = name_re.match(ref)
        if not m:
            return ref
        if m.group(2) is not None:
            space[m.group(1)] = m.group(2)
        return space.get(m.group(1), ref)

    fn, fn_file, cur, skip = None, "???", "???", False
    with open(dump, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("fl="):
                fn_file = cur = named(files, line[3:])
            elif line.startswith(("fi=", "fe=")):
                cur = named(files, line[3:])
            elif line.startswith("fn="):
                fn, cur = named(fns, line[3:]), fn_file
            elif line.startswith(("cfi=", "cfl=")):
                named(files, line[4:])  # defines a compressed name
            elif line.startswith("cfn="):
                named(fns, line[4:])
            elif line.startswith("calls="):
                skip = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if skip:
                    skip = False
                    continue
                parts = line.split()
                if fn is not None and len(parts) > 1:
                    yield cur, fn, int(parts[1])


def self_costs(dump):
    """Self cost (Ir) per function."""
    costs = {}
    for _, fn, ir in cost_lines(dump):
        costs[fn] = costs.get(fn, 0) + ir
    return costs


def source_costs(dump):
    """Self cost (Ir) per (source file, function)."""
    costs = {}
    for path, fn, ir in cost_lines(dump):
        costs[(path, fn)] = costs.get((path, fn), 0) + ir
    return costs


def source_bucket(path):
    """A crate's name for a file in the cargo registry, `src/...` for the gateway's own files."""
    m = re.search(r"/registry/src/[^/]+/([^/]+?)-\d+\.\d+[^/]*/", path)
    if m:
        return m.group(1)
    if "/rustc/" in path or path.startswith("/rust/deps/"):
        return "std"
    root = str(ROOT) + "/"
    if path.startswith(root):
        return path[len(root):]
    if re.search(r"^\./(malloc|string)/", path):
        return "libc " + ("malloc" if "malloc" in path else "memcpy/memcmp")
    if path.startswith("./") or path.startswith("/usr/"):
        return "libc (other)"
    return "no line table (" + path + ")"


def by_source(dump, requests):
    """Self cost per request by source: a crate, libc, one of the gateway's files; the standard
    library's generic code (inlined everywhere) by the group of the function it ran in."""
    sums = {}
    for (path, fn), ir in source_costs(dump).items():
        b = source_bucket(path)
        if b == "std":
            group = next((n for n, pat in GROUPS if re.search(pat, fn)), "other")
            b = f"std/core/alloc, in {group}"
        sums[b] = sums.get(b, 0) + ir
    return {b: v / requests for b, v in sums.items()}


def groups(dump, requests):
    """Self cost per group of function names, per request, from a callgrind dump."""
    sums = {name: 0 for name, _ in GROUPS}
    sums["other"] = 0
    top = {}
    for func, ir in self_costs(dump).items():
        group = next((n for n, pat in GROUPS if re.search(pat, func)), "other")
        sums[group] += ir
        top.setdefault(group, []).append((ir, func))
    return {g: v / requests for g, v in sums.items()}, top


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
    return total / requests, dump


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--gateway", default=str(ROOT / "target/release/notion-gateway"))
    ap.add_argument("--bare", default=str(ROOT / "target/release/examples/bare_proxy"))
    ap.add_argument("--groups", action="store_true",
                    help="also print instructions per request by group of functions")
    ap.add_argument("--top", type=int, default=0,
                    help="with --groups: also list each group's N costliest functions")
    ap.add_argument("--by-source", action="store_true",
                    help="also print instructions per request by source file and crate "
                         "(needs a build with line tables, see above)")
    ap.add_argument("--keep", default="",
                    help="copy the callgrind dumps into this directory (for callgrind_annotate)")
    ap.add_argument("--only", default="",
                    help="comma-separated variants to run (default: all)")
    a = ap.parse_args()

    up_port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", up_port), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{up_port}"

    gw = [a.gateway, "--listen", "127.0.0.1:{port}", "--upstream", upstream]
    # One token sends thousands of requests: raise its budget (the 60-second window and the
    # smoothing rate) so the shaper admits each at once (the fast path) instead of pacing them
    # at Notion's 3/s.
    unpaced = {"NOTION_GATEWAY_LIMITS__PER_MINUTE": "100000000",
               "NOTION_GATEWAY_LIMITS__RATE": "1000000",
               "NOTION_GATEWAY_LIMITS__BURST": "1000000"}
    variants = [
        ("gateway", gw, unpaced),
        ("gateway_log_off", gw, {**unpaced, "RUST_LOG": "warn"}),
        ("gateway_2_threads", gw, {**unpaced, "NOTION_GATEWAY_SERVER__WORKER_THREADS": "2"}),
        ("bare_hyper_proxy", [a.bare, "127.0.0.1:{port}", upstream], {}),
    ]
    if a.only:
        keep = set(a.only.split(","))
        variants = [v for v in variants if v[0] in keep]
    results = {}
    tables = {}
    sources = {}
    with tempfile.TemporaryDirectory(prefix="ngw-instructions-") as tmp:
        for name, cmd, env in variants:
            if not Path(cmd[0]).exists():
                print(f"{name:18s} skipped: {cmd[0]} not built", file=sys.stderr)
                continue
            per_req, dump = measure(name, cmd, env, a.requests, tmp)
            results[name] = round(per_req)
            print(f"{name:18s} {per_req:10.0f} instructions/request", flush=True)
            if a.groups:
                tables[name] = groups(dump, a.requests)
            if a.by_source:
                sources[name] = by_source(dump, a.requests)
            if a.keep:
                Path(a.keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(dump, Path(a.keep) / f"{name}.cg")
    if tables:
        names = list(tables)
        rows = [g for g, _ in GROUPS] + ["other"]
        print()
        print("| group (self cost, instructions / request) | " + " | ".join(names) + " |")
        print("| --- |" + " --- |" * len(names))
        for g in rows:
            print(f"| {g} | " + " | ".join(f"{tables[n][0][g]:,.0f}" for n in names) + " |")
        print("| total | " + " | ".join(f"{results[n]:,}" for n in names) + " |")
        if a.top:
            for n in names:
                print(f"\n{n}: costliest functions per group (instructions / request)")
                for g in rows:
                    fs = sorted(tables[n][1].get(g, []), reverse=True)[: a.top]
                    if fs:
                        print(f"  {g}")
                        for ir, f in fs:
                            print(f"    {ir / a.requests:8,.0f}  {f[:150]}")
    if sources:
        names = list(sources)
        rows = sorted({b for t in sources.values() for b in t},
                      key=lambda b: -max(t.get(b, 0) for t in sources.values()))
        own = [b for b in rows if b.startswith(("src/", "examples/"))]
        print()
        print("| source (self cost, instructions / request) | " + " | ".join(names) + " |")
        print("| --- |" + " --- |" * len(names))
        cell = lambda n, b: f"{sources[n].get(b, 0):,.0f}"
        for b in [b for b in rows if b not in own]:
            if max(t.get(b, 0) for t in sources.values()) >= 50:
                print(f"| {b} | " + " | ".join(cell(n, b) for n in names) + " |")
        print("| own source lines (all files below) | " + " | ".join(
            f"{sum(sources[n].get(b, 0) for b in own):,.0f}" for n in names) + " |")
        for b in own:
            if max(t.get(b, 0) for t in sources.values()) >= 20:
                print(f"| {b} | " + " | ".join(cell(n, b) for n in names) + " |")
    if "gateway" in results and "bare_hyper_proxy" in results:
        print(f"gateway / bare hyper proxy: {results['gateway'] / results['bare_hyper_proxy']:.2f}x")
    print(json.dumps({"requests": a.requests, "instructions_per_request": results}))
    server.shutdown()


if __name__ == "__main__":
    main()
