"""The shared HTTP client over a real loopback socket: no mocks between us and the wire."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.providers import openai_compat
from agents.providers.base import ChatMessage, ChatRequest, Endpoint, ProviderError
from agents.providers.http import get_client, parse_retry_after, post_json, reset_client
from billing.pricing import TokenUsage
from tests import canary

DATA = Path(__file__).resolve().parent.parent / "data" / "providers"
KEY = canary.PLAIN_KEY
SLOW_SECONDS = 2.0


@dataclass
class Seen:
    """What the loopback server received."""

    requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)


def make_handler(seen: Seen) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real providers do

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(length) or b"null")
            seen.requests.append((self.path, dict(self.headers.items()), body))
            if self.path == "/slow":
                time.sleep(SLOW_SECONDS)
                self.reply(200, b'{"late": true}')
            elif self.path == "/busy":
                self.reply(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "3"})
            elif self.path == "/api/v1/chat/completions":
                self.reply(200, (DATA / "openrouter_chat.json").read_bytes())
            else:
                self.reply(200, b'{"ok": true, "cost": 0.000000000123456789012345}')

        def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)  # may fail: the client gave up (timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def loopback() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(seen))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def short_timeouts(settings: Any) -> Iterator[None]:
    settings.ROSTER_PROVIDER_TIMEOUT = 0.3
    settings.ROSTER_PROVIDER_CONNECT_TIMEOUT = 0.5
    reset_client()
    yield
    reset_client()


def test_real_call_sends_json_and_reads_exact_decimals(loopback: tuple[str, Seen]) -> None:
    url, seen = loopback
    response = post_json(
        f"{url}/echo",
        headers={"X-Roster-Call-Id": "call-42", "Authorization": f"Bearer {KEY}"},
        payload={"model": "m", "max_tokens": 5},
        provider_label="Loopback",
        secret=KEY,
    )

    assert response.status == 200
    assert response.data == {"ok": True, "cost": Decimal("0.000000000123456789012345")}
    assert str(response.data["cost"]) == "1.23456789012345E-10"
    assert response.headers["content-type"] == "application/json"
    path, headers, body = seen.requests[-1]
    assert path == "/echo"
    assert body == {"model": "m", "max_tokens": 5}
    assert headers["User-Agent"] == "Roster/0.1"
    assert headers["X-Roster-Call-Id"] == "call-42"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"


def test_real_adapter_call_parses_openrouter_usage(loopback: tuple[str, Seen]) -> None:
    url, seen = loopback
    result = openai_compat.ADAPTER.complete(
        endpoint=Endpoint(base_url=f"{url}/api/v1", api_key=KEY),
        request=ChatRequest(
            model="anthropic/claude-sonnet-4",
            messages=(ChatMessage(role="user", content="Report?"),),
            max_tokens=400,
            call_id="call-7",
        ),
    )

    assert result.usage == TokenUsage(
        input_tokens=2048,
        output_tokens=320,
        cached_input_tokens=1536,
        cache_write_tokens=256,
        reasoning_tokens=120,
    )
    assert result.reported_cost == Decimal("0.0076134")
    _, headers, body = seen.requests[-1]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert body["usage"] == {"include": True}


def test_real_timeout_is_retryable_and_reached_the_provider(loopback: tuple[str, Seen]) -> None:
    url, _ = loopback
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        post_json(f"{url}/slow", headers={}, payload={}, provider_label="Loopback", secret=KEY)
    elapsed = time.monotonic() - started

    assert caught.value.message == "Loopback timed out after 0.3 s"
    assert caught.value.permanent is False
    assert caught.value.reached_provider is True
    assert elapsed < SLOW_SECONDS  # we gave up; we did not wait for the server


def test_real_429_carries_retry_after(loopback: tuple[str, Seen]) -> None:
    url, _ = loopback
    with pytest.raises(ProviderError) as caught:
        post_json(f"{url}/busy", headers={}, payload={}, provider_label="Loopback", secret=KEY)
    assert caught.value.permanent is False
    assert caught.value.status_code == 429
    assert caught.value.retry_after == 3.0
    assert caught.value.message == "Loopback answered HTTP 429: slow down"


def test_connection_refused_never_reached_the_provider() -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ProviderError) as caught:
        post_json(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            headers={},
            payload={},
            provider_label="Loopback",
            secret=KEY,
        )
    assert caught.value.permanent is False
    assert caught.value.reached_provider is False
    assert caught.value.message.startswith("could not connect to Loopback: ")


def test_key_with_a_newline_is_refused_without_leaking(loopback: tuple[str, Seen]) -> None:
    url, seen = loopback
    bad_key = KEY + "\n"  # pasted with its line ending
    with pytest.raises(ProviderError) as caught:
        openai_compat.ADAPTER.complete(
            endpoint=Endpoint(base_url=url, api_key=bad_key),
            request=ChatRequest(model="m", messages=(ChatMessage("user", "hi"),), max_tokens=5),
        )
    assert caught.value.permanent is True
    assert caught.value.reached_provider is False
    assert KEY not in caught.value.message
    assert caught.value.__cause__ is None
    assert seen.requests == []


def test_invalid_base_url_is_permanent() -> None:
    with pytest.raises(ProviderError) as caught:
        post_json("ftp://127.0.0.1/x", headers={}, payload={}, provider_label="X", secret=KEY)
    assert caught.value.permanent is True
    assert caught.value.reached_provider is False


def test_client_is_built_once_from_settings_across_threads() -> None:
    clients: list[httpx.Client] = []
    barrier = threading.Barrier(32)

    def grab() -> None:
        barrier.wait()
        clients.append(get_client())

    threads = [threading.Thread(target=grab) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(clients) == 32
    assert len({id(client) for client in clients}) == 1
    client = clients[0]
    assert client.timeout == httpx.Timeout(0.3, connect=0.5)
    assert client.headers["user-agent"] == "Roster/0.1"
    assert client.follow_redirects is False


def test_reset_client_builds_a_new_client_from_current_settings(settings: Any) -> None:
    first = get_client()
    settings.ROSTER_PROVIDER_TIMEOUT = 7.0
    assert get_client() is first  # settings are read once per client
    reset_client()
    second = get_client()
    assert second is not first
    assert first.is_closed
    assert second.timeout.read == 7.0


def test_forked_child_builds_its_own_client() -> None:
    parent = get_client()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.write(write_end, b"new" if get_client() is not parent else b"same")
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 16)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert answer == b"new"
    assert get_client() is parent
    assert not parent.is_closed


def test_parse_retry_after_forms() -> None:
    now = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now=now) == 120.0
    assert parse_retry_after("1.5", now=now) == 1.5
    assert parse_retry_after("Mon, 01 Jun 2026 12:00:45 GMT", now=now) == 45.0
    assert parse_retry_after("Mon, 01 Jun 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("-5", now=now) == 0.0
    assert parse_retry_after("later", now=now) is None
    assert parse_retry_after("inf", now=now) is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
