#!/usr/bin/env python3
"""Shaper benchmark against Notion's rate limits as Notion documents them (2026), on real time.

Notion's request-limits page (https://developers.notion.com/reference/request-limits):
"Each connection has a fixed budget of requests per 60-second window, based on the workspace's
plan" (180 per minute on every plan but Business and Enterprise), "The budget can be spent at
any pace within the window — spread out evenly or in a single burst", "When a request exceeds
this limit, the `Retry-After` value is the time until the window resets"; and "A separate limit
is shared across all of the workspace's connections", answered with `rate_limit_reason`
`public_api_request_rate_limit` (connection) or `public_api_space_request_rate_limit`
(workspace). "Whenever a response includes `Retry-After`, the body repeats the wait as
`additional_data.retry_after`, a string of whole seconds."

The fake upstream below (aiohttp, in this process) enforces exactly that:

* per token (by its whole Authorization value): a fixed budget per 60 s window whose grid
  starts at the token's first request (the alignment where a burst on top of a steady rate
  overflows);
* per workspace (token -> workspace id): a budget per fixed 60 s window (grid from the
  workspace's first request) shared by its tokens;
* over a limit: 429 with Notion's error JSON, `additional_data.rate_limit_reason`,
  `additional_data.retry_after` and `Retry-After` = whole seconds until that window resets
  (at least 1); the connection limit is checked first; rejected requests spend nothing;
* `GET /v1/users/me`: a bot user whose `bot.workspace_id` is the token's workspace; every
  other request: 200 with a small JSON page after a fixed service time (20 ms).

It records every arrival (time, token, status, reason), which the driver reads in-process.

Each scenario starts its own fake and its own gateway, the real release binary with its
defaults (standard plan, 180 per 60 s per token, 30 at once on an idle token, workspace
discovery on), `--log-format json` and `log.file` in a temporary directory (the access log is
read for queue_wait_ms and attempts):

  batch      30 calls at once on an idle token -> makespan, against the same 30 sent straight
             to the fake (the baseline of this run); then 31 on another idle token -> how long
             the 31st waits. Upstream 429s: target 0.
  flood      one token: a burst of 30, and from the same instant a caller sending 3 requests
             per second open loop for 130 s (420 requests offered in 130 s, more than 180 per
             minute: the token stays saturated; 130 s covers three of the fake's windows). ->
             upstream 429s (target 0), most requests in one of the fake's windows (<= 180) and
             in any 60 s, worst gap between consecutive upstream arrivals (no stall),
             utilization = upstream arrivals / (3 per second x run time, first request to last
             upstream arrival); callers refused by the gateway (429 gateway_max_wait) apart
             from failures.
  fairness   200 requests at once from X-Gateway-Client: sync-job, and X-Gateway-Client:
             dashboard sending 1 request per second for 40 s (from t = 1 s) on the same token
             -> the dashboard's worst and median latency (target <= 2 s). The sync job's
             requests that would wait past limits.max_wait (30 s) are refused at once by
             design; they are counted, not retried.
  workspace  three tokens of one workspace (fake limit 300 per minute, not configured in the
             gateway: discovery finds the workspace, the budget is learned from the 429s),
             each saturated by 4 closed-loop workers for 180 s, plus a fourth token of
             another workspace sending one request every 2 s -> upstream 429s by reason per
             minute of the run (target: a handful in minute 1, none later), share of the
             workspace's budget used in the fake's windows 2 and 3 (target >= 0.85), caller
             errors (target 0), the fourth token's worst latency. A worker that gets an
             error waits its Retry-After (at most 5 s) before its next request, as an SDK
             would.

In scenarios batch, flood and fairness every token has a workspace of its own with a limit that
never binds (10 000 per minute): they measure the connection limit alone.

Run time: about 6 minutes for all four (batch ~5 s, flood ~145 s, fairness ~45 s, workspace
~185 s). Everything listens on 127.0.0.1. The figures come from a shared 2-core host (other
builds running): the header prints its load average, and each JSON line carries the load at
the end of its scenario.

    cargo build --release
    python3 bench/limits.py [--scenario batch|flood|fairness|workspace] [--flood-seconds 130]
        [--workspace-seconds 180]

Prints a table (figure, value, target, verdict) and one JSON line per scenario (`{"scenario":
...}`). Exit status 0 when the runs worked, whatever the figures; 1 when a run broke.
"""
import argparse
import asyncio
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import aiohttp
from aiohttp import web

