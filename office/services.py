"""Office actions: accepting tasks and handing them to the workers."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from office.celery import app as celery_app
from office.errors import TaskRejected
from office.models import SUBMITTABLE_KINDS, ApiToken, Role, Task, TaskKind, TaskStatus, TaskTier

logger = logging.getLogger(__name__)

# The worker task that runs a Task; named, not imported, because `office` does not
# depend on `agents` (DESIGN.md: dependencies point one way).
EXECUTE_TASK = "agents.tasks.execute_task"


def task_submit(
    *,
    role: Role | str,
    prompt: str,
    created_by: AbstractBaseUser | None = None,
    title: str = "",
    max_tokens: int | None = None,
    tier_hint: str = "",
    kind: str = TaskKind.TASK,
    strategy_role: Role | str | None = None,
) -> Task:
    """Validate and save a queued task, and dispatch it once the transaction commits.

    `tier_hint` ("low", "medium", "high" or "") tells a tiered role how hard the task is,
    instead of its classifier. `kind` "spec_execute" makes a spec-then-execute task:
    `strategy_role` writes an implementation spec, then `role` carries it out (each a
    step of its own, billed apart; agents.workflows). Returns the saved Task. Raises
    TaskRejected with a `field` and a readable message for an unknown or inactive role,
    a role that cannot run (no model bound), an empty or oversized prompt, a max_tokens
    outside 1..ROSTER_MAX_TOKENS_LIMIT, an unknown tier hint or kind, or a strategy role
    missing (spec_execute) or given for another kind.
    """
    role_obj = _role_for(role)
    strategy = _strategy_role_for(kind=kind, strategy_role=strategy_role)
    prompt = (prompt or "").strip()
    if not prompt:
        raise TaskRejected("The prompt is empty.", code="prompt_empty", field="prompt")
    limit = settings.ROSTER_MAX_PROMPT_CHARS
    if len(prompt) > limit:
        raise TaskRejected(
            f"The prompt has {len(prompt):,} characters; the limit is {limit:,}.",
            code="prompt_too_long",
            field="prompt",
        )
    if max_tokens is not None and not 1 <= max_tokens <= settings.ROSTER_MAX_TOKENS_LIMIT:
        raise TaskRejected(
            f"max_tokens must be between 1 and {settings.ROSTER_MAX_TOKENS_LIMIT}.",
            code="max_tokens_out_of_range",
            field="max_tokens",
        )
    tier_hint = (tier_hint or "").strip().lower()
    if tier_hint and tier_hint not in TaskTier.values:
        raise TaskRejected(
            f"The tier hint {tier_hint!r} is not one of {', '.join(TaskTier.values)}.",
            code="tier_hint_invalid",
            field="tier_hint",
        )
    _check_runnable(role_obj, field="role")
    if strategy is not None:
        _check_runnable(strategy, field="strategy_role")

    with transaction.atomic():
        task = Task.objects.create(
            role=role_obj,
            prompt=prompt,
            title=title.strip()[:200],
            max_tokens=max_tokens,
            tier_hint=tier_hint,
            created_by=created_by,
            kind=kind,
            strategy_role=strategy,
        )
        transaction.on_commit(lambda: task_dispatch(task_id=task.pk))
    return task


def _role_for(role: Role | str, *, field: str = "role") -> Role:
    if isinstance(role, Role):
        role_obj = role
    else:
        role_obj = Role.objects.filter(slug=role).first()
        if role_obj is None:
            raise TaskRejected(f"There is no role {role!r}.", code="role_unknown", field=field)
    if not role_obj.is_active:
        raise TaskRejected(
            f"The role {role_obj.slug!r} is inactive.", code="role_inactive", field=field
        )
    return role_obj


def _strategy_role_for(*, kind: str, strategy_role: Role | str | None) -> Role | None:
    """The strategy role of a task of this kind (None for a plain task)."""
    if kind not in SUBMITTABLE_KINDS:
        kinds = ", ".join(str(k) for k in SUBMITTABLE_KINDS)
        raise TaskRejected(
            f"The kind {kind!r} is not one of {kinds}.", code="kind_invalid", field="kind"
        )
    if kind != TaskKind.SPEC_EXECUTE:
        if strategy_role:
            raise TaskRejected(
                "Only a spec-then-execute task (kind spec_execute) has a strategy role.",
                code="strategy_role_unexpected",
                field="strategy_role",
            )
        return None
    if not strategy_role:
        raise TaskRejected(
            "A spec-then-execute task needs a strategy role, the role that writes the spec.",
            code="strategy_role_missing",
            field="strategy_role",
        )
    return _role_for(strategy_role, field="strategy_role")


def _check_runnable(role: Role, *, field: str) -> None:
    """Run ROSTER_TASK_SUBMIT_CHECKS on a role; their refusals name `field`."""
    for check_path in settings.ROSTER_TASK_SUBMIT_CHECKS:
        try:
            import_string(check_path)(role=role)
        except TaskRejected as exc:
            if exc.field == "role":
                exc.field = field
            raise


def api_token_create(
    *, user: AbstractBaseUser, name: str, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """Create an API token for a user. Returns (token row, raw key).

    Only the key's SHA-256 is stored: the raw key returned here is the one chance to
    show it.
    """
    raw = ApiToken.new_raw_key()
    token = ApiToken(user=user, name=name, expires_at=expires_at)
    token.set_key(raw)
    token.save()
    return token, raw


def task_dispatch(*, task_id: int, countdown: float | None = None) -> bool:
    """Send the task to the workers and stamp when. Returns False if the broker refused.

    With `countdown` (seconds) a worker starts it no earlier than that (a task waiting for
    a rate limit slot); it is stamped as dispatched when it is due, so the sweeper does
    not take it for lost meanwhile. A refusal is logged, not raised: the task is saved
    and queued, and the sweeper dispatches it again (ROSTER_REDISPATCH_AFTER), so nothing
    is lost.
    """
    due = timezone.now() + timedelta(seconds=countdown or 0)
    Task.objects.filter(pk=task_id, status=TaskStatus.QUEUED).update(dispatched_at=due)
    try:
        celery_app.send_task(EXECUTE_TASK, args=[task_id], countdown=countdown)
    except Exception:
        logger.exception("could not dispatch task %s; the sweeper will retry", task_id)
        return False
    return True
