"""The agent task API over plain HTTP: scopes, follow-up, cancel, retry, throttling,
idempotency, and bad input (4xx JSON, never a 500, nothing written)."""

from __future__ import annotations

import threading
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from office.models import ApiToken, Task, TaskStatus
from office.services import api_token_create
from tests.factories import RoleFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.django_db

TASKS_URL = reverse("office_api:task_list")


def client_for(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def token_for(user, *, roles=(), **fields) -> tuple[ApiToken, str]:
    token, raw = api_token_create(user=user, name="agent", roles=roles)
    if fields:
        ApiToken.objects.filter(pk=token.pk).update(**fields)
        token.refresh_from_db()
    return token, raw


def url(name: str, task: Task | int) -> str:
    return reverse(f"office_api:{name}", args=[getattr(task, "pk", task)])


def error_of(response) -> dict:
    assert response["Content-Type"] == "application/json", response.content[:200]
    return response.json()["error"]


@pytest.fixture(autouse=True)
def no_dispatch():
    # Tasks stay queued: these tests are about the API, not the workers.
    with mock.patch("office.services.task_dispatch") as dispatch:
        yield dispatch


@pytest.fixture
def coder():
    return RoleFactory(slug="coder", runnable=True)


@pytest.fixture
def writer():
    return RoleFactory(slug="writer", runnable=True)


@pytest.fixture
def agent_a():
    return UserFactory(username="agent-a", groups=["staff"])


@pytest.fixture
def agent_b():
    return UserFactory(username="agent-b", groups=["staff"])


@pytest.fixture
def api_a(agent_a) -> APIClient:
    return client_for(token_for(agent_a)[1])


# --- Another agent's tasks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("get", "task_detail"),
        ("post", "task_cancel"),
        ("post", "task_retry"),
        ("post", "task_follow_up"),
    ],
)
def test_agent_cannot_read_or_act_on_another_agents_task(
    api_a, agent_b, coder, method: str, name: str
) -> None:
    theirs = TaskFactory(created_by=agent_b, role=coder, status=TaskStatus.FAILED)

    body = {"prompt": "And then?"} if name == "task_follow_up" else None
    response = getattr(api_a, method)(url(name, theirs), body, format="json")

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
    theirs.refresh_from_db()
    assert theirs.status == TaskStatus.FAILED
    assert Task.objects.count() == 1


def test_agent_list_never_shows_another_agents_tasks(api_a, agent_a, agent_b) -> None:
    mine = TaskFactory(created_by=agent_a)
    TaskFactory.create_batch(3, created_by=agent_b)

    body = api_a.get(TASKS_URL).json()

    assert [task["id"] for task in body["results"]] == [mine.pk]


def test_follow_up_of_another_agents_task_in_the_body_is_refused(api_a, agent_b, coder) -> None:
    theirs = TaskFactory(created_by=agent_b, role=coder, done=True)

    response = api_a.post(
        TASKS_URL, {"role": "coder", "prompt": "More", "follow_up_of": theirs.pk}, format="json"
    )

    assert response.status_code == 400
    assert error_of(response)["code"] == "follow_up_unknown"
    assert Task.objects.count() == 1


# --- Authentication: revoked and expired tokens ---------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"revoked_at": timezone.now()}, "This API token has been revoked."),
        ({"expires_at": timezone.now() - timedelta(minutes=1)}, "This API token has expired."),
    ],
    ids=["revoked", "expired"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", reverse("office_api:task_list")),
        ("post", reverse("office_api:task_list")),
        ("get", reverse("office_api:role_list")),
        ("get", reverse("office_api:usage")),
    ],
)
def test_revoked_or_expired_token_gets_401_everywhere(
    agent_a, coder, fields, message, method, path
) -> None:
    _, raw = token_for(agent_a, **fields)

    response = getattr(client_for(raw), method)(
        path, {"role": "coder", "prompt": "Hi"} if method == "post" else None, format="json"
    )

    assert response.status_code == 401
    assert error_of(response) == {"code": "unauthenticated", "message": message, "field": None}
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert not Task.objects.exists()


