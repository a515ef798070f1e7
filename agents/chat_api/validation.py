"""Reading an OpenAI chat completion request into a ChatCall, refusing what Roster does
not do with a 400 that names the parameter (OpenAI's `param`).

Accepted: model, messages (system, developer, user, assistant; content a string or a list
of text parts), max_completion_tokens / max_tokens, stream, stream_options
(include_usage), temperature, top_p, stop, n (1 only) and user (ignored). Anything else,
such as tools, response_format, logprobs or penalties, is refused rather than silently
dropped: a client that relies on it must know it did not happen.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from agents.chat_api.selectors import role_for_model
from agents.providers.base import ChatMessage
from agents.proxy import ChatCall, ProxyError
from office.models import ApiToken

SUPPORTED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "stop",
        "n",
        "user",
    }
)
SYSTEM_ROLES = frozenset({"system", "developer"})
TURN_ROLES = frozenset({"user", "assistant"})
MESSAGE_KEYS = frozenset({"role", "content", "name"})
MAX_STOP_SEQUENCES = 4


def invalid(message: str, *, param: str | None, code: str = "invalid_value") -> ProxyError:
    """A 400 for a request that cannot be answered as sent."""
    return ProxyError(
        message,
        status_code=400,
        code=code,
        error_type="invalid_request_error",
        param=param,
        should_retry=False,
    )


def body_parse(body: bytes) -> dict[str, Any]:
    """Return a request body as a JSON object. Raises ProxyError (400) otherwise."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # also undecodable bytes
        raise invalid(
            f"The request body is not valid JSON: {exc}", param=None, code="invalid_json"
        ) from None
    if not isinstance(payload, dict):
        raise invalid("The request body must be a JSON object.", param=None, code="invalid_json")
    return payload


def chat_call_parse(*, payload: dict[str, Any], token: ApiToken) -> tuple[ChatCall, bool]:
    """Return the ChatCall a request asks for and whether to stream it.

    Raises ProxyError: 400 for a malformed or unsupported request (every check is made
    before anything is written), 404 `model_not_found` for a model that names no active
    role, 403 `model_not_allowed` for a role outside the token's scope.
    """
    unsupported = sorted(set(payload) - SUPPORTED)
    if unsupported:
        names = ", ".join(unsupported)
        raise invalid(
            f"Unsupported parameter(s): {names}. Roster's endpoint passes text conversations "
            "to a role's model; see docs/openai.md for what it accepts.",
            param=unsupported[0],
            code="unsupported_parameter",
        )
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid(
            "model is required: the slug of a Roster role, such as 'coder'.",
            param="model",
            code="missing_required_parameter" if model is None else "invalid_type",
        )
    system, messages = _messages(payload.get("messages"))
    max_tokens = _max_tokens(payload)
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("stream must be true or false.", param="stream", code="invalid_type")
    _stream_options(payload.get("stream_options"), stream=stream)
    n = payload.get("n", 1)
    if n is not None and (isinstance(n, bool) or n != 1):
        raise invalid(
            f"n must be 1: Roster returns one choice per request (got {n!r}).",
            param="n",
            code="unsupported_value",
        )
    user = payload.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("user must be a string.", param="user", code="invalid_type")
    temperature = _number(payload.get("temperature"), name="temperature", low=0, high=2)
    top_p = _number(payload.get("top_p"), name="top_p", low=0, high=1)
    stop = _stop(payload.get("stop"))
    role = role_for_model(model=model.strip(), token=token)
    call = ChatCall(
        role=role,
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=stop,
    )
    return call, stream


