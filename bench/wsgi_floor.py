"""The floor under bench/proxy_overhead.py: a bare WSGI application, no Django, no
database, that forwards a chat completion to the sandbox provider with one shared httpx
client, served by the same gunicorn as Roster. What it adds over calling the sandbox
directly is what any Python proxy on this stack adds on this machine (request parsing,
a thread hand-off, httpx, JSON), before Roster does any of its own work.

Started by `bench/proxy_overhead.py --floor` with ROSTER_FLOOR_UPSTREAM set to the
sandbox's address.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable

import httpx

UPSTREAM = os.environ.get("ROSTER_FLOOR_UPSTREAM", "http://127.0.0.1:8765")
client = httpx.Client(
    limits=httpx.Limits(max_connections=256, max_keepalive_connections=256), timeout=30
)


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    asked = json.loads(environ["wsgi.input"].read(length))
    answer = client.post(
        UPSTREAM + "/v1/chat/completions",
        json={"model": asked["upstream"], "max_tokens": 256, "messages": asked["messages"]},
        headers={"Authorization": "Bearer sandbox-bench-key"},
    )
    body = json.dumps(answer.json()).encode()
    start_response(
        f"{answer.status_code} OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]
