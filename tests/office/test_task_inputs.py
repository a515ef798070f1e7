"""A task's pages (URLs) and its thread (a follow-up of an earlier task): validated the
same way by the API and the form, shown in the API's output and on the task page."""

from __future__ import annotations

from unittest import mock

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from office.errors import TaskRejected
from office.models import Task, TaskStatus
from office.services import api_token_create, task_submit
from tests.factories import RoleFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.django_db

TASKS_URL = reverse("office_api:task_list")
ARTICLE = "https://example.com/articles/tide-pools"


@pytest.fixture
def agent():
    return UserFactory(username="agent", groups=["staff"])


@pytest.fixture
def api(agent) -> APIClient:
    _, raw = api_token_create(user=agent, name="ci-agent")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def coder():
    return RoleFactory(slug="coder", runnable=True)


def post(api: APIClient, **fields: object):
    return api.post(
        TASKS_URL, {"role": "coder", "prompt": "Read and answer.", **fields}, format="json"
    )


# --- Submitting -----------------------------------------------------------------------------


def test_urls_are_stored_stripped_and_without_duplicates(api, coder, agent) -> None:
    with mock.patch("office.services.task_dispatch"):
        response = post(api, urls=[f"  {ARTICLE} ", ARTICLE, "", "http://example.org/b"])

    assert response.status_code == 201
    assert response.json()["urls"] == [ARTICLE, "http://example.org/b"]
    assert Task.objects.get().urls == [ARTICLE, "http://example.org/b"]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/file",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "example.com/no-scheme",
        "https://",
        "https://user:secret@example.com/",
        "https://example.com/a page",
        "http://example.com:port/",
        "https://[::1/",
        "https://example.com/" + "x" * 2000,
    ],
)
def test_a_url_that_is_not_a_web_address_is_400_url_invalid(api, coder, url) -> None:
    response = post(api, urls=[ARTICLE, url])

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("url_invalid", "urls")
    assert "is not a web address" in error["message"]
    assert not Task.objects.exists()


def test_too_many_urls_is_400_urls_too_many(api, coder, settings) -> None:
    settings.ROSTER_TASK_MAX_URLS = 2

    response = post(api, urls=[f"https://example.com/{n}" for n in range(3)])

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("urls_too_many", "urls")
    assert error["message"] == "The task names 3 URLs; the limit is 2."


def test_urls_must_be_a_list(api, coder) -> None:
    response = post(api, urls=ARTICLE)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert response.json()["error"]["field"] == "urls"


def test_a_follow_up_continues_the_thread_of_the_callers_finished_task(api, coder, agent) -> None:
    first = TaskFactory(role=coder, created_by=agent, done=True)
    second = TaskFactory(
        role=coder,
        created_by=agent,
        done=True,
        follow_up_of=first,
        thread_root=first,
        thread_turn=2,
    )

    with mock.patch("office.services.task_dispatch"):
        response = post(api, follow_up_of=second.pk)

    assert response.status_code == 201
    body = response.json()
    assert (body["follow_up_of"], body["thread"], body["thread_turn"]) == (second.pk, first.pk, 3)
    task = Task.objects.get(pk=body["id"])
    assert (task.follow_up_of, task.thread_root, task.thread_turn) == (second, first, 3)


def test_a_follow_up_may_go_to_another_role(api, coder, agent) -> None:
    RoleFactory(slug="writer", runnable=True)
    first = TaskFactory(role=coder, created_by=agent, done=True)

    with mock.patch("office.services.task_dispatch"):
        response = post(api, role="writer", follow_up_of=first.pk)

    assert response.status_code == 201
    assert response.json()["thread"] == first.pk


