"""The `openai_compatible` backend: one chat completion against a local model server.

Ollama, llama.cpp's server, LM Studio and vLLM all speak OpenAI's chat completions, so the
request and the answer are the provider adapter's own (`agents.providers.openai_compat`)
and travel on the shared HTTP client. Only the timeout differs: the helper's is short,
because a local model slower than that is not worth waiting for when builtin can answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

from agents.providers.base import ChatMessage, ChatRequest, Endpoint
from agents.providers.http import (
    api_url,
    body_snippet,
    get_client,
    parse_json,
    provider_error,
    provider_error_message,
    provider_label,
)
from agents.providers.openai_compat import chat_headers, chat_payload, parse_chat_completion
from billing.estimation import prompt_tokens_estimate, tokens_estimate

WIRE = "local helper"
# Reasoning models (DeepSeek-R1, Qwen3) think aloud between these tags before answering.
THINKING = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class LocalAnswer:
    text: str  # the model's answer, its thinking removed
    input_tokens: int  # the server's count when it reported one, else our estimate
    output_tokens: int


def local_model_complete(*, system: str, user: str, max_tokens: int) -> LocalAnswer:
    """Ask the configured local model server; return its answer.

    Raises ProviderError (a readable message without the key) when the server cannot be
    reached, times out, answers non-2xx, or sends a body that is not a chat completion.
    """
    base_url: str = settings.ROSTER_HELPER_URL
    key: str = settings.ROSTER_HELPER_API_KEY
    timeout: float = settings.ROSTER_HELPER_TIMEOUT
    label = provider_label(base_url, wire=WIRE)
    endpoint = Endpoint(base_url=base_url, api_key=key)
    request = ChatRequest(
        model=settings.ROSTER_HELPER_MODEL,
        system=system,
        messages=(ChatMessage(role="user", content=user),),
        max_tokens=max_tokens,
    )
    payload = chat_payload(request, base_url=base_url)
    # Same answer for the same input: the helper's results should not wander.
    payload["temperature"] = 0
    data = _post(
        api_url(base_url, "chat/completions"),
        headers=chat_headers(endpoint, request),
        payload=payload,
        label=label,
        key=key,
        timeout=timeout,
    )
    result = parse_chat_completion(data, provider_label=label, secret=key)
    text = THINKING.sub("", result.text).strip()
    if not text:
        raise provider_error(f"{label} sent an empty answer", secret=key, permanent=False)
    if result.usage is not None:
        return LocalAnswer(
            text=text,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
        )
    return LocalAnswer(
        text=text,
        input_tokens=prompt_tokens_estimate(system, user),
        output_tokens=tokens_estimate(result.text),
    )


def _post(
    url: str,
    *,
    headers: dict[str, str],
    payload: dict[str, Any],
    label: str,
    key: str,
    timeout: float,
) -> dict[str, Any]:
    try:
        response = get_client().post(
            url,
            headers={"Accept": "application/json", **headers},
            json=payload,
            timeout=httpx.Timeout(timeout),
        )
    except httpx.TimeoutException as exc:
        raise provider_error(
            f"{label} did not answer within {timeout:g} s (ROSTER_HELPER_TIMEOUT)",
            secret=key,
            permanent=False,
        ) from exc
    except httpx.ConnectError as exc:
        raise provider_error(
            f"could not connect to {label}: {exc}",
            secret=key,
            permanent=False,
            reached_provider=False,
        ) from exc
    except httpx.LocalProtocolError:
        # httpx names the offending header value, which can be the key.
        raise provider_error(
            f"could not build the request to {label}: ROSTER_HELPER_API_KEY or "
            "ROSTER_HELPER_URL contains characters not allowed in HTTP headers",
            secret=key,
            permanent=True,
            reached_provider=False,
        ) from None
    except httpx.RequestError as exc:
        raise provider_error(
            f"connection to {label} failed: {type(exc).__name__}: {exc}",
            secret=key,
            permanent=False,
        ) from exc
    try:
        body: Any = parse_json(response.content)
    except ValueError:
        body = None
    if not 200 <= response.status_code < 300:
        detail = provider_error_message(body) or body_snippet(response.text) or "(empty body)"
        raise provider_error(
            f"{label} answered HTTP {response.status_code}: {detail}",
            secret=key,
            permanent=response.status_code < 500,
            status_code=response.status_code,
        )
    if not isinstance(body, dict):
        raise provider_error(
            f"malformed JSON from {label}: {body_snippet(response.text, limit=120)}",
            secret=key,
            permanent=False,
            status_code=response.status_code,
        )
    return body
