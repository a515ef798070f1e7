"""The sandbox provider over a real loopback socket: wire formats, costs, faults, the log."""

from __future__ import annotations

import decimal
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings

from agents.sandbox.embedded import RunningSandbox, sandbox_in_thread
from agents.sandbox.server import SandboxConfig
from tests.canary import GEMINI_KEY, OPENAI_KEY, SANDBOX_KEY

KEY = SANDBOX_KEY
OPENAI = "/v1/chat/completions"
OPENROUTER = "/api/v1/chat/completions"
ANTHROPIC = "/v1/messages"
ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}

# Prices with more digits than a float holds, so any float on the way would show.
EXACT_PRICES = {
    "prompt": "0.00000008333333333333334",
    "completion": "0.0000001234567890123456789",
    "input_cache_read": "0.000000008333333333333334",
    "input_cache_write": "0.0000001041666666666666667",
}
CATALOG = {
    "data": [
        {"id": "test/exact-model", "pricing": EXACT_PRICES},
        {"id": "openrouter/auto", "pricing": {"prompt": "-1", "completion": "-1"}},
    ]
}
MODEL = "test/exact-model"
SHORT_MODEL = "exact-model"  # found in the catalog by the id after "vendor/"


@pytest.fixture(scope="module")
def sandbox_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sandbox")
    (directory / "catalog.json").write_text(json.dumps(CATALOG))
    return directory


@pytest.fixture(scope="module")
def log_file(sandbox_dir: Path) -> Path:
    return sandbox_dir / "requests.jsonl"


@pytest.fixture(scope="module")
def sandbox(sandbox_dir: Path, log_file: Path) -> Iterator[RunningSandbox]:
    config = SandboxConfig(catalog_path=sandbox_dir / "catalog.json", log_file=log_file)
    with sandbox_in_thread(config) as running:
        yield running


@pytest.fixture
def client(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.base_url, timeout=10) as http:
        http.post("/_sandbox/reset").raise_for_status()
        yield http


def exact(response: httpx.Response) -> Any:
    """Decode a body keeping every JSON number with a fraction as an exact Decimal."""
    return json.loads(response.content, parse_float=Decimal)


