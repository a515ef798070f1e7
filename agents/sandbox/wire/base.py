"""What every wire format of the sandbox provides: parse a request, shape a reply."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from agents.sandbox.behaviour import CacheMode, Completion, Prompt


class ErrorKind(StrEnum):
    """The errors the sandbox sends; each wire format words them its own way."""

    INVALID = "invalid"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    SERVER = "server"
    UNAVAILABLE = "unavailable"


ERROR_STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID: 400,
    ErrorKind.AUTH: 401,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.SERVER: 500,
    ErrorKind.UNAVAILABLE: 503,
}

# fault=malformed: a 200 whose body stops halfway, as when an upstream dies mid-response.
MALFORMED_BODY = b'{"id":"sandbox-malformed","choices":[{"message":{"content":"cut off'
MALFORMED_STREAM = b'data: {"id":"sandbox-malformed","choices":[{"delta":{"content":"cut\n\n'


class InvalidRequest(ValueError):
    """The request body cannot be answered; the message says why, for the client."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One answered request, before a wire format shapes it."""

    prompt: Prompt
    completion: Completion
    response_id: str
    created: int  # Unix seconds
    cost: Decimal | None  # None: the model is not priced in the catalog
    report_usage: bool  # False with fault=no_usage: answer without usage (or cost)


@dataclass(frozen=True, slots=True)
class StreamBody:
    content_type: str
    chunks: Iterator[bytes]


def sse_event(data: bytes, event: str | None = None) -> bytes:
    """Return one server-sent event carrying data (a JSON document or `[DONE]`)."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode("ascii") + b"\ndata: " + data + b"\n\n"


def answer_pieces(text: str) -> list[str]:
    """Split an answer into word-sized stream deltas that join back to it exactly."""
    pieces: list[str] = []
    start = 0
    for index in range(1, len(text)):
        # A new piece starts at the first letter after a run of whitespace.
        if text[index - 1].isspace() and not text[index].isspace():
            pieces.append(text[start:index])
            start = index
    if start < len(text):
        pieces.append(text[start:])
    return pieces


class WireFormat(Protocol):
    """One provider API as the sandbox speaks it."""

    name: str  # "openai", "openrouter", "anthropic" or "gemini": the log's `wire`
    cache_mode: CacheMode
    id_prefix: str

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """Return the key the request authenticates with, None if it sent none."""
        ...

    def missing_header(self, headers: Mapping[str, str]) -> str | None:
        """Return an error message if a header the API requires is absent."""
        ...

    def model_hint(self, payload: Any, path_model: str) -> str:
        """Return the model a request names, "" if none (for logging failed requests)."""
        ...

    def parse(self, payload: Any, *, path_model: str, streaming_path: bool) -> Prompt:
        """Return the prompt of a decoded request body. Raises InvalidRequest."""
        ...

    def auth_error_message(self, key: str | None) -> str:
        """Return the 401 message, echoing the rejected key verbatim."""
        ...

    def error_body(self, kind: ErrorKind, message: str) -> bytes:
        """Return the API's documented error body."""
        ...

    def body(self, reply: Reply) -> bytes:
        """Return the non-streaming response body."""
        ...

    def stream(self, reply: Reply, query: Mapping[str, str]) -> StreamBody:
        """Return the streaming response: its content type and its chunks in order."""
        ...


def text_of_content(content: Any, *, where: str) -> str:
    """Return the text of a message's content: a string, or a list of content blocks.

    Text blocks (`{"type": "text", "text": ...}`, or Gemini's `{"text": ...}`) are joined
    with newlines; other blocks (images, tool calls) carry no text the sandbox reads.
    Raises InvalidRequest for any other shape.
    """
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if not isinstance(content, list):
        raise InvalidRequest(f"{where} must be a string or a list of content blocks")
    texts: list[str] = []
    for index, block in enumerate(content):
        if not isinstance(block, dict):
            raise InvalidRequest(f"{where}[{index}] must be an object")
        text = block.get("text")
        if block.get("type", "text") == "text" and text is not None:
            if not isinstance(text, str):
                raise InvalidRequest(f"{where}[{index}].text must be a string")
            texts.append(text)
    return "\n".join(texts)


def optional_positive_int(value: Any, *, name: str) -> int | None:
    """Return a token limit from a request: None if absent. Raises InvalidRequest."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest(f"{name} must be an integer >= 1, got {value!r}")
    return value


def required_model(payload: Any) -> str:
    """Return the request's model. Raises InvalidRequest if it is missing or not text."""
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("model is required: a non-empty string naming the model")
    return model


def request_object(payload: Any) -> dict[str, Any]:
    """Return the request body as a JSON object. Raises InvalidRequest otherwise."""
    if not isinstance(payload, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return payload
