"""The staff pages: login, the task list, the new-task form, the detail and its poll."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from billing.models import UsageStatus
from office.models import Task, TaskStatus
from tests.factories import RoleFactory, TaskFactory, UsageFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def person():
    return UserFactory(groups=["staff"])


@pytest.fixture
def staff_client(client: Client, person) -> Client:
    client.force_login(person)
    return client


# --- Login --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        reverse("overview:office"),
        reverse("office:task_list"),
        reverse("office:task_create"),
        reverse("office:task_detail", args=[1]),
        reverse("office:task_status", args=[1]),
    ],
)
def test_pages_redirect_anonymous_visitors_to_login(client: Client, url: str) -> None:
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


def test_login_page_renders_the_styled_form(client: Client) -> None:
    response = client.get(reverse("login"))

    assert response.status_code == 200
    assert b'name="username"' in response.content
    assert b"office/roster.css" in response.content


def test_the_site_root_is_the_office_overview(staff_client: Client) -> None:
    response = staff_client.get("/")

    assert response.status_code == 200
    assert b'id="office-month-spend"' in response.content


def test_header_offers_admin_only_to_staff_members(client: Client) -> None:
    client.force_login(UserFactory(groups=["staff"]))
    assert reverse("admin:index").encode() not in client.get(reverse("office:task_list")).content

    client.force_login(UserFactory(staff=True, groups=["staff"]))
    page = client.get(reverse("office:task_list")).content
    assert reverse("admin:index").encode() in page
    assert f'action="{reverse("logout")}"'.encode() in page  # logout is a POST form


# --- New task form ------------------------------------------------------------------------


def test_form_offers_only_active_roles(staff_client: Client) -> None:
    RoleFactory(slug="coder", name="Coder")
    RoleFactory(slug="retired", name="Retired", is_active=False)

    content = staff_client.get(reverse("office:task_create")).content.decode()

    assert 'value="coder"' in content
    assert 'value="retired"' not in content


def test_form_creates_a_task_dispatches_it_on_commit_and_redirects(
    staff_client: Client, person, django_capture_on_commit_callbacks
) -> None:
    role = RoleFactory(runnable=True)

    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(
            reverse("office:task_create"),
            {"role": role.slug, "prompt": "  Summarise the Q3 report.  ", "max_tokens": "300"},
        )

    task = Task.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("office:task_detail", args=[task.pk])
    assert (task.role, task.prompt, task.max_tokens) == (role, "Summarise the Q3 report.", 300)
    assert task.created_by == person
    assert task.status == TaskStatus.QUEUED
    assert len(callbacks) == 1  # the dispatch, queued for after the commit


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"prompt": ""}, "prompt", "This field is required."),
        ({"prompt": "x" * 21}, "prompt", "The prompt has 21 characters; the limit is 20."),
        ({"role": "no-such-role"}, "role", "Select a valid choice."),
        ({"max_tokens": "0"}, "max_tokens", "max_tokens must be between 1 and"),
    ],
    ids=["empty-prompt", "oversized-prompt", "unknown-role", "max-tokens-zero"],
)
def test_form_shows_refusals_on_their_field_and_creates_no_task(
    staff_client: Client, settings, data: dict[str, str], field: str, message: str
) -> None:
    settings.ROSTER_MAX_PROMPT_CHARS = 20
    role = RoleFactory(runnable=True)

    response = staff_client.post(
        reverse("office:task_create"), {"role": role.slug, "prompt": "Hello", **data}
    )

    assert response.status_code == 200
    errors = response.context["form"].errors
    assert list(errors) == [field]
    assert message in errors[field][0]
    assert message.encode() in response.content
    assert not Task.objects.exists()


def test_form_refuses_a_role_without_a_model(staff_client: Client) -> None:
    role = RoleFactory(slug="unbound")

    response = staff_client.post(
        reverse("office:task_create"), {"role": role.slug, "prompt": "Hello"}
    )

    assert response.status_code == 200
    assert "has no model bound to it" in response.context["form"].errors["role"][0]
    assert not Task.objects.exists()


# --- Task list ----------------------------------------------------------------------------


def test_list_shows_own_tasks_newest_first_with_cost_and_tokens(
    staff_client: Client, person
) -> None:
    older = TaskFactory(created_by=person, title="Older task")
    newer = TaskFactory(created_by=person, title="Newer task", done=True)
    TaskFactory(title="Someone else's task")

    response = staff_client.get(reverse("office:task_list"))

    assert list(response.context["page_obj"]) == [newer, older]
    content = response.content.decode()
    assert content.index("Newer task") < content.index("Older task")
    assert "Someone else" not in content
    assert "$0.000154" in content
    assert "120 / 17" in content


def test_list_filters_by_role_and_status(staff_client: Client, person) -> None:
    coder, writer = RoleFactory(slug="coder"), RoleFactory(slug="writer")
    coder_done = TaskFactory(created_by=person, role=coder, done=True)
    coder_queued = TaskFactory(created_by=person, role=coder)
    writer_done = TaskFactory(created_by=person, role=writer, done=True)
    url = reverse("office:task_list")

    def listed(query: dict[str, str]) -> set[Task]:
        return set(staff_client.get(url, query).context["page_obj"])

    assert listed({"role": "coder"}) == {coder_done, coder_queued}
    assert listed({"status": "done"}) == {coder_done, writer_done}
    assert listed({"role": "coder", "status": "done"}) == {coder_done}
    # An unknown filter value is reported and ignored, not a server error.
    assert listed({"role": "gone", "status": "done"}) == {coder_done, writer_done}


def test_list_is_paginated_by_25_and_keeps_filters_in_page_links(
    staff_client: Client, person
) -> None:
    role = RoleFactory(slug="coder")
    TaskFactory.create_batch(26, created_by=person, role=role)

    first = staff_client.get(reverse("office:task_list"), {"role": "coder"})
    second = staff_client.get(reverse("office:task_list"), {"role": "coder", "page": "2"})

    assert len(first.context["page_obj"]) == 25
    assert len(second.context["page_obj"]) == 1
    assert b'href="?role=coder&amp;page=2"' in first.content


def test_managers_see_everyones_tasks(client: Client) -> None:
    client.force_login(UserFactory(groups=["manager"]))
    task = TaskFactory()

    assert list(client.get(reverse("office:task_list")).context["page_obj"]) == [task]
    assert client.get(reverse("office:task_detail", args=[task.pk])).status_code == 200


# --- Task detail and its status fragment --------------------------------------------------


def test_detail_shows_result_escaped_totals_exact_cost_and_ledger(
    staff_client: Client, person
) -> None:
    task = TaskFactory(
        created_by=person,
        done=True,
        result="<script>alert(1)</script> done",
        cost=Decimal("0.00000008333333333333334"),
        model_label="openai/gpt-4o-mini",
    )
    UsageFactory(
        task=task,
        attempt=1,
        status=UsageStatus.FAILED,
        http_status=429,
        cost=0,
        error="rate limited",
    )
    UsageFactory(
        task=task,
        attempt=2,
        http_status=200,
        cost=Decimal("0.00000008333333333333334"),
        reported_cost=Decimal("0.0000001"),
    )
    UsageFactory(cost=Decimal("9.99"))  # another task's call

    content = staff_client.get(reverse("office:task_detail", args=[task.pk])).content.decode()

    assert "&lt;script&gt;alert(1)&lt;/script&gt; done" in content
    assert "<script>alert(1)" not in content
    assert "openai/gpt-4o-mini" in content
    assert "120 / 17" in content
    assert '<span class="cost">$0.000000</span>' in content
    assert "exact $0.00000008333333333333334)" in content
    assert "rate limited" in content
    assert "429" in content
    assert "$0.000000" in content
    assert "$9.99" not in content
    assert 'http-equiv="refresh"' not in content


def test_detail_of_a_running_task_refreshes_without_javascript(
    staff_client: Client, person
) -> None:
    task = TaskFactory(created_by=person, status=TaskStatus.RUNNING)

    content = staff_client.get(reverse("office:task_detail", args=[task.pk])).content.decode()

    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in content
    assert 'hx-trigger="every 1s"' in content


def test_status_fragment_of_a_queued_task_polls_itself(staff_client: Client, person) -> None:
    task = TaskFactory(created_by=person, status=TaskStatus.QUEUED)
    url = reverse("office:task_status", args=[task.pk])

    content = staff_client.get(url).content.decode()

    assert f'hx-get="{url}"' in content
    assert 'hx-trigger="every 1s"' in content
    assert 'hx-swap="outerHTML"' in content
    assert "<html" not in content  # a fragment, not a page


@pytest.mark.parametrize("status", [TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.OVER_BUDGET])
def test_status_fragment_of_a_finished_task_stops_polling(
    staff_client: Client, person, status: TaskStatus
) -> None:
    task = TaskFactory(created_by=person, status=status, error="Budget reached.")

    content = staff_client.get(reverse("office:task_status", args=[task.pk])).content.decode()

    assert 'id="task-status"' in content
    assert "hx-trigger" not in content
    assert "hx-get" not in content


@pytest.mark.parametrize("name", ["office:task_detail", "office:task_status"])
def test_another_persons_task_is_not_found(staff_client: Client, name: str) -> None:
    task = TaskFactory(created_by=UserFactory())

    assert staff_client.get(reverse(name, args=[task.pk])).status_code == 404