def logged(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    response = client.get("/_sandbox/requests", params=params)
    response.raise_for_status()
    return response.json()["requests"]


def tokens(text: str) -> int:
    return (len(text) + 3) // 4


def price(kind: str) -> Decimal:
    return Decimal(EXACT_PRICES[kind])


def expected_cost(
    *, input_tokens: int, output_tokens: int, cached: int = 0, written: int = 0
) -> Decimal:
    """tokens x catalog prices, computed here independently of billing.pricing."""
    with decimal.localcontext(prec=80):
        return (
            (input_tokens - cached - written) * price("prompt")
            + cached * price("input_cache_read")
            + written * price("input_cache_write")
            + output_tokens * price("completion")
        )


def chat(
    client: httpx.Client,
    path: str = OPENAI,
    *,
    model: str = MODEL,
    user: str = "Hello sandbox, what is two plus two?",
    system: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
    **extra: Any,
) -> httpx.Response:
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": user})
    return client.post(
        path,
        json={"model": model, "messages": messages, **extra},
        headers={"Authorization": f"Bearer {KEY}", **(headers or {})},
        timeout=timeout or client.timeout,
    )


def anthropic(
    client: httpx.Client,
    *,
    system: Any = None,
    user: str = "Hello Claude-alike",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    body: dict[str, Any] = {
        "model": SHORT_MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": user}],
        **extra,
    }
    if system is not None:
        body["system"] = system
    return client.post(ANTHROPIC, json=body, headers=headers or ANTHROPIC_HEADERS)


def gemini(
    client: httpx.Client,
    *,
    system: str | None = None,
    user: str = "Hello Gemini-alike",
    method: str = "generateContent",
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": user}]}], **extra}
    if system is not None:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    return client.post(
        f"/v1beta/models/{SHORT_MODEL}:{method}",
        json=body,
        params=params,
        headers={"x-goog-api-key": KEY} if headers is None else headers,
    )


def sse_data(response: httpx.Response) -> list[str]:
    return [
        line.removeprefix("data: ")
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]


# --- OpenAI and OpenRouter ------------------------------------------------------------


def test_openai_chat_completion_has_the_documented_shape_and_usage(client: httpx.Client) -> None:
    user = "Hello sandbox, what is two plus two?"
    response = chat(client, system="Be brief.", user=user)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == MODEL
    assert "provider" not in body
    [choice] = body["choices"]
    answer = choice["message"]["content"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"
    assert answer.startswith(f"Sandbox answer from {MODEL}: {user} [ref ")
    prompt_tokens = (tokens("Be brief.") + 4) + (tokens(user) + 4)
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": tokens(answer),
        "total_tokens": prompt_tokens + tokens(answer),
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    # The same request gets the same answer.
    assert chat(client, system="Be brief.", user=user).json()["choices"] == body["choices"]


def test_openrouter_reports_the_exact_cost_as_a_json_number(client: httpx.Client) -> None:
    response = chat(client, OPENROUTER, system="Be brief.", headers={"X-Roster-Call-Id": "c-1"})
    assert response.status_code == 200
    body = exact(response)
    usage = body["usage"]
    assert body["id"].startswith("gen-")
    assert body["provider"] == "Sandbox"
    cost = expected_cost(
        input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"]
    )
    assert usage["cost"] == cost
    assert isinstance(usage["cost"], Decimal)  # a JSON number, not a string
    assert f'"cost":{cost:f}'.encode() in response.content
    assert float(cost) != cost  # a float on the way would have lost digits
    assert usage["is_byok"] is False
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 0}
    assert usage["cost_details"] == {"upstream_inference_cost": None}
    [entry] = logged(client, call_id="c-1")
    assert entry["wire"] == "openrouter"
    assert Decimal(entry["cost"]) == cost


def test_openai_caches_a_repeated_system_prompt(client: httpx.Client) -> None:
    system = "You are the finance role. " * 8
    first = exact(chat(client, OPENROUTER, system=system, user="one"))["usage"]
    second = exact(chat(client, OPENROUTER, system=system, user="two"))["usage"]
    cached = tokens(system) + 4
    assert first["prompt_tokens_details"]["cached_tokens"] == 0
    assert second["prompt_tokens_details"]["cached_tokens"] == cached
    assert second["cost"] == expected_cost(
        input_tokens=second["prompt_tokens"],
        output_tokens=second["completion_tokens"],
        cached=cached,
    )
    plain = chat(client, OPENAI, system=system, user="three").json()["usage"]
    assert plain["prompt_tokens_details"] == {"cached_tokens": 0}  # its own provider cache


def test_reasoning_tokens_count_inside_completion_tokens(client: httpx.Client) -> None:
    response = chat(client, OPENROUTER, headers={"X-Sandbox-Directives": "reasoning=40"})
    body = exact(response)
    answer = body["choices"][0]["message"]["content"]
    usage = body["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 40
    assert usage["completion_tokens"] == tokens(answer) + 40
    assert usage["cost"] == expected_cost(
        input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"]
    )


def test_max_tokens_truncates_and_finishes_with_length(client: httpx.Client) -> None:
    body = chat(client, max_tokens=3).json()
    assert body["choices"][0]["message"]["content"] == "Sandbox answ"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    newer_name = chat(client, max_completion_tokens=2).json()
    assert newer_name["choices"][0]["message"]["content"] == "Sandbox "


def test_content_as_a_list_of_text_parts(client: httpx.Client) -> None:
    response = client.post(
        OPENAI,
        json={
            "model": MODEL,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "part one"}]},
            ],
        },
        headers={"Authorization": f"Bearer {KEY}"},
    )
    body = response.json()
    assert "part one" in body["choices"][0]["message"]["content"]
    assert body["usage"]["prompt_tokens"] == tokens("part one") + 4


