"""Anthropic Messages: `POST /v1/messages`, as https://docs.anthropic.com/en/api/messages
documents it, with explicit prompt caching (cache_control on the system prompt)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from agents.sandbox.behaviour import CacheMode, Prompt, Turn
from agents.sandbox.wire.base import (
    ErrorKind,
    InvalidRequest,
    Reply,
    StreamBody,
    answer_pieces,
    optional_positive_int,
    request_object,
    required_model,
    sse_event,
    text_of_content,
)
from agents.sandbox.wire.exact_json import dumps_exact

ANTHROPIC_ERROR_TYPES: dict[ErrorKind, str] = {
    ErrorKind.INVALID: "invalid_request_error",
    ErrorKind.AUTH: "authentication_error",
    ErrorKind.NOT_FOUND: "not_found_error",
    ErrorKind.RATE_LIMITED: "rate_limit_error",
    ErrorKind.SERVER: "api_error",
    ErrorKind.UNAVAILABLE: "overloaded_error",
}


class AnthropicMessagesFormat:
    """The Anthropic Messages API."""

    name = "anthropic"
    cache_mode = CacheMode.EXPLICIT
    id_prefix = "msg_"

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return headers.get("x-api-key") or None

    def missing_header(self, headers: Mapping[str, str]) -> str | None:
        if not headers.get("anthropic-version"):
            return "anthropic-version: header is required"
        return None

    def model_hint(self, payload: Any, path_model: str) -> str:
        model = payload.get("model") if isinstance(payload, dict) else None
        return model if isinstance(model, str) else ""

    def parse(self, payload: Any, *, path_model: str, streaming_path: bool) -> Prompt:
        request = request_object(payload)
        model = required_model(request)
        if request.get("max_tokens") is None:
            raise InvalidRequest("max_tokens: Field required")
        max_tokens = optional_positive_int(request["max_tokens"], name="max_tokens")
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("messages: Field required (a non-empty list of messages)")
        turns: list[Turn] = []
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                raise InvalidRequest(f"messages.{index}: must be an object")
            role = message.get("role")
            if role not in ("user", "assistant"):
                raise InvalidRequest(
                    f"messages.{index}.role: must be 'user' or 'assistant', got {role!r}"
                )
            text = text_of_content(message.get("content"), where=f"messages.{index}.content")
            turns.append(Turn(role=role, text=text))
        system, cache_marked = _system_prompt(request.get("system"))
        stream = request.get("stream", False)
        if not isinstance(stream, bool):
            raise InvalidRequest("stream: must be true or false")
        return Prompt(
            model=model,
            system=system,
            turns=tuple(turns),
            max_tokens=max_tokens,
            stream=stream,
            cache_marked=cache_marked,
        )

    def auth_error_message(self, key: str | None) -> str:
        if key is None:
            return "x-api-key header is required"
        return f"invalid x-api-key: {key} (the sandbox provider accepts keys starting 'sandbox')"

    def error_body(self, kind: ErrorKind, message: str) -> bytes:
        return dumps_exact(
            {"type": "error", "error": {"type": ANTHROPIC_ERROR_TYPES[kind], "message": message}}
        )

    def _usage(self, reply: Reply) -> dict[str, int]:
        usage = reply.completion.usage
        # Anthropic's input_tokens are only the tokens after the last cache breakpoint:
        # cache reads and writes are reported beside them, not inside.
        return {
            "input_tokens": usage.uncached_input_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cached_input_tokens,
            "output_tokens": usage.output_tokens,
        }

    def _stop_reason(self, reply: Reply) -> str:
        return "max_tokens" if reply.completion.truncated else "end_turn"

    def body(self, reply: Reply) -> bytes:
        document: dict[str, Any] = {
            "id": reply.response_id,
            "type": "message",
            "role": "assistant",
            "model": reply.prompt.model,
            "content": [{"type": "text", "text": reply.completion.text}],
            "stop_reason": self._stop_reason(reply),
            "stop_sequence": None,
        }
        if reply.report_usage:
            document["usage"] = self._usage(reply)
        return dumps_exact(document)

    def stream(self, reply: Reply, query: Mapping[str, str]) -> StreamBody:
        return StreamBody(content_type="text/event-stream", chunks=self._events(reply))

    def _events(self, reply: Reply) -> Iterator[bytes]:
        def event(name: str, document: dict[str, Any]) -> bytes:
            return sse_event(dumps_exact({"type": name, **document}), event=name)

        message: dict[str, Any] = {
            "id": reply.response_id,
            "type": "message",
            "role": "assistant",
            "model": reply.prompt.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        final_usage: dict[str, int] = {}
        if reply.report_usage:
            usage = self._usage(reply)
            # As the real API does: message_start carries the input side and a token of
            # output; message_delta carries the final, cumulative output_tokens.
            message["usage"] = {**usage, "output_tokens": min(1, usage["output_tokens"])}
            final_usage = {"output_tokens": usage["output_tokens"]}
        yield event("message_start", {"message": message})
        yield event(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        )
        yield event("ping", {})
        for piece in answer_pieces(reply.completion.text):
            yield event(
                "content_block_delta",
                {"index": 0, "delta": {"type": "text_delta", "text": piece}},
            )
        yield event("content_block_stop", {"index": 0})
        delta: dict[str, Any] = {
            "delta": {"stop_reason": self._stop_reason(reply), "stop_sequence": None}
        }
        if final_usage:
            delta["usage"] = final_usage
        yield event("message_delta", delta)
        yield event("message_stop", {})


def _system_prompt(system: Any) -> tuple[str, bool]:
    """Return (system text, whether a block carries cache_control). Raises InvalidRequest."""
    if system is None or isinstance(system, str):
        return system or "", False
    if not isinstance(system, list):
        raise InvalidRequest("system: must be a string or a list of text blocks")
    text = text_of_content(system, where="system")
    marked = any(isinstance(block, dict) and block.get("cache_control") for block in system)
    return text, marked
