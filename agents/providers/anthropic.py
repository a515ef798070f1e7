"""Anthropic Messages API (version 2023-06-01)."""

from __future__ import annotations

from typing import Any

from agents.providers.base import ChatRequest, ChatResult, ChatStream, Endpoint, ServerSentEvent
from agents.providers.http import (
    StreamReaderBase,
    api_url,
    call_headers,
    json_object,
    malformed_answer,
    post_events,
    post_json,
    provider_label,
    stream_chunk,
    token_count,
    usage_or_none,
)
from billing.pricing import TokenUsage

WIRE = "Anthropic-compatible"
API_VERSION = "2023-06-01"


def messages_payload(request: ChatRequest) -> dict[str, Any]:
    """Return the JSON body of a Messages request."""
    payload: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
    }
    # Anthropic caches only what a request marks: each stable part of the system prompt
    # (the role's prompt, shared by all its tasks; then the task's prefix, such as a spec,
    # shared by its retries and later steps) ends with a cache breakpoint, so repeat calls
    # read it at the cache price. Two of the four breakpoints a request may carry; parts
    # shorter than the model's minimum are simply not cached.
    blocks = [
        {"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}
        for text in (request.system, request.prefix)
        if text
    ]
    if blocks:
        payload["system"] = blocks
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    if request.stop:
        payload["stop_sequences"] = list(request.stop)
    return payload


def parse_token_usage(usage: dict[str, Any]) -> TokenUsage:
    """Normalise an Anthropic usage object.

    Anthropic's input_tokens leaves out cache reads and cache writes; ours counts every
    prompt token. Cache writes are split by lifetime, which Anthropic prices apart (1.25x
    input for 5 minutes, 2x for an hour), see `_cache_writes`. Thinking is billed as
    output and not split out, so reasoning stays 0. `service_tier: "batch"` marks a
    Message Batches result, billed at the batch discount.
    Raises ValueError or PricingError for unreadable or inconsistent counts.
    """
    cache_read = token_count(usage.get("cache_read_input_tokens"))
    write_5m, write_1h = _cache_writes(usage)
    server_tools = json_object(usage.get("server_tool_use"))
    return TokenUsage(
        input_tokens=token_count(usage.get("input_tokens")) + cache_read + write_5m + write_1h,
        output_tokens=token_count(usage.get("output_tokens")),
        cached_input_tokens=cache_read,
        cache_write_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        web_searches=token_count(server_tools.get("web_search_requests")),
        is_batch=usage.get("service_tier") == "batch",
    )


def _cache_writes(usage: dict[str, Any]) -> tuple[int, int]:
    """Return (5-minute, 1-hour) cache-write tokens.

    `cache_creation` breaks `cache_creation_input_tokens` down by lifetime. Without it
    (older API versions, some proxies) every write is a 5-minute one, the default
    lifetime. Raises ValueError when the breakdown and the total disagree.
    """
    total = usage.get("cache_creation_input_tokens")
    breakdown = json_object(usage.get("cache_creation"))
    if not breakdown:
        return token_count(total), 0
    write_5m = token_count(breakdown.get("ephemeral_5m_input_tokens"))
    write_1h = token_count(breakdown.get("ephemeral_1h_input_tokens"))
    if total is not None and token_count(total) != write_5m + write_1h:
        raise ValueError(
            f"cache_creation ({write_5m} 5m + {write_1h} 1h) does not add up to "
            f"cache_creation_input_tokens ({total})"
        )
    return write_5m, write_1h


def parse_message(data: dict[str, Any], *, provider_label: str, secret: str) -> ChatResult:
    """Return the ChatResult of a Messages answer: the text blocks, joined.

    Raises a retryable ProviderError when the answer has no content list.
    """
    content = data.get("content")
    if not isinstance(content, list):
        raise malformed_answer(provider_label, "the answer has no content", secret=secret)
    # Thinking, tool-use and other block types are not part of the answer text.
    text = "".join(
        str(block.get("text", ""))
        for block in content
        if isinstance(block, dict) and block.get("type") == "text"
    )
    raw_usage = json_object(data.get("usage"))
    return ChatResult(
        text=text,
        usage=usage_or_none(parse_token_usage, raw_usage, provider_label=provider_label),
        model=str(data.get("model") or ""),
        finish_reason=str(data.get("stop_reason") or ""),
        provider_request_id=str(data.get("id") or ""),
        raw_usage=raw_usage,
    )


class MessageStreamReader(StreamReaderBase):
    """Reads a Messages stream (StreamReader): message_start carries the input side of
    the usage, content_block_delta the text, message_delta the stop reason and the
    final (cumulative) usage, message_stop ends it; an `error` event fails it."""

    def feed(self, event: ServerSentEvent) -> str:
        data = stream_chunk(event, provider_label=self.label, secret=self.secret)
        kind = data.get("type") or event.event
        if kind == "error":
            # Overloaded or failed mid-stream (the HTTP status was already 200).
            raise self.failed(data, what="an error event")
        if kind == "message_start":
            message = json_object(data.get("message"))
            self.model = str(message.get("model") or "")
            self.response_id = str(message.get("id") or "")
            self.raw_usage = dict(json_object(message.get("usage")))
        elif kind == "content_block_delta":
            delta = json_object(data.get("delta"))
            if delta.get("type") == "text_delta":  # thinking and tool input are not text
                text = str(delta.get("text") or "")
                self.add_text(text)
                return text
        elif kind == "message_delta":
            stop = json_object(data.get("delta")).get("stop_reason")
            if stop:
                self.finish_reason = str(stop)
            # Cumulative counts: they replace what message_start said.
            self.raw_usage.update(json_object(data.get("usage")))
        elif kind == "message_stop":
            self._done = True
        return ""

    def result(self, *, ended: bool) -> ChatResult:
        return self.completed(complete=self._done, parse_usage=parse_token_usage)


class AnthropicAdapter:
    """POST {base_url}/v1/messages with an x-api-key."""

    def complete(self, *, endpoint: Endpoint, request: ChatRequest) -> ChatResult:
        """Return the provider's answer. Raises ProviderError (see agents.providers.http)."""
        label = provider_label(endpoint.base_url, wire=WIRE)
        response = post_json(
            api_url(endpoint.base_url, "messages", version="v1"),
            headers=_headers(endpoint, request),
            payload=messages_payload(request),
            provider_label=label,
            secret=endpoint.api_key,
            timeout=request.timeout,
        )
        return parse_message(response.data, provider_label=label, secret=endpoint.api_key)

    def stream(self, *, endpoint: Endpoint, request: ChatRequest) -> ChatStream:
        """Return the answer as a stream. Iterating it raises ProviderError."""
        label = provider_label(endpoint.base_url, wire=WIRE)
        events = post_events(
            api_url(endpoint.base_url, "messages", version="v1"),
            headers=_headers(endpoint, request),
            payload={**messages_payload(request), "stream": True},
            provider_label=label,
            secret=endpoint.api_key,
            timeout=request.timeout,
        )
        reader = MessageStreamReader(provider_label=label, secret=endpoint.api_key)
        return ChatStream(events, reader, close=events.close)


def _headers(endpoint: Endpoint, request: ChatRequest) -> dict[str, str]:
    return {
        "x-api-key": endpoint.api_key,
        "anthropic-version": API_VERSION,
        **call_headers(request.call_id),
    }


ADAPTER = AnthropicAdapter()
