"""The task API: token authentication, create/list/detail, and the JSON error shape."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.exceptions import Throttled
from rest_framework.test import APIClient

from office.api.errors import exception_handler
from office.models import ApiToken, Task, TaskStatus
from office.services import api_token_create
from tests.factories import RoleFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.django_db

TASKS_URL = reverse("office_api:task_list")


def make_token(user=None, **fields) -> tuple[ApiToken, str]:
    token, raw = api_token_create(user=user or UserFactory(), name="ci-agent")
    if fields:
        ApiToken.objects.filter(pk=token.pk).update(**fields)
        token.refresh_from_db()
    return token, raw


@pytest.fixture
def agent():
    return UserFactory(username="agent", groups=["staff"])


@pytest.fixture
def api(agent) -> APIClient:
    _, raw = make_token(agent)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def error_of(response) -> dict:
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]


# --- Authentication -----------------------------------------------------------------------


def test_request_without_token_is_401_unauthenticated() -> None:
    response = APIClient().get(TASKS_URL)

    assert response.status_code == 401
    assert error_of(response) == {
        "code": "unauthenticated",
        "message": "Authentication credentials were not provided.",
        "field": None,
    }
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    ("token_fields", "message"),
    [
        ({"revoked_at": timezone.now()}, "This API token has been revoked."),
        ({"expires_at": timezone.now() - timedelta(seconds=1)}, "This API token has expired."),
    ],
    ids=["revoked", "expired"],
)
def test_revoked_or_expired_token_is_401_with_the_reason(token_fields, message) -> None:
    _, raw = make_token(**token_fields)

    response = APIClient().get(TASKS_URL, HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert response.status_code == 401
    assert error_of(response)["code"] == "unauthenticated"
    assert error_of(response)["message"] == message


@pytest.mark.parametrize(
    "header",
    ["Bearer rst_not-a-real-token", "Token rst_not-a-real-token", "Bearer", "Bearer a b"],
)
def test_unknown_or_malformed_token_is_401(header: str) -> None:
    response = APIClient().get(TASKS_URL, HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert error_of(response)["code"] == "unauthenticated"


def test_token_keyword_and_future_expiry_are_accepted(agent) -> None:
    _, raw = make_token(agent, expires_at=timezone.now() + timedelta(days=1))

    response = APIClient().get(TASKS_URL, HTTP_AUTHORIZATION=f"Token {raw}")

    assert response.status_code == 200


def test_token_of_a_disabled_account_is_401() -> None:
    _, raw = make_token(UserFactory(is_active=False))

    response = APIClient().get(TASKS_URL, HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert response.status_code == 401


def test_last_used_at_is_written_at_most_once_a_minute(agent) -> None:
    token, raw = make_token(agent)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    client.get(TASKS_URL)
    token.refresh_from_db()
    first_use = token.last_used_at
    client.get(TASKS_URL)
    token.refresh_from_db()

    assert first_use is not None
    assert token.last_used_at == first_use

    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first_use - timedelta(minutes=2))
    client.get(TASKS_URL)
    token.refresh_from_db()
    assert token.last_used_at > first_use - timedelta(minutes=2)


# --- Create -------------------------------------------------------------------------------


def test_post_creates_a_task_and_dispatches_it(
    api: APIClient, agent, django_capture_on_commit_callbacks
) -> None:
    RoleFactory(slug="coder", runnable=True)

    with (
        mock.patch("office.services.task_dispatch") as dispatch,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = api.post(
            TASKS_URL,
            {"role": "coder", "prompt": "Fix the flaky test.", "title": "Flaky", "max_tokens": 500},
            format="json",
        )

    assert response.status_code == 201
    task = Task.objects.get()
    body = response.json()
    assert body["id"] == task.pk
    assert (body["role"], body["title"], body["prompt"]) == (
        "coder",
        "Flaky",
        "Fix the flaky test.",
    )
    assert body["status"] == TaskStatus.QUEUED
    assert body["cost"] == "0"
    assert body["url"] == f"http://testserver{reverse('office_api:task_detail', args=[task.pk])}"
    assert task.created_by == agent
    assert task.max_tokens == 500
    dispatch.assert_called_once_with(task_id=task.pk)


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        ({"role": "nobody"}, "role_unknown", "role"),
        ({"role": "unbound"}, "role_unbound", "role"),
        ({"prompt": "   "}, "prompt_empty", "prompt"),
        ({"prompt": "x" * 21}, "prompt_too_long", "prompt"),
        ({"max_tokens": 0}, "max_tokens_out_of_range", "max_tokens"),
        ({"max_tokens": "many"}, "invalid", "max_tokens"),
        ({"role": None}, "invalid", "role"),
    ],
)
def test_bad_input_is_400_with_code_and_field_and_creates_no_task(
    api: APIClient, settings, payload: dict, code: str, field: str
) -> None:
    settings.ROSTER_MAX_PROMPT_CHARS = 20
    RoleFactory(slug="coder", runnable=True)
    RoleFactory(slug="unbound")

    response = api.post(TASKS_URL, {"role": "coder", "prompt": "Hi", **payload}, format="json")

    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["field"]) == (code, field)
    assert error["message"]
    assert not Task.objects.exists()


def test_validation_error_lists_every_field_in_details(api: APIClient) -> None:
    response = api.post(TASKS_URL, {}, format="json")

    error = error_of(response)
    assert response.status_code == 400
    assert error["code"] == "invalid"
    assert error["field"] == "role"
    assert error["message"] == "This field is required."
    assert set(error["details"]) == {"role", "prompt"}


def test_malformed_json_is_400(api: APIClient) -> None:
    response = api.post(TASKS_URL, "{not json", content_type="application/json")

    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_request"


def test_unsupported_method_is_405_json(api: APIClient) -> None:
    response = api.delete(TASKS_URL)

    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert response["Allow"] == "GET, OPTIONS, POST"


# --- List and detail ----------------------------------------------------------------------


def test_list_returns_only_the_callers_tasks_newest_first(api: APIClient, agent) -> None:
    older = TaskFactory(created_by=agent)
    newer = TaskFactory(created_by=agent)
    TaskFactory()  # someone else's

    response = api.get(TASKS_URL)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [task["id"] for task in body["results"]] == [newer.pk, older.pk]


def test_list_is_paginated(api: APIClient, agent) -> None:
    TaskFactory.create_batch(3, created_by=agent)

    body = api.get(TASKS_URL, {"limit": 2}).json()

    assert body["count"] == 3
    assert len(body["results"]) == 2
    assert body["next"] is not None


def test_staff_token_still_lists_only_its_own_tasks() -> None:
    staff = UserFactory(staff=True)
    _, raw = make_token(staff)
    TaskFactory()

    body = APIClient().get(TASKS_URL, HTTP_AUTHORIZATION=f"Bearer {raw}").json()

    assert body["count"] == 0


def test_detail_returns_cost_as_a_string_with_every_digit(api: APIClient, agent) -> None:
    task = TaskFactory(created_by=agent, done=True, cost=Decimal("0.00000008333333333333334"))

    response = api.get(reverse("office_api:task_detail", args=[task.pk]))

    body = response.json()
    assert response.status_code == 200
    assert body["cost"] == "0.00000008333333333333334"
    assert (body["input_tokens"], body["output_tokens"]) == (120, 17)
    assert body["result"].startswith("Ledger lines align")
    assert body["status"] == "done"


def test_detail_of_someone_elses_task_is_404(api: APIClient) -> None:
    task = TaskFactory()

    response = api.get(reverse("office_api:task_detail", args=[task.pk]))

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


# --- Exception handler --------------------------------------------------------------------


def test_throttled_is_429_with_retry_after() -> None:
    response = exception_handler(Throttled(wait=2.2), {})

    assert response.status_code == 429
    assert response["Retry-After"] == "3"
    assert response.data["error"]["code"] == "throttled"


def test_unexpected_errors_are_left_to_django() -> None:
    assert exception_handler(RuntimeError("bug"), {}) is None


def test_a_token_acts_with_its_persons_rights_never_more() -> None:
    """A manager reads everyone's tasks but submits none: neither may their token."""
    RoleFactory(slug="coder", runnable=True)
    manager = UserFactory(groups=["manager"])
    _, raw = make_token(manager)
    own = TaskFactory(created_by=manager, status=TaskStatus.FAILED)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    refused = [
        client.post(TASKS_URL, {"role": "coder", "prompt": "Hello"}, format="json"),
        client.post(f"{TASKS_URL}{own.pk}/cancel/", format="json"),
        client.post(f"{TASKS_URL}{own.pk}/retry/", format="json"),
        client.post(f"{TASKS_URL}{own.pk}/follow-up/", {"prompt": "More"}, format="json"),
    ]

    for response in refused:
        assert response.status_code == 403, response.content
        assert "office.add_task" in error_of(response)["message"]
    assert Task.objects.count() == 1  # nothing created
    own.refresh_from_db()
    assert own.status == TaskStatus.FAILED  # nothing retried
    assert client.get(f"{TASKS_URL}{own.pk}/").status_code == 200  # reading is allowed