@pytest.mark.parametrize("whose", ["missing", "someone else's", "staff member's"])
def test_a_follow_up_of_a_task_that_is_not_the_callers_is_400_follow_up_unknown(
    api, coder, whose
) -> None:
    if whose == "missing":
        task_id = 999_999
    else:
        owner = UserFactory(staff=whose == "staff member's")
        task_id = TaskFactory(role=coder, created_by=owner, done=True).pk

    response = post(api, follow_up_of=task_id)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("follow_up_unknown", "follow_up_of")
    # The same words whether the task exists or not: nobody learns about others' tasks.
    assert error["message"] == f"There is no task {task_id} of yours to follow up."
    assert Task.objects.filter(follow_up_of_id=task_id).count() == 0


def test_a_follow_up_of_an_unfinished_task_is_400_follow_up_unfinished(api, coder, agent) -> None:
    running = TaskFactory(role=coder, created_by=agent, status=TaskStatus.RUNNING)

    response = post(api, follow_up_of=running.pk)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("follow_up_unfinished", "follow_up_of")
    assert "still running" in error["message"]


def test_a_follow_up_id_that_is_not_a_number_is_400_invalid(api, coder) -> None:
    response = post(api, follow_up_of="the last one")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert response.json()["error"]["field"] == "follow_up_of"


def test_the_api_shows_what_preparation_found(api, coder, agent) -> None:
    task = TaskFactory(
        role=coder,
        created_by=agent,
        done=True,
        urls=[ARTICLE],
        page_notes=[
            {"url": ARTICLE, "included": True, "note": "Included: 173 tokens.", "tokens": 173}
        ],
        history_tokens=420,
        history_tokens_saved=1380,
        history_summarized_turns=27,
    )

    body = api.get(reverse("office_api:task_detail", args=[task.pk])).json()

    assert body["page_notes"] == task.page_notes
    assert (body["history_tokens"], body["history_tokens_saved"]) == (420, 1380)
    assert body["history_summarized_turns"] == 27
    assert (body["follow_up_of"], body["thread"], body["thread_turn"]) == (None, task.pk, 1)
    assert body["prepared_at"] is None


def test_a_task_submitted_without_a_person_follows_up_only_such_tasks(coder) -> None:
    system_task = TaskFactory(role=coder, created_by=None, done=True)
    with mock.patch("office.services.task_dispatch"):
        task = task_submit(role=coder, prompt="More", follow_up_of=system_task)

    assert task.follow_up_of == system_task


# --- The form and the task page ---------------------------------------------------------------


@pytest.fixture
def person():
    return UserFactory(groups=["staff"])


@pytest.fixture
def web(client: Client, person) -> Client:
    client.force_login(person)
    return client


def test_the_form_takes_urls_one_per_line_and_a_follow_up(
    web, person, coder, django_capture_on_commit_callbacks
) -> None:
    first = TaskFactory(role=coder, created_by=person, done=True)

    with django_capture_on_commit_callbacks():
        response = web.post(
            reverse("office:task_create"),
            {
                "role": "coder",
                "prompt": "Compare these.",
                "urls": f"{ARTICLE}\r\n\r\n  http://example.org/b  \r\n",
                "follow_up_of": str(first.pk),
            },
        )

    task = Task.objects.latest("pk")
    assert response.status_code == 302
    assert task.urls == [ARTICLE, "http://example.org/b"]
    assert (task.follow_up_of, task.thread_turn) == (first, 2)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"urls": "not a url"}, "urls", "is not a web address"),
        ({"urls": "https://a.example\nhttps://b.example\nhttps://c.example"}, "urls", "limit is 2"),
        ({"follow_up_of": "424242"}, "follow_up_of", "There is no task 424242 of yours"),
    ],
    ids=["bad-url", "too-many-urls", "unknown-follow-up"],
)
def test_the_form_shows_refusals_of_urls_and_follow_ups_on_their_field(
    web, coder, settings, data, field, message
) -> None:
    settings.ROSTER_TASK_MAX_URLS = 2

    response = web.post(reverse("office:task_create"), {"role": "coder", "prompt": "Hi", **data})

    assert response.status_code == 200
    errors = response.context["form"].errors
    assert list(errors) == [field]
    assert message in errors[field][0]
    assert not Task.objects.exists()


