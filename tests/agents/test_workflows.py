"""Spec then execute, in-process against the sandbox provider over loopback: a strategy
role writes a spec, an execution role carries it out; both steps are tasks of their own,
linked to their parent and billed apart, the spec travels as the cacheable prefix, the
parent follows its steps, and every transition is safe to run twice. Also the API and
the web form that submit such a task and show its links."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from agents.execution import task_execute
from agents.liveness import tasks_sweep_stale, worker_id
from agents.models import RoleBinding
from agents.sandbox.behaviour import Prompt, Turn, answer_text, prompt_digest
from agents.services import credential_create
from agents.workflows import (
    EXECUTION_PREFIX,
    SPEC_TEMPLATE,
    spec_execute_start,
    workflow_step_finished,
)
from billing.catalog import catalog_parse, catalog_sync
from billing.models import Budget, CatalogModel, Usage, UsageStatus
from office.models import Role, Task, TaskKind, TaskStatus
from office.services import api_token_create, task_submit
from tests.canary import PLAIN_KEY, SANDBOX_KEY
from tests.factories import RoleFactory, UserFactory

pytestmark = pytest.mark.django_db

PREMIUM = "openai/gpt-4.1"
MID_TIER = "openai/gpt-4.1-mini"
REQUEST = "Add a CSV export to the monthly cost report."


@pytest.fixture
def models() -> dict[str, CatalogModel]:
    catalog_sync(
        entries=catalog_parse(
            {
                "data": [
                    {
                        "id": PREMIUM,
                        "name": "GPT-4.1",
                        "pricing": {"prompt": "0.000002", "completion": "0.000008"},
                    },
                    {
                        "id": MID_TIER,
                        "name": "GPT-4.1 mini",
                        "pricing": {"prompt": "0.0000004", "completion": "0.0000016"},
                    },
                ]
            }
        )
    )
    return {model.slug: model for model in CatalogModel.objects.all()}


def bound_role(sandbox, model: CatalogModel, slug: str, *, secret: str = SANDBOX_KEY) -> Role:
    role = Role.objects.create(slug=slug, name=slug.title(), system_prompt=f"You are the {slug}.")
    credential = credential_create(
        label=f"{slug} key",
        provider="openrouter",
        base_url=f"{sandbox.url}/api/v1",
        raw_secret=secret,
    )
    RoleBinding.objects.create(role=role, model=model, credential=credential, max_tokens=200)
    return role


@pytest.fixture
def roles(sandbox, models) -> tuple[Role, Role]:
    """(strategy role on the premium model, execution role on the mid-tier one)."""
    return bound_role(sandbox, models[PREMIUM], "architect"), bound_role(
        sandbox, models[MID_TIER], "coder"
    )


def submit(roles: tuple[Role, Role], prompt: str = REQUEST, **fields) -> Task:
    strategy, execution = roles
    return task_submit(
        role=execution, strategy_role=strategy, kind=TaskKind.SPEC_EXECUTE, prompt=prompt, **fields
    )


def execute(task_id: int) -> str:
    return task_execute(task_id=task_id, worker_id=worker_id())


def step_of(parent: Task, kind: str) -> Task:
    return Task.objects.get(parent=parent, kind=kind)


def run_through(parent: Task) -> Task:
    """Execute the parent, then each step as the workflow creates it."""
    execute(parent.pk)
    execute(step_of(parent, TaskKind.SPEC).pk)
    execution = Task.objects.filter(parent=parent, kind=TaskKind.EXECUTE).first()
    if execution is not None:
        execute(execution.pk)
    parent.refresh_from_db()
    return parent


def sandbox_answer(*, model: str, system: str, prompt: str) -> str:
    request = Prompt(model=model, system=system, turns=(Turn(role="user", text=prompt),))
    return answer_text(request, digest=prompt_digest(request))


def test_spec_then_execute_produces_two_linked_steps_billed_apart(
    roles, django_capture_on_commit_callbacks
):
    strategy, execution = roles
    with django_capture_on_commit_callbacks() as dispatched:
        parent = submit(roles, title="CSV export")
    assert len(dispatched) == 1  # the parent, which only starts the workflow
    assert (parent.kind, parent.role, parent.strategy_role) == ("spec_execute", execution, strategy)

    with django_capture_on_commit_callbacks() as dispatched:
        assert execute(parent.pk) == TaskStatus.RUNNING
    spec = step_of(parent, TaskKind.SPEC)
    assert len(dispatched) == 1  # the spec step, once the parent's claim commits
    assert (spec.role, spec.prompt, spec.prefix, spec.status) == (
        strategy,
        REQUEST,
        SPEC_TEMPLATE,
        TaskStatus.QUEUED,
    )
    assert spec.title == f"Spec step of #{parent.pk}: CSV export"

    execute(spec.pk)
    spec.refresh_from_db()
    assert spec.status == TaskStatus.DONE, spec.error
    # The strategy role saw the template right after its own system prompt.
    assert spec.result == sandbox_answer(
        model=PREMIUM, system=f"{strategy.system_prompt}\n\n{SPEC_TEMPLATE}", prompt=REQUEST
    )
    work = step_of(parent, TaskKind.EXECUTE)
    assert (work.role, work.prompt) == (execution, REQUEST)
    assert work.prefix == EXECUTION_PREFIX.format(role=strategy.name, spec=spec.result)
    parent.refresh_from_db()
    assert parent.status == TaskStatus.RUNNING

    execute(work.pk)
    work.refresh_from_db()
    parent.refresh_from_db()

    assert work.status == TaskStatus.DONE, work.error
    # The execution role got the spec as the prefix after its system prompt, then the request.
    assert work.result == sandbox_answer(
        model=MID_TIER, system=f"{execution.system_prompt}\n\n{work.prefix}", prompt=REQUEST
    )
    assert (parent.status, parent.result, parent.error) == (TaskStatus.DONE, work.result, "")
    assert parent.model_label == (
        f"spec: {PREMIUM} via architect key; execution: {MID_TIER} via coder key"
    )
    assert parent.finished_at is not None
    # Each step is billed on its own; the parent made no call.
    spec_call, work_call = Usage.objects.get(task=spec), Usage.objects.get(task=work)
    assert (spec_call.model.slug, work_call.model.slug) == (PREMIUM, MID_TIER)
    assert (spec_call.role, work_call.role) == (strategy, execution)
    assert spec_call.status == work_call.status == UsageStatus.SETTLED
    assert spec.cost == spec_call.cost > 0
    assert work.cost == work_call.cost > 0
    assert not Usage.objects.filter(task=parent).exists()
    assert parent.cost == 0


def test_every_transition_is_safe_to_run_twice(roles):
    parent = submit(roles)

    execute(parent.pk)
    assert execute(parent.pk) == TaskStatus.RUNNING  # a re-delivered message
    assert spec_execute_start(task_id=parent.pk) == TaskStatus.RUNNING
    spec = step_of(parent, TaskKind.SPEC)
    execute(spec.pk)
    workflow_step_finished(step_id=spec.pk)  # the step's outcome, replayed
    work = step_of(parent, TaskKind.EXECUTE)
    execute(work.pk)
    workflow_step_finished(step_id=work.pk)

    assert Task.objects.filter(parent=parent).count() == 2
    assert Usage.objects.filter(task__parent=parent).count() == 2
    parent.refresh_from_db()
    assert parent.status == TaskStatus.DONE


def test_a_failed_spec_step_fails_the_parent_with_its_reason(sandbox, models):
    strategy = bound_role(sandbox, models[PREMIUM], "architect", secret=PLAIN_KEY)
    execution = bound_role(sandbox, models[MID_TIER], "coder")

    parent = run_through(submit((strategy, execution)))

    spec = step_of(parent, TaskKind.SPEC)
    assert spec.status == TaskStatus.FAILED
    assert parent.status == TaskStatus.FAILED
    assert parent.error.startswith(
        f"The spec step (task #{spec.pk}, role 'architect') ended failed: "
    )
    assert "HTTP 401" in parent.error
    assert PLAIN_KEY not in parent.error
    assert not Task.objects.filter(parent=parent, kind=TaskKind.EXECUTE).exists()


def test_a_spec_step_that_writes_nothing_fails_the_parent(roles):
    parent = run_through(submit(roles, prompt="Export it. [[sandbox words=0]]"))

    spec = step_of(parent, TaskKind.SPEC)
    assert (spec.status, spec.result) == (TaskStatus.DONE, "")
    assert parent.status == TaskStatus.FAILED
    assert parent.error == f"The spec step (task #{spec.pk}, role 'architect') wrote no spec."
    assert not Task.objects.filter(parent=parent, kind=TaskKind.EXECUTE).exists()


def test_an_execution_step_stopped_by_a_budget_ends_the_parent_over_budget(roles):
    execution = roles[1]
    Budget.objects.create(
        name="coder cap", scope="role", role=execution, period="day", limit=Decimal("0.0000001")
    )

    parent = run_through(submit(roles))

    work = step_of(parent, TaskKind.EXECUTE)
    assert work.status == TaskStatus.OVER_BUDGET
    assert parent.status == TaskStatus.OVER_BUDGET
    assert parent.error.startswith(
        f"The execution step (task #{work.pk}, role 'coder') ended over budget: "
    )
    assert step_of(parent, TaskKind.SPEC).cost > 0  # the spec was written and paid for


def test_the_sweeper_leaves_a_running_workflow_alone_and_ends_it_when_a_step_is_lost(
    roles, settings
):
    settings.ROSTER_MAX_EXECUTIONS = 1
    parent = submit(roles)
    execute(parent.pk)
    spec = step_of(parent, TaskKind.SPEC)
    long_ago = timezone.now() - timedelta(hours=1)
    Task.objects.filter(pk=parent.pk).update(started_at=long_ago)
    # The spec step's worker died on its only allowed execution.
    Task.objects.filter(pk=spec.pk).update(
        status=TaskStatus.RUNNING, claimed_by="dead-worker", started_at=long_ago, executions=1
    )

    report = tasks_sweep_stale()

    assert report.failed == [spec.pk]
    assert parent.pk not in report.requeued
    parent.refresh_from_db()
    assert parent.status == TaskStatus.FAILED
    assert "The worker running this task stopped 1 times" in parent.error


# --- Submitting and showing -----------------------------------------------------------------


@pytest.fixture
def api():
    user = UserFactory(groups=["staff"])
    _, raw = api_token_create(user=user, name="agent")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_the_api_submits_a_spec_then_execute_task_and_links_its_steps(api, roles):
    response = api.post(
        reverse("office_api:task_list"),
        {"role": "coder", "strategy_role": "architect", "kind": "spec_execute", "prompt": REQUEST},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["kind"], body["role"], body["strategy_role"]) == (
        "spec_execute",
        "coder",
        "architect",
    )
    assert (body["parent"], body["steps"]) == (None, [])
    parent = Task.objects.get(pk=body["id"])
    run_through(parent)

    detail = api.get(body["url"]).json()
    spec, work = detail["steps"]
    assert detail["status"] == "done"
    assert (spec["kind"], spec["role"], spec["status"]) == ("spec", "architect", "done")
    assert (work["kind"], work["role"], work["status"]) == ("execute", "coder", "done")
    assert Decimal(spec["cost"]) == step_of(parent, TaskKind.SPEC).cost > 0
    step = api.get(work["url"]).json()
    assert (step["parent"], step["kind"], step["steps"]) == (body["url"], "execute", [])
    assert step["result"] == detail["result"]


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"kind": "spec_execute"}, "strategy_role_missing", "strategy_role"),
        ({"kind": "spec_execute", "strategy_role": "nobody"}, "role_unknown", "strategy_role"),
        ({"kind": "spec_execute", "strategy_role": "unbound"}, "role_unbound", "strategy_role"),
        ({"strategy_role": "architect"}, "strategy_role_unexpected", "strategy_role"),
        ({"kind": "execute"}, "kind_invalid", "kind"),
    ],
    ids=["missing", "unknown", "unbound", "not-spec-execute", "a-step-kind"],
)
def test_the_api_refuses_a_bad_workflow_with_its_field(api, roles, fields, code, field):
    RoleFactory(slug="unbound")

    response = api.post(
        reverse("office_api:task_list"),
        {"role": "coder", "prompt": REQUEST, **fields},
        format="json",
    )

    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["field"]) == (code, field)
    assert not Task.objects.exists()


def test_the_web_form_submits_a_spec_then_execute_task_and_pages_link_the_steps(
    client, roles, admin_user
):
    client.force_login(admin_user)
    response = client.post(
        reverse("office:task_create"),
        {"role": "coder", "kind": "spec_execute", "strategy_role": "architect", "prompt": REQUEST},
    )

    parent = Task.objects.get(kind=TaskKind.SPEC_EXECUTE)
    assert response.status_code == 302
    assert response["Location"] == reverse("office:task_detail", args=[parent.pk])
    run_through(parent)
    spec, work = step_of(parent, TaskKind.SPEC), step_of(parent, TaskKind.EXECUTE)

    page = client.get(reverse("office:task_detail", args=[parent.pk])).content.decode()
    assert "Architect" in page
    assert "Steps" in page
    for step in (spec, work):
        assert f'href="{reverse("office:task_detail", args=[step.pk])}"' in page
    step_page = client.get(reverse("office:task_detail", args=[work.pk])).content.decode()
    assert f'href="{reverse("office:task_detail", args=[parent.pk])}"' in step_page
    assert "Execution step of" in step_page


def test_the_web_form_asks_for_the_strategy_role_of_a_spec_then_execute_task(
    client, roles, admin_user
):
    client.force_login(admin_user)

    response = client.post(
        reverse("office:task_create"), {"role": "coder", "kind": "spec_execute", "prompt": REQUEST}
    )

    assert response.status_code == 200
    assert "needs a strategy role" in response.content.decode()
    assert not Task.objects.exists()


def test_the_admin_shows_a_steps_workflow_read_only(client, roles, admin_user):
    client.force_login(admin_user)
    parent = submit(roles)
    execute(parent.pk)
    spec = step_of(parent, TaskKind.SPEC)

    page = client.get(reverse("admin:office_task_change", args=[spec.pk])).content.decode()

    assert "Spec then execute" in page
    assert "Spec step" in page
    assert "# Task title" in page  # the template it was sent, as its prefix
    listing = client.get(reverse("admin:office_task_changelist"), {"kind": "spec_execute"})
    assert listing.status_code == 200
