"""The three provider adapters against recorded provider answers (respx, no network)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from agents.providers import anthropic, gemini, openai_compat
from agents.providers.base import (
    Adapter,
    ChatMessage,
    ChatRequest,
    ChatResult,
    Endpoint,
    ProviderError,
)
from agents.providers.http import request_timeout, reset_client
from agents.providers.registry import adapter_for
from billing.pricing import TokenUsage
from tests import canary

DATA = Path(__file__).resolve().parent.parent / "data" / "providers"

OPENAI_URL = "https://api.openai.com/v1"
OPENROUTER_URL = "https://openrouter.ai/api/v1"
ANTHROPIC_URL = "https://api.anthropic.com"
GEMINI_URL = "https://generativelanguage.googleapis.com"

KEY = canary.OPENAI_KEY
# Not key-shaped: only the explicit secret argument of redact() can mask it.
PLAIN_KEY = canary.PLAIN_KEY

REQUEST = ChatRequest(
    model="test-model",
    messages=(
        ChatMessage(role="user", content="What changed this quarter?"),
        ChatMessage(role="assistant", content="Revenue and costs."),
        ChatMessage(role="user", content="Summarise in one line."),
    ),
    max_tokens=256,
    system="You are the finance analyst.",
    call_id="call-0001",
)


def recorded(name: str) -> str:
    """Return a recorded body as text: exact number literals reach the parser untouched."""
    return (DATA / name).read_text()


def json_reply(status: int, body: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, content=body.encode(), headers={"content-type": "application/json", **headers}
    )


def sent_json(route: respx.Route) -> Any:
    return json.loads(route.calls.last.request.content)


@pytest.fixture(autouse=True)
def fresh_client() -> Iterator[None]:
    reset_client()
    yield
    reset_client()


def call_openai(
    respx_mock: respx.MockRouter,
    reply: httpx.Response,
    *,
    base_url: str = OPENAI_URL,
    key: str = KEY,
    request: ChatRequest = REQUEST,
) -> tuple[ChatResult, respx.Route]:
    route = respx_mock.post(f"{base_url.rstrip('/')}/chat/completions").mock(return_value=reply)
    result = openai_compat.ADAPTER.complete(
        endpoint=Endpoint(base_url=base_url, api_key=key), request=request
    )
    return result, route


def openai_error(
    respx_mock: respx.MockRouter, reply: httpx.Response | Exception, *, key: str = KEY
) -> ProviderError:
    route = respx_mock.post(f"{OPENAI_URL}/chat/completions")
    if isinstance(reply, Exception):
        route.mock(side_effect=reply)
    else:
        route.mock(return_value=reply)
    with pytest.raises(ProviderError) as caught:
        openai_compat.ADAPTER.complete(
            endpoint=Endpoint(base_url=OPENAI_URL, api_key=key), request=REQUEST
        )
    return caught.value


# --- Registry -------------------------------------------------------------------------------


def test_registry_maps_each_provider_kind_to_its_wire_adapter() -> None:
    assert adapter_for("openrouter") is openai_compat.ADAPTER
    assert adapter_for("ollama") is openai_compat.ADAPTER
    assert adapter_for("anthropic") is anthropic.ADAPTER
    assert adapter_for("gemini") is gemini.ADAPTER


# --- OpenAI-compatible ----------------------------------------------------------------------


def test_openai_request_sends_bearer_call_id_and_max_completion_tokens(
    respx_mock: respx.MockRouter,
) -> None:
    _, route = call_openai(respx_mock, json_reply(200, recorded("openai_chat.json")))

    sent = route.calls.last.request
    assert str(sent.url) == "https://api.openai.com/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["x-roster-call-id"] == "call-0001"
    assert sent.headers["user-agent"] == "Roster/0.1"
    assert sent.headers["content-type"] == "application/json"
    assert "x-title" not in sent.headers
    assert sent_json(route) == {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "You are the finance analyst."},
            {"role": "user", "content": "What changed this quarter?"},
            {"role": "assistant", "content": "Revenue and costs."},
            {"role": "user", "content": "Summarise in one line."},
        ],
        "max_completion_tokens": 256,
    }


def test_openai_answer_maps_text_usage_and_ids(respx_mock: respx.MockRouter) -> None:
    result, _ = call_openai(respx_mock, json_reply(200, recorded("openai_chat.json")))

    assert result.text == "Paris is the capital of France."
    assert result.finish_reason == "stop"
    assert result.model == "gpt-4.1-mini-2025-04-14"
    assert result.provider_request_id == "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
    assert result.usage == TokenUsage(input_tokens=19, output_tokens=10)
    assert result.reported_cost is None
    assert result.raw_usage["total_tokens"] == 29


def test_openrouter_request_sends_max_tokens_usage_include_and_title(
    respx_mock: respx.MockRouter, settings: Any
) -> None:
    _, route = call_openai(
        respx_mock, json_reply(200, recorded("openrouter_chat.json")), base_url=OPENROUTER_URL
    )

    sent = route.calls.last.request
    assert str(sent.url) == "https://openrouter.ai/api/v1/chat/completions"
    assert sent.headers["x-title"] == "Roster"
    assert "http-referer" not in sent.headers  # only when the operator configures one
    body = sent_json(route)
    assert body["max_tokens"] == 256
    assert "max_completion_tokens" not in body
    assert body["usage"] == {"include": True}

    settings.ROSTER_OPENROUTER_REFERER = "https://office.example.com"
    _, route = call_openai(
        respx_mock, json_reply(200, recorded("openrouter_chat.json")), base_url=OPENROUTER_URL
    )
    assert route.calls.last.request.headers["http-referer"] == "https://office.example.com"


def test_openrouter_usage_maps_cache_read_cache_write_and_reasoning(
    respx_mock: respx.MockRouter,
) -> None:
    result, _ = call_openai(
        respx_mock, json_reply(200, recorded("openrouter_chat.json")), base_url=OPENROUTER_URL
    )

    assert result.usage == TokenUsage(
        input_tokens=2048,
        output_tokens=320,
        cached_input_tokens=1536,
        cache_write_tokens=256,
        reasoning_tokens=120,
    )
    assert result.text == "The quarterly report is attached as requested."
    assert result.model == "anthropic/claude-sonnet-4"


def test_openrouter_reported_cost_is_the_exact_json_literal(respx_mock: respx.MockRouter) -> None:
    result, _ = call_openai(
        respx_mock, json_reply(200, recorded("openrouter_chat.json")), base_url=OPENROUTER_URL
    )
    assert isinstance(result.reported_cost, Decimal)
    assert str(result.reported_cost) == "0.0076134"

    # More digits than a float holds: a float round trip would change the figure.
    body = recorded("openrouter_chat.json").replace(
        '"cost": 0.0076134', '"cost": 0.00000012345678901234567891'
    )
    result, _ = call_openai(respx_mock, json_reply(200, body), base_url=OPENROUTER_URL)
    assert result.reported_cost == Decimal("0.00000012345678901234567891")
    assert str(result.reported_cost) == "1.2345678901234567891E-7"
    assert result.raw_usage["cost"] == Decimal("0.00000012345678901234567891")


def test_path_ending_api_v1_is_treated_as_openrouter(respx_mock: respx.MockRouter) -> None:
    _, route = call_openai(
        respx_mock,
        json_reply(200, recorded("openrouter_chat.json")),
        base_url="http://127.0.0.1:8765/api/v1/",
    )
    assert str(route.calls.last.request.url) == "http://127.0.0.1:8765/api/v1/chat/completions"
    assert sent_json(route)["usage"] == {"include": True}


def test_deepseek_cache_hit_tokens_become_cached_input(respx_mock: respx.MockRouter) -> None:
    result, route = call_openai(
        respx_mock,
        json_reply(200, recorded("deepseek_chat.json")),
        base_url="https://api.deepseek.com/v1",
    )
    assert result.usage == TokenUsage(input_tokens=1200, output_tokens=10, cached_input_tokens=1024)
    assert sent_json(route)["max_tokens"] == 256


def test_xai_reasoning_outside_completion_tokens_is_added_to_output(
    respx_mock: respx.MockRouter,
) -> None:
    result, _ = call_openai(
        respx_mock,
        json_reply(200, recorded("xai_reasoning_chat.json")),
        base_url="https://api.x.ai/v1",
    )
    assert result.usage == TokenUsage(
        input_tokens=14, output_tokens=317, cached_input_tokens=6, reasoning_tokens=307
    )


def test_local_server_without_key_sends_no_authorization(respx_mock: respx.MockRouter) -> None:
    _, route = call_openai(
        respx_mock,
        json_reply(200, recorded("openai_chat.json")),
        base_url="http://127.0.0.1:11434/v1/",
        key="",
    )
    sent = route.calls.last.request
    assert str(sent.url) == "http://127.0.0.1:11434/v1/chat/completions"
    assert "authorization" not in sent.headers


def test_no_call_id_sends_no_call_id_header(respx_mock: respx.MockRouter) -> None:
    request = ChatRequest(model="m", messages=(ChatMessage("user", "hi"),), max_tokens=5)
    _, route = call_openai(
        respx_mock, json_reply(200, recorded("openai_chat.json")), request=request
    )
    assert "x-roster-call-id" not in route.calls.last.request.headers
    assert sent_json(route)["messages"] == [{"role": "user", "content": "hi"}]


def test_null_content_becomes_empty_text_and_refusal_is_kept(
    respx_mock: respx.MockRouter,
) -> None:
    data = json.loads(recorded("openai_chat.json"))
    data["choices"][0]["message"]["content"] = None
    result, _ = call_openai(respx_mock, json_reply(200, json.dumps(data)))
    assert result.text == ""

    data["choices"][0]["message"]["refusal"] = "I can't help with that."
    result, _ = call_openai(respx_mock, json_reply(200, json.dumps(data)))
    assert result.text == "I can't help with that."


def test_missing_usage_gives_none(respx_mock: respx.MockRouter) -> None:
    data = json.loads(recorded("openai_chat.json"))
    del data["usage"]
    result, _ = call_openai(respx_mock, json_reply(200, json.dumps(data)))
    assert result.usage is None
    assert result.raw_usage == {}
    assert result.text == "Paris is the capital of France."


def test_inconsistent_usage_keeps_the_answer_and_the_raw_block(
    respx_mock: respx.MockRouter,
) -> None:
    data = json.loads(recorded("openai_chat.json"))
    data["usage"]["prompt_tokens_details"]["cached_tokens"] = 500  # more than prompt_tokens
    result, _ = call_openai(respx_mock, json_reply(200, json.dumps(data)))
    assert result.usage is None
    assert result.raw_usage["prompt_tokens_details"]["cached_tokens"] == 500
    assert result.text == "Paris is the capital of France."


def test_answer_without_choices_is_retryable_malformed(respx_mock: respx.MockRouter) -> None:
    error = openai_error(respx_mock, json_reply(200, '{"id": "x", "object": "chat.completion"}'))
    assert error.permanent is False
    assert error.message == "malformed answer from OpenAI: the answer has no choices"


def test_openrouter_200_with_error_object_is_retryable_with_its_message(
    respx_mock: respx.MockRouter,
) -> None:
    body = '{"error": {"message": "Upstream idle timeout", "code": 502}}'
    route = respx_mock.post(f"{OPENROUTER_URL}/chat/completions").mock(
        return_value=json_reply(200, body)
    )
    with pytest.raises(ProviderError) as caught:
        openai_compat.ADAPTER.complete(
            endpoint=Endpoint(base_url=OPENROUTER_URL, api_key=KEY), request=REQUEST
        )
    assert route.called
    assert caught.value.permanent is False
    assert caught.value.message == "malformed answer from OpenRouter: Upstream idle timeout"


# --- Anthropic ------------------------------------------------------------------------------


def test_anthropic_request_shape_with_cacheable_system_prompt(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("https://api.anthropic.com/v1/messages").mock(
        return_value=json_reply(200, recorded("anthropic_message.json"))
    )
    anthropic.ADAPTER.complete(
        endpoint=Endpoint(base_url=ANTHROPIC_URL, api_key=KEY), request=REQUEST
    )

    sent = route.calls.last.request
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["x-roster-call-id"] == "call-0001"
    assert "authorization" not in sent.headers
    assert sent_json(route) == {
        "model": "test-model",
        "max_tokens": 256,
        "messages": [
            {"role": "user", "content": "What changed this quarter?"},
            {"role": "assistant", "content": "Revenue and costs."},
            {"role": "user", "content": "Summarise in one line."},
        ],
        "system": [
            {
                "type": "text",
                "text": "You are the finance analyst.",
                "cache_control": {"type": "ephemeral"},
            }
        ],
    }


def test_anthropic_usage_adds_cache_reads_and_writes_to_input(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post("https://api.anthropic.com/v1/messages").mock(
        return_value=json_reply(200, recorded("anthropic_message.json"))
    )
    result = anthropic.ADAPTER.complete(
        endpoint=Endpoint(base_url=ANTHROPIC_URL + "/v1/", api_key=KEY), request=REQUEST
    )

    assert result.usage == TokenUsage(
        input_tokens=4250,  # 50 uncached + 3000 cache reads + 1200 cache writes
        output_tokens=180,
        cached_input_tokens=3000,
        cache_write_tokens=1200,
        reasoning_tokens=0,
    )
    assert result.text == "Revenue grew 12% while costs stayed flat."  # thinking left out
    assert result.finish_reason == "end_turn"
    assert result.provider_request_id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert result.model == "claude-sonnet-4-20250514"
    assert result.reported_cost is None
    assert result.raw_usage["cache_creation"]["ephemeral_5m_input_tokens"] == 1200


def anthropic_usage(respx_mock: respx.MockRouter, **usage: Any) -> TokenUsage | None:
    """The TokenUsage of the recorded Anthropic answer with its usage block replaced."""
    data = json.loads(recorded("anthropic_message.json"))
    data["usage"] = usage
    respx_mock.post("https://api.anthropic.com/v1/messages").mock(
        return_value=json_reply(200, json.dumps(data))
    )
    result = anthropic.ADAPTER.complete(
        endpoint=Endpoint(base_url=ANTHROPIC_URL, api_key=KEY), request=REQUEST
    )
    assert result.text == "Revenue grew 12% while costs stayed flat."
    return result.usage


def test_anthropic_cache_writes_are_split_by_lifetime(respx_mock: respx.MockRouter) -> None:
    usage = anthropic_usage(
        respx_mock,
        input_tokens=10,
        cache_creation_input_tokens=3000,
        cache_read_input_tokens=500,
        cache_creation={"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
        output_tokens=40,
    )
    assert usage == TokenUsage(
        input_tokens=3510,
        output_tokens=40,
        cached_input_tokens=500,
        cache_write_tokens=1000,
        cache_write_1h_tokens=2000,
    )


def test_anthropic_cache_writes_without_breakdown_are_five_minute_writes(
    respx_mock: respx.MockRouter,
) -> None:
    usage = anthropic_usage(
        respx_mock, input_tokens=10, cache_creation_input_tokens=3000, output_tokens=40
    )
    assert usage == TokenUsage(input_tokens=3010, output_tokens=40, cache_write_tokens=3000)


def test_anthropic_breakdown_without_total_is_used(respx_mock: respx.MockRouter) -> None:
    usage = anthropic_usage(
        respx_mock,
        input_tokens=10,
        cache_creation={"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 700},
        output_tokens=40,
    )
    assert usage == TokenUsage(input_tokens=710, output_tokens=40, cache_write_1h_tokens=700)


def test_anthropic_breakdown_that_disagrees_with_the_total_is_unreadable_usage(
    respx_mock: respx.MockRouter,
) -> None:
    usage = anthropic_usage(
        respx_mock,
        input_tokens=10,
        cache_creation_input_tokens=3000,
        cache_creation={"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 1000},
        output_tokens=40,
    )
    assert usage is None  # billing estimates it; the raw block stays on the result


def test_anthropic_web_searches_and_batch_tier_are_mapped(respx_mock: respx.MockRouter) -> None:
    usage = anthropic_usage(
        respx_mock,
        input_tokens=900,
        output_tokens=120,
        server_tool_use={"web_search_requests": 3},
        service_tier="batch",
    )
    assert usage == TokenUsage(input_tokens=900, output_tokens=120, web_searches=3, is_batch=True)
    standard = anthropic_usage(
        respx_mock, input_tokens=900, output_tokens=120, service_tier="standard"
    )
    assert standard is not None
    assert standard.is_batch is False


def test_anthropic_without_system_prompt_sends_no_system(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post("https://api.anthropic.com/v1/messages").mock(
        return_value=json_reply(200, recorded("anthropic_message.json"))
    )
    request = ChatRequest(model="claude-haiku-4-5", messages=REQUEST.messages, max_tokens=64)
    anthropic.ADAPTER.complete(
        endpoint=Endpoint(base_url=ANTHROPIC_URL, api_key=KEY), request=request
    )
    assert "system" not in sent_json(route)
    assert "x-roster-call-id" not in route.calls.last.request.headers


def test_anthropic_rate_limit_is_retryable_with_its_message(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post("https://api.anthropic.com/v1/messages").mock(
        return_value=json_reply(429, recorded("anthropic_error_429.json"), **{"retry-after": "12"})
    )
    with pytest.raises(ProviderError) as caught:
        anthropic.ADAPTER.complete(
            endpoint=Endpoint(base_url=ANTHROPIC_URL, api_key=KEY), request=REQUEST
        )
    assert caught.value.permanent is False
    assert caught.value.retry_after == 12.0
    assert caught.value.message == (
        "Anthropic answered HTTP 429: This request would exceed the rate limit for your "
        "organization of 50 input tokens per minute."
    )


def test_anthropic_overloaded_529_is_retryable(respx_mock: respx.MockRouter) -> None:
    respx_mock.post("https://api.anthropic.com/v1/messages").mock(
        return_value=json_reply(529, recorded("anthropic_error_529.json"))
    )
    with pytest.raises(ProviderError) as caught:
        anthropic.ADAPTER.complete(
            endpoint=Endpoint(base_url=ANTHROPIC_URL, api_key=KEY), request=REQUEST
        )
    assert caught.value.permanent is False
    assert caught.value.status_code == 529
    assert caught.value.message == "Anthropic answered HTTP 529: Overloaded"


# --- Gemini ---------------------------------------------------------------------------------

GEMINI_ENDPOINT = (
    "https://generativelanguage.googleapis.com/v1beta/models/test-model:generateContent"
)


def call_gemini(
    respx_mock: respx.MockRouter, reply: httpx.Response
) -> tuple[ChatResult, respx.Route]:
    route = respx_mock.post(GEMINI_ENDPOINT).mock(return_value=reply)
    result = gemini.ADAPTER.complete(
        endpoint=Endpoint(base_url=GEMINI_URL, api_key=KEY), request=REQUEST
    )
    return result, route


def test_gemini_request_puts_key_in_header_never_in_url(respx_mock: respx.MockRouter) -> None:
    _, route = call_gemini(respx_mock, json_reply(200, recorded("gemini_generate.json")))

    sent = route.calls.last.request
    assert str(sent.url) == GEMINI_ENDPOINT
    assert sent.url.query == b""
    assert KEY not in str(sent.url)
    assert sent.headers["x-goog-api-key"] == KEY
    assert sent.headers["x-roster-call-id"] == "call-0001"
    assert sent_json(route) == {
        "contents": [
            {"role": "user", "parts": [{"text": "What changed this quarter?"}]},
            {"role": "model", "parts": [{"text": "Revenue and costs."}]},
            {"role": "user", "parts": [{"text": "Summarise in one line."}]},
        ],
        "systemInstruction": {"parts": [{"text": "You are the finance analyst."}]},
        "generationConfig": {"maxOutputTokens": 256},
    }


def test_gemini_usage_counts_thoughts_as_output_and_cache_inside_input(
    respx_mock: respx.MockRouter,
) -> None:
    result, _ = call_gemini(respx_mock, json_reply(200, recorded("gemini_generate.json")))

    assert result.usage == TokenUsage(
        input_tokens=5000,
        output_tokens=437,  # 40 candidates + 397 thoughts
        cached_input_tokens=4096,
        reasoning_tokens=397,
    )
    assert result.text == "The meeting is moved to Thursday at 10:00."  # thought part skipped
    assert result.finish_reason == "STOP"
    assert result.provider_request_id == "mKdFaJ2VDOyrqtsPhvCSmQ4"
    assert result.model == "gemini-2.5-flash"


def test_gemini_tool_use_prompt_tokens_count_as_input(respx_mock: respx.MockRouter) -> None:
    data = json.loads(recorded("gemini_generate.json"))
    data["usageMetadata"]["toolUsePromptTokenCount"] = 300
    result, _ = call_gemini(respx_mock, json_reply(200, json.dumps(data)))
    assert result.usage is not None
    assert result.usage.input_tokens == 5300
    assert result.usage.cached_input_tokens == 4096


def test_gemini_blocked_prompt_is_permanent(respx_mock: respx.MockRouter) -> None:
    with pytest.raises(ProviderError) as caught:
        call_gemini(respx_mock, json_reply(200, recorded("gemini_blocked.json")))
    assert caught.value.permanent is True
    assert caught.value.message == "Google Gemini: blocked by the provider: PROHIBITED_CONTENT"


def test_gemini_candidate_without_content_returns_empty_text(
    respx_mock: respx.MockRouter,
) -> None:
    data = json.loads(recorded("gemini_generate.json"))
    data["candidates"] = [{"finishReason": "SAFETY", "index": 0}]
    result, _ = call_gemini(respx_mock, json_reply(200, json.dumps(data)))
    assert result.text == ""
    assert result.finish_reason == "SAFETY"
    assert result.usage is not None


def test_gemini_quota_429_takes_retry_delay_from_the_body(respx_mock: respx.MockRouter) -> None:
    with pytest.raises(ProviderError) as caught:
        call_gemini(respx_mock, json_reply(429, recorded("gemini_error_429.json")))
    assert caught.value.permanent is False
    assert caught.value.retry_after == 37.0
    assert caught.value.message == (
        "Google Gemini answered HTTP 429: You exceeded your current quota, please check your "
        "plan and billing details."
    )


def test_gemini_bad_request_400_is_permanent_with_its_message(
    respx_mock: respx.MockRouter,
) -> None:
    with pytest.raises(ProviderError) as caught:
        call_gemini(respx_mock, json_reply(400, recorded("gemini_error_400.json")))
    assert caught.value.permanent is True
    assert caught.value.status_code == 400
    assert caught.value.message == (
        "Google Gemini answered HTTP 400: * GenerateContentRequest.contents: contents is not "
        "specified"
    )


def test_gemini_url_accepts_a_resource_name_and_a_versioned_base() -> None:
    assert gemini.generate_url("http://127.0.0.1:8765/v1beta/", "models/gemini-2.5-pro") == (
        "http://127.0.0.1:8765/v1beta/models/gemini-2.5-pro:generateContent"
    )
    assert gemini.generate_url(GEMINI_URL, "../../files") == (
        "https://generativelanguage.googleapis.com/v1beta/models/..%2F..%2Ffiles:generateContent"
    )


# --- Error classification -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        (400, True),
        (401, True),
        (402, True),
        (403, True),
        (404, True),
        (422, True),
        (408, False),
        (409, False),
        (425, False),
        (429, False),
        (500, False),
        (502, False),
        (503, False),
        (301, True),
    ],
)
def test_http_status_classification(
    respx_mock: respx.MockRouter, status: int, permanent: bool
) -> None:
    body = json.dumps({"error": {"message": f"status {status} from upstream"}})
    error = openai_error(respx_mock, json_reply(status, body))
    assert error.permanent is permanent
    assert error.status_code == status
    assert error.reached_provider is True
    assert error.message.startswith(f"OpenAI answered HTTP {status}: ")


def test_out_of_credit_402_is_permanent_with_the_providers_words(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post(f"{OPENROUTER_URL}/chat/completions").mock(
        return_value=json_reply(402, recorded("openrouter_error_402.json"))
    )
    with pytest.raises(ProviderError) as caught:
        openai_compat.ADAPTER.complete(
            endpoint=Endpoint(base_url=OPENROUTER_URL, api_key=KEY), request=REQUEST
        )
    assert route.called
    assert caught.value.permanent is True
    assert caught.value.message == (
        "OpenRouter answered HTTP 402: Insufficient credits. Add more using "
        "https://openrouter.ai/settings/credits"
    )


def test_openrouter_upstream_error_names_the_upstream(respx_mock: respx.MockRouter) -> None:
    respx_mock.post(f"{OPENROUTER_URL}/chat/completions").mock(
        return_value=json_reply(429, recorded("openrouter_error_upstream_429.json"))
    )
    with pytest.raises(ProviderError) as caught:
        openai_compat.ADAPTER.complete(
            endpoint=Endpoint(base_url=OPENROUTER_URL, api_key=KEY), request=REQUEST
        )
    assert caught.value.permanent is False
    assert caught.value.message == (
        "OpenRouter answered HTTP 429: Provider returned error (DeepInfra: "
        "deepseek/deepseek-chat-v3 is temporarily rate-limited upstream. Please retry shortly.)"
    )


def test_retry_after_seconds(respx_mock: respx.MockRouter) -> None:
    error = openai_error(respx_mock, json_reply(429, "{}", **{"retry-after": "20"}))
    assert error.permanent is False
    assert error.retry_after == 20.0
    assert error.message == "OpenAI answered HTTP 429: {}"


def test_retry_after_http_date(respx_mock: respx.MockRouter) -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)
    error = openai_error(
        respx_mock, json_reply(503, "{}", **{"retry-after": format_datetime(when, usegmt=True)})
    )
    assert error.permanent is False
    assert error.retry_after is not None
    # HTTP dates have whole seconds, and a moment passes before the header is read.
    assert 87.0 <= error.retry_after <= 90.0


def test_unreadable_retry_after_is_ignored(respx_mock: respx.MockRouter) -> None:
    error = openai_error(respx_mock, json_reply(429, "{}", **{"retry-after": "soon"}))
    assert error.retry_after is None


def test_server_error_with_html_body_keeps_a_short_snippet(respx_mock: respx.MockRouter) -> None:
    html = "<html>\n<head><title>502 Bad Gateway</title></head>\n" + "x" * 2000 + "</html>"
    error = openai_error(respx_mock, httpx.Response(502, text=html))
    assert error.permanent is False
    assert error.message.startswith(
        "OpenAI answered HTTP 502: <html> <head><title>502 Bad Gateway</title></head> xxx"
    )
    assert len(error.message) <= 500


def test_read_timeout_is_retryable_and_reached_the_provider(
    respx_mock: respx.MockRouter, settings: Any
) -> None:
    error = openai_error(respx_mock, httpx.ReadTimeout("timed out"))
    assert error.permanent is False
    assert error.reached_provider is True
    assert error.message == f"OpenAI timed out after {settings.ROSTER_PROVIDER_TIMEOUT:g} s"


def test_connect_timeout_never_reached_the_provider(
    respx_mock: respx.MockRouter, settings: Any
) -> None:
    error = openai_error(respx_mock, httpx.ConnectTimeout("timed out"))
    assert error.permanent is False
    assert error.reached_provider is False
    assert error.message == (
        f"connecting to OpenAI timed out after {settings.ROSTER_PROVIDER_CONNECT_TIMEOUT:g} s"
    )


def test_connection_refused_is_retryable_and_never_reached(respx_mock: respx.MockRouter) -> None:
    error = openai_error(respx_mock, httpx.ConnectError("[Errno 111] Connection refused"))
    assert error.permanent is False
    assert error.reached_provider is False
    assert error.status_code is None
    assert error.message == "could not connect to OpenAI: [Errno 111] Connection refused"


def test_server_hanging_up_is_retryable(respx_mock: respx.MockRouter) -> None:
    error = openai_error(
        respx_mock, httpx.RemoteProtocolError("Server disconnected without sending a response.")
    )
    assert error.permanent is False
    assert error.reached_provider is True
    assert "RemoteProtocolError" in error.message


@pytest.mark.parametrize(
    "body",
    [
        "<html>upstream error</html>",
        '["not", "an", "object"]',
        '{"choices": [], "usage": {"cost": NaN}}',
        "",
    ],
)
def test_malformed_json_in_2xx_is_retryable(respx_mock: respx.MockRouter, body: str) -> None:
    error = openai_error(respx_mock, httpx.Response(200, text=body))
    assert error.permanent is False
    assert error.status_code == 200
    assert error.message.startswith("malformed JSON from OpenAI (HTTP 200)")


def test_nan_cost_is_malformed_not_money(respx_mock: respx.MockRouter) -> None:
    body = recorded("openrouter_chat.json").replace('"cost": 0.0076134', '"cost": NaN')
    error = openai_error(respx_mock, json_reply(200, body))
    assert error.message.startswith("malformed JSON from OpenAI")


# --- Secrets never leak ---------------------------------------------------------------------


def _post(adapter: Adapter, base_url: str, key: str) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        adapter.complete(endpoint=Endpoint(base_url=base_url, api_key=key), request=REQUEST)
    return caught.value


@pytest.mark.parametrize(
    ("adapter", "base_url", "url"),
    [
        (openai_compat.ADAPTER, OPENAI_URL, f"{OPENAI_URL}/chat/completions"),
        (anthropic.ADAPTER, ANTHROPIC_URL, f"{ANTHROPIC_URL}/v1/messages"),
        (gemini.ADAPTER, GEMINI_URL, GEMINI_ENDPOINT),
    ],
)
def test_echoed_key_never_appears_in_the_error(
    respx_mock: respx.MockRouter, adapter: Adapter, base_url: str, url: str
) -> None:
    respx_mock.post(url).mock(return_value=json_reply(401, recorded("openai_error_401.json")))
    error = _post(adapter, base_url, PLAIN_KEY)

    assert error.permanent is True
    assert error.status_code == 401
    for text in (error.message, str(error), repr(error), repr(error.args)):
        assert PLAIN_KEY not in text
    assert "Incorrect API key provided: ***. You can find your API key" in error.message


def test_key_shaped_strings_are_masked_even_when_not_our_key(
    respx_mock: respx.MockRouter,
) -> None:
    other = canary.OPENROUTER_KEY
    body = json.dumps({"error": {"message": f"key {other} is disabled"}})
    error = openai_error(respx_mock, json_reply(403, body))
    assert other not in error.message
    assert error.message == "OpenAI answered HTTP 403: key sk-o*** is disabled"


def test_key_cut_by_truncation_leaves_no_prefix(respx_mock: respx.MockRouter) -> None:
    # Unmasked, the key would straddle the 500-character limit and leave "office-canary-"
    # behind: masking must happen before cutting.
    body = json.dumps({"error": {"message": "x" * 460 + PLAIN_KEY + " " + "y" * 50}})
    error = openai_error(respx_mock, json_reply(401, body), key=PLAIN_KEY)
    assert error.message == "OpenAI answered HTTP 401: " + "x" * 460 + "*** " + "y" * 7 + "..."
    assert len(error.message) == 500


def test_key_echoed_in_a_plain_text_body_is_masked(respx_mock: respx.MockRouter) -> None:
    error = openai_error(
        respx_mock, httpx.Response(401, text=f"invalid token {PLAIN_KEY}"), key=PLAIN_KEY
    )
    assert error.message == "OpenAI answered HTTP 401: invalid token ***"


def test_key_echoed_in_a_malformed_200_is_masked(respx_mock: respx.MockRouter) -> None:
    error = openai_error(
        respx_mock, httpx.Response(200, text=f"<p>bad key {PLAIN_KEY}</p>"), key=PLAIN_KEY
    )
    assert PLAIN_KEY not in error.message
    assert error.message == "malformed JSON from OpenAI (HTTP 200): <p>bad key ***</p>"


def test_key_in_transport_error_text_is_masked(respx_mock: respx.MockRouter) -> None:
    error = openai_error(
        respx_mock, httpx.ProxyError(f"proxy refused token {PLAIN_KEY}"), key=PLAIN_KEY
    )
    assert PLAIN_KEY not in error.message
    assert error.message == "connection to OpenAI failed: ProxyError: proxy refused token ***"


# --- A stable prefix and a per-request timeout ---------------------------------------------

SPEC = "# Task title\nRename the report.\n\n## Goal\nOne name everywhere."
WITH_PREFIX = replace(REQUEST, messages=(ChatMessage(role="user", content="Do it."),), prefix=SPEC)


def test_anthropic_marks_the_system_prompt_and_the_prefix_as_two_cache_breakpoints(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("https://api.anthropic.com/v1/messages").mock(
        return_value=json_reply(200, recorded("anthropic_message.json"))
    )
    anthropic.ADAPTER.complete(
        endpoint=Endpoint(base_url=ANTHROPIC_URL, api_key=KEY), request=WITH_PREFIX
    )

    assert sent_json(route)["system"] == [
        {
            "type": "text",
            "text": "You are the finance analyst.",
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "text", "text": SPEC, "cache_control": {"type": "ephemeral"}},
    ]
    assert sent_json(route)["messages"] == [{"role": "user", "content": "Do it."}]


def test_anthropic_prefix_without_a_system_prompt_is_the_only_block(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("https://api.anthropic.com/v1/messages").mock(
        return_value=json_reply(200, recorded("anthropic_message.json"))
    )
    anthropic.ADAPTER.complete(
        endpoint=Endpoint(base_url=ANTHROPIC_URL, api_key=KEY),
        request=replace(WITH_PREFIX, system=""),
    )

    assert sent_json(route)["system"] == [
        {"type": "text", "text": SPEC, "cache_control": {"type": "ephemeral"}}
    ]


def test_openai_sends_the_prefix_after_the_system_prompt_in_one_first_message(
    respx_mock: respx.MockRouter,
) -> None:
    _, route = call_openai(
        respx_mock, json_reply(200, recorded("openai_chat.json")), request=WITH_PREFIX
    )

    assert sent_json(route)["messages"] == [
        {"role": "system", "content": f"You are the finance analyst.\n\n{SPEC}"},
        {"role": "user", "content": "Do it."},
    ]


def test_gemini_sends_the_prefix_as_a_second_system_instruction_part(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post(GEMINI_ENDPOINT).mock(
        return_value=json_reply(200, recorded("gemini_generate.json"))
    )
    gemini.ADAPTER.complete(
        endpoint=Endpoint(base_url=GEMINI_URL, api_key=KEY), request=WITH_PREFIX
    )

    assert sent_json(route)["systemInstruction"] == {
        "parts": [{"text": "You are the finance analyst."}, {"text": SPEC}]
    }


@pytest.mark.parametrize("wire", ["openai", "anthropic", "gemini"])
def test_a_request_timeout_replaces_the_clients_for_that_call_only(
    respx_mock: respx.MockRouter, settings: Any, wire: str
) -> None:
    settings.ROSTER_PROVIDER_CONNECT_TIMEOUT = 10
    url, adapter, body, base = {
        "openai": (f"{OPENAI_URL}/chat/completions", openai_compat, "openai_chat.json", OPENAI_URL),
        "anthropic": (
            f"{ANTHROPIC_URL}/v1/messages",
            anthropic,
            "anthropic_message.json",
            ANTHROPIC_URL,
        ),
        "gemini": (GEMINI_ENDPOINT, gemini, "gemini_generate.json", GEMINI_URL),
    }[wire]
    route = respx_mock.post(url).mock(return_value=json_reply(200, recorded(body)))
    endpoint = Endpoint(base_url=base, api_key=KEY)

    adapter.ADAPTER.complete(endpoint=endpoint, request=replace(REQUEST, timeout=2.5))
    adapter.ADAPTER.complete(endpoint=endpoint, request=REQUEST)

    own, default = (call.request.extensions["timeout"] for call in route.calls)
    assert own == {"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}
    assert default["read"] == settings.ROSTER_PROVIDER_TIMEOUT


def test_a_long_request_timeout_keeps_the_shorter_connect_timeout(settings: Any) -> None:
    settings.ROSTER_PROVIDER_CONNECT_TIMEOUT = 10

    timeout = request_timeout(300)

    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (10, 300, 300, 300)
    with pytest.raises(ValueError, match="above 0 seconds"):
        request_timeout(0)


def test_a_request_timeout_names_its_own_limit_when_it_expires(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post(f"{OPENAI_URL}/chat/completions").mock(
        side_effect=httpx.ReadTimeout("timed out")
    )

    with pytest.raises(ProviderError) as caught:
        openai_compat.ADAPTER.complete(
            endpoint=Endpoint(base_url=OPENAI_URL, api_key=KEY),
            request=replace(REQUEST, timeout=2),
        )

    assert caught.value.message == "OpenAI timed out after 2 s"
    assert caught.value.permanent is False
