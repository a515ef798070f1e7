"""OpenAI chat completions, plain and in OpenRouter's flavour (which adds usage.cost).

Shapes follow https://platform.openai.com/docs/api-reference/chat and
https://openrouter.ai/docs/api-reference/overview (usage accounting).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from agents.sandbox.behaviour import CacheMode, Prompt, Turn
from agents.sandbox.wire.base import (
    ERROR_STATUS,
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

# System-like roles become the system prompt; OpenAI's newer "developer" role is one.
SYSTEM_ROLES = frozenset({"system", "developer"})
TURN_ROLES = frozenset({"user", "assistant", "tool"})

OPENAI_ERRORS: dict[ErrorKind, tuple[str, str | None]] = {
    # kind: (error.type, error.code), as OpenAI documents them
    ErrorKind.INVALID: ("invalid_request_error", None),
    ErrorKind.AUTH: ("invalid_request_error", "invalid_api_key"),
    ErrorKind.NOT_FOUND: ("invalid_request_error", "unknown_url"),
    ErrorKind.RATE_LIMITED: ("requests", "rate_limit_exceeded"),
    ErrorKind.SERVER: ("server_error", None),
    ErrorKind.UNAVAILABLE: ("server_error", "service_unavailable"),
}


class OpenAIChatFormat:
    """`POST /v1/chat/completions` (openai) or `/api/v1/chat/completions` (openrouter)."""

    cache_mode = CacheMode.AUTOMATIC

    def __init__(self, *, openrouter: bool) -> None:
        self.openrouter = openrouter
        self.name = "openrouter" if openrouter else "openai"
        self.id_prefix = "gen-" if openrouter else "chatcmpl-"

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        scheme, _, key = headers.get("Authorization", "").partition(" ")
        return key.strip() if scheme.lower() == "bearer" and key.strip() else None

    def missing_header(self, headers: Mapping[str, str]) -> str | None:
        return None

    def model_hint(self, payload: Any, path_model: str) -> str:
        model = payload.get("model") if isinstance(payload, dict) else None
        return model if isinstance(model, str) else ""

    def parse(self, payload: Any, *, path_model: str, streaming_path: bool) -> Prompt:
        request = request_object(payload)
        model = required_model(request)
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("messages is required: a non-empty list of messages")
        system_parts: list[str] = []
        turns: list[Turn] = []
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                raise InvalidRequest(f"messages[{index}] must be an object")
            role = message.get("role")
            text = text_of_content(message.get("content"), where=f"messages[{index}].content")
            if role in SYSTEM_ROLES:
                system_parts.append(text)
            elif role in TURN_ROLES:
                turns.append(Turn(role=role, text=text))
            else:
                raise InvalidRequest(
                    f"messages[{index}].role must be one of system, developer, user, "
                    f"assistant, tool; got {role!r}"
                )
        # max_completion_tokens is OpenAI's current name; max_tokens the older one.
        limit = request.get("max_completion_tokens")
        limit_name = "max_completion_tokens"
        if limit is None:
            limit, limit_name = request.get("max_tokens"), "max_tokens"
        stream = request.get("stream", False)
        if not isinstance(stream, bool):
            raise InvalidRequest("stream must be true or false")
        options = request.get("stream_options") or {}
        if not isinstance(options, dict):
            raise InvalidRequest("stream_options must be an object")
        return Prompt(
            model=model,
            system="\n\n".join(system_parts),
            turns=tuple(turns),
            max_tokens=optional_positive_int(limit, name=limit_name),
            stream=stream,
            stream_usage=options.get("include_usage") is True,
        )

    def auth_error_message(self, key: str | None) -> str:
        if key is None:
            return (
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'; "
                "the sandbox provider accepts keys that start with 'sandbox'."
            )
        return (
            f"Incorrect API key provided: {key}. "
            "The sandbox provider accepts keys that start with 'sandbox'."
        )

    def error_body(self, kind: ErrorKind, message: str) -> bytes:
        if self.openrouter:
            # OpenRouter's documented shape: a numeric code, the HTTP status.
            return dumps_exact({"error": {"code": ERROR_STATUS[kind], "message": message}})
        error_type, code = OPENAI_ERRORS[kind]
        return dumps_exact(
            {"error": {"message": message, "type": error_type, "param": None, "code": code}}
        )

    def _usage(self, reply: Reply) -> dict[str, Any]:
        usage = reply.completion.usage
        shaped: dict[str, Any] = {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
        }
        if self.openrouter:
            if reply.cost is not None:
                shaped["cost"] = reply.cost
            shaped["is_byok"] = False
            shaped["prompt_tokens_details"] = {
                "cached_tokens": usage.cached_input_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
            }
            shaped["cost_details"] = {"upstream_inference_cost": None}
        else:
            shaped["prompt_tokens_details"] = {"cached_tokens": usage.cached_input_tokens}
        shaped["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
        return shaped

    def _envelope(self, reply: Reply, object_type: str) -> dict[str, Any]:
        envelope: dict[str, Any] = {
            "id": reply.response_id,
            "object": object_type,
            "created": reply.created,
            "model": reply.prompt.model,
        }
        if self.openrouter:
            envelope["provider"] = "Sandbox"
        return envelope

    def body(self, reply: Reply) -> bytes:
        completion = reply.completion
        document = self._envelope(reply, "chat.completion")
        document["choices"] = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text, "refusal": None},
                "logprobs": None,
                "finish_reason": "length" if completion.truncated else "stop",
            }
        ]
        if reply.report_usage:
            document["usage"] = self._usage(reply)
        return dumps_exact(document)

    def stream(self, reply: Reply, query: Mapping[str, str]) -> StreamBody:
        return StreamBody(content_type="text/event-stream", chunks=self._chunks(reply))

    def _chunks(self, reply: Reply) -> Iterator[bytes]:
        # OpenRouter always ends a stream with usage; OpenAI only when the request set
        # stream_options.include_usage, and then every other chunk carries "usage": null.
        include_usage = reply.report_usage and (self.openrouter or reply.prompt.stream_usage)

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> bytes:
            document = self._envelope(reply, "chat.completion.chunk")
            document["choices"] = [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ]
            if include_usage:
                document["usage"] = None
            return sse_event(dumps_exact(document))

        yield chunk({"role": "assistant", "content": ""}, None)
        for piece in answer_pieces(reply.completion.text):
            yield chunk({"content": piece}, None)
        yield chunk({}, "length" if reply.completion.truncated else "stop")
        if include_usage:
            document = self._envelope(reply, "chat.completion.chunk")
            document["choices"] = []
            document["usage"] = self._usage(reply)
            yield sse_event(dumps_exact(document))
        yield sse_event(b"[DONE]")