def test_a_token_revoked_between_requests_stops_working(agent_a) -> None:
    token, raw = token_for(agent_a)
    client = client_for(raw)
    assert client.get(TASKS_URL).status_code == 200

    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())

    assert client.get(TASKS_URL).status_code == 401


# --- Role scopes --------------------------------------------------------------------------


def test_scoped_token_may_create_tasks_for_its_roles_only(agent_a, coder, writer) -> None:
    _, raw = token_for(agent_a, roles=[coder])
    client = client_for(raw)

    allowed = client.post(TASKS_URL, {"role": "coder", "prompt": "Fix it"}, format="json")
    refused = client.post(TASKS_URL, {"role": "writer", "prompt": "Write it"}, format="json")

    assert allowed.status_code == 201
    assert refused.status_code == 403
    error = error_of(refused)
    assert (error["code"], error["field"]) == ("role_not_allowed", "role")
    assert error["message"] == "This API token may not use the role 'writer'; it may use: coder."
    assert list(Task.objects.values_list("role__slug", flat=True)) == ["coder"]


def test_scoped_token_may_not_use_a_strategy_role_outside_its_scope(agent_a, coder, writer) -> None:
    _, raw = token_for(agent_a, roles=[coder])

    response = client_for(raw).post(
        TASKS_URL,
        {"role": "coder", "strategy_role": "writer", "kind": "spec_execute", "prompt": "Go"},
        format="json",
    )

    assert response.status_code == 403
    assert error_of(response)["field"] == "strategy_role"
    assert not Task.objects.exists()


def test_scoped_token_lists_and_reads_only_its_roles_tasks(agent_a, coder, writer) -> None:
    _, raw = token_for(agent_a, roles=[coder])
    client = client_for(raw)
    coding = TaskFactory(created_by=agent_a, role=coder)
    writing = TaskFactory(created_by=agent_a, role=writer)

    listed = client.get(TASKS_URL).json()

    assert [task["id"] for task in listed["results"]] == [coding.pk]
    assert client.get(url("task_detail", coding)).status_code == 200
    assert client.get(url("task_detail", writing)).status_code == 404
    assert client.post(url("task_cancel", writing)).status_code == 404


def test_unscoped_token_may_use_every_role(agent_a, coder, writer) -> None:
    _, raw = token_for(agent_a)

    response = client_for(raw).post(TASKS_URL, {"role": "writer", "prompt": "Hi"}, format="json")

    assert response.status_code == 201


# --- Follow up ----------------------------------------------------------------------------


def test_follow_up_continues_the_thread_with_the_earlier_tasks_role(api_a, agent_a, coder):
    earlier = TaskFactory(created_by=agent_a, role=coder, done=True)

    response = api_a.post(
        url("task_follow_up", earlier),
        {"prompt": "Now add tests.", "max_tokens": 200},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["role"], body["follow_up_of"], body["thread"], body["thread_turn"]) == (
        "coder",
        earlier.pk,
        earlier.pk,
        2,
    )
    task = Task.objects.get(pk=body["id"])
    assert (task.created_by, task.max_tokens, task.prompt) == (agent_a, 200, "Now add tests.")


