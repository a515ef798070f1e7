"""The sandbox provider's HTTP server: routes, the answer pipeline, control endpoints.

One asyncio process holds all state (request log, fault counters, prompt-cache memory),
so it runs single-process; it is cheap enough per request that one core outruns the
Roster workers it stands in for. It never touches the Django database.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from aiohttp import web

from agents.sandbox.behaviour import (
    Completion,
    DirectiveError,
    Fault,
    FaultCounter,
    PromptCacheMemory,
    complete,
    parse_directives,
    prompt_digest,
)
from agents.sandbox.catalog import SandboxCatalog, load_catalog
from agents.sandbox.pages import add_page_routes
from agents.sandbox.request_log import DEFAULT_MEMORY_LIMIT, RequestLog
from agents.sandbox.wire.anthropic_messages import AnthropicMessagesFormat
from agents.sandbox.wire.base import (
    ERROR_STATUS,
    MALFORMED_BODY,
    MALFORMED_STREAM,
    ErrorKind,
    InvalidRequest,
    Reply,
    WireFormat,
)
from agents.sandbox.wire.exact_json import dumps_exact
from agents.sandbox.wire.gemini import GeminiFormat
from agents.sandbox.wire.openai_chat import OpenAIChatFormat
from billing.pricing import cost_of

DIRECTIVES_HEADER = "X-Sandbox-Directives"
CALL_ID_HEADER = "X-Roster-Call-Id"
ACCEPTED_KEY_PREFIX = "sandbox"

# Long prompts (benchmarks, history compression tests) must fit; aiohttp's default is 1 MiB.
MAX_REQUEST_BYTES = 32 * 1024 * 1024

# How often a hanging request checks whether its client has given up.
HANG_POLL_SECONDS = 0.2

FAULT_ERRORS: dict[Fault, tuple[ErrorKind, str]] = {
    Fault.RATE_LIMITED: (ErrorKind.RATE_LIMITED, "Rate limit reached (simulated by the sandbox)"),
    Fault.SERVER_ERROR: (ErrorKind.SERVER, "Internal server error (simulated by the sandbox)"),
    Fault.UNAVAILABLE: (ErrorKind.UNAVAILABLE, "Service unavailable (simulated by the sandbox)"),
    Fault.BAD_REQUEST: (ErrorKind.INVALID, "Bad request (simulated by the sandbox)"),
}


@dataclass(frozen=True)
class SandboxConfig:
    """How one sandbox server behaves; every field has a test-friendly default."""

    catalog_path: Path | None = None  # None: no catalog, so no cost for any model
    latency: float = 0.0  # seconds before each answer, unless a directive says otherwise
    log_file: Path | None = None  # JSONL copy of the request log
    log_memory_limit: int = DEFAULT_MEMORY_LIMIT
    hang_seconds: float = 3600.0  # far beyond any client timeout


@dataclass
class SandboxState:
    """Everything the server remembers between requests; `reset` forgets it."""

    config: SandboxConfig
    catalog: SandboxCatalog
    log: RequestLog
    faults: FaultCounter = field(default_factory=FaultCounter)
    cache: PromptCacheMemory = field(default_factory=PromptCacheMemory)

    def reset(self) -> None:
        self.log.clear()
        self.faults.clear()
        self.cache.clear()


STATE = web.AppKey("sandbox_state", SandboxState)


def build_app(config: SandboxConfig) -> web.Application:
    """Return the sandbox application: provider endpoints and /_sandbox control endpoints.

    Raises CatalogError if the configured catalog cannot be read.
    """
    catalog = load_catalog(config.catalog_path) if config.catalog_path else SandboxCatalog()
    state = SandboxState(
        config=config,
        catalog=catalog,
        log=RequestLog(path=config.log_file, memory_limit=config.log_memory_limit),
    )
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[STATE] = state

    openai = OpenAIChatFormat(openrouter=False)
    openrouter = OpenAIChatFormat(openrouter=True)
    anthropic = AnthropicMessagesFormat()
    gemini = GeminiFormat()
    router = app.router
    router.add_post("/v1/chat/completions", ProviderEndpoint(openai, state).handle)
    router.add_post("/api/v1/chat/completions", ProviderEndpoint(openrouter, state).handle)
    router.add_post("/v1/messages", ProviderEndpoint(anthropic, state).handle)
    for version in ("v1beta", "v1"):
        router.add_post(
            f"/{version}/models/{{model}}:generateContent", ProviderEndpoint(gemini, state).handle
        )
        router.add_post(
            f"/{version}/models/{{model}}:streamGenerateContent",
            ProviderEndpoint(gemini, state, streaming_path=True).handle,
        )
    router.add_get("/_sandbox/health", _health)
    router.add_get("/_sandbox/requests", _requests)
    router.add_post("/_sandbox/reset", _reset)
    add_page_routes(router)
    router.add_route("*", "/{tail:.*}", _not_found)

    async def close_log(app: web.Application) -> None:
        app[STATE].log.close()

    app.on_cleanup.append(close_log)
    return app


class ProviderEndpoint:
    """One provider endpoint: authenticate, parse, apply directives, answer, log."""

    def __init__(
        self, wire: WireFormat, state: SandboxState, *, streaming_path: bool = False
    ) -> None:
        self.wire = wire
        self.state = state
        self.streaming_path = streaming_path

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one request to this endpoint (the aiohttp handler)."""
        wire, state = self.wire, self.state
        headers = request.headers
        body = await request.read()
        path_model = request.match_info.get("model", "")
        try:
            payload = json.loads(body)
            decode_error = ""
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
            payload, decode_error = None, str(exc)
        exchange = _Exchange(
            state=state,
            wire=wire,
            call_id=headers.get(CALL_ID_HEADER),
            path=request.path,
            model=wire.model_hint(payload, path_model),
        )

        # The request's own errors are answered at once: no latency, no directives.
        key = wire.api_key(headers, request.query)
        if key is None or not key.startswith(ACCEPTED_KEY_PREFIX):
            return exchange.error(ErrorKind.AUTH, wire.auth_error_message(key))
        missing = wire.missing_header(headers)
        if missing:
            return exchange.error(ErrorKind.INVALID, missing)
        if decode_error:
            return exchange.error(
                ErrorKind.INVALID, f"the request body is not valid JSON: {decode_error}"
            )
        try:
            prompt = wire.parse(payload, path_model=path_model, streaming_path=self.streaming_path)
            directives = parse_directives(headers.get(DIRECTIVES_HEADER), prompt.texts())
        except (InvalidRequest, DirectiveError) as exc:
            return exchange.error(ErrorKind.INVALID, str(exc))
        exchange.stream = prompt.stream

        digest = prompt_digest(prompt)
        applies = state.faults.fault_applies(directives, model=prompt.model, digest=digest)
        fault = directives.fault if applies else None
        exchange.fault = fault
        latency = state.config.latency if directives.latency is None else directives.latency
        if fault is Fault.HANG and not await _hang(request, state.config.hang_seconds):
            # The client gave up: nothing is logged, and this response goes nowhere.
            return web.Response(status=204)
        if latency > 0:
            exchange.latency = latency
            # Not cancelled if the client leaves: the entry is still logged below, as a
            # real provider bills work it finished.
            await asyncio.sleep(latency)

        if fault in FAULT_ERRORS:
            kind, message = FAULT_ERRORS[fault]
            response_headers = {}
            if fault is Fault.RATE_LIMITED and directives.retry_after is not None:
                response_headers["Retry-After"] = directives.retry_after
            return exchange.error(kind, message, headers=response_headers)
        if fault is Fault.UNAUTHORIZED:
            return exchange.error(ErrorKind.AUTH, wire.auth_error_message(key))
        if fault is Fault.MALFORMED:
            exchange.log(200)
            if prompt.stream:
                return await _send_stream(request, "text/event-stream", iter([MALFORMED_STREAM]))
            return web.Response(body=MALFORMED_BODY, content_type="application/json")

        completion = complete(
            prompt,
            directives,
            digest=digest,
            cache=state.cache,
            scope=wire.name,
            mode=wire.cache_mode,
        )
        reply = Reply(
            prompt=prompt,
            completion=completion,
            response_id=f"{wire.id_prefix}{secrets.token_hex(12)}",
            created=int(time.time()),
            cost=_cost(state.catalog, prompt.model, completion),
            report_usage=fault is not Fault.NO_USAGE,
        )
        exchange.log(200, completion=completion, cost=reply.cost)
        if fault is Fault.TRUNCATED:
            return await _send_truncated(request, wire, reply, stream=prompt.stream)
        if prompt.stream:
            streamed = wire.stream(reply, request.query)
            return await _send_stream(request, streamed.content_type, streamed.chunks)
        return web.Response(body=wire.body(reply), content_type="application/json")


