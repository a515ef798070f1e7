"""OpenAI-compatible chat completions: OpenAI, OpenRouter, DeepSeek, xAI, Groq, Together,
Mistral and the local servers (Ollama, vLLM, LM Studio, llama.cpp)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from agents.providers.base import ChatRequest, ChatResult, ChatStream, Endpoint, ServerSentEvent
from agents.providers.http import (
    StreamReaderBase,
    api_url,
    call_headers,
    host_of,
    json_object,
    malformed_answer,
    post_events,
    post_json,
    provider_error_message,
    provider_label,
    reported_cost,
    stream_chunk,
    token_count,
    usage_or_none,
)
from billing.pricing import TokenUsage

WIRE = "OpenAI-compatible"
# OpenRouter's optional app attribution headers (https://openrouter.ai/docs/api-reference/overview).
APP_TITLE = "Roster"


def is_openrouter(base_url: str) -> bool:
    """Return True for OpenRouter itself or a proxy that mirrors its /api/v1 layout."""
    host = host_of(base_url)
    path = urlsplit(base_url).path.rstrip("/")
    return host == "openrouter.ai" or host.endswith(".openrouter.ai") or path.endswith("/api/v1")


def is_openai(base_url: str) -> bool:
    """Return True for OpenAI's own API (the one host that rejects `max_tokens`)."""
    return host_of(base_url) == "api.openai.com"


def chat_payload(request: ChatRequest, *, base_url: str) -> dict[str, Any]:
    """Return the JSON body of a chat completion request for this endpoint."""
    # Caching is automatic and by prefix: the stable part (system prompt, then the task's
    # prefix) goes first, in one system message, which every local server accepts.
    instructions = request.instructions
    messages = [{"role": "system", "content": instructions}] if instructions else []
    messages += [{"role": m.role, "content": m.content} for m in request.messages]
    # OpenAI's reasoning models reject max_tokens; most other servers only know max_tokens.
    limit_field = "max_completion_tokens" if is_openai(base_url) else "max_tokens"
    payload: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        limit_field: request.max_tokens,
    }
    payload.update(sampling_fields(request))
    if is_openrouter(base_url):
        # Now implied by OpenRouter (documented as deprecated, no effect); kept so that
        # older OpenRouter-compatible proxies still return usage.cost.
        payload["usage"] = {"include": True}
    return payload


def sampling_fields(request: ChatRequest) -> dict[str, Any]:
    """The sampling parameters a request sets, in OpenAI's names (none: provider default)."""
    fields: dict[str, Any] = {}
    if request.temperature is not None:
        fields["temperature"] = request.temperature
    if request.top_p is not None:
        fields["top_p"] = request.top_p
    if request.stop:
        fields["stop"] = list(request.stop)
    return fields


def chat_headers(endpoint: Endpoint, request: ChatRequest) -> dict[str, str]:
    """Return the request headers: bearer key (local servers may have none), call id."""
    headers = call_headers(request.call_id)
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    if is_openrouter(endpoint.base_url):
        headers["X-Title"] = APP_TITLE
        # The referer is the office's own address, which only its operator knows (and may
        # prefer not to disclose): sent only when configured.
        referer: str = settings.ROSTER_OPENROUTER_REFERER
        if referer:
            headers["HTTP-Referer"] = referer
    return headers


def parse_token_usage(usage: dict[str, Any]) -> TokenUsage:
    """Normalise an OpenAI-style usage object (OpenAI, OpenRouter, DeepSeek, xAI).

    Raises ValueError or PricingError when the counts are unreadable or inconsistent.
    """
    prompt = token_count(usage.get("prompt_tokens"))
    completion = token_count(usage.get("completion_tokens"))
    prompt_details = json_object(usage.get("prompt_tokens_details"))
    completion_details = json_object(usage.get("completion_tokens_details"))
    if prompt_details.get("cached_tokens") is not None:
        cached = token_count(prompt_details["cached_tokens"])
    else:
        # DeepSeek reports its context-cache hits in its own field.
        cached = token_count(usage.get("prompt_cache_hit_tokens"))
    reasoning = token_count(completion_details.get("reasoning_tokens"))
    total = usage.get("total_tokens")
    if reasoning and total is not None and token_count(total) == prompt + completion + reasoning:
        # xAI counts reasoning beside completion_tokens, not inside it as OpenAI does; its
        # total_tokens gives it away. Reasoning is billed as output either way.
        completion += reasoning
    return TokenUsage(
        input_tokens=prompt,
        output_tokens=completion,
        cached_input_tokens=cached,
        # OpenRouter's cache writes (Anthropic and Gemini models behind it).
        cache_write_tokens=token_count(prompt_details.get("cache_write_tokens")),
        reasoning_tokens=reasoning,
    )


