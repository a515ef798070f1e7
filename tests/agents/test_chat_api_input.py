"""Bad input to the OpenAI-compatible endpoint: every malformed or unsupported request is
a 4xx in OpenAI's error shape that names what is wrong, never a 500, and writes nothing
(no task, no ledger row)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from billing.models import Usage
from office.models import Role, Task
from office.services import api_token_create
from tests.factories import RoleFactory, UserFactory

pytestmark = pytest.mark.django_db

URL = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello."}]


@pytest.fixture
def token() -> str:
    return api_token_create(user=UserFactory(groups=["staff"]), name="agent")[1]


@pytest.fixture
def coder() -> Role:
    return RoleFactory(slug="coder", runnable=True)


def post(client, token: str, body: Any):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(
        URL, data=data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def request(**fields: Any) -> dict[str, Any]:
    return {"model": "coder", "messages": HELLO, **fields}


def message(**fields: Any) -> dict[str, Any]:
    return request(messages=[{"role": "user", "content": "Hi.", **fields}])


# (case, body, status, code, param)
CASES = [
    ("malformed JSON", b'{"model": "coder", "messages": [', 400, "invalid_json", None),
    ("not UTF-8", b'{"model": "\xff"}', 400, "invalid_json", None),
    ("a JSON array", [1, 2], 400, "invalid_json", None),
    ("no model", {"messages": HELLO}, 400, "missing_required_parameter", "model"),
    ("model a number", request(model=7), 400, "invalid_type", "model"),
    ("unknown model", request(model="wizard"), 404, "model_not_found", "model"),
    ("no messages", {"model": "coder"}, 400, "missing_required_parameter", "messages"),
    ("messages a string", request(messages="Hello"), 400, "invalid_type", "messages"),
    ("messages empty", request(messages=[]), 400, "invalid_type", "messages"),
    ("message not an object", request(messages=["Hi"]), 400, "invalid_type", "messages[0]"),
    (
        "unknown role",
        request(messages=[{"role": "wizard", "content": "Hi"}]),
        400,
        "invalid_value",
        "messages[0].role",
    ),
    (
        "tool role",
        request(messages=[{"role": "tool", "content": "42"}]),
        400,
        "unsupported_value",
        "messages[0].role",
    ),
    ("content a number", message(content=5), 400, "invalid_type", "messages[0].content"),
    ("content empty", message(content="  "), 400, "invalid_value", "messages[0].content"),
    (
        "image part",
        message(content=[{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]),
        400,
        "unsupported_value",
        "messages[0].content[0].type",
    ),
    (
        "tool calls",
        message(tool_calls=[]),
        400,
        "unsupported_parameter",
        "messages[0].tool_calls",
    ),
    (
        "only a system message",
        request(messages=[{"role": "system", "content": "Be kind."}]),
        400,
        "invalid_value",
        "messages",
    ),
    ("max_tokens a string", request(max_tokens="100"), 400, "invalid_type", "max_tokens"),
    ("max_tokens zero", request(max_tokens=0), 400, "invalid_value", "max_tokens"),
    ("max_tokens too big", request(max_tokens=10**9), 400, "invalid_value", "max_tokens"),
    (
        "two limits that disagree",
        request(max_tokens=10, max_completion_tokens=20),
        400,
        "invalid_value",
        "max_tokens",
    ),
    ("temperature text", request(temperature="hot"), 400, "invalid_type", "temperature"),
    ("temperature too high", request(temperature=5), 400, "invalid_value", "temperature"),
    ("top_p above 1", request(top_p=1.5), 400, "invalid_value", "top_p"),
    ("stop a number", request(stop=3), 400, "invalid_type", "stop"),
    ("stream not a bool", request(stream="yes"), 400, "invalid_type", "stream"),
    (
        "stream options without a stream",
        request(stream_options={"include_usage": True}),
        400,
        "invalid_value",
        "stream_options",
    ),
    ("n above 1", request(n=2), 400, "unsupported_value", "n"),
    ("tools", request(tools=[{"type": "function"}]), 400, "unsupported_parameter", "tools"),
    ("an unknown key", request(frobnicate=True), 400, "unsupported_parameter", "frobnicate"),
    (
        "response_format",
        request(response_format={"type": "json_object"}),
        400,
        "unsupported_parameter",
        "response_format",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"), [case[1:] for case in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_a_clear_4xx_and_writes_nothing(
    client, token, coder, body, status, code, param
):
    response = post(client, token, body)

    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] in {"invalid_request_error", "permission_error"}
    assert len(error["message"]) > 10
    assert response["x-should-retry"] == "false"
    assert Task.objects.count() == 0
    assert Usage.objects.count() == 0


def test_an_unsupported_parameter_list_names_each_one(client, token, coder):
    response = post(client, token, request(tools=[], logprobs=True, seed=1))

    assert response.status_code == 400
    assert "logprobs, seed, tools" in response.json()["error"]["message"]


def test_an_oversize_prompt_is_refused_with_its_size_and_the_limit(client, token, coder, settings):
    settings.ROSTER_MAX_PROMPT_CHARS = 1000
    body = request(
        messages=[
            {"role": "system", "content": "s" * 400},
            {"role": "user", "content": "u" * 601},
        ]
    )

    response = post(client, token, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("prompt_too_long", "messages")
    assert "1,001 characters; the limit is 1,000" in error["message"]
    assert Task.objects.count() == 0


def test_a_role_without_a_model_is_refused_before_anything_is_written(client, token):
    Role.objects.create(slug="coder", name="Coder")

    response = post(client, token, request())

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "model_not_runnable"
    assert Task.objects.count() == 0


def test_requests_without_a_token_get_401_with_a_challenge(client, coder):
    response = client.post(URL, data=json.dumps(request()), content_type="application/json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_get_on_chat_completions_is_405(client, token):
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_a_body_above_the_upload_limit_is_413(client, token, coder, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    response = post(client, token, request(messages=[{"role": "user", "content": "x" * 2000}]))

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert Task.objects.count() == 0


def test_a_token_over_its_request_rate_gets_429_with_retry_after_and_nothing_written(
    client, token, coder, settings
):
    """/v1 counts against the same per-token rate as the agent API, so a token has one
    limit whichever door it uses."""
    settings.ROSTER_API_THROTTLE_RATE = "2/minute"
    models = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {token}")
    api = client.get("/api/roles/", HTTP_AUTHORIZATION=f"Bearer {token}")

    response = post(client, token, request())

    assert (models.status_code, api.status_code) == (200, 200)
    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("rate_limit_exceeded", "rate_limit_error")
    assert "2/minute" in error["message"]
    assert 1 <= int(response["Retry-After"]) <= 60
    assert Task.objects.count() == 0
    assert Usage.objects.count() == 0