from common import RELEASE, free_port, start, stop, wait_listening

GATEWAY = RELEASE / "notion-gateway"
WINDOW = 60.0
TOKEN_BUDGET = 180  # Notion's standard plan: 180 requests per minute per connection.
SERVICE_S = 0.020
PAGE = "/v1/pages/59833787-2cf9-4fdf-8782-e53db20768a5"
CONNECTION = "public_api_request_rate_limit"
SPACE = "public_api_space_request_rate_limit"
BIG = 10_000  # a workspace limit that never binds
KEEP_LOGS = False


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def token_id(token):
    """The gateway's name for a token in logs and /status: SHA-256 prefix of the credential."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def notion_error(status, code, message, additional=None, headers=None):
    body = {"object": "error", "status": status, "code": code, "message": message}
    if additional is not None:
        body["additional_data"] = additional
    return web.json_response(body, status=status, headers=headers)


class FixedWindows:
    """A budget per fixed 60 s window; the grid starts at the first request seen."""

    def __init__(self, budget):
        self.budget = budget
        self.origin = None
        self.spent = Counter()  # window index -> admitted requests

    def index(self, now):
        if self.origin is None:
            self.origin = now
        return int((now - self.origin) // WINDOW)

    def retry_after(self, now):
        """0 when a request may go now, else whole seconds until the window resets."""
        k = self.index(now)
        if self.spent[k] < self.budget:
            return 0
        return max(1, math.ceil(self.origin + (k + 1) * WINDOW - now))

    def spend(self, now):
        self.spent[self.index(now)] += 1


class FakeNotion:
    """Notion's documented limits, in-process. `tokens`: token -> workspace id;
    `workspaces`: workspace id -> budget per 60 s window."""

    def __init__(self, tokens, workspaces, token_budget=TOKEN_BUDGET):
        self.tokens = dict(tokens)
        self.token_windows = {t: FixedWindows(token_budget) for t in tokens}
        self.space_windows = {w: FixedWindows(b) for w, b in workspaces.items()}
        # (time, token, workspace, path, status, reason)
        self.arrivals = []
        self.runner = None
        self.port = None

    async def handle(self, request):
        now = time.monotonic()
        auth = request.headers.get("Authorization", "")
        token = auth.split(" ", 1)[1].strip() if " " in auth else auth
        ws = self.tokens.get(token)
        if ws is None:
            self.arrivals.append((now, token, None, request.path, 401, None))
            return notion_error(401, "unauthorized", "API token is invalid.")
        for reason, win in ((CONNECTION, self.token_windows[token]),
                            (SPACE, self.space_windows[ws])):
            wait = win.retry_after(now)
            if wait:
                self.arrivals.append((now, token, ws, request.path, 429, reason))
                return notion_error(
                    429, "rate_limited",
                    "You have been rate limited. Please try again in a few minutes.",
                    {"rate_limit_reason": reason, "retry_after": str(wait)},
                    {"Retry-After": str(wait)})
        self.token_windows[token].spend(now)
        self.space_windows[ws].spend(now)
        self.arrivals.append((now, token, ws, request.path, 200, None))
        await asyncio.sleep(SERVICE_S)
        if request.method == "GET" and request.path == "/v1/users/me":
            return web.json_response({
                "object": "user", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, token)),
                "name": "bench bot", "avatar_url": None, "type": "bot",
                "bot": {"owner": {"type": "workspace", "workspace": True},
                        "workspace_id": ws, "workspace_name": "x",
                        "workspace_limits": {"max_file_upload_size_in_bytes": 5242880}}})
        return web.json_response({"object": "list", "results": [], "next_cursor": None,
                                  "has_more": False, "type": "page_or_database",
                                  "page_or_database": {}})

    async def start(self):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self):
        await self.runner.cleanup()

    def of(self, token, since=0.0):
        return [a for a in self.arrivals if a[1] == token and a[0] >= since]


class Call:
    __slots__ = ("sent", "done", "status", "reason", "retry_after", "client")

    def __init__(self, sent, client):
        self.sent, self.client = sent, client
        self.done = self.status = self.reason = self.retry_after = None

    @property
    def latency(self):
        return self.done - self.sent


async def call(session, base, token, client=None, path=PAGE):
    headers = {"Authorization": f"Bearer {token}", "Notion-Version": "2025-09-03"}
    if client:
        headers["X-Gateway-Client"] = client
    c = Call(time.monotonic(), client)
    try:
        async with session.get(base + path, headers=headers) as r:
            body = await r.read()
            c.status = r.status
            c.retry_after = r.headers.get("Retry-After")
            if r.status == 429:
                try:
                    c.reason = json.loads(body)["additional_data"]["rate_limit_reason"]
                except (ValueError, KeyError, TypeError):
                    c.reason = "?"
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        c.status, c.reason = 0, type(e).__name__
    c.done = time.monotonic()
    return c


def caller_outcomes(calls):
    """(ok, refused by the gateway by reason, failures by status)."""
    ok, refused, failed = 0, Counter(), Counter()
    for c in calls:
        if 200 <= (c.status or 0) < 300:
            ok += 1
        elif c.status == 429 and (c.reason or "").startswith("gateway_"):
            refused[c.reason] += 1
        else:
            failed[str(c.status) + (f" {c.reason}" if c.reason else "")] += 1
    return ok, dict(refused), dict(failed)


def upstream_429s(arrivals):
    return dict(Counter(a[5] for a in arrivals if a[4] == 429))


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def max_in_span(times, span=WINDOW):
    times, best, j = sorted(times), 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - span:
            j += 1
        best = max(best, i - j + 1)
    return best


class Setup:
    """A fake Notion and a gateway in front of it, for one scenario."""

    def __init__(self, name, tokens, workspaces, env=None):
        self.name, self.env = name, env or {}
        self.fake = FakeNotion(tokens, workspaces)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"ngw-limits-{name}-"))
        self.log_path = self.tmp / "access.jsonl"

    async def __aenter__(self):
        await self.fake.start()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.direct = f"http://127.0.0.1:{self.fake.port}"
        env = {"NOTION_GATEWAY_LOG__FILE": str(self.log_path), **self.env}
        env.pop("RUST_LOG", None)
        self.proc = start([str(GATEWAY), "--listen", f"127.0.0.1:{self.port}",
                           "--upstream", self.direct, "--log-format", "json"], env)
        await asyncio.to_thread(wait_listening, self.port, self.proc)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=90))
        return self

    async def status(self):
        async with self.session.get(self.base + "/status",
                                    headers={"Accept": "application/json"}) as r:
            return await r.json(content_type=None)

    async def __aexit__(self, *exc):
        await self.session.close()
        await asyncio.to_thread(stop, self.proc)
        await self.fake.stop()
        if not KEEP_LOGS:
            self.lines = self.access_log()
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print(f"# {self.name}: gateway access log kept in {self.log_path}", file=sys.stderr)

    def access_log(self):
        if hasattr(self, "lines"):
            return self.lines
        try:
            return [json.loads(line) for line in self.log_path.read_text().splitlines()
                    if line.strip()]
        except (OSError, ValueError):
            return []


def log_summary(lines, token):
    """What the gateway said it did for one token's requests (its access log)."""
    mine = [l for l in lines if flat(l).get("integration") == token_id(token)]
    waits = [float(flat(l).get("queue_wait_ms", 0)) for l in mine]
    resent = sum(1 for l in mine if int(flat(l).get("attempts", 1)) > 1)
    return {"logged": len(mine), "resent": resent,
            "queue_wait_ms_max": round(max(waits), 1) if waits else None,
            "queue_wait_ms_p50": round(statistics.median(waits), 1) if waits else None}