def _message_text(message: dict[str, Any]) -> str:
    """The answer text of a message, or of a streamed delta."""
    content = message.get("content")
    if isinstance(content, list):
        # Some servers (Mistral's reasoning models) send typed parts; keep the answer text.
        content = "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    if not content and isinstance(message.get("refusal"), str):
        # OpenAI puts a refusal beside a null content; it is the model's answer.
        return str(message["refusal"])
    return content if isinstance(content, str) else ""


def parse_chat_completion(data: dict[str, Any], *, provider_label: str, secret: str) -> ChatResult:
    """Return the ChatResult of a chat completion answer.

    Raises a retryable ProviderError when the answer has no choices (OpenRouter answers
    some upstream failures with HTTP 200 and an error object).
    """
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        reason = provider_error_message(data) or "the answer has no choices"
        raise malformed_answer(provider_label, reason, secret=secret)
    choice = choices[0]
    raw_usage = json_object(data.get("usage"))
    return ChatResult(
        text=_message_text(json_object(choice.get("message"))),
        usage=usage_or_none(parse_token_usage, raw_usage, provider_label=provider_label),
        reported_cost=reported_cost(raw_usage.get("cost")),
        model=str(data.get("model") or ""),
        finish_reason=str(choice.get("finish_reason") or ""),
        provider_request_id=str(data.get("id") or ""),
        raw_usage=raw_usage,
    )


class ChatCompletionStreamReader(StreamReaderBase):
    """Reads an OpenAI-style chat completion stream (StreamReader): `data: {chunk}`
    events, usage in a last chunk without choices (stream_options.include_usage; always
    on OpenRouter, with its usage.cost), then `data: [DONE]`."""

    def feed(self, event: ServerSentEvent) -> str:
        if event.data.strip() == "[DONE]":
            self._done = True
            return ""
        chunk = stream_chunk(event, provider_label=self.label, secret=self.secret)
        if chunk.get("error"):
            # OpenRouter reports an upstream failure mid-stream as an error chunk.
            raise self.failed(chunk, what="an error chunk")
        self.model = str(chunk.get("model") or self.model)
        self.response_id = str(chunk.get("id") or self.response_id)
        usage = chunk.get("usage")
        if isinstance(usage, dict) and usage:
            self.raw_usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        delta = _message_text(json_object(choice.get("delta")))
        self.add_text(delta)
        return delta

    def result(self, *, ended: bool) -> ChatResult:
        # Some local servers end with a finish reason and no [DONE]: complete too.
        return self.completed(
            complete=self._done or (ended and bool(self.finish_reason)),
            parse_usage=parse_token_usage,
            cost=reported_cost(self.raw_usage.get("cost")),
        )


class OpenAICompatAdapter:
    """POST {base_url}/chat/completions with a bearer key."""

    def complete(self, *, endpoint: Endpoint, request: ChatRequest) -> ChatResult:
        """Return the provider's answer. Raises ProviderError (see agents.providers.http)."""
        label = provider_label(endpoint.base_url, wire=WIRE)
        response = post_json(
            api_url(endpoint.base_url, "chat/completions"),
            headers=chat_headers(endpoint, request),
            payload=chat_payload(request, base_url=endpoint.base_url),
            provider_label=label,
            secret=endpoint.api_key,
            timeout=request.timeout,
        )
        return parse_chat_completion(response.data, provider_label=label, secret=endpoint.api_key)

    def stream(self, *, endpoint: Endpoint, request: ChatRequest) -> ChatStream:
        """Return the answer as a stream, with usage asked for in its last chunk.
        Iterating it raises ProviderError (see agents.providers.http)."""
        label = provider_label(endpoint.base_url, wire=WIRE)
        payload = chat_payload(request, base_url=endpoint.base_url)
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
        events = post_events(
            api_url(endpoint.base_url, "chat/completions"),
            headers=chat_headers(endpoint, request),
            payload=payload,
            provider_label=label,
            secret=endpoint.api_key,
            timeout=request.timeout,
        )
        reader = ChatCompletionStreamReader(provider_label=label, secret=endpoint.api_key)
        return ChatStream(events, reader, close=events.close)


ADAPTER = OpenAICompatAdapter()
