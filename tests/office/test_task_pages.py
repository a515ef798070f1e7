"""The task pages people use: cancel and retry, the result as Markdown, the copy button,
the list's filters, and the form's layout."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.test import Client
from django.urls import reverse

from office.forms import TaskForm
from office.models import Task, TaskStatus
from office.templatetags.result_markdown import markdown_html
from tests.factories import RoleFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def person():
    return UserFactory(username="ana", groups=["staff"])


@pytest.fixture
def web(client: Client, person) -> Client:
    client.force_login(person)
    return client


def detail(client: Client, task: Task) -> str:
    return client.get(reverse("office:task_detail", args=[task.pk])).content.decode()


# --- Cancel ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [TaskStatus.QUEUED, TaskStatus.PREPARING, TaskStatus.RUNNING])
def test_cancel_by_post_stops_an_unfinished_task(web: Client, person, status) -> None:
    task = TaskFactory(created_by=person, status=status)
    assert 'id="task-cancel-button"' in detail(web, task)

    response = web.post(reverse("office:task_cancel", args=[task.pk]), follow=True)

    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED
    assert task.error == "Cancelled by ana."
    page = response.content.decode()
    assert response.redirect_chain == [(reverse("office:task_detail", args=[task.pk]), 302)]
    assert f"Task #{task.pk} is cancelled" in page
    assert '<span class="badge badge-cancelled">Cancelled</span>' in page
    assert 'id="task-cancel-button"' not in page
    assert 'id="task-retry-button"' in page  # a cancelled task may be tried again


def test_get_on_cancel_or_retry_does_nothing(web: Client, person) -> None:
    running = TaskFactory(created_by=person, status=TaskStatus.RUNNING)
    failed = TaskFactory(created_by=person, status=TaskStatus.FAILED)

    assert web.get(reverse("office:task_cancel", args=[running.pk])).status_code == 405
    assert web.get(reverse("office:task_retry", args=[failed.pk])).status_code == 405

    running.refresh_from_db()
    assert running.status == TaskStatus.RUNNING
    assert Task.objects.count() == 2


def test_cancelling_a_finished_task_says_why_and_changes_nothing(web: Client, person) -> None:
    task = TaskFactory(created_by=person, done=True)

    response = web.post(reverse("office:task_cancel", args=[task.pk]), follow=True)

    task.refresh_from_db()
    assert task.status == TaskStatus.DONE
    assert "has already ended (done); only a queued, preparing or running task" in (
        response.content.decode()
    )


def test_the_cancel_form_carries_a_csrf_token(person) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(person)
    task = TaskFactory(created_by=person, status=TaskStatus.RUNNING)

    assert client.post(reverse("office:task_cancel", args=[task.pk])).status_code == 403
    page = detail(client, task)
    form = page[page.index('action="' + reverse("office:task_cancel", args=[task.pk])) :]
    token = form.split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
    response = client.post(
        reverse("office:task_cancel", args=[task.pk]), {"csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED


def test_another_staff_member_cannot_cancel_even_when_they_can_read(
    client: Client, settings
) -> None:
    task = TaskFactory(status=TaskStatus.RUNNING)
    client.force_login(UserFactory(groups=["staff"]))
    url = reverse("office:task_cancel", args=[task.pk])

    assert client.post(url).status_code == 404  # cannot even read it
    settings.ROSTER_STAFF_SEE_ALL_TASKS = True
    assert 'id="task-cancel-button"' not in detail(client, task)
    response = client.post(url)
    assert response.status_code == 403
    assert "Only the person who submitted this task, or an admin" in response.content.decode()
    task.refresh_from_db()
    assert task.status == TaskStatus.RUNNING


def test_managers_see_no_buttons_and_admins_may_cancel_anyones(client: Client) -> None:
    task = TaskFactory(status=TaskStatus.RUNNING)
    client.force_login(UserFactory(groups=["manager"]))
    assert 'id="task-cancel-button"' not in detail(client, task)
    assert client.post(reverse("office:task_cancel", args=[task.pk])).status_code == 403

    client.force_login(UserFactory(groups=["admin"]))
    assert 'id="task-cancel-button"' in detail(client, task)
    assert client.post(reverse("office:task_cancel", args=[task.pk])).status_code == 302
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED


# --- Retry ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status", [TaskStatus.FAILED, TaskStatus.OVER_BUDGET, TaskStatus.CANCELLED]
)
def test_retry_by_post_opens_a_new_task_that_points_back(
    web: Client, person, status, django_capture_on_commit_callbacks
) -> None:
    role = RoleFactory(runnable=True)
    task = TaskFactory(
        created_by=person, role=role, status=status, tier_hint="low", urls=["https://a.example"]
    )
    assert 'id="task-retry-button"' in detail(web, task)

    with django_capture_on_commit_callbacks() as callbacks:
        response = web.post(reverse("office:task_retry", args=[task.pk]))

    retry = Task.objects.get(retry_of=task)
    assert response.status_code == 302
    assert response["Location"] == reverse("office:task_detail", args=[retry.pk])
    assert (retry.prompt, retry.tier_hint, retry.urls) == (task.prompt, "low", task.urls)
    assert retry.created_by == person
    assert retry.status == TaskStatus.QUEUED
    assert len(callbacks) == 1  # dispatched once committed
    new_page = web.get(response["Location"]).content.decode()
    assert f"Task #{retry.pk} retries task #{task.pk}." in new_page
    assert 'id="task-retry-of"' in new_page
    assert f'href="{reverse("office:task_detail", args=[task.pk])}">#{task.pk}</a>' in new_page
    old_page = detail(web, task)
    assert f'href="{reverse("office:task_detail", args=[retry.pk])}">#{retry.pk}</a>' in old_page
    task.refresh_from_db()
    assert task.status == status  # the old task keeps its outcome


def test_a_done_task_offers_no_retry_and_a_forced_one_is_refused(web: Client, person) -> None:
    task = TaskFactory(created_by=person, done=True)
    assert 'id="task-retry-button"' not in detail(web, task)

    response = web.post(reverse("office:task_retry", args=[task.pk]), follow=True)

    assert "only a failed, over-budget or cancelled task can be retried" in (
        response.content.decode()
    )
    assert Task.objects.count() == 1


def test_a_retry_the_office_no_longer_accepts_says_why(web: Client, person) -> None:
    role = RoleFactory(slug="gone", is_active=False)
    task = TaskFactory(created_by=person, role=role, status=TaskStatus.FAILED)

    response = web.post(reverse("office:task_retry", args=[task.pk]), follow=True)

    assert "The role &#x27;gone&#x27; is inactive." in response.content.decode()
    assert Task.objects.count() == 1


# --- The result as Markdown -----------------------------------------------------------------


def test_the_result_is_rendered_as_markdown_with_highlighted_code(web: Client, person) -> None:
    task = TaskFactory(
        created_by=person,
        done=True,
        result="## Plan\n\n- **one**\n- two\n\n```python\ndef f():\n    return 1\n```\n",
    )

    page = detail(web, task)

    assert "<h2>Plan</h2>" in page
    assert "<li><strong>one</strong></li>" in page
    assert '<pre class="highlight" data-lang="python"><code><span class="k">def</span>' in page
    assert "office/pygments.css" in page


@pytest.mark.parametrize(
    ("markdown", "forbidden", "kept"),
    [
        ("<script>alert(1)</script>", "<script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("<img src=x onerror=alert(1)>", "<img", "&lt;img src=x onerror=alert(1)&gt;"),
        ("[click](javascript:alert(1))", "href", "[click](javascript:alert(1))"),
        ("[click](JaVaScRiPt:alert(1))", "href", "[click]"),
        ("[click](&#106;avascript:alert(1))", "href", "[click]"),
        ("[x](data:text/html;base64,PHNjcmlwdD4=)", "href", "[x]"),
        ("[x](vbscript:msgbox)", "href", "[x]"),
        # An image is a plain link: nothing loads by itself.
        ("![pixel](https://evil.example/?q=secret)", "<img", '!<a href="https://evil'),
        ('<a href="javascript:x">a</a>', "<a ", "&lt;a href="),
    ],
)
def test_markdown_never_passes_html_or_unsafe_links(markdown: str, forbidden, kept) -> None:
    html = markdown_html(markdown)

    assert forbidden not in html
    assert kept in html


def test_markdown_keeps_web_links_and_stops_them_passing_the_referrer() -> None:
    html = markdown_html("[docs](https://example.com/a?b=1&c=2) and <https://example.org>")

    assert (
        '<a href="https://example.com/a?b=1&amp;c=2" rel="nofollow noopener noreferrer">docs</a>'
        in html
    )
    assert 'href="https://example.org"' in html


def test_code_in_an_unknown_language_is_escaped_not_highlighted() -> None:
    html = markdown_html("```klingon\nif a < b && c > d\n```")

    assert '<pre class="highlight" data-lang="klingon"><code>if a &lt; b &amp;&amp; c' in html
    assert "<span" not in html


def test_the_copy_button_copies_the_markdown_and_needs_javascript_to_show(
    web: Client, person
) -> None:
    task = TaskFactory(created_by=person, done=True, result="Use `<b>` & **bold**")

    page = detail(web, task)

    assert (
        '<button type="button" class="copy-button secondary" '
        'data-copy-from="task-result-text" hidden>Copy</button>'
    ) in page
    assert '<pre id="task-result-text" hidden>Use `&lt;b&gt;` &amp; **bold**</pre>' in page
    assert "office/roster.js" in page


def test_a_running_task_page_still_polls_and_shows_no_copy_button(web: Client, person) -> None:
    task = TaskFactory(created_by=person, status=TaskStatus.RUNNING)

    page = detail(web, task)

    assert 'hx-trigger="every 1s"' in page
    assert "data-copy-from" not in page
    assert 'data-status="running"' in page


# --- The list's filters ---------------------------------------------------------------------


def at(day: int) -> datetime:
    return datetime(2026, 6, day, 12, tzinfo=UTC)


def test_the_list_filters_by_creation_day_inclusive(web: Client, person) -> None:
    first = TaskFactory(created_by=person, created_at=at(1))
    middle = TaskFactory(created_by=person, created_at=at(10))
    last = TaskFactory(created_by=person, created_at=at(20))
    url = reverse("office:task_list")

    def listed(**query: str) -> list[Task]:
        return list(web.get(url, query).context["page_obj"])

    assert listed(created_from="2026-06-10") == [last, middle]
    assert listed(created_to="2026-06-10") == [middle, first]
    assert listed(created_from="2026-06-02", created_to="2026-06-19") == [middle]
    assert listed(created_from="2026-06-01", created_to="2026-06-20") == [last, middle, first]


def test_a_backwards_date_range_is_reported_and_the_start_still_applies(
    web: Client, person
) -> None:
    TaskFactory(created_by=person, created_at=at(1))
    later = TaskFactory(created_by=person, created_at=at(20))

    response = web.get(
        reverse("office:task_list"), {"created_from": "2026-06-10", "created_to": "2026-06-05"}
    )

    assert list(response.context["page_obj"]) == [later]
    assert "The end day is before the start day." in response.content.decode()
    bad = web.get(reverse("office:task_list"), {"created_from": "June"})
    assert bad.status_code == 200
    assert "Enter a valid date." in bad.content.decode()


def test_the_person_filter_is_for_those_who_read_everyones_tasks(client: Client) -> None:
    ana = UserFactory(username="ana", groups=["staff"])
    ben = UserFactory(username="ben", groups=["staff"])
    anas, bens = TaskFactory(created_by=ana), TaskFactory(created_by=ben)
    url = reverse("office:task_list")

    client.force_login(UserFactory(groups=["manager"]))
    page = client.get(url).content.decode()
    assert '<option value="ana">ana</option>' in page
    assert list(client.get(url, {"person": "ben"}).context["page_obj"]) == [bens]

    client.force_login(ana)
    response = client.get(url, {"person": "ben"})
    assert 'name="person"' not in response.content.decode()
    assert list(response.context["page_obj"]) == [anas]


def test_filters_combine_and_page_links_keep_them(client: Client) -> None:
    ana = UserFactory(username="ana", groups=["staff"])
    coder = RoleFactory(slug="coder")
    TaskFactory.create_batch(
        27, created_by=ana, role=coder, status=TaskStatus.FAILED, created_at=at(5)
    )
    TaskFactory(created_by=ana, role=coder, status=TaskStatus.DONE, created_at=at(5))
    TaskFactory(role=coder, status=TaskStatus.FAILED, created_at=at(5))
    client.force_login(UserFactory(groups=["manager"]))
    query = {"role": "coder", "status": "failed", "person": "ana", "created_from": "2026-06-05"}

    first = client.get(reverse("office:task_list"), query)
    second = client.get(reverse("office:task_list"), {**query, "page": "2"})

    assert len(first.context["page_obj"]) == 25
    assert len(second.context["page_obj"]) == 2
    assert first.context["page_obj"].paginator.count == 27
    assert (
        'href="?role=coder&amp;status=failed&amp;person=ana&amp;created_from=2026-06-05&amp;page=2"'
        in first.content.decode()
    )
    assert "27 tasks" in first.content.decode()


# --- The form -------------------------------------------------------------------------------


def test_the_form_shows_every_field_with_the_essentials_first(web: Client) -> None:
    page = web.get(reverse("office:task_create")).content.decode()

    positions = [page.index(f'name="{name}"') for name in TaskForm.base_fields]
    assert all(position > 0 for position in positions)
    assert page.index('name="role"') < page.index('name="prompt"') < page.index("<legend>")
    for name in ("urls", "follow_up_of", "tier_hint"):
        assert page.index("<legend>Optional</legend>") < page.index(f'name="{name}"')


def test_the_status_block_keeps_stable_hooks_for_browser_tests(web: Client, person) -> None:
    task = TaskFactory(created_by=person, done=True)

    page = web.get(reverse("office:task_status", args=[task.pk])).content.decode()

    assert '<dd id="task-status-badge" data-status="done">' in page
    assert '<span class="badge badge-done">Done</span>' in page
    assert '<dd id="task-cost"><span class="cost">$0.000154</span>' in page
    assert 'id="task-result"' in page