def flat(line):
    """Access-log fields, at the top level or under "fields" (tracing's JSON layout)."""
    return {**line, **line.get("fields", {})}


# ---------------------------------------------------------------------------------------------
# Scenarios. Each returns (rows, record): rows = [(figure, value, target, verdict)].


def verdict(ok):
    return "ok" if ok else "MISSED"


async def batch(args):
    rows, rec = [], {}
    tokens = {"ntn_bench_batch_direct": "ws-direct", "ntn_bench_batch_30": "ws-b30",
              "ntn_bench_batch_31": "ws-b31"}
    async with Setup("batch", tokens, {w: BIG for w in tokens.values()}) as s:
        async def at_once(base, token, n):
            # A session of its own: every run opens its connections cold, like the others.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as cs:
                return await asyncio.gather(*(call(cs, base, token) for _ in range(n)))

        await at_once(s.direct, "ntn_bench_batch_direct", 30)  # warm-up, not measured
        await asyncio.sleep(0.2)
        direct = await at_once(s.direct, "ntn_bench_batch_direct", 30)
        via = await at_once(s.base, "ntn_bench_batch_30", 30)
        await asyncio.sleep(0.5)
        via31 = await at_once(s.base, "ntn_bench_batch_31", 31)
        await asyncio.sleep(0.5)  # let the discovery calls land
        arrivals = [a for a in s.fake.arrivals if a[1] != "ntn_bench_batch_direct"]
    discovery = sum(1 for a in arrivals if a[3] == "/v1/users/me")
    def span(cs):
        return max(c.done for c in cs) - min(c.sent for c in cs)

    m_direct, m_via = span(direct), span(via)
    lat31 = sorted(c.latency for c in via31)
    wait31 = lat31[-1] - lat31[-2]
    _, ref, fail = caller_outcomes(via + via31)
    u429 = upstream_429s(arrivals)
    rec.update(makespan_30_s=round(m_via, 3), makespan_30_direct_s=round(m_direct, 3),
               makespan_ratio=round(m_via / m_direct, 2),
               latency_31st_s=round(lat31[-1], 3), latency_30th_of_31_s=round(lat31[-2], 3),
               wait_31st_s=round(wait31, 3), upstream_429=u429, refused=ref, failed=fail,
               discovery_calls=discovery)
    rows += [("makespan, 30 at once (gateway)", f"{m_via:.3f} s", "~1 round trip",
              verdict(m_via < 5 * m_direct + 0.1)),
             ("makespan, 30 at once (direct)", f"{m_direct:.3f} s", "baseline", ""),
             ("gateway / direct", f"{m_via / m_direct:.2f}", "", ""),
             ("31 at once: 30th, 31st latency", f"{lat31[-2]:.3f} s, {lat31[-1]:.3f} s",
              "31st ~0.4 s later", verdict(0.2 <= wait31 <= 0.8)),
             ("upstream 429s", fmt_counts(u429), "0", verdict(not u429)),
             ("caller errors", fmt_counts({**ref, **fail}), "0", verdict(not ref and not fail)),
             ("users/me discovery calls (2 tokens)", str(discovery), "2", "")]
    return rows, rec


