"""A canary key goes through every surface a secret could leak from: the admin, the task
API, the worker's logs, the task's error and the ledger. It must appear in none."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agents.models import Credential
from billing.models import Usage
from office.models import TaskStatus
from office.services import api_token_create, task_submit
from tests.canary import OPENROUTER_KEY
from tests.e2e.conftest import bind_role
from tests.e2e.test_task_flow import wait_for_terminal

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Not a sandbox key, so the sandbox rejects it with a 401 that echoes it verbatim, as real
# providers do. The run's canary scan (tests/canary.py) also looks for it everywhere else.
CANARY = OPENROUTER_KEY


def test_canary_key_never_leaves_the_credential(
    office_processes, sandbox, catalog, admin_client, admin_user, client
):
    role = bind_role(
        slug="leaky",
        model=catalog["deepseek/deepseek-v4-pro"],
        provider="openrouter",
        base_url=sandbox.url + "/api/v1",
        secret=CANARY,
    )
    credential = Credential.objects.get(label="leaky credential")
    assert CANARY not in credential.secret_encrypted

    task = task_submit(role=role, prompt="Hello", created_by=admin_user)
    wait_for_terminal(task)

    # The provider refused the key and said so, echoing it; we kept a readable reason.
    assert task.status == TaskStatus.FAILED
    assert "HTTP 401" in task.error
    assert "Incorrect API key provided: ***" in task.error
    assert CANARY not in task.error
    [row] = Usage.objects.filter(task=task, helper_operation="")  # the provider call
    assert CANARY not in row.error
    assert row.http_status == 401

    # The provider did see (and echo) it: the test would be vacuous otherwise.
    assert sandbox.requests(call_id=row.call_id)[0]["status"] == 401

    worker_log = office_processes["worker"].output()
    assert "Task agents.tasks.execute_task[" in worker_log
    assert CANARY not in worker_log

    change_page = admin_client.get(reverse("admin:agents_credential_change", args=[credential.pk]))
    assert change_page.status_code == 200
    assert CANARY not in change_page.content.decode()
    assert f"····{CANARY[-4:]}" in change_page.content.decode()

    _, raw = api_token_create(user=admin_user, name="canary-check")
    api = client.get(f"/api/tasks/{task.pk}/", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.status_code == 200
    assert api.json()["status"] == "failed"
    assert CANARY not in api.content.decode()

    page = admin_client.get(reverse("office:task_detail", args=[task.pk]))
    assert page.status_code == 200
    assert CANARY not in page.content.decode()
