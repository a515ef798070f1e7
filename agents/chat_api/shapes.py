"""OpenAI's JSON shapes for what Roster answers: completions, stream chunks, usage,
models and errors (https://platform.openai.com/docs/api-reference/chat)."""

from __future__ import annotations

import json
import math
from typing import Any

from agents.proxy import ProxyError
from billing.models import Usage
from office.models import Role

# Provider finish reasons (Anthropic, Gemini) in OpenAI's words; others pass as "stop".
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "refusal": "content_filter",
}
DONE = b"data: [DONE]\n\n"


def finish_reason(raw: str) -> str:
    """OpenAI's finish reason for a provider's."""
    return FINISH_REASONS.get(raw, "stop")


def usage_document(usage: Usage) -> dict[str, Any]:
    """The usage object of a settled ledger row: what Roster billed, in OpenAI's names."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def completion_document(
    *, response_id: str, created: int, role: Role, text: str, finish: str, usage: Usage
) -> dict[str, Any]:
    """A chat.completion object."""
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": role.slug,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason(finish),
            }
        ],
        "usage": usage_document(usage),
        "system_fingerprint": None,
    }


def chunk_event(
    *,
    response_id: str,
    created: int,
    role: Role,
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    usage: Usage | None = None,
) -> bytes:
    """One `data: {chat.completion.chunk}` event: a delta, a finish reason, or (no
    choices) the usage."""
    document: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": role.slug,
        "system_fingerprint": None,
        "choices": [],
    }
    if usage is not None:
        document["usage"] = usage_document(usage)
    else:
        document["choices"] = [
            {
                "index": 0,
                "delta": delta or {},
                "logprobs": None,
                "finish_reason": None if finish is None else finish_reason(finish),
            }
        ]
    return sse(document)


def sse(document: dict[str, Any]) -> bytes:
    """One server-sent event carrying a JSON document."""
    return b"data: " + json.dumps(document, separators=(",", ":")).encode() + b"\n\n"


def error_document(exc: ProxyError) -> dict[str, Any]:
    """OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""
    return {
        "error": {
            "message": exc.message,
            "type": exc.error_type,
            "param": exc.field,
            "code": exc.code,
        }
    }


def error_headers(exc: ProxyError) -> dict[str, str]:
    """Retry-After when waiting helps; x-should-retry, which the OpenAI SDKs obey."""
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if exc.should_retry is not None:
        headers["x-should-retry"] = "true" if exc.should_retry else "false"
    return headers


def model_document(role: Role) -> dict[str, Any]:
    """A model object for a role."""
    return {
        "id": role.slug,
        "object": "model",
        "created": int(role.created_at.timestamp()),
        "owned_by": "roster",
    }