async def flood(args):
    token = "ntn_bench_flood"
    seconds = args.flood_seconds
    async with Setup("flood", {token: "ws-flood"}, {"ws-flood": BIG}) as s:
        t0 = time.monotonic()

        async def at(when, client):
            await asyncio.sleep(max(0.0, t0 + when - time.monotonic()))
            return await call(s.session, s.base, token, client)

        tasks = [at(0.0, "burst") for _ in range(30)]
        tasks += [at(i / 3.0, "steady") for i in range(int(seconds * 3))]
        calls = await asyncio.gather(*tasks)
        await asyncio.sleep(0.3)
        arr = s.fake.of(token)
        win = s.fake.token_windows[token]
    log = log_summary(s.access_log(), token)
    admitted = [a[0] for a in arr if a[4] == 200]
    times = sorted(a[0] for a in arr)
    gaps = [b - a for a, b in zip(times, times[1:])]
    run = times[-1] - t0
    util = len(admitted) / (TOKEN_BUDGET / WINDOW * run)
    u429 = upstream_429s(arr)
    ok, ref, fail = caller_outcomes(calls)
    lat = [c.latency for c in calls if c.status == 200]
    per_window = [win.spent[k] for k in sorted(win.spent)]
    rec = dict(offered=len(calls), served=ok, upstream_arrivals=len(arr),
               discovery_calls=sum(1 for a in arr if a[3] == "/v1/users/me"),
               upstream_429=u429, max_in_fake_window=max(per_window),
               fake_windows=per_window, max_in_any_60s=max_in_span(admitted),
               worst_gap_s=round(max(gaps), 3), run_s=round(run, 1),
               utilization=round(util, 3), refused=ref, failed=fail,
               latency_p50_s=round(statistics.median(lat), 2),
               latency_max_s=round(max(lat), 2), gateway=log)
    rows = [("offered / served", f"{len(calls)} / {ok}", "", ""),
            ("upstream 429s", fmt_counts(u429), "0", verdict(not u429)),
            ("most in one fake window", f"{max(per_window)} {per_window}", "<= 180",
             verdict(max(per_window) <= TOKEN_BUDGET)),
            ("most in any 60 s", str(max_in_span(admitted)), "", ""),
            ("worst gap between arrivals", f"{max(gaps):.3f} s", "no stall (< 2 s)",
             verdict(max(gaps) < 2.0)),
            ("utilization (of 180/min, run time)", f"{util:.3f} over {run:.1f} s", "", ""),
            ("caller latency p50 / max", f"{statistics.median(lat):.2f} s / {max(lat):.2f} s",
             "", ""),
            ("refused by the gateway", fmt_counts(ref), "", ""),
            ("caller failures", fmt_counts(fail), "0", verdict(not fail))]
    return rows, rec


