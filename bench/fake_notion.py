#!/usr/bin/env python3
"""A small fake Notion API for the benchmarks (python3 standard library only, asyncio).

    python3 bench/fake_notion.py --port 9000 [--rate 3 --burst 3] [faults...]

Answers every `/v1/*` request like api.notion.com as far as a rate-shaping proxy can tell:

* no `Authorization: Bearer ...` (or a token in the --invalid-share of tokens, chosen by the
  token's hash) -> 401 `unauthorized`;
* a strict GCRA per token (keyed by the whole Authorization value) at --rate per second with
  --burst; over it -> 429 with Notion's error JSON (`code: rate_limited`,
  `additional_data.rate_limit_reason: public_api_request_rate_limit`,
  `additional_data.retry_after: "N"`) and `Retry-After: N` (whole seconds, at least 1);
  rejected requests spend nothing. --rate 0: no limiter;
* faults after the limiter admitted a request (never for tokens starting with --clean-prefix,
  which are never in the --invalid-share either):
  --p429 (a 429 as above with Retry-After --retry-after), --p502 (a CDN-style HTML 502),
  --p-slow (the answer comes --slow-ms later);
* `GET /v1/users/me`: a bot user (with `bot.workspace_id`, one workspace per token, when
  --workspaces is given); any other request: 200 with a small JSON list or page, after
  --latency-ms.

Control endpoints (never limited, never faulted): `GET /__stats` (totals; no token is ever
shown) and `POST /__config` with a JSON object of p429, p502, p_slow, slow_ms, latency_ms,
retry_after, invalid_share to change the faults at run time. Keep-alive HTTP/1.1, request
bodies with Content-Length or chunked. Binds to 127.0.0.1 only.
"""
import argparse
import asyncio
import hashlib
import json
import math
import random
import time
import uuid
from collections import Counter

TUNABLE = ("p429", "p502", "p_slow", "slow_ms", "latency_ms", "retry_after", "invalid_share")
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           429: "Too Many Requests", 502: "Bad Gateway"}
HTML_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            b"<center><h1>502 Bad Gateway</h1></center>\r\n"
            b"<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n")


class Fake:
    def __init__(self, cfg):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.tat = {}  # GCRA theoretical arrival time per token hash
        self.totals = Counter()
        self.tokens = set()

    def gcra(self, key, now):
        """(allowed, seconds until allowed); a rejection spends nothing."""
        if self.cfg.rate <= 0:
            return True, 0.0
        t_emit = 1.0 / self.cfg.rate
        tau = (max(1, self.cfg.burst) - 1) * t_emit
        tat = max(self.tat.get(key, now), now)
        if tat - now > tau + 1e-9:
            return False, tat - tau - now
        self.tat[key] = tat + t_emit
        return True, 0.0

    def stats(self):
        return {"totals": dict(self.totals), "distinct_tokens": len(self.tokens),
                "config": {k: getattr(self.cfg, k) for k in TUNABLE}}


def js(status, obj, extra=None):
    return status, "application/json", json.dumps(obj).encode(), extra or {}


def notion_error(status, code, message, additional=None, extra=None):
    body = {"object": "error", "status": status, "code": code, "message": message,
            "request_id": str(uuid.uuid4())}
    if additional is not None:
        body["additional_data"] = additional
    return js(status, body, extra)


def rate_limited(wait):
    wait = str(max(1, math.ceil(wait)))
    return notion_error(429, "rate_limited",
                        "You have been rate limited. Please try again in a few minutes.",
                        {"rate_limit_reason": "public_api_request_rate_limit",
                         "retry_after": wait}, {"Retry-After": wait})


