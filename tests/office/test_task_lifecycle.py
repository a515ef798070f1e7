"""Cancelling and retrying tasks (office.services): who may, from which states, and what
each leaves behind. The worker's side of a cancel is in tests/agents/test_execution.py."""

from __future__ import annotations

from unittest import mock

import pytest

from office.errors import TaskRejected, TaskStateConflict
from office.models import Task, TaskKind, TaskStatus
from office.services import task_cancel, task_retry
from tests.factories import RoleFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_dispatch():
    with mock.patch("office.services.task_dispatch") as dispatch:
        yield dispatch


@pytest.mark.parametrize("status", [TaskStatus.QUEUED, TaskStatus.PREPARING, TaskStatus.RUNNING])
def test_an_unfinished_task_is_cancelled_at_once_with_who_did_it(status) -> None:
    task = TaskFactory(status=status, claimed_by="worker-1")
    person = UserFactory(username="dana")

    cancelled = task_cancel(task=task, by=person)

    assert cancelled.status == TaskStatus.CANCELLED
    assert cancelled.error == "Cancelled by dana."
    assert cancelled.finished_at is not None
    assert cancelled.claimed_by == ""  # the worker no longer holds it: its next call stops
    assert cancelled.is_terminal


@pytest.mark.parametrize(
    "status", [TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.OVER_BUDGET, TaskStatus.CANCELLED]
)
def test_an_ended_task_cannot_be_cancelled_and_is_left_as_it_was(status) -> None:
    task = TaskFactory(status=status, result="kept", error="")

    with pytest.raises(TaskStateConflict, match="already ended") as raised:
        task_cancel(task=task, by=UserFactory())

    assert raised.value.code == "task_not_cancellable"
    assert raised.value.status_code == 409
    task.refresh_from_db()
    assert (task.status, task.result) == (status, "kept")


def test_cancelling_a_spec_then_execute_task_cancels_its_unfinished_steps() -> None:
    role = RoleFactory(runnable=True)
    parent = TaskFactory(role=role, kind=TaskKind.SPEC_EXECUTE, strategy_role=role)
    spec = TaskFactory(
        role=role, kind=TaskKind.SPEC, parent=parent, status=TaskStatus.DONE, result="spec"
    )
    execute = TaskFactory(
        role=role, kind=TaskKind.EXECUTE, parent=parent, status=TaskStatus.RUNNING
    )

    task_cancel(task=parent, by=UserFactory())

    statuses = dict(Task.objects.filter(parent=parent).values_list("pk", "status"))
    assert statuses == {spec.pk: TaskStatus.DONE, execute.pk: TaskStatus.CANCELLED}


@pytest.mark.parametrize(
    "status", [TaskStatus.FAILED, TaskStatus.OVER_BUDGET, TaskStatus.CANCELLED]
)
def test_a_retry_is_a_new_queued_task_with_the_same_inputs(status, no_dispatch) -> None:
    person = UserFactory()
    old = TaskFactory(
        role=RoleFactory(runnable=True),
        status=status,
        prompt="Summarise the minutes.",
        title="Minutes",
        max_tokens=300,
        tier_hint="high",
        urls=["https://example.com/minutes"],
        created_by=person,
        error="it broke",
    )

    retry = task_retry(task=old, by=person)

    assert retry.pk != old.pk
    assert retry.status == TaskStatus.QUEUED
    assert retry.retry_of == old
    assert (retry.role, retry.prompt, retry.title, retry.max_tokens, retry.tier_hint) == (
        old.role,
        old.prompt,
        old.title,
        300,
        "high",
    )
    assert retry.urls == old.urls
    assert retry.created_by == person
    old.refresh_from_db()
    assert (old.status, old.error) == (status, "it broke")  # the old outcome is kept


@pytest.mark.parametrize("status", [TaskStatus.DONE, TaskStatus.QUEUED, TaskStatus.RUNNING])
def test_only_a_task_that_ended_without_a_result_can_be_retried(status) -> None:
    task = TaskFactory(status=status)

    with pytest.raises(TaskStateConflict) as raised:
        task_retry(task=task, by=UserFactory())

    assert raised.value.code == "task_not_retryable"
    assert Task.objects.count() == 1


def test_a_retry_of_a_role_since_deactivated_is_refused_with_the_reason() -> None:
    role = RoleFactory(runnable=True)
    task = TaskFactory(role=role, status=TaskStatus.FAILED)
    role.is_active = False
    role.save()

    with pytest.raises(TaskRejected, match="inactive"):
        task_retry(task=task, by=UserFactory())
    assert Task.objects.count() == 1


def test_a_step_cannot_be_cancelled_alone_its_workflow_would_wait_for_ever() -> None:
    role = RoleFactory(runnable=True)
    parent = TaskFactory(
        role=role, kind=TaskKind.SPEC_EXECUTE, strategy_role=role, status=TaskStatus.RUNNING
    )
    step = TaskFactory(role=role, kind=TaskKind.SPEC, parent=parent, status=TaskStatus.RUNNING)

    with pytest.raises(TaskStateConflict, match="cancel that task instead") as raised:
        task_cancel(task=step, by=UserFactory())

    assert raised.value.code == "task_not_cancellable"
    assert set(Task.objects.values_list("status", flat=True)) == {TaskStatus.RUNNING}