@dataclass
class _Exchange:
    """What the log needs to know about one request, filled in as it is handled."""

    state: SandboxState
    wire: WireFormat
    call_id: str | None
    path: str
    model: str
    stream: bool = False
    fault: Fault | None = None
    latency: float = 0.0

    def log(
        self, status: int, *, completion: Completion | None = None, cost: Decimal | None = None
    ) -> None:
        usage = completion.usage if completion is not None else None
        self.state.log.record(
            call_id=self.call_id,
            wire=self.wire.name,
            path=self.path,
            model=self.model,
            status=status,
            fault=None if self.fault is None else self.fault.value,
            stream=self.stream,
            latency=self.latency,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cached_input_tokens=usage.cached_input_tokens if usage else 0,
            cache_write_tokens=usage.cache_write_tokens if usage else 0,
            reasoning_tokens=usage.reasoning_tokens if usage else 0,
            cost=cost,
        )

    def error(
        self, kind: ErrorKind, message: str, *, headers: dict[str, str] | None = None
    ) -> web.Response:
        status = ERROR_STATUS[kind]
        self.log(status)
        return web.Response(
            status=status,
            body=self.wire.error_body(kind, message),
            content_type="application/json",
            headers=headers,
        )


def _cost(catalog: SandboxCatalog, model: str, completion: Completion) -> Decimal | None:
    prices = catalog.prices_for(model)
    if prices is None or not prices.is_priced:
        return None
    return cost_of(completion.usage, prices)