def test_follow_up_may_name_another_role(api_a, agent_a, coder, writer) -> None:
    earlier = TaskFactory(created_by=agent_a, role=coder, done=True)

    response = api_a.post(
        url("task_follow_up", earlier), {"prompt": "Explain it.", "role": "writer"}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["role"] == "writer"


def test_follow_up_of_an_unfinished_task_is_400(api_a, agent_a, coder) -> None:
    earlier = TaskFactory(created_by=agent_a, role=coder, status=TaskStatus.RUNNING)

    response = api_a.post(url("task_follow_up", earlier), {"prompt": "Next"}, format="json")

    assert response.status_code == 400
    assert error_of(response)["code"] == "follow_up_unfinished"
    assert Task.objects.count() == 1


# --- Cancel and retry ---------------------------------------------------------------------


def test_cancel_stops_a_queued_task(api_a, agent_a, coder) -> None:
    task = TaskFactory(created_by=agent_a, role=coder)

    response = api_a.post(url("task_cancel", task))

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED
    assert task.error == "Cancelled by agent-a."


def test_cancel_of_an_ended_task_is_409_and_changes_nothing(api_a, agent_a, coder) -> None:
    task = TaskFactory(created_by=agent_a, role=coder, done=True)

    response = api_a.post(url("task_cancel", task))

    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "task_not_cancellable"
    assert "already ended (done)" in error["message"]
    task.refresh_from_db()
    assert task.status == TaskStatus.DONE


def test_retry_creates_a_new_task_with_the_same_inputs(api_a, agent_a, coder) -> None:
    failed = TaskFactory(
        created_by=agent_a, role=coder, status=TaskStatus.FAILED, prompt="Try me", max_tokens=77
    )

    response = api_a.post(url("task_retry", failed))

    assert response.status_code == 201
    body = response.json()
    assert body["id"] != failed.pk
    assert (body["retry_of"], body["prompt"], body["status"]) == (failed.pk, "Try me", "queued")
    assert Task.objects.get(pk=body["id"]).max_tokens == 77


def test_retry_of_a_task_not_ended_without_result_is_409(api_a, agent_a, coder) -> None:
    task = TaskFactory(created_by=agent_a, role=coder, done=True)

    response = api_a.post(url("task_retry", task))

    assert response.status_code == 409
    assert error_of(response)["code"] == "task_not_retryable"
    assert Task.objects.count() == 1


def test_cancel_with_parameters_is_refused(api_a, agent_a, coder) -> None:
    task = TaskFactory(created_by=agent_a, role=coder)

    response = api_a.post(url("task_cancel", task), {"reason": "bored"}, format="json")

    assert response.status_code == 400
    assert error_of(response)["code"] == "unsupported_parameter"
    task.refresh_from_db()
    assert task.status == TaskStatus.QUEUED


# --- Throttling ---------------------------------------------------------------------------


def test_throttle_gives_429_with_retry_after_per_token(settings, agent_a) -> None:
    settings.ROSTER_API_THROTTLE_RATE = "3/min"
    first = client_for(token_for(agent_a)[1])
    second = client_for(token_for(agent_a)[1])  # the same person, another agent

    statuses = [first.get(TASKS_URL).status_code for _ in range(3)]
    throttled = first.get(TASKS_URL)

    assert statuses == [200, 200, 200]
    assert throttled.status_code == 429
    error = error_of(throttled)
    assert error["code"] == "throttled"
    assert "throttled" in error["message"]
    assert 1 <= int(throttled["Retry-After"]) <= 60
    assert second.get(TASKS_URL).status_code == 200


def test_throttled_task_creation_writes_nothing(settings, agent_a, coder) -> None:
    settings.ROSTER_API_THROTTLE_RATE = "1/hour"
    client = client_for(token_for(agent_a)[1])
    client.get(TASKS_URL)

    response = client.post(TASKS_URL, {"role": "coder", "prompt": "Hi"}, format="json")

    assert response.status_code == 429
    assert int(response["Retry-After"]) > 60
    assert not Task.objects.exists()


# --- Idempotency --------------------------------------------------------------------------


def post_with_key(client: APIClient, key: str, **body):
    payload = {"role": "coder", "prompt": "Summarise the incident.", **body}
    return client.post(TASKS_URL, payload, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_same_idempotency_key_returns_the_same_task(api_a, coder, no_dispatch) -> None:
    first = post_with_key(api_a, "5f0c8a4e-6d1b-4c7e-9a0e-2f3b4c5d6e7f")
    again = post_with_key(api_a, "5f0c8a4e-6d1b-4c7e-9a0e-2f3b4c5d6e7f")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"]
    assert "Idempotent-Replayed" not in first
    assert again["Idempotent-Replayed"] == "true"
    assert Task.objects.count() == 1


def test_same_key_with_a_different_body_is_422(api_a, coder) -> None:
    first = post_with_key(api_a, "order-42", max_tokens=100)

    response = post_with_key(api_a, "order-42", prompt="Something else", max_tokens=200)

    assert response.status_code == 422
    error = error_of(response)
    assert (error["code"], error["field"]) == ("idempotency_key_reused", "Idempotency-Key")
    assert f"task {first.json()['id']}" in error["message"]
    assert "prompt, max_tokens" in error["message"]
    assert Task.objects.count() == 1


def test_idempotency_keys_belong_to_one_person(api_a, agent_b, coder) -> None:
    api_b = client_for(token_for(agent_b)[1])

    mine = post_with_key(api_a, "shared-key")
    theirs = post_with_key(api_b, "shared-key")

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]


def test_a_refused_request_does_not_use_up_its_key(api_a, coder) -> None:
    refused = post_with_key(api_a, "retry-me", prompt="")
    accepted = post_with_key(api_a, "retry-me")

    assert (refused.status_code, accepted.status_code) == (400, 201)


@pytest.mark.parametrize("key", ["", "x" * 201, "has space", "tab\there", "é-accent"])
def test_an_invalid_idempotency_key_is_400(api_a, coder, key: str) -> None:
    response = api_a.post(
        TASKS_URL,
        {"role": "coder", "prompt": "Hi"},
        format="json",
        headers={"Idempotency-Key": key},
    )

    assert response.status_code == 400
    assert error_of(response)["code"] == "idempotency_key_invalid"
    assert not Task.objects.exists()


def test_follow_up_honours_the_idempotency_key(api_a, agent_a, coder) -> None:
    earlier = TaskFactory(created_by=agent_a, role=coder, done=True)
    follow_up = url("task_follow_up", earlier)

    first = api_a.post(follow_up, {"prompt": "Next"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    again = api_a.post(follow_up, {"prompt": "Next"}, format="json", HTTP_IDEMPOTENCY_KEY="k1")

    assert first.json()["id"] == again.json()["id"]
    assert Task.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_create_one_task(agent_a, coder) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers; the race needs PostgreSQL")
    _, raw = token_for(agent_a)
    barrier = threading.Barrier(4)
    results: list[tuple[int, int]] = []

    def submit() -> None:
        try:
            barrier.wait()
            response = post_with_key(client_for(raw), "race")
            results.append((response.status_code, response.json()["id"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [status for status, _ in results] == [201] * 4
    assert len({task_id for _, task_id in results}) == 1
    assert Task.objects.count() == 1


# --- Bad input: 4xx JSON, never a 500, nothing written ---------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ("{not json", "application/json", 400, "malformed_request"),
        ('{"role": "coder", "prompt": "a"', "application/json", 400, "malformed_request"),
        ('{"role": "coder", "prompt": NaN}', "application/json", 400, "malformed_request"),
        ('{"role": "coder", "prompt": "\\ud800"}', "application/json", 400, "malformed_request"),
        (b"\xff\xfe", "application/json", 400, "malformed_request"),
        ("role=coder&prompt=hi", "application/x-www-form-urlencoded", 415, None),
        ("<task/>", "application/xml", 415, "unsupported_media_type"),
        ('["coder", "hi"]', "application/json", 400, "invalid"),
        ('"just a string"', "application/json", 400, "invalid"),
        ("null", "application/json", 400, "invalid"),
    ],
    ids=[
        "truncated",
        "unterminated",
        "nan",
        "lone-surrogate",
        "not-utf8",
        "form",
        "xml",
        "list",
        "string",
        "null",
    ],
)
def test_malformed_bodies_are_4xx_json(api_a, coder, body, content_type, status, code) -> None:
    response = api_a.generic("POST", TASKS_URL, body, content_type=content_type)

    assert response.status_code == status
    error = error_of(response)
    assert error["code"] == (code or "unsupported_media_type")
    assert error["message"]
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        ({"prompt": 42}, "invalid", "prompt"),
        ({"prompt": True}, "invalid", "prompt"),
        ({"prompt": ["a", "b"]}, "invalid", "prompt"),
        ({"prompt": {"text": "hi"}}, "invalid", "prompt"),
        ({"role": 7}, "invalid", "role"),
        ({"role": ["coder"]}, "invalid", "role"),
        ({"max_tokens": "many"}, "invalid", "max_tokens"),
        ({"max_tokens": "500"}, "invalid", "max_tokens"),
        ({"follow_up_of": 5.0}, "invalid", "follow_up_of"),
        ({"max_tokens": 1.5}, "invalid", "max_tokens"),
        ({"max_tokens": True}, "invalid", "max_tokens"),
        ({"max_tokens": 10**30}, "max_tokens_out_of_range", "max_tokens"),
        ({"urls": "https://example.com"}, "invalid", "urls"),
        ({"urls": ["https://example.com/", 1]}, "invalid", "urls.1"),
        ({"follow_up_of": "first"}, "invalid", "follow_up_of"),
        ({"follow_up_of": 10**30}, "invalid", "follow_up_of"),
        ({"follow_up_of": -1}, "invalid", "follow_up_of"),
        ({"prompt": "nul \x00 byte"}, "invalid", "prompt"),
        ({"title": "x" * 201}, "invalid", "title"),
        ({"role": "nobody"}, "role_unknown", "role"),
        ({"role": "x" * 51}, "invalid", "role"),
        ({"kind": "spec"}, "kind_invalid", "kind"),
        ({"tier_hint": "extreme"}, "tier_hint_invalid", "tier_hint"),
    ],
)
def test_wrong_types_and_values_are_400_with_a_field(api_a, coder, payload, code, field) -> None:
    response = api_a.post(TASKS_URL, {"role": "coder", "prompt": "Hi", **payload}, format="json")

    assert response.status_code == 400, response.json()
    error = error_of(response)
    assert (error["code"], error["field"]) == (code, field)
    assert error["message"]
    assert not Task.objects.exists()


def test_oversize_prompt_is_400_and_says_the_limit(api_a, coder, settings) -> None:
    settings.ROSTER_MAX_PROMPT_CHARS = 1000

    response = api_a.post(TASKS_URL, {"role": "coder", "prompt": "x" * 5000}, format="json")

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "prompt_too_long"
    assert error["message"] == "The prompt has 5,000 characters; the limit is 1,000."
    assert not Task.objects.exists()


def test_unknown_parameters_are_refused_by_name(api_a, coder) -> None:
    response = api_a.post(
        TASKS_URL,
        {"role": "coder", "prompt": "Hi", "max_token": 10, "temperature": 0.2},
        format="json",
    )

    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["field"]) == ("unsupported_parameter", "max_token")
    assert error["message"].startswith("Unsupported parameters: 'max_token', 'temperature'.")
    assert "max_tokens" in error["message"]  # what is accepted, to spot the typo
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    "path", ["/api/nothing/", "/api/tasks/abc/", "/api/tasks/-1/", "/api/v2/tasks/", "/api/"]
)
def test_unknown_api_urls_are_404_json(api_a, path: str) -> None:
    response = api_a.get(path)

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_missing_trailing_slash_suggests_the_right_url(api_a) -> None:
    response = api_a.get("/api/tasks")

    assert response.status_code == 404
    assert "Did you mean '/api/tasks/'?" in error_of(response)["message"]


def test_task_id_beyond_any_database_is_404(api_a) -> None:
    response = api_a.get(url("task_detail", 10**30))

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_huge_pagination_values_are_not_errors(api_a, agent_a) -> None:
    TaskFactory(created_by=agent_a)

    huge = api_a.get(TASKS_URL, {"limit": 10**30, "offset": 10**30})
    nonsense = api_a.get(TASKS_URL, {"limit": "x", "offset": -5})

    assert huge.status_code == 200
    assert huge.json()["results"] == []
    assert nonsense.status_code == 200
    assert len(nonsense.json()["results"]) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", reverse("office_api:task_list")),
        ("delete", reverse("office_api:task_detail", args=[1])),
        ("get", reverse("office_api:task_cancel", args=[1])),
        ("post", reverse("office_api:role_list")),
    ],
)
def test_wrong_method_is_405_json(api_a, method: str, path: str) -> None:
    response = getattr(api_a, method)(path)

    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
