"""The small interface every provider adapter implements, and its one error type."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from billing.pricing import TokenUsage


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "user" or "assistant"; the system prompt travels in ChatRequest.system
    content: str


@dataclass(frozen=True)
class ChatRequest:
    model: str  # the name the provider expects
    messages: tuple[ChatMessage, ...]
    max_tokens: int
    system: str = ""
    # Stable text sent right after the system prompt and before the messages, such as a
    # spec-then-execute step's spec: with the system prompt it forms the prompt's stable
    # prefix, marked cacheable where the provider needs it (Anthropic) and kept first
    # where caching is automatic (OpenAI-compatible, Gemini).
    prefix: str = ""
    # Our id for this call, sent as a header so the provider's logs can be matched to the
    # ledger (the sandbox provider records it).
    call_id: str = ""
    # Seconds this call may take instead of ROSTER_PROVIDER_TIMEOUT (a route candidate's
    # own timeout); None: the shared client's.
    timeout: float | None = None
    # Sampling, passed through when a client sets it (the OpenAI-compatible endpoint);
    # None / (): the provider's default.
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()

    @property
    def instructions(self) -> str:
        """The system prompt and the prefix as one text, for wire formats that take a
        single system message (a blank line between them)."""
        return "\n\n".join(part for part in (self.system, self.prefix) if part)


@dataclass(frozen=True)
class ChatResult:
    text: str
    usage: TokenUsage | None  # None: the provider reported no usage (billing estimates it)
    reported_cost: Decimal | None = None  # the provider's own figure (OpenRouter usage.cost)
    model: str = ""  # the model the provider says answered
    finish_reason: str = ""
    provider_request_id: str = ""
    raw_usage: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to call: base URL and the decrypted key (never logged)."""

    base_url: str
    api_key: str

    def __repr__(self) -> str:  # keep the key out of tracebacks and debug output
        return f"Endpoint(base_url={self.base_url!r}, api_key='***')"


class ProviderError(Exception):
    """A call that did not produce a result.

    `permanent` says whether trying again can help: 400/401/403/404 cannot, 408/429/5xx,
    timeouts and connection errors can. `retry_after` is the provider's own hint, seconds.
    `reached_provider` is False when the request never left (connection refused, DNS):
    nothing can have been billed.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        status_code: int | None = None,
        retry_after: float | None = None,
        reached_provider: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status_code = status_code
        self.retry_after = retry_after
        self.reached_provider = reached_provider

    def __str__(self) -> str:
        return self.message

    @property
    def may_be_billed(self) -> bool:
        """Whether the provider may have done (and billed) the work: the request reached
        it and no error status came back (a timeout, a connection lost mid-answer, a 2xx
        answer that could not be read)."""
        return self.reached_provider and (self.status_code is None or 200 <= self.status_code < 300)


@dataclass(frozen=True)
class ServerSentEvent:
    """One event of a provider's text/event-stream: its `event` name ("" when unnamed)
    and its data lines joined by newlines."""

    event: str
    data: str


class StreamReader(Protocol):
    """Reads one wire format's stream events into text deltas and a final ChatResult."""

    def feed(self, event: ServerSentEvent) -> str:
        """Take one event; return the answer text it adds ("" for none). Raises
        ProviderError for an error event or a malformed one."""
        ...

    @property
    def done(self) -> bool:
        """True once the stream's terminal event has arrived (nothing more to read)."""
        ...

    def result(self, *, ended: bool) -> ChatResult:
        """The whole answer. `ended`: the connection closed after the last event.
        Raises ProviderError when the stream stopped before its answer was complete."""
        ...


class ChatStream:
    """An answer arriving in pieces. Iterate for its text deltas; once iteration ends,
    `result` holds the whole answer (text, usage mapped as the non-streamed call maps
    it, finish reason). Iteration raises ProviderError for a failed, truncated or
    malformed stream. `close()` drops the connection (the provider stops generating).
    """

    def __init__(
        self, events: Iterator[ServerSentEvent], reader: StreamReader, close: Callable[[], None]
    ) -> None:
        self._events = events
        self._reader = reader
        self._close = close
        self._parts: list[str] = []  # the answer so far, joined when asked for
        self.result: ChatResult | None = None

    @property
    def text(self) -> str:
        """The answer text received so far."""
        return "".join(self._parts)

    def __iter__(self) -> Iterator[str]:
        ended = True
        try:
            for event in self._events:
                delta = self._reader.feed(event)
                if delta:
                    self._parts.append(delta)
                    yield delta
                if self._reader.done:
                    ended = False
                    break
            self.result = self._reader.result(ended=ended)
        finally:
            # Also when the stream broke or its reader abandoned it: the connection goes
            # back to the pool now, not when the generator is collected.
            self.close()

    def close(self) -> None:
        """Close the upstream connection; safe to call more than once."""
        self._close()


class Adapter(Protocol):
    """One wire format. `complete` returns a ChatResult or raises ProviderError;
    `stream` returns a ChatStream (errors surface while iterating it)."""

    def complete(self, *, endpoint: Endpoint, request: ChatRequest) -> ChatResult: ...

    def stream(self, *, endpoint: Endpoint, request: ChatRequest) -> ChatStream: ...