async def _hang(request: web.Request, seconds: float) -> bool:
    """Wait `seconds`, or until the client disconnects; return True if the wait ran out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        await asyncio.sleep(min(HANG_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
    return True


async def _send_stream(
    request: web.Request, content_type: str, chunks: Iterable[bytes]
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": content_type, "Cache-Control": "no-cache"}
    )
    try:
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    except ConnectionError:
        pass  # the client left mid-stream; the request is already logged
    return response


async def _send_truncated(
    request: web.Request, wire: WireFormat, reply: Reply, *, stream: bool
) -> web.StreamResponse:
    """Send the first half of the answer, then drop the connection: a stream without its
    end (no usage chunk, no terminator) or a body shorter than its Content-Length. The
    answer was produced, so the request is logged (and billed) as a real provider does."""
    if stream:
        streamed = wire.stream(reply, request.query)
        chunks = list(streamed.chunks)
        sent = chunks[: max(1, len(chunks) // 2)]
        response = web.StreamResponse(
            headers={"Content-Type": streamed.content_type, "Cache-Control": "no-cache"}
        )
    else:
        body = wire.body(reply)
        sent = [body[: len(body) // 2]]
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(body)
    try:
        await response.prepare(request)
        for chunk in sent:
            await response.write(chunk)
    except ConnectionError:
        return response
    if request.transport is not None:
        request.transport.close()  # no chunked terminator: the client sees a cut body
    return response


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _requests(request: web.Request) -> web.Response:
    since_raw = request.query.get("since", "0")
    if not since_raw.isdigit():
        return web.json_response({"error": "since must be a whole number >= 0"}, status=400)
    entries = request.app[STATE].log.entries(
        call_id=request.query.get("call_id"), since=int(since_raw)
    )
    return web.Response(
        body=dumps_exact({"requests": [entry.as_dict() for entry in entries]}),
        content_type="application/json",
    )


async def _reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.json_response({"ok": True})


async def _not_found(request: web.Request) -> web.Response:
    message = f"the sandbox provider has no endpoint {request.method} {request.path}"
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "code": "unknown_url"}},
        status=404,
    )


async def start_server(
    app: web.Application, host: str, port: int, *, shutdown_timeout: float = 5.0
) -> tuple[web.AppRunner, int]:
    """Start serving app on host:port (0: any free port); return the runner and the port."""
    # handler_cancellation stays off: a latency sleep must finish (and log) even when
    # the client hangs up; hangs watch the connection themselves.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound_port = int(runner.addresses[0][1])
    return runner, bound_port


def run(
    host: str,
    port: int,
    config: SandboxConfig,
    *,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve until SIGINT or SIGTERM; call announce with the base URL once listening."""

    async def serve() -> None:
        runner, bound_port = await start_server(build_app(config), host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            shown_host = f"[{host}]" if ":" in host else host
            announce(f"http://{shown_host}:{bound_port}")
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(serve())
