"""Streaming in the three provider adapters, against the real sandbox provider process:
the streamed answer is the non-streamed answer, its usage is mapped exactly as the
non-streamed path maps it (the sandbox logs what it billed), and a broken stream fails
with a ProviderError instead of hanging or passing as complete."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal

import pytest

from agents.providers.base import ChatMessage, ChatRequest, ChatStream, Endpoint, ProviderError
from agents.providers.http import reset_client, sse_events
from agents.providers.registry import adapter_for
from billing.pricing import TokenUsage
from tests.canary import SANDBOX_KEY

# (provider kind, model name on the wire, base-URL suffix on the sandbox)
WIRES = [
    ("openrouter", "deepseek/deepseek-v4-pro", "/api/v1"),
    ("openai", "gpt-4.1-mini", "/v1"),
    ("anthropic", "claude-haiku-4.5", ""),
    ("gemini", "gemini-2.5-flash-lite", ""),
]
IDS = [wire[0] for wire in WIRES]


@pytest.fixture(autouse=True)
def fresh_client() -> Iterator[None]:
    reset_client()
    yield
    reset_client()


def request_for(model: str, question: str, *, system: str = "", max_tokens: int = 200):
    return ChatRequest(
        model=model,
        messages=(ChatMessage(role="user", content=question),),
        max_tokens=max_tokens,
        system=system or f"You are a streaming test ({uuid.uuid4().hex}).",
        call_id=uuid.uuid4().hex,
    )


def drain(stream: ChatStream) -> str:
    return "".join(stream)


def logged_usage(sandbox, call_id: str) -> tuple[TokenUsage, Decimal | None]:
    (entry,) = sandbox.requests(call_id=call_id)
    usage = TokenUsage(
        input_tokens=entry["input_tokens"],
        output_tokens=entry["output_tokens"],
        cached_input_tokens=entry["cached_input_tokens"],
        cache_write_tokens=entry["cache_write_tokens"],
        reasoning_tokens=entry["reasoning_tokens"],
    )
    return usage, None if entry["cost"] is None else Decimal(entry["cost"])


@pytest.mark.parametrize(("provider", "model", "suffix"), WIRES, ids=IDS)
def test_streamed_answer_and_usage_match_what_the_provider_billed(sandbox, provider, model, suffix):
    adapter = adapter_for(provider)
    endpoint = Endpoint(base_url=sandbox.url + suffix, api_key=SANDBOX_KEY)
    question = "List three prime numbers [[sandbox reasoning=7]]"
    request = request_for(model, question)

    stream = adapter.stream(endpoint=endpoint, request=request)
    deltas = list(stream)
    plain = adapter.complete(endpoint=endpoint, request=replace(request, call_id="plain"))

    assert len(deltas) > 3  # it really came in pieces
    assert "".join(deltas) == stream.result.text == plain.text
    assert plain.text.startswith(f"Sandbox answer from {model}: List three prime numbers")
    billed, cost = logged_usage(sandbox, request.call_id)
    expected = billed
    if provider == "anthropic":  # Anthropic reports thinking inside output, not apart
        expected = TokenUsage(
            input_tokens=billed.input_tokens,
            output_tokens=billed.output_tokens,
            cached_input_tokens=billed.cached_input_tokens,
            cache_write_tokens=billed.cache_write_tokens,
        )
    assert stream.result.usage == expected
    assert stream.result.finish_reason == plain.finish_reason
    # OpenRouter's own cost, exact to the last digit, on the streamed path as well.
    assert stream.result.reported_cost == (cost if provider == "openrouter" else None)


@pytest.mark.parametrize(("provider", "model", "suffix"), WIRES, ids=IDS)
def test_streamed_usage_counts_a_cached_prefix_as_the_plain_call_does(
    sandbox, provider, model, suffix
):
    adapter = adapter_for(provider)
    endpoint = Endpoint(base_url=sandbox.url + suffix, api_key=SANDBOX_KEY)
    system = f"You are the cached streamer ({uuid.uuid4().hex}). " + "Be terse. " * 40

    drain(adapter.stream(endpoint=endpoint, request=request_for(model, "first", system=system)))
    second = request_for(model, "second", system=system)
    stream = adapter.stream(endpoint=endpoint, request=second)
    drain(stream)

    billed, _ = logged_usage(sandbox, second.call_id)
    assert stream.result.usage is not None
    # (Anthropic: the adapter marks the system prompt cacheable; the first stream wrote it.)
    assert stream.result.usage.cached_input_tokens == billed.cached_input_tokens > 0
    assert stream.result.usage.input_tokens == billed.input_tokens


@pytest.mark.parametrize(("provider", "model", "suffix"), WIRES, ids=IDS)
def test_a_malformed_stream_chunk_fails_the_stream(sandbox, provider, model, suffix):
    adapter = adapter_for(provider)
    endpoint = Endpoint(base_url=sandbox.url + suffix, api_key=SANDBOX_KEY)
    stream = adapter.stream(
        endpoint=endpoint, request=request_for(model, "Break it [[sandbox fault=malformed]]")
    )

    with pytest.raises(ProviderError) as caught:
        drain(stream)

    assert caught.value.permanent is False
    assert "malformed answer" in caught.value.message
    assert stream.result is None


@pytest.mark.parametrize(("provider", "model", "suffix"), WIRES, ids=IDS)
def test_an_error_status_before_the_stream_is_a_provider_error(sandbox, provider, model, suffix):
    adapter = adapter_for(provider)
    endpoint = Endpoint(base_url=sandbox.url + suffix, api_key=SANDBOX_KEY)
    stream = adapter.stream(
        endpoint=endpoint,
        request=request_for(model, "Slow down [[sandbox fault=429 retry_after=7]]"),
    )

    with pytest.raises(ProviderError) as caught:
        drain(stream)

    assert caught.value.status_code == 429
    assert caught.value.retry_after == 7
    assert caught.value.permanent is False


def test_a_stream_cut_off_before_its_end_is_truncated_not_complete() -> None:
    from agents.providers.anthropic import MessageStreamReader
    from agents.providers.openai_compat import ChatCompletionStreamReader

    lines = [
        'data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"Half"}}]}',
        "",
    ]
    reader = ChatCompletionStreamReader(provider_label="Test", secret="")
    stream = ChatStream(sse_events(lines), reader, close=lambda: None)
    with pytest.raises(ProviderError, match="ended before the answer was complete"):
        drain(stream)
    assert stream.text == "Half"

    anthropic_lines = [
        "event: message_start",
        'data: {"type":"message_start","message":{"id":"m1","usage":{"input_tokens":5}}}',
        "",
    ]
    reader_a = MessageStreamReader(provider_label="Test", secret="")
    with pytest.raises(ProviderError, match="ended before the answer was complete"):
        drain(ChatStream(sse_events(anthropic_lines), reader_a, close=lambda: None))


def test_sse_parsing_joins_data_lines_and_skips_comments() -> None:
    lines = [": keep-alive", "event: ping", "data: {}", "", "data: a", "data: b", "", "data: cut"]

    events = list(sse_events(lines))

    assert [(e.event, e.data) for e in events] == [("ping", "{}"), ("", "a\nb")]


def test_an_error_event_mid_stream_fails_the_stream_with_the_providers_words() -> None:
    from agents.providers.anthropic import MessageStreamReader
    from agents.providers.openai_compat import ChatCompletionStreamReader

    anthropic_lines = [
        "event: message_start",
        'data: {"type":"message_start","message":{"id":"m1","usage":{"input_tokens":5}}}',
        "",
        "event: content_block_delta",
        'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}',
        "",
        "event: error",
        'data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
        "",
    ]
    reader = MessageStreamReader(provider_label="Anthropic", secret="")
    stream = ChatStream(sse_events(anthropic_lines), reader, close=lambda: None)
    with pytest.raises(ProviderError, match="the stream failed: Overloaded") as caught:
        drain(stream)
    assert caught.value.permanent is False
    assert stream.text == "Hi"

    openrouter_lines = [
        'data: {"id":"g1","choices":[{"index":0,"delta":{"content":"Hi"}}]}',
        "",
        'data: {"error":{"code":502,"message":"Upstream died"}}',
        "",
    ]
    reader_o = ChatCompletionStreamReader(provider_label="OpenRouter", secret="")
    with pytest.raises(ProviderError, match="the stream failed: Upstream died"):
        drain(ChatStream(sse_events(openrouter_lines), reader_o, close=lambda: None))
