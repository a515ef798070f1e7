"""Spec then execute: a strategy role (a premium model) writes an implementation spec,
then an execution role (a mid-tier model) carries it out.

A `spec_execute` task makes no provider call itself. Its two steps are tasks of their
own, children of it, each routed, billed and recorded like any task:

1. `spec`: the strategy role, with the spec template as a stable prefix after its system
   prompt, answers the original request with a spec;
2. `execute`: the task's own role, with that spec as a stable (cacheable) prefix,
   answers the original request.

The parent's status and result follow the steps: done with the execution's result, or
failed (or over budget) with the reason of the step that stopped.

Every transition commits together with what caused it, so none can be lost between two
commits: the parent's claim and its first step (spec_execute_start), a step's outcome and
the parent's next step or outcome (workflow_step_finished, called in the transaction
that records the step's outcome). Each is safe to run twice: the parent is claimed with a
conditional update, a step is created at most once per kind (a unique constraint), the
parent finishes only from running, and steps are dispatched with transaction.on_commit.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from office.models import Role, Task, TaskKind, TaskStatus
from office.services import task_dispatch

logger = logging.getLogger(__name__)

# Who "holds" a running spec-then-execute task: no worker does; its steps run on their own.
WORKFLOW_HOLDER = "workflow:spec_execute"

SPEC_TEMPLATE = """\
Do not carry out the request below: write the implementation spec another model will
follow to carry it out. That model sees only your spec and the request, so make every
decision yourself and leave nothing for it to guess. Write the spec in Markdown, in
exactly this template:

# Task title
One line.

## Goal
One or two sentences.

## Context
What the implementer must know: the situation, constraints, conventions.

## Files to modify
One path per line, each with what changes in it ("None" if there are none).

## Files to create
One path per line, each with what it holds ("None" if there are none).

## Detailed spec
Every decision made: names, signatures, data shapes, behaviour, edge cases and errors,
in the order the implementer should work.

## Validation checklist
Checkbox lines ("- [ ] ...") that prove the result is complete and correct."""

EXECUTION_PREFIX = """\
Carry out the request below by following this implementation spec, written for it by the
{role} role. Follow its decisions; where the spec and the request disagree, the spec wins.

<spec>
{spec}
</spec>"""

STEP_LABELS = {TaskKind.SPEC: "spec step", TaskKind.EXECUTE: "execution step"}


def spec_execute_start(*, task_id: int) -> str:
    """Start a queued spec-then-execute task: claim it and create its spec step, which is
    dispatched once both are committed. Returns the task's status.

    Safe to call twice: only the caller whose conditional update moves the task from
    queued to running creates the step.
    """
    with transaction.atomic():
        claimed = Task.objects.filter(
            pk=task_id, kind=TaskKind.SPEC_EXECUTE, status=TaskStatus.QUEUED
        ).update(status=TaskStatus.RUNNING, claimed_by=WORKFLOW_HOLDER, started_at=timezone.now())
        if claimed != 1:
            status = Task.objects.filter(pk=task_id).values_list("status", flat=True).first()
            logger.info("workflow %s not started (status %s): nothing to do", task_id, status)
            return status or "missing"
        parent = Task.objects.select_related("strategy_role").get(pk=task_id)
        if parent.strategy_role is None:  # the database refuses this; rows may be edited
            error = "This spec-then-execute task has no strategy role to write the spec."
            _parent_finish(parent, status=TaskStatus.FAILED, error=error)
            return TaskStatus.FAILED
        _step_create(parent, kind=TaskKind.SPEC, role=parent.strategy_role, prefix=SPEC_TEMPLATE)
    return TaskStatus.RUNNING


def workflow_step_finished(*, step_id: int) -> None:
    """Advance the workflow of a step whose final outcome was just recorded: after the
    spec, create the execution step; after the execution, finish the parent with its
    result; after a step that failed or ran over budget, end the parent with its status
    and reason. Does nothing for a task that is not a step or not finished.

    Call it inside the transaction that records the step's outcome, so that the two
    commit together.
    """
    step = Task.objects.select_related("role").filter(pk=step_id).first()
    if step is None or step.parent_id is None or not step.is_terminal:
        return
    parent = Task.objects.select_related("role", "strategy_role").get(pk=step.parent_id)
    if parent.status != TaskStatus.RUNNING:
        logger.info(
            "workflow %s already %s; step %s changes nothing", parent.pk, parent.status, step.pk
        )
        return
    label = f"The {STEP_LABELS.get(step.kind, 'step')} (task #{step.pk}, role {step.role.slug!r})"
    if step.status != TaskStatus.DONE:
        _parent_finish(
            parent,
            status=step.status,
            error=f"{label} ended {step.get_status_display().lower()}: {step.error}",
            result=step.result if step.kind == TaskKind.EXECUTE else "",
        )
    elif step.kind == TaskKind.SPEC:
        spec = step.result.strip()
        if not spec:
            _parent_finish(parent, status=TaskStatus.FAILED, error=f"{label} wrote no spec.")
            return
        prefix = EXECUTION_PREFIX.format(role=step.role.name, spec=spec)
        _step_create(parent, kind=TaskKind.EXECUTE, role=parent.role, prefix=prefix)
    else:
        spec_step = parent.steps.filter(kind=TaskKind.SPEC).first()
        spec_model = spec_step.model_label if spec_step else ""
        _parent_finish(
            parent,
            status=TaskStatus.DONE,
            result=step.result,
            model_label=f"spec: {spec_model or '?'}; execution: {step.model_label or '?'}",
        )


def _step_create(parent: Task, *, kind: str, role: Role, prefix: str) -> None:
    """Create one step of the workflow, once, and dispatch it when the transaction
    commits (a step that exists already is left as it is)."""
    base = parent.title or " ".join(parent.prompt.split())[:80]
    try:
        with transaction.atomic():
            step = Task.objects.create(
                kind=kind,
                parent=parent,
                role=role,
                prompt=parent.prompt,
                prefix=prefix,
                title=f"{STEP_LABELS[kind].capitalize()} of #{parent.pk}: {base}"[:200],
                max_tokens=parent.max_tokens,
                tier_hint=parent.tier_hint,
                created_by=parent.created_by,
            )
    except IntegrityError:
        logger.info("workflow %s already has its %s", parent.pk, STEP_LABELS[kind])
        return
    transaction.on_commit(lambda: task_dispatch(task_id=step.pk))


def _parent_finish(
    parent: Task, *, status: str, result: str = "", error: str = "", model_label: str = ""
) -> None:
    finished = Task.objects.filter(pk=parent.pk, status=TaskStatus.RUNNING).update(
        status=status,
        result=result,
        error=error[:4000],
        model_label=model_label[:200],
        claimed_by="",
        finished_at=timezone.now(),
    )
    if finished != 1:
        logger.info("workflow %s was finished meanwhile", parent.pk)
