"""The office admin: changelists, tasks added through task_submit, API tokens."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from office.models import ApiToken, Role, Task
from tests.factories import RoleFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("model", "text"),
    [("role", "Coder"), ("task", "Write the changelog"), ("apitoken", "deploy-bot")],
)
def test_changelists_render(admin_client: Client, admin_user, model: str, text: str) -> None:
    role = RoleFactory(slug="coder", name="Coder")
    TaskFactory(role=role, title="Write the changelog", done=True)
    ApiToken.objects.create(
        user=admin_user, name="deploy-bot", key_hash="0" * 64, key_hint="rst_abc"
    )

    response = admin_client.get(reverse(f"admin:office_{model}_changelist"))

    assert response.status_code == 200
    assert text in response.content.decode()


def test_task_change_page_renders_read_only_outcome(admin_client: Client) -> None:
    task = TaskFactory(done=True)

    response = admin_client.get(reverse("admin:office_task_change", args=[task.pk]))

    assert response.status_code == 200
    assert "Ledger lines align" in response.content.decode()
    assert 'name="result"' not in response.content.decode()  # read-only, not an input


def test_adding_a_task_in_the_admin_submits_and_dispatches_it(
    admin_client: Client, admin_user, django_capture_on_commit_callbacks
) -> None:
    role = RoleFactory(runnable=True)

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(
            reverse("admin:office_task_add"),
            {"role": role.pk, "title": "", "prompt": "  Draft the memo.  ", "max_tokens": ""},
        )

    task = Task.objects.get()
    assert response.status_code == 302
    assert (task.prompt, task.created_by) == ("Draft the memo.", admin_user)
    assert len(callbacks) == 1


def test_admin_task_add_shows_a_refusal_on_its_field(admin_client: Client) -> None:
    role = RoleFactory()  # no model bound

    response = admin_client.post(
        reverse("admin:office_task_add"), {"role": role.pk, "prompt": "Draft the memo."}
    )

    assert response.status_code == 200
    assert "has no model bound to it" in response.context["adminform"].form.errors["role"][0]
    assert not Task.objects.exists()


def test_adding_an_api_token_shows_the_key_once_and_stores_only_its_hash(
    admin_client: Client,
) -> None:
    owner = UserFactory()

    response = admin_client.post(
        reverse("admin:office_apitoken_add"),
        {"name": "ci-agent", "user": owner.pk, "expires_at_0": "", "expires_at_1": ""},
        follow=True,
    )

    content = response.content.decode()
    raw = re.search(r"<code>(rst_[A-Za-z0-9_-]+)</code>", content).group(1)
    assert "will not be shown again" in content
    token = ApiToken.objects.get()
    assert (token.user, token.name) == (owner, "ci-agent")
    assert token.key_hash == ApiToken.hash_of(raw)
    assert token.key_hint == raw[:10]
    assert raw not in {token.key_hash, token.key_hint}

    change_page = admin_client.get(reverse("admin:office_apitoken_change", args=[token.pk]))
    assert raw not in change_page.content.decode()


def test_revoke_action_revokes_only_live_tokens(admin_client: Client, admin_user) -> None:
    live = ApiToken.objects.create(user=admin_user, name="a", key_hash="1" * 64)
    earlier = ApiToken.objects.create(user=admin_user, name="b", key_hash="2" * 64)
    ApiToken.objects.filter(pk=earlier.pk).update(revoked_at="2020-01-01T00:00:00Z")

    admin_client.post(
        reverse("admin:office_apitoken_changelist"),
        {"action": "revoke", "_selected_action": [live.pk, earlier.pk]},
    )

    live.refresh_from_db()
    earlier.refresh_from_db()
    assert live.revoked_at is not None
    assert earlier.revoked_at.year == 2020


def test_role_admin_searches_by_slug(admin_client: Client) -> None:
    RoleFactory(slug="researcher", name="Researcher")
    RoleFactory(slug="coder", name="Coder")

    response = admin_client.get(reverse("admin:office_role_changelist"), {"q": "resea"})

    assert list(response.context["cl"].result_list) == list(Role.objects.filter(slug="researcher"))