def test_unknown_or_unpriced_model_answers_without_cost(client: httpx.Client) -> None:
    for model in ("nobody/knows", "openrouter/auto"):
        body = chat(client, OPENROUTER, model=model, headers={"X-Roster-Call-Id": model}).json()
        assert body["usage"]["prompt_tokens"] > 0
        assert "cost" not in body["usage"]
        assert logged(client, call_id=model)[0]["cost"] is None


def test_openai_stream_sends_deltas_then_a_usage_chunk(client: httpx.Client) -> None:
    response = chat(client, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    data = sse_data(response)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == tokens(text)
    # The streamed text is the same answer as without streaming.
    assert text == chat(client).json()["choices"][0]["message"]["content"]
    entries = logged(client)
    assert [e["stream"] for e in entries] == [True, False]


def test_openai_stream_without_include_usage_has_no_usage(client: httpx.Client) -> None:
    chunks = [json.loads(item) for item in sse_data(chat(client, stream=True))[:-1]]
    assert all("usage" not in c for c in chunks)


def test_openrouter_stream_ends_with_usage_and_cost(client: httpx.Client) -> None:
    data = sse_data(chat(client, OPENROUTER, stream=True))
    final = json.loads(data[-2], parse_float=Decimal)
    assert final["provider"] == "Sandbox"
    usage = final["usage"]
    assert usage["cost"] == expected_cost(
        input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"]
    )


# --- Anthropic ------------------------------------------------------------------------


def test_anthropic_message_has_the_documented_shape(client: httpx.Client) -> None:
    response = anthropic(client, system="Be brief.", user="Hello Claude-alike")
    assert response.status_code == 200
    body = exact(response)
    assert body["id"].startswith("msg_")
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["model"] == SHORT_MODEL
    [block] = body["content"]
    assert block["type"] == "text"
    assert block["text"].startswith(f"Sandbox answer from {SHORT_MODEL}: Hello Claude-alike")
    assert body["stop_reason"] == "end_turn"
    assert body["stop_sequence"] is None
    assert body["usage"] == {
        "input_tokens": (tokens("Be brief.") + 4) + (tokens("Hello Claude-alike") + 4),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": tokens(block["text"]),
    }


def test_anthropic_caches_only_a_system_prompt_marked_with_cache_control(
    client: httpx.Client,
) -> None:
    text = "You are the legal role; cite the clause. " * 4
    system = [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]
    cache_tokens = tokens(text) + 4
    user_tokens = tokens("Hello Claude-alike") + 4

    first = anthropic(
        client, system=system, headers={**ANTHROPIC_HEADERS, "X-Roster-Call-Id": "a1"}
    )
    second = anthropic(
        client, system=system, headers={**ANTHROPIC_HEADERS, "X-Roster-Call-Id": "a2"}
    )
    unmarked = anthropic(client, system=text + " ")
    assert first.json()["usage"]["cache_creation_input_tokens"] == cache_tokens
    assert first.json()["usage"]["cache_read_input_tokens"] == 0
    # input_tokens excludes cache writes and reads, as the real API reports it.
    assert first.json()["usage"]["input_tokens"] == user_tokens
    assert second.json()["usage"]["cache_creation_input_tokens"] == 0
    assert second.json()["usage"]["cache_read_input_tokens"] == cache_tokens
    assert second.json()["usage"]["input_tokens"] == user_tokens
    for _ in range(2):
        usage = unmarked.json()["usage"]
        assert usage["cache_creation_input_tokens"] == usage["cache_read_input_tokens"] == 0
        unmarked = anthropic(client, system=text + " ")

    # The log is normalised: input includes the cached and written tokens.
    [write] = logged(client, call_id="a1")
    [read] = logged(client, call_id="a2")
    output = second.json()["usage"]["output_tokens"]
    assert (write["input_tokens"], write["cache_write_tokens"]) == (
        user_tokens + cache_tokens,
        cache_tokens,
    )
    assert (read["input_tokens"], read["cached_input_tokens"]) == (
        user_tokens + cache_tokens,
        cache_tokens,
    )
    assert Decimal(write["cost"]) == expected_cost(
        input_tokens=user_tokens + cache_tokens, output_tokens=output, written=cache_tokens
    )
    assert Decimal(read["cost"]) == expected_cost(
        input_tokens=user_tokens + cache_tokens, output_tokens=output, cached=cache_tokens
    )


def test_anthropic_requires_the_version_header_and_max_tokens(client: httpx.Client) -> None:
    response = anthropic(client, headers={"x-api-key": KEY})
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "anthropic-version: header is required",
        },
    }
    response = client.post(
        ANTHROPIC,
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers=ANTHROPIC_HEADERS,
    )
    assert response.status_code == 400
    assert "max_tokens" in response.json()["error"]["message"]