async def answer(fake, method, path, headers, body):
    """(status, content type, body bytes, extra headers) for one request."""
    cfg, t = fake.cfg, fake.totals
    if path == "/__stats":
        return js(200, fake.stats())
    if path == "/__config" and method == "POST":
        for k, v in json.loads(body or b"{}").items():
            if k in TUNABLE:
                setattr(cfg, k, type(getattr(cfg, k))(v))
        return js(200, fake.stats()["config"])
    t["arrivals"] += 1
    if not path.startswith("/v1/"):
        t["sent_404"] += 1
        return notion_error(404, "invalid_request_url", "Invalid request URL.")
    auth = headers.get("authorization", "")
    token = auth[7:].strip() if auth.startswith("Bearer ") else ""
    key = hashlib.sha256(auth.encode()).digest()[:8]
    if token:
        fake.tokens.add(key)
    clean = bool(cfg.clean_prefix) and token.startswith(cfg.clean_prefix)
    if not token or (not clean and int.from_bytes(key[:2], "big") < cfg.invalid_share * 65536):
        t["sent_401"] += 1
        return notion_error(401, "unauthorized", "API token is invalid.")
    allowed, wait = fake.gcra(key, time.monotonic())
    if not allowed:
        t["sent_429"] += 1
        t["limiter_429"] += 1
        return rate_limited(wait)
    if not clean:
        r = fake.rng.random()
        if r < cfg.p429:
            t["sent_429"] += 1
            t["injected_429"] += 1
            return rate_limited(cfg.retry_after)
        if r < cfg.p429 + cfg.p502:
            t["injected_502"] += 1
            return 502, "text/html", HTML_502, {}
        if r < cfg.p429 + cfg.p502 + cfg.p_slow:
            t["slow"] += 1
            await asyncio.sleep(cfg.slow_ms / 1000)
    if cfg.latency_ms:
        await asyncio.sleep(cfg.latency_ms / 1000)
    t["sent_200"] += 1
    if method == "GET" and path.split("?", 1)[0] == "/v1/users/me":
        bot = {"owner": {"type": "workspace", "workspace": True}, "workspace_name": "Fake"}
        if cfg.workspaces:
            bot["workspace_id"] = str(uuid.UUID(bytes=hashlib.sha256(b"ws" + key).digest()[:16]))
        return js(200, {"object": "user", "id": str(uuid.UUID(bytes=(key * 2)[:16])),
                        "name": "bench bot", "avatar_url": None, "type": "bot", "bot": bot})
    if method == "GET" and path.startswith("/v1/pages/"):
        pid = path[len("/v1/pages/"):].split("?", 1)[0]
        return js(200, {"object": "page", "id": pid, "archived": False, "in_trash": False,
                        "properties": {"title": {"id": "title", "type": "title", "title": []}}})
    return js(200, {"object": "list", "results": [], "next_cursor": None, "has_more": False,
                    "type": "page_or_database", "page_or_database": {}})


async def read_body(reader, headers):
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readexactly(2)
    n = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(n) if n else b""


async def serve(fake, reader, writer):
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await read_body(reader, headers)
            status, ctype, data, extra = await answer(fake, method, target, headers, body)
            close = headers.get("connection", "").lower() == "close"
            out = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
                   f"Content-Type: {ctype}", f"Content-Length: {len(data)}",
                   f"x-request-id: {uuid.uuid4()}"]
            out += [f"{k}: {v}" for k, v in extra.items()]
            if close:
                out.append("Connection: close")
            writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + data)
            await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        writer.close()


async def main_async(cfg):
    fake = Fake(cfg)
    server = await asyncio.start_server(lambda r, w: serve(fake, r, w), "127.0.0.1", cfg.port,
                                        limit=1 << 20, backlog=1024)
    async with server:
        await server.serve_forever()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, default=3.0, help="per token per second; 0: none")
    ap.add_argument("--burst", type=int, default=3)
    ap.add_argument("--p429", type=float, default=0.0)
    ap.add_argument("--retry-after", type=int, default=1)
    ap.add_argument("--p502", type=float, default=0.0)
    ap.add_argument("--p-slow", type=float, default=0.0)
    ap.add_argument("--slow-ms", type=float, default=2000.0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--invalid-share", type=float, default=0.0)
    ap.add_argument("--clean-prefix", default="")
    ap.add_argument("--workspaces", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    cfg = ap.parse_args()
    try:
        asyncio.run(main_async(cfg))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
