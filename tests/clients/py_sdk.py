"""The Python SDK (notion-client, pinned in requirements.txt), unmodified, with its base URL
pointed at the gateway. Runs the suite's mix of calls and prints one JSON line per call, like
js_sdk.mjs. Driven by tests/clients.rs.

    python py_sdk.py http://127.0.0.1:PORT TOKEN
"""

import json
import logging
import sys

from notion_client import Client
from notion_client.errors import (
    APIResponseError,
    RequestTimeoutError,
    UnknownHTTPResponseError,
)
from notion_client.helpers import collect_paginated_api

base_url, auth = sys.argv[1], sys.argv[2]
notion = Client(auth=auth, base_url=base_url, log_level=logging.ERROR)
PAGE = "59833787-2cf9-4fdf-8782-e53db20768a5"
title = {"title": [{"text": {"content": "gateway suite"}}]}
paragraph = {
    "object": "block",
    "type": "paragraph",
    "paragraph": {"rich_text": [{"type": "text", "text": {"content": "hello"}}]},
}


def run(call, f):
    try:
        value = f()
        line = {"call": call, "ok": True}
        if isinstance(value, list):
            line["count"] = len(value)
    except Exception as e:  # every failure is reported, typed
        if isinstance(e, APIResponseError):
            kind = "APIResponseError"
        elif isinstance(e, UnknownHTTPResponseError):
            kind = "UnknownHTTPResponseError"
        elif isinstance(e, RequestTimeoutError):
            kind = "RequestTimeoutError"
        else:
            kind = "other:" + type(e).__name__
        code = getattr(e, "code", None)
        line = {
            "call": call,
            "ok": False,
            "type": kind,
            "code": getattr(code, "value", code),
            "status": getattr(e, "status", None),
            "message": str(e)[:300],
            "request_id": getattr(e, "request_id", None),
        }
    print(json.dumps(line), flush=True)


run("users.me", lambda: notion.users.me())
run("search", lambda: notion.search(query="gateway"))
run("pages.create", lambda: notion.pages.create(parent={"page_id": PAGE}, properties={"title": title}))
run("pages.retrieve", lambda: notion.pages.retrieve(page_id=PAGE))
run("pages.update", lambda: notion.pages.update(page_id=PAGE, properties={"title": title}))
run(
    "data_sources.query (collect_paginated_api)",
    lambda: collect_paginated_api(notion.data_sources.query, data_source_id=PAGE),
)
run("blocks.children.append", lambda: notion.blocks.children.append(block_id=PAGE, children=[paragraph]))
run(
    "blocks.children.list (collect_paginated_api)",
    lambda: collect_paginated_api(notion.blocks.children.list, block_id=PAGE),
)
run(
    "comments.create",
    lambda: notion.comments.create(
        parent={"page_id": PAGE}, rich_text=[{"type": "text", "text": {"content": "hi"}}]
    ),
)
run("comments.list", lambda: notion.comments.list(block_id=PAGE))
run(
    "file_uploads.create",
    lambda: notion.file_uploads.create(
        mode="single_part", filename="suite.bin", content_type="application/octet-stream"
    ),
)
run(
    "file_uploads.send (300 KB)",
    lambda: notion.file_uploads.send(
        file_upload_id="59833787-2cf9-4fdf-8782-000000000700",
        file=("suite.bin", bytes(300 * 1024), "application/octet-stream"),
    ),
)