async def fairness(args):
    token = "ntn_bench_fair"
    # The two callers are known by name (only configured names make callers of their own).
    known = {"NOTION_GATEWAY_LIMITS__CLIENT_WEIGHTS__SYNC-JOB": "1",
             "NOTION_GATEWAY_LIMITS__CLIENT_WEIGHTS__DASHBOARD": "1"}
    async with Setup("fairness", {token: "ws-fair"}, {"ws-fair": BIG}, env=known) as s:
        t0 = time.monotonic()

        async def at(when, client):
            await asyncio.sleep(max(0.0, t0 + when - time.monotonic()))
            return await call(s.session, s.base, token, client)

        flood_calls = [at(0.0, "sync-job") for _ in range(200)]
        dash_calls = [at(1.0 + i, "dashboard") for i in range(40)]
        done = await asyncio.gather(*flood_calls, *dash_calls)
        await asyncio.sleep(0.3)
        arr = s.fake.of(token)
    log = log_summary(s.access_log(), token)
    sync, dash = done[:200], done[200:]
    dash_lat = [c.latency for c in dash]
    u429 = upstream_429s(arr)
    s_ok, s_ref, s_fail = caller_outcomes(sync)
    d_ok, d_ref, d_fail = caller_outcomes(dash)
    sync_served = [c for c in sync if c.status == 200]
    sync_make = max(c.done for c in sync_served) - t0 if sync_served else float("nan")
    sync_max = max((c.latency for c in sync_served), default=float("nan"))
    worst, med = max(dash_lat), statistics.median(dash_lat)
    rec = dict(dashboard_latency_max_s=round(worst, 3),
               dashboard_latency_p50_s=round(med, 3), dashboard_served=d_ok,
               sync_served=s_ok, sync_refused=s_ref, sync_makespan_s=round(sync_make, 1),
               sync_latency_max_s=round(sync_max, 1),
               upstream_429=u429, failed={**s_fail, **d_fail}, dashboard_refused=d_ref,
               gateway=log)
    rows = [("dashboard latency worst / median", f"{worst:.3f} s / {med:.3f} s", "<= 2 s",
             verdict(worst <= 2.0)),
            ("dashboard served / refused", f"{d_ok} / {fmt_counts(d_ref)}", "40 / 0",
             verdict(d_ok == 40)),
            ("sync-job served / refused", f"{s_ok} / {fmt_counts(s_ref)}",
             "refused past max_wait", ""),
            ("sync-job served makespan", f"{sync_make:.1f} s", "", ""),
            ("sync-job served: latency max", f"{sync_max:.1f} s", "", ""),
            ("upstream 429s", fmt_counts(u429), "0", verdict(not u429)),
            ("caller failures", fmt_counts({**s_fail, **d_fail}), "0",
             verdict(not s_fail and not d_fail))]
    return rows, rec