def test_anthropic_max_tokens_stops_with_max_tokens(client: httpx.Client) -> None:
    body = anthropic(client, max_tokens=2).json()
    assert body["content"][0]["text"] == "Sandbox "
    assert body["stop_reason"] == "max_tokens"
    assert body["usage"]["output_tokens"] == 2


def test_anthropic_stream_sends_the_documented_events(client: httpx.Client) -> None:
    response = anthropic(client, stream=True)
    assert response.status_code == 200
    events = [
        line.removeprefix("event: ")
        for line in response.text.splitlines()
        if line.startswith("event: ")
    ]
    data = [json.loads(item) for item in sse_data(response)]
    assert events[:3] == ["message_start", "content_block_start", "ping"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert [d["type"] for d in data] == events
    text = "".join(d["delta"]["text"] for d in data if d["type"] == "content_block_delta")
    assert text == anthropic(client).json()["content"][0]["text"]
    assert data[0]["message"]["usage"]["input_tokens"] == tokens("Hello Claude-alike") + 4
    assert data[-2]["delta"]["stop_reason"] == "end_turn"
    assert data[-2]["usage"] == {"output_tokens": tokens(text)}


# --- Gemini ---------------------------------------------------------------------------


def test_gemini_generate_content_has_the_documented_shape(client: httpx.Client) -> None:
    response = gemini(client, system="Be brief.", generationConfig={"maxOutputTokens": 500})
    assert response.status_code == 200
    body = response.json()
    [candidate] = body["candidates"]
    assert candidate["content"]["role"] == "model"
    [part] = candidate["content"]["parts"]
    assert part["text"].startswith(f"Sandbox answer from {SHORT_MODEL}: Hello Gemini-alike")
    assert candidate["finishReason"] == "STOP"
    assert candidate["index"] == 0
    prompt_tokens = (tokens("Be brief.") + 4) + (tokens("Hello Gemini-alike") + 4)
    assert body["usageMetadata"] == {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": tokens(part["text"]),
        "totalTokenCount": prompt_tokens + tokens(part["text"]),
    }
    assert body["modelVersion"] == SHORT_MODEL
    assert body["responseId"]


def test_gemini_cache_and_thoughts_accounting(client: httpx.Client) -> None:
    system = "You are the research role of the office. " * 3
    gemini(client, system=system, params={"key": KEY}, headers={})  # key in the query
    response = gemini(
        client,
        system=system,
        user="Think hard [[sandbox reasoning=25]]",
        headers={"x-goog-api-key": KEY, "X-Roster-Call-Id": "g2"},
    )
    usage = response.json()["usageMetadata"]
    answer = response.json()["candidates"][0]["content"]["parts"][0]["text"]
    cached = tokens(system) + 4
    # promptTokenCount includes the cached tokens; candidatesTokenCount excludes thoughts.
    assert usage["cachedContentTokenCount"] == cached
    assert usage["promptTokenCount"] == cached + tokens("Think hard [[sandbox reasoning=25]]") + 4
    assert usage["thoughtsTokenCount"] == 25
    assert usage["candidatesTokenCount"] == tokens(answer)
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + tokens(answer) + 25
    [entry] = logged(client, call_id="g2")
    assert (entry["input_tokens"], entry["cached_input_tokens"]) == (
        usage["promptTokenCount"],
        cached,
    )
    assert (entry["output_tokens"], entry["reasoning_tokens"]) == (tokens(answer) + 25, 25)
    assert Decimal(entry["cost"]) == expected_cost(
        input_tokens=usage["promptTokenCount"],
        output_tokens=tokens(answer) + 25,
        cached=cached,
    )


def test_gemini_max_output_tokens_finishes_with_max_tokens(client: httpx.Client) -> None:
    body = gemini(client, generationConfig={"maxOutputTokens": 1}).json()
    assert body["candidates"][0]["content"]["parts"][0]["text"] == "Sand"
    assert body["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_gemini_streams_server_sent_events(client: httpx.Client) -> None:
    response = gemini(client, method="streamGenerateContent", params={"alt": "sse"})
    assert response.status_code == 200
    chunks = [json.loads(item) for item in sse_data(response)]
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == gemini(client).json()["candidates"][0]["content"]["parts"][0]["text"]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == tokens(text)
    as_array = gemini(client, method="streamGenerateContent").json()
    assert [c["candidates"] for c in as_array] == [c["candidates"] for c in chunks]


# --- Keys and validation --------------------------------------------------------------


@pytest.mark.parametrize("secret", [OPENAI_KEY, GEMINI_KEY])
def test_a_wrong_key_is_refused_with_the_key_echoed(client: httpx.Client, secret: str) -> None:
    openai = chat(client, headers={"Authorization": f"Bearer {secret}"})
    assert openai.status_code == 401
    assert openai.json()["error"]["code"] == "invalid_api_key"
    assert openai.json()["error"]["type"] == "invalid_request_error"
    assert secret in openai.json()["error"]["message"]

    openrouter = chat(client, OPENROUTER, headers={"Authorization": f"Bearer {secret}"})
    assert openrouter.json()["error"]["code"] == 401
    assert secret in openrouter.json()["error"]["message"]

    claude = anthropic(client, headers={"x-api-key": secret, "anthropic-version": "2023-06-01"})
    assert claude.status_code == 401
    assert claude.json()["type"] == "error"
    assert claude.json()["error"]["type"] == "authentication_error"
    assert secret in claude.json()["error"]["message"]

    google = gemini(client, headers={"x-goog-api-key": secret})
    assert google.status_code == 401
    assert google.json()["error"]["code"] == 401
    assert google.json()["error"]["status"] == "UNAUTHENTICATED"
    assert secret in google.json()["error"]["message"]

    assert [e["status"] for e in logged(client)] == [401, 401, 401, 401]
    assert all(e["fault"] is None and e["input_tokens"] == 0 for e in logged(client))


def test_a_missing_key_is_refused(client: httpx.Client) -> None:
    assert client.post(OPENAI, json={"model": MODEL, "messages": []}).status_code == 401
    assert client.post(ANTHROPIC, json={}, headers={"anthropic-version": "x"}).status_code == 401
    assert gemini(client, headers={}).status_code == 401


def test_malformed_or_incomplete_requests_get_400_in_each_shape(client: httpx.Client) -> None:
    bearer = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    bad_json = client.post(OPENAI, content=b"{not json", headers=bearer)
    assert bad_json.status_code == 400
    assert "not valid JSON" in bad_json.json()["error"]["message"]
    assert bad_json.json()["error"]["type"] == "invalid_request_error"

    no_model = client.post(
        OPENAI, json={"messages": [{"role": "user", "content": "x"}]}, headers=bearer
    )
    assert no_model.status_code == 400
    assert "model is required" in no_model.json()["error"]["message"]

    no_messages = client.post(OPENROUTER, json={"model": MODEL}, headers=bearer)
    assert no_messages.status_code == 400
    assert no_messages.json()["error"]["code"] == 400
    assert "messages is required" in no_messages.json()["error"]["message"]

    claude = client.post(ANTHROPIC, content=b"[", headers=ANTHROPIC_HEADERS)
    assert claude.status_code == 400
    assert claude.json()["error"]["type"] == "invalid_request_error"

    google = client.post(
        f"/v1beta/models/{SHORT_MODEL}:generateContent",
        json={"contents": []},
        headers={"x-goog-api-key": KEY},
    )
    assert google.status_code == 400
    assert google.json()["error"]["status"] == "INVALID_ARGUMENT"

    bad_directive = chat(client, headers={"X-Sandbox-Directives": "fault=teapot"})
    assert bad_directive.status_code == 400
    assert "unknown sandbox fault 'teapot'" in bad_directive.json()["error"]["message"]


def test_unknown_path_is_404(client: httpx.Client) -> None:
    response = client.post("/v2/complete", json={})
    assert response.status_code == 404
    assert "/v2/complete" in response.json()["error"]["message"]


# --- Directives -----------------------------------------------------------------------


def test_rate_limit_fault_with_times_then_success(client: httpx.Client) -> None:
    directive = {"X-Sandbox-Directives": "fault=429 times=1 retry_after=7"}
    limited = chat(client, headers=directive)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "7"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    retried = chat(client, headers=directive)
    assert retried.status_code == 200
    assert "retry-after" not in retried.headers
    # Another conversation with the same directive is another request.
    assert chat(client, user="other", headers=directive).status_code == 429
    entries = logged(client)
    assert [(e["status"], e["fault"]) for e in entries] == [(429, "429"), (200, None), (429, "429")]
    assert entries[0]["input_tokens"] == 0
    assert entries[0]["cost"] is None


def test_directives_in_the_message_text_work_on_every_wire(client: httpx.Client) -> None:
    marker = "Please answer [[sandbox fault=503]]"
    assert chat(client, user=marker).status_code == 503
    claude = anthropic(client, user=marker)
    assert claude.status_code == 503
    assert claude.json()["error"]["type"] == "overloaded_error"
    google = gemini(client, user=marker)
    assert google.status_code == 503
    assert google.json()["error"]["status"] == "UNAVAILABLE"
    server_error = anthropic(client, user="[[sandbox fault=500 times=1]]")
    assert server_error.status_code == 500
    assert server_error.json()["error"]["type"] == "api_error"
    assert anthropic(client, user="[[sandbox fault=500 times=1]]").status_code == 200


def test_simulated_auth_and_bad_request_faults(client: httpx.Client) -> None:
    unauthorized = chat(client, headers={"X-Sandbox-Directives": "fault=401"})
    assert unauthorized.status_code == 401
    assert KEY in unauthorized.json()["error"]["message"]
    assert chat(client, headers={"X-Sandbox-Directives": "fault=400"}).status_code == 400
    assert [e["fault"] for e in logged(client)] == ["401", "400"]


def test_malformed_fault_returns_200_with_a_body_that_is_not_json(client: httpx.Client) -> None:
    response = chat(client, headers={"X-Sandbox-Directives": "fault=malformed"})
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    streamed = chat(client, stream=True, headers={"X-Sandbox-Directives": "fault=malformed"})
    with pytest.raises(json.JSONDecodeError):
        json.loads(sse_data(streamed)[0])
    assert [(e["status"], e["fault"]) for e in logged(client)] == [
        (200, "malformed"),
        (200, "malformed"),
    ]


def test_truncated_fault_drops_the_connection_halfway_and_logs_the_billed_answer(
    client: httpx.Client,
) -> None:
    directive = {"X-Sandbox-Directives": "fault=truncated", "X-Roster-Call-Id": "cut-body"}
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client, headers=directive)

    streamed_directive = {**directive, "X-Roster-Call-Id": "cut-stream"}
    received: list[str] = []

    def read_stream() -> None:
        with client.stream(
            "POST",
            OPENAI,
            headers={"Authorization": f"Bearer {KEY}", **streamed_directive},
            json={
                "model": MODEL,
                "stream": True,
                "messages": [
                    {"role": "user", "content": "Tell me a long story. [[sandbox words=60]]"}
                ],
            },
        ) as response:
            assert response.status_code == 200
            received.extend(response.iter_lines())

    with pytest.raises(httpx.RemoteProtocolError):
        read_stream()
    events = [line for line in received if line.startswith("data: ")]
    assert events, "the first half of the stream arrives"
    assert "data: [DONE]" not in received
    assert not any('"usage"' in line for line in events)

    for call_id in ("cut-body", "cut-stream"):
        [entry] = logged(client, call_id=call_id)
        assert (entry["status"], entry["fault"]) == (200, "truncated")
        assert entry["output_tokens"] > 0
        assert entry["cost"] is not None


def test_no_usage_fault_answers_without_usage_but_logs_what_was_used(
    client: httpx.Client,
) -> None:
    directive = {"X-Sandbox-Directives": "fault=no_usage", "X-Roster-Call-Id": "nu"}
    body = chat(client, OPENROUTER, headers=directive).json()
    assert body["choices"][0]["message"]["content"].startswith("Sandbox answer")
    assert "usage" not in body
    assert "usage" not in anthropic(client, user="[[sandbox fault=no_usage]]").json()
    assert "usageMetadata" not in gemini(client, user="[[sandbox fault=no_usage]]").json()
    [entry] = logged(client, call_id="nu")
    assert entry["fault"] == "no_usage"
    assert entry["input_tokens"] > 0
    assert entry["cost"] is not None


def test_latency_directive_delays_the_answer(client: httpx.Client) -> None:
    started = time.monotonic()
    response = chat(client, headers={"X-Sandbox-Directives": "latency=0.3"})
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3
    assert logged(client)[0]["latency"] == 0.3


def test_work_finished_after_the_client_left_is_still_logged(client: httpx.Client) -> None:
    with pytest.raises(httpx.ReadTimeout):
        chat(
            client,
            headers={"X-Sandbox-Directives": "latency=0.4", "X-Roster-Call-Id": "gone"},
            timeout=0.1,
        )
    deadline = time.monotonic() + 3
    while not logged(client, call_id="gone") and time.monotonic() < deadline:
        time.sleep(0.05)
    [entry] = logged(client, call_id="gone")
    assert entry["status"] == 200
    assert entry["input_tokens"] > 0


def test_a_hang_outlasts_the_client_and_logs_nothing(client: httpx.Client) -> None:
    with pytest.raises(httpx.ReadTimeout):
        chat(
            client,
            headers={"X-Sandbox-Directives": "fault=hang", "X-Roster-Call-Id": "hung"},
            timeout=0.3,
        )
    time.sleep(0.5)  # longer than the server's disconnect poll
    assert logged(client, call_id="hung") == []
    assert chat(client).status_code == 200  # the server is still answering


def test_a_hang_ends_when_the_client_leaves_not_when_it_runs_out() -> None:
    hang = {"X-Sandbox-Directives": "fault=hang"}
    with (
        sandbox_in_thread(SandboxConfig(hang_seconds=0.6)) as short_hangs,
        httpx.Client(base_url=short_hangs.base_url, timeout=5) as http,
    ):
        with pytest.raises(httpx.ReadTimeout):
            chat(http, user="leaves", headers=hang, timeout=0.2)
        patient = chat(http, user="waits", headers=hang)  # stays past hang_seconds
        assert patient.status_code == 200
        time.sleep(0.3)
        [entry] = logged(http)
        assert (entry["fault"], entry["status"]) == ("hang", 200)
        assert "waits" in patient.json()["choices"][0]["message"]["content"]


# --- Log and control endpoints --------------------------------------------------------


def test_log_entries_have_every_field_and_filter_by_call_id_and_since(
    client: httpx.Client, log_file: Path
) -> None:
    chat(client, headers={"X-Roster-Call-Id": "call-a"})
    chat(client, OPENROUTER, headers={"X-Roster-Call-Id": "call-b"})
    anthropic(client)
    entries = logged(client)
    assert len(entries) == 3
    first = entries[0]
    assert set(first) == {
        "seq",
        "time",
        "call_id",
        "wire",
        "path",
        "model",
        "status",
        "fault",
        "stream",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "cost",
        "latency",
    }
    assert (first["call_id"], first["wire"], first["path"], first["model"]) == (
        "call-a",
        "openai",
        OPENAI,
        MODEL,
    )
    assert first["time"].endswith("+00:00")
    assert [e["wire"] for e in entries] == ["openai", "openrouter", "anthropic"]
    assert entries[2]["call_id"] is None
    assert [e["call_id"] for e in logged(client, call_id="call-b")] == ["call-b"]
    assert [e["seq"] for e in logged(client, since=str(first["seq"]))] == [
        first["seq"] + 1,
        first["seq"] + 2,
    ]
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert lines[-3:] == entries
    assert client.get("/_sandbox/requests", params={"since": "x"}).status_code == 400


def test_gemini_query_key_never_reaches_the_log(client: httpx.Client, log_file: Path) -> None:
    gemini(client, params={"key": KEY}, headers={})
    assert logged(client)[0]["path"] == f"/v1beta/models/{SHORT_MODEL}:generateContent"
    assert KEY not in log_file.read_text()


def test_reset_clears_log_fault_counters_and_cache(client: httpx.Client) -> None:
    directive = {"X-Sandbox-Directives": "fault=500 times=1"}
    assert chat(client, headers=directive).status_code == 500
    assert chat(client, headers=directive).status_code == 200
    system = "Remember me, please."
    chat(client, system=system)
    assert chat(client, system=system).json()["usage"]["prompt_tokens_details"]["cached_tokens"]
    last_seq = logged(client)[-1]["seq"]

    assert client.post("/_sandbox/reset").json() == {"ok": True}
    assert logged(client) == []
    assert chat(client, headers=directive).status_code == 500
    assert chat(client, system=system).json()["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 0
    }
    assert logged(client)[0]["seq"] == last_seq + 1  # numbering goes on


def test_health(client: httpx.Client) -> None:
    assert client.get("/_sandbox/health").json() == {"ok": True}


# --- The management command -----------------------------------------------------------


def test_command_announces_itself_and_serves_with_the_bundled_catalog() -> None:
    server = subprocess.Popen(
        [sys.executable, "manage.py", "sandbox_provider", "--port", "0", "--latency", "0.01"],
        cwd=Path(settings.BASE_DIR),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        assert line.startswith("Sandbox provider listening on http://127.0.0.1:")
        assert line.endswith(" (simulated answers, not a real model)")
        base_url = line.split()[4]
        with httpx.Client(base_url=base_url, timeout=10) as http:
            response = chat(http, OPENROUTER, model="openai/gpt-4o")
            usage = exact(response)["usage"]
            with decimal.localcontext(prec=60):
                assert usage["cost"] == usage["prompt_tokens"] * Decimal("0.0000025") + usage[
                    "completion_tokens"
                ] * Decimal("0.00001")
            assert logged(http)[0]["latency"] == 0.01
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert server.returncode == 0