def _messages(value: Any) -> tuple[str, tuple[ChatMessage, ...]]:
    """Return (the system messages' text, the user and assistant turns)."""
    if not isinstance(value, list) or not value:
        raise invalid(
            "messages is required: a non-empty list of {role, content} objects.",
            param="messages",
            code="missing_required_parameter" if value is None else "invalid_type",
        )
    system: list[str] = []
    turns: list[ChatMessage] = []
    total = 0
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid(f"{where} must be an object.", param=where, code="invalid_type")
        extra = sorted(set(message) - MESSAGE_KEYS)
        if extra:
            raise invalid(
                f"{where} has unsupported field(s): {', '.join(extra)} (tool calls and "
                "other non-text features are not supported).",
                param=f"{where}.{extra[0]}",
                code="unsupported_parameter",
            )
        role = message.get("role")
        if role not in SYSTEM_ROLES and role not in TURN_ROLES:
            raise invalid(
                f"{where}.role must be one of system, developer, user, assistant; got {role!r}.",
                param=f"{where}.role",
                code="unsupported_value" if role in ("tool", "function") else "invalid_value",
            )
        text = _content(message.get("content"), where=f"{where}.content")
        total += len(text)
        if role in SYSTEM_ROLES:
            system.append(text)
        else:
            turns.append(ChatMessage(role=role, content=text))
    if not any(turn.role == "user" for turn in turns):
        raise invalid("messages must contain at least one user message.", param="messages")
    limit: int = settings.ROSTER_MAX_PROMPT_CHARS
    if total > limit:
        raise invalid(
            f"The messages have {total:,} characters; the limit is {limit:,}.",
            param="messages",
            code="prompt_too_long",
        )
    return "\n\n".join(part for part in system if part), tuple(turns)


def _content(value: Any, *, where: str) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):
        texts: list[str] = []
        for index, part in enumerate(value):
            at = f"{where}[{index}]"
            if not isinstance(part, dict):
                raise invalid(f"{at} must be an object.", param=at, code="invalid_type")
            kind = part.get("type")
            if kind != "text":
                raise invalid(
                    f"{at}.type must be 'text'; {kind!r} parts (images, audio, files) are not "
                    "supported.",
                    param=f"{at}.type",
                    code="unsupported_value",
                )
            if not isinstance(part.get("text"), str):
                raise invalid(
                    f"{at}.text must be a string.", param=f"{at}.text", code="invalid_type"
                )
            texts.append(part["text"])
        text = "\n".join(texts)
    else:
        raise invalid(
            f"{where} must be a string or a list of text parts.", param=where, code="invalid_type"
        )
    if not text.strip():
        raise invalid(f"{where} is empty.", param=where)
    return text


def _max_tokens(payload: dict[str, Any]) -> int | None:
    limit: int = settings.ROSTER_MAX_TOKENS_LIMIT
    values = {
        name: payload[name]
        for name in ("max_completion_tokens", "max_tokens")
        if payload.get(name) is not None
    }
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(f"{name} must be a whole number.", param=name, code="invalid_type")
        if not 1 <= value <= limit:
            raise invalid(f"{name} must be between 1 and {limit}; got {value}.", param=name)
    if len(set(values.values())) > 1:
        raise invalid(
            "max_completion_tokens and max_tokens disagree; send one of them.",
            param="max_tokens",
        )
    return next(iter(values.values()), None)


def _stream_options(value: Any, *, stream: bool) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise invalid(
            "stream_options must be an object.", param="stream_options", code="invalid_type"
        )
    if not stream:
        raise invalid("stream_options is only allowed with stream: true.", param="stream_options")
    extra = sorted(set(value) - {"include_usage"})
    if extra:
        raise invalid(
            f"Unsupported stream option(s): {', '.join(extra)}.",
            param=f"stream_options.{extra[0]}",
            code="unsupported_parameter",
        )
    if "include_usage" in value and not isinstance(value["include_usage"], bool):
        raise invalid(
            "stream_options.include_usage must be true or false (usage is always sent in "
            "the last chunk).",
            param="stream_options.include_usage",
            code="invalid_type",
        )


def _number(value: Any, *, name: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"{name} must be a number.", param=name, code="invalid_type")
    if not low <= value <= high:
        raise invalid(f"{name} must be between {low} and {high}; got {value}.", param=name)
    return float(value)


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if (
        not isinstance(items, list)
        or not all(isinstance(item, str) and item for item in items)
        or len(items) > MAX_STOP_SEQUENCES
    ):
        raise invalid(
            f"stop must be a non-empty string or a list of up to {MAX_STOP_SEQUENCES} of them.",
            param="stop",
            code="invalid_type",
        )
    return tuple(items)