def test_the_follow_up_link_fills_in_the_form(web, person, coder) -> None:
    task = TaskFactory(role=coder, created_by=person, done=True)

    page = web.get(reverse("office:task_detail", args=[task.pk])).content.decode()
    link = f"{reverse('office:task_create')}?follow_up_of={task.pk}&amp;role=coder"
    assert link in page

    form = web.get(link.replace("&amp;", "&")).context["form"]
    assert form.initial == {"follow_up_of": str(task.pk), "role": "coder"}


def test_no_follow_up_link_for_someone_elses_or_an_unfinished_task(client, coder) -> None:
    staff = UserFactory(groups=["admin"])
    client.force_login(staff)
    others = TaskFactory(role=coder, done=True)
    own_running = TaskFactory(role=coder, created_by=staff, status=TaskStatus.RUNNING)

    for task in (others, own_running):
        page = client.get(reverse("office:task_detail", args=[task.pk])).content.decode()
        assert "follow_up_of=" not in page


def test_the_task_page_shows_the_thread_pages_and_history_figures(web, person, coder) -> None:
    first = TaskFactory(role=coder, created_by=person, done=True)
    second = TaskFactory(
        role=coder,
        created_by=person,
        done=True,
        follow_up_of=first,
        thread_root=first,
        thread_turn=2,
    )
    task = TaskFactory(
        role=coder,
        created_by=person,
        done=True,
        follow_up_of=second,
        thread_root=first,
        thread_turn=3,
        urls=[ARTICLE, "http://example.org/bin"],
        page_notes=[
            {
                "url": ARTICLE,
                "included": True,
                "note": "Included: 173 tokens of page text.",
                "tokens": 173,
            },
            {
                "url": "http://example.org/bin",
                "included": False,
                "note": "Skipped: http://example.org/bin is application/octet-stream.",
                "tokens": 0,
            },
        ],
        history_tokens=1234,
        history_tokens_saved=5678,
        history_summarized_turns=1,
        prepared_at=first.created_at,
    )

    page = web.get(reverse("office:task_detail", args=[task.pk])).content.decode()

    assert "turn 3, following up" in page
    assert reverse("office:task_detail", args=[second.pk]) in page
    assert reverse("office:task_detail", args=[first.pk]) in page
    assert "Included: 173 tokens of page text." in page
    assert "Skipped: http://example.org/bin is application/octet-stream" in page
    assert "1,234 tokens" in page
    assert "5,678 tokens" in page
    assert "turns 1-1 sent as the helper's summary" in page


def test_a_preparing_task_shows_its_badge(web, person, coder) -> None:
    task = TaskFactory(role=coder, created_by=person, status=TaskStatus.PREPARING, urls=[ARTICLE])

    page = web.get(reverse("office:task_status", args=[task.pk])).content.decode()

    assert 'badge-preparing">Preparing<' in page
    assert "Fetching the pages" in page
    assert "hx-get" in page  # still polling


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"urls": [ARTICLE]}, "urls"), ({"follow_up": True}, "follow_up_of")],
)
def test_a_spec_then_execute_task_refuses_pages_and_follow_ups_its_steps_would_not_see(
    agent, coder, extra, field
) -> None:
    architect = RoleFactory(slug="architect", runnable=True)
    inputs = dict(extra)
    if inputs.pop("follow_up", False):
        inputs["follow_up_of"] = TaskFactory(
            role=coder, created_by=agent, status=TaskStatus.DONE
        ).pk
    before = Task.objects.count()

    with pytest.raises(TaskRejected) as refused:
        task_submit(
            role=coder,
            strategy_role=architect,
            kind="spec_execute",
            prompt="Add a CSV export.",
            created_by=agent,
            **inputs,
        )

    assert (refused.value.code, refused.value.field) == ("spec_execute_context_unsupported", field)
    assert Task.objects.count() == before