async def workspace(args):
    seconds = args.workspace_seconds
    shared = ["ntn_bench_ws_a", "ntn_bench_ws_b", "ntn_bench_ws_c"]
    other = "ntn_bench_ws_other"
    ws_id, other_id = str(uuid.uuid4()), str(uuid.uuid4())
    tokens = {**{t: ws_id for t in shared}, other: other_id}
    async with Setup("workspace", tokens, {ws_id: 300, other_id: 300}) as s:
        t0 = time.monotonic()
        stop_at = t0 + seconds
        calls = defaultdict(list)

        async def worker(token):
            while time.monotonic() < stop_at:
                c = await call(s.session, s.base, token)
                calls[token].append(c)
                if c.status != 200:
                    try:
                        pause = float(c.retry_after or 1)
                    except ValueError:
                        pause = 1.0
                    await asyncio.sleep(min(pause, 5.0))

        async def sparse():
            for i in range(int(seconds / 2)):
                await asyncio.sleep(max(0.0, t0 + 2 * i - time.monotonic()))
                calls[other].append(await call(s.session, s.base, other))

        await asyncio.gather(*(worker(t) for t in shared for _ in range(4)), sparse())
        await asyncio.sleep(0.3)
        status = await s.status()
        arr = [a for a in s.fake.arrivals if a[0] >= t0]
        space = s.fake.space_windows[ws_id]
    lines = s.access_log()
    logs = {t.rsplit("_", 1)[-1]: log_summary(lines, t) for t in shared + [other]}
    by_minute = defaultdict(Counter)
    for a in arr:
        if a[4] == 429:
            by_minute[int((a[0] - t0) // WINDOW) + 1][a[5]] += 1
    minutes = max(1, math.ceil(seconds / WINDOW))
    per_min = {m: dict(by_minute.get(m, {})) for m in range(1, minutes + 1)}
    late = {m: dict(c) for m, c in by_minute.items() if m > minutes}
    if late:
        per_min.update(late)
    windows = [space.spent[k] for k in sorted(space.spent)]
    ws_times = sorted(a[0] - t0 for a in arr if a[2] == ws_id and a[4] == 200)
    space_429_at = [round(a[0] - t0, 2) for a in arr if a[4] == 429]
    discovery_at = [round(a[0] - t0, 2) for a in arr if a[3] == "/v1/users/me"]
    gaps = [(b - a, a) for a, b in zip(ws_times, ws_times[1:])]
    gap1 = max((g for g, a in gaps if a < WINDOW), default=0.0)
    gap_later = max((g for g, a in gaps if a >= WINDOW), default=0.0)
    shares = [round(space.spent[k] / space.budget, 3) for k in (1, 2)]
    all_calls = [c for t in shared + [other] for c in calls[t]]
    ok, ref, fail = caller_outcomes(all_calls)
    o_lat = [c.latency for c in calls[other]]
    names = {ws_id: "shared", other_id: "other"}
    learned = {names.get(w.get("key"), w.get("key")): w.get("window")
               for w in status.get("workspaces", [])}
    first = sum(per_min.get(1, {}).values())
    later = sum(sum(v.values()) for m, v in per_min.items() if m > 1)
    rec = dict(upstream_429_by_minute=per_min, space_windows=windows,
               space_share_min2_min3=shares,
               worst_gap_min1_s=round(gap1, 2), worst_gap_later_s=round(gap_later, 2),
               upstream_429_at_s=space_429_at, discovery_at_s=discovery_at,
               served=ok, refused=ref, failed=fail,
               other_latency_max_s=round(max(o_lat), 3),
               other_latency_p50_s=round(statistics.median(o_lat), 3),
               other_429=upstream_429s([a for a in arr if a[1] == other]),
               gateway_workspaces=learned, gateway=logs)
    rows = [(f"upstream 429s, minute {m}", fmt_counts(v),
             "a handful" if m == 1 else "0",
             verdict(sum(v.values()) <= 10) if m == 1 else verdict(not v))
            for m, v in sorted(per_min.items())]
    rows += [("workspace admitted per fake window", str(windows), "", ""),
             ("worst gap in the workspace's arrivals, minute 1 / later",
              f"{gap1:.2f} s / {gap_later:.2f} s", "", ""),
             ("share of 300/min, windows 2 and 3", f"{shares[0]:.3f}, {shares[1]:.3f}",
              ">= 0.85", verdict(min(shares) >= 0.85)),
             ("served / refused", f"{ok} / {fmt_counts(ref)}", "", verdict(not ref)),
             ("caller failures", fmt_counts(fail), "0", verdict(not fail)),
             ("other workspace's token latency max / p50",
              f"{max(o_lat):.3f} s / {statistics.median(o_lat):.3f} s", "unharmed", ""),
             ("gateway's workspace budgets (/status)",
              ", ".join(f"{k}: {w['budget']}" + (" learned" if w["learned"] else "")
                        + (" provisional" if w["provisional"] else "")
                        for k, w in learned.items() if w), "", "")]
    rec["handful_then_none"] = first <= 10 and later == 0
    return rows, rec


SCENARIOS = {"batch": batch, "flood": flood, "fairness": fairness, "workspace": workspace}


def fmt_counts(c):
    return ", ".join(f"{k}: {v}" for k, v in sorted(c.items())) if c else "0"


async def run(args):
    names = [args.scenario] if args.scenario else list(SCENARIOS)
    results = []
    for name in names:
        started = time.monotonic()
        print(f"# {name} ... (load {loadavg()})", file=sys.stderr, flush=True)
        rows, rec = await SCENARIOS[name](args)
        rec = {"scenario": name, **rec, "seconds": round(time.monotonic() - started, 1),
               "loadavg": loadavg()}
        results.append((name, rows, rec))
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", choices=list(SCENARIOS))
    ap.add_argument("--flood-seconds", type=float, default=130.0)
    ap.add_argument("--workspace-seconds", type=float, default=180.0)
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep each scenario's gateway access log (JSON lines) and print where")
    args = ap.parse_args()
    global KEEP_LOGS
    KEEP_LOGS = args.keep_logs
    if not GATEWAY.exists():
        raise SystemExit(f"{GATEWAY} missing: cargo build --release")
    print(f"# notion-gateway shaper vs Notion's documented limits; host: {os.cpu_count()} CPUs, "
          f"load average {loadavg()} (1/5/15 min; shared machine, other builds running)")
    t = time.monotonic()
    results = asyncio.run(run(args))
    width = max(len(r[0]) for _, rows, _ in results for r in rows)
    print(f"\n{'scenario':<10} {'figure':<{width}}  {'value':<40} {'target':<20} verdict")
    for name, rows, _ in results:
        for fig, value, target, v in rows:
            print(f"{name:<10} {fig:<{width}}  {value:<40} {target:<20} {v}")
    print()
    for _, _, rec in results:
        print(json.dumps(rec, separators=(",", ":")))
    print(f"# total {time.monotonic() - t:.0f} s, load average {loadavg()}")


if __name__ == "__main__":
    main()
