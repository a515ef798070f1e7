"""Office actions: accepting tasks and handing them to the workers."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from office.celery import app as celery_app
from office.errors import Forbidden, IdempotencyConflict, TaskRejected, TaskStateConflict
from office.models import (
    RETRYABLE_STATUSES,
    SUBMITTABLE_KINDS,
    TERMINAL_STATUSES,
    UNFINISHED_STATUSES,
    ApiToken,
    Role,
    Task,
    TaskKind,
    TaskStatus,
    TaskTier,
)

logger = logging.getLogger(__name__)

# The worker tasks that prepare (local helper, `helper` queue: CELERY_TASK_ROUTES) and run
# a Task; named, not imported, because `office` does not depend on `agents` (DESIGN.md:
# dependencies point one way).
PREPARE_TASK = "agents.tasks.prepare_task"
EXECUTE_TASK = "agents.tasks.execute_task"
MAX_URL_CHARS = 2000
# An Idempotency-Key: what fits the column, in visible ASCII (UUIDs, ULIDs, base64 and
# "order-42:attempt" all do); white space and control characters are refused, as they
# are usually a client's bug.
IDEMPOTENCY_KEY_MAX_CHARS = 200
_IDEMPOTENCY_KEY = re.compile(rf"[\x21-\x7e]{{1,{IDEMPOTENCY_KEY_MAX_CHARS}}}")


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
    urls: Sequence[str] = (),
    follow_up_of: Task | int | None = None,
    retry_of: Task | None = None,
    token: ApiToken | None = None,
    idempotency_key: str = "",
) -> Task:
    """Validate and save a queued task, and dispatch it once the transaction commits.

    `tier_hint` ("low", "medium", "high" or "") tells a tiered role how hard the task is,
    instead of its classifier. `urls` are pages the role should read (http or https, at
    most ROSTER_TASK_MAX_URLS; the helper fetches them). `follow_up_of` is an earlier,
    finished task of the same person: the new task continues its thread, and its
    prompt is sent with the thread's history. `kind` "spec_execute" makes a
    spec-then-execute task: `strategy_role` writes an implementation spec, then `role`
    carries it out (each a step of its own, billed apart; agents.workflows).

    Returns the saved Task. Raises TaskRejected with a `field` and a readable message for
    an unknown or inactive role, a role that cannot run (no model bound), an empty or
    oversized prompt, a max_tokens outside 1..ROSTER_MAX_TOKENS_LIMIT, an unknown tier
    hint or kind, a strategy role missing (spec_execute) or given for another kind, a URL
    that is not http(s) (`url_invalid`), too many URLs (`urls_too_many`), or a follow-up
    of a task that is not the same person's (`follow_up_unknown`) or not finished
    (`follow_up_unfinished`). With an API `token` scoped to some roles, a role (or
    strategy role) outside its scope raises Forbidden (`role_not_allowed`, 403), and a
    follow-up of a task of another role answers as unknown. `idempotency_key` is stored
    on the task (task_submit_idempotent reads it); a key this person used before raises
    IntegrityError.
    """
    role_obj = _role_for(role)
    strategy = _strategy_role_for(kind=kind, strategy_role=strategy_role)
    if token is not None:
        _check_token_allows(token, role_obj, field="role")
        if strategy is not None:
            _check_token_allows(token, strategy, field="strategy_role")
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
    clean_urls = _urls_checked(urls)
    parent = _follow_up_checked(follow_up_of, created_by=created_by, token=token)
    if kind == TaskKind.SPEC_EXECUTE and (clean_urls or parent is not None):
        # Its steps are tasks of their own that get the prompt alone: pages and a thread
        # would be prepared for the parent and silently never reach a model.
        raise TaskRejected(
            "A spec-then-execute task takes its context from its prompt alone; pages "
            "(urls) and follow-ups are not supported for it.",
            code="spec_execute_context_unsupported",
            field="urls" if clean_urls else "follow_up_of",
        )

    with transaction.atomic():
        task = Task.objects.create(
            role=role_obj,
            prompt=prompt,
            title=title.strip()[:200],
            max_tokens=max_tokens,
            tier_hint=tier_hint,
            urls=clean_urls,
            follow_up_of=parent,
            thread_root_id=None if parent is None else parent.thread_id,
            thread_turn=1 if parent is None else parent.thread_turn + 1,
            created_by=created_by,
            kind=kind,
            strategy_role=strategy,
            retry_of=retry_of,
            idempotency_key=idempotency_key,
        )
        transaction.on_commit(lambda: task_dispatch(task_id=task.pk))
    return task


@dataclass(frozen=True)
class TaskSubmission:
    """What task_submit_idempotent did: the task, and whether an earlier request with
    the same Idempotency-Key had created it (`replayed`: nothing new was written)."""

    task: Task
    replayed: bool


def task_submit_idempotent(
    *,
    idempotency_key: str,
    created_by: AbstractBaseUser,
    role: Role | str,
    prompt: str,
    title: str = "",
    max_tokens: int | None = None,
    tier_hint: str = "",
    kind: str = TaskKind.TASK,
    strategy_role: Role | str | None = None,
    urls: Sequence[str] = (),
    follow_up_of: Task | int | None = None,
    token: ApiToken | None = None,
) -> TaskSubmission:
    """task_submit, at most once per (person, `idempotency_key`), as Stripe does it.

    The first request with a key creates the task; a later one with the same key and the
    same inputs gets that task back (replayed: not submitted again, whatever its state
    now); concurrent duplicates create one task (the unique constraint decides, and the
    loser returns the winner's task). "The same inputs" compares what task_submit would
    store: role, prompt (stripped), title (a request without one matches any, since the
    helper writes titles), max_tokens, tier hint, kind, strategy role, URLs (cleaned) and
    the task followed up.

    Returns a TaskSubmission. Raises TaskRejected (`idempotency_key_invalid`) for a key
    that is empty, longer than 200 characters or not visible ASCII; IdempotencyConflict
    (`idempotency_key_reused`, 422) when the key was used for different inputs;
    Forbidden when the replayed task's role is outside the token's scope; and whatever
    task_submit raises for a new task.
    """
    if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise TaskRejected(
            f"The Idempotency-Key header must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} visible "
            "ASCII characters (letters, digits, punctuation; no spaces), e.g. a UUID.",
            code="idempotency_key_invalid",
            field="Idempotency-Key",
        )
    inputs = _RequestedInputs(
        role=role if isinstance(role, str) else role.slug,
        prompt=(prompt or "").strip(),
        title=title.strip()[:200],
        max_tokens=max_tokens,
        tier_hint=(tier_hint or "").strip().lower(),
        kind=kind,
        strategy_role=strategy_role.slug if isinstance(strategy_role, Role) else strategy_role,
        urls=urls,
        follow_up_of=follow_up_of.pk if isinstance(follow_up_of, Task) else follow_up_of,
    )
    earlier = _task_by_idempotency_key(created_by=created_by, key=idempotency_key)
    if earlier is not None:
        return _replay(earlier, inputs=inputs, key=idempotency_key, token=token)
    try:
        # A savepoint: a duplicate's IntegrityError undoes only its own insert (and its
        # dispatch, which waits for a commit that never comes).
        with transaction.atomic():
            task = task_submit(
                role=role,
                prompt=prompt,
                created_by=created_by,
                title=title,
                max_tokens=max_tokens,
                tier_hint=tier_hint,
                kind=kind,
                strategy_role=strategy_role,
                urls=urls,
                follow_up_of=follow_up_of,
                token=token,
                idempotency_key=idempotency_key,
            )
    except IntegrityError:
        earlier = _task_by_idempotency_key(created_by=created_by, key=idempotency_key)
        if earlier is None:
            raise  # another constraint: a bug, not a duplicate
        return _replay(earlier, inputs=inputs, key=idempotency_key, token=token)
    return TaskSubmission(task=task, replayed=False)


@dataclass(frozen=True)
class _RequestedInputs:
    role: str
    prompt: str
    title: str
    max_tokens: int | None
    tier_hint: str
    kind: str
    strategy_role: str | None
    urls: Sequence[str]
    follow_up_of: int | None


def _task_by_idempotency_key(*, created_by: AbstractBaseUser, key: str) -> Task | None:
    return (
        Task.objects.select_related("role", "strategy_role")
        .filter(created_by=created_by, idempotency_key=key)
        .first()
    )


def _replay(
    task: Task, *, inputs: _RequestedInputs, key: str, token: ApiToken | None
) -> TaskSubmission:
    """The earlier task of this key, if it was made from the same inputs."""
    if token is not None:
        _check_token_allows(token, task.role, field="role")
    try:
        urls = _urls_checked(inputs.urls)
    except TaskRejected:
        urls = None  # an accepted task's URLs were valid: these differ
    stored = {
        "role": task.role.slug,
        "prompt": task.prompt,
        "max_tokens": task.max_tokens,
        "tier_hint": task.tier_hint,
        "kind": task.kind,
        "strategy_role": task.strategy_role.slug if task.strategy_role else None,
        "urls": task.urls,
        "follow_up_of": task.follow_up_of_id,
    }
    requested = {
        "role": inputs.role,
        "prompt": inputs.prompt,
        "max_tokens": inputs.max_tokens,
        "tier_hint": inputs.tier_hint,
        "kind": inputs.kind,
        "strategy_role": inputs.strategy_role or None,
        "urls": urls,
        "follow_up_of": inputs.follow_up_of,
    }
    differ = [name for name in stored if stored[name] != requested[name]]
    if inputs.title and inputs.title != task.title:
        differ.append("title")
    if differ:
        raise IdempotencyConflict(
            f"The Idempotency-Key {key[:40]!r} was already used for task {task.pk}, with "
            f"a different {', '.join(differ)}. Use a new key for a new task.",
            field="Idempotency-Key",
        )
    return TaskSubmission(task=task, replayed=True)


def _check_token_allows(token: ApiToken, role: Role, *, field: str) -> None:
    if token.allows_role(role):
        return
    allowed = ", ".join(sorted(r.slug for r in token.roles.all()))
    raise Forbidden(
        f"This API token may not use the role {role.slug!r}; it may use: {allowed}.",
        code="role_not_allowed",
        field=field,
    )


def task_cancel(*, task: Task, by: AbstractBaseUser | None) -> Task:
    """Stop a task that has not ended: it becomes `cancelled` at once.

    A worker checks that it still holds the task before each provider call, so no call
    starts after this; a call already in flight finishes and is billed (its ledger row
    settles as usual), but its answer is not recorded. A spec-then-execute task's
    unfinished steps are cancelled with it.

    Returns the task as saved. Raises TaskStateConflict if it had already ended (or ends
    while this runs: the conditional update decides), or if it is a step of a
    spec-then-execute task (its workflow would wait for it for ever: cancel the task).
    """
    if task.kind not in SUBMITTABLE_KINDS:
        raise TaskStateConflict(
            f"Task {task.pk} is a step of task {task.parent_id}; cancel that task instead.",
            code="task_not_cancellable",
        )
    who = getattr(by, "get_username", lambda: "")() or "someone"
    now = timezone.now()
    reason = f"Cancelled by {who}."
    with transaction.atomic():
        cancelled = Task.objects.filter(pk=task.pk, status__in=UNFINISHED_STATUSES).update(
            status=TaskStatus.CANCELLED, error=reason, finished_at=now, claimed_by=""
        )
        if cancelled != 1:
            current = Task.objects.filter(pk=task.pk).values_list("status", flat=True).first()
            raise TaskStateConflict(
                f"Task {task.pk} has already ended ({current or 'missing'}); "
                "only a queued, preparing or running task can be cancelled.",
                code="task_not_cancellable",
            )
        Task.objects.filter(parent_id=task.pk, status__in=UNFINISHED_STATUSES).update(
            status=TaskStatus.CANCELLED, error=reason, finished_at=now, claimed_by=""
        )
    task.refresh_from_db()
    return task


def task_retry(*, task: Task, by: AbstractBaseUser | None, token: ApiToken | None = None) -> Task:
    """Try a task that ended without a result again, as a new task with the same inputs
    (role, prompt, title, limits, pages, thread, kind), submitted by `by`.

    The old task keeps its outcome and its ledger; the new one points at it (`retry_of`)
    and is billed on its own. Returns the new task. Raises TaskStateConflict for a task
    that is done or has not ended, and TaskRejected when the inputs are no longer
    accepted (the role was deactivated or unbound since: task_submit's checks), and
    Forbidden when a role of the task is outside the API `token`'s scope.
    """
    if task.status not in RETRYABLE_STATUSES:
        raise TaskStateConflict(
            f"Task {task.pk} is {task.status}; only a failed, over-budget or cancelled "
            "task can be retried.",
            code="task_not_retryable",
        )
    if task.kind not in SUBMITTABLE_KINDS:
        raise TaskStateConflict(
            f"Task {task.pk} is a step of task {task.parent_id}; retry that task instead.",
            code="task_not_retryable",
        )
    return task_submit(
        role=task.role,
        prompt=task.prompt,
        title=task.title,
        max_tokens=task.max_tokens,
        tier_hint=task.tier_hint,
        kind=task.kind,
        strategy_role=task.strategy_role,
        urls=task.urls,
        follow_up_of=task.follow_up_of_id,
        created_by=by,
        retry_of=task,
        token=token,
    )


def _urls_checked(urls: Sequence[str]) -> list[str]:
    """The URLs stripped, duplicates dropped, each an absolute http(s) URL with a host and
    no user name or password. Whether the address may be fetched is decided when it is
    fetched (after a DNS lookup, which does not belong in a web request)."""
    if isinstance(urls, str):  # one URL where a list was meant
        urls = [urls]
    clean: list[str] = []
    for raw in urls:
        url = str(raw).strip()
        if not url or url in clean:
            continue
        if not _is_web_url(url):
            raise TaskRejected(
                f"{url[:200]!r} is not a web address: give an absolute http:// or https:// "
                f"URL (at most {MAX_URL_CHARS:,} characters, without a user name or "
                "password).",
                code="url_invalid",
                field="urls",
            )
        clean.append(url)
    limit = settings.ROSTER_TASK_MAX_URLS
    if len(clean) > limit:
        raise TaskRejected(
            f"The task names {len(clean)} URLs; the limit is {limit}.",
            code="urls_too_many",
            field="urls",
        )
    return clean


def _is_web_url(url: str) -> bool:
    if len(url) > MAX_URL_CHARS or any(char.isspace() for char in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  raises ValueError for a port that is not a number
    except ValueError:
        return False
    return (
        parts.scheme.lower() in ("http", "https")
        and bool(parts.hostname)
        and parts.username is None
    )


def _follow_up_checked(
    follow_up_of: Task | int | None,
    *,
    created_by: AbstractBaseUser | None,
    token: ApiToken | None = None,
) -> Task | None:
    """The earlier task a follow-up continues: it must exist, be the same person's (a
    thread's history is theirs; an agent's token never reads another's tasks) and be
    finished (its answer is part of the history)."""
    if follow_up_of is None:
        return None
    task_id = follow_up_of.pk if isinstance(follow_up_of, Task) else follow_up_of
    owner_id = None if created_by is None else created_by.pk
    parent = Task.objects.filter(pk=task_id, created_by_id=owner_id).first()
    if parent is not None and token is not None and not token.allows_role(parent.role):
        parent = None  # out of the token's scope: as unknown as another person's task
    if parent is None:
        # Someone else's task answers like a missing one: its existence is not disclosed.
        raise TaskRejected(
            f"There is no task {task_id} of yours to follow up.",
            code="follow_up_unknown",
            field="follow_up_of",
        )
    if parent.status not in TERMINAL_STATUSES:
        raise TaskRejected(
            f"Task {task_id} is still {parent.get_status_display().lower()}; follow it up "
            "once it has finished.",
            code="follow_up_unfinished",
            field="follow_up_of",
        )
    return parent


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
    *,
    user: AbstractBaseUser,
    name: str,
    expires_at: datetime | None = None,
    roles: Iterable[Role] = (),
) -> tuple[ApiToken, str]:
    """Create an API token for a user, scoped to `roles` (none: every role). Returns
    (token row, raw key).

    Only the key's SHA-256 is stored: the raw key returned here is the one chance to
    show it.
    """
    raw = ApiToken.new_raw_key()
    token = ApiToken(user=user, name=name, expires_at=expires_at)
    token.set_key(raw)
    with transaction.atomic():
        token.save()
        token.roles.set(list(roles))
    return token, raw


def task_dispatch(*, task_id: int, countdown: float | None = None) -> bool:
    """Send the task to the workers and stamp when. Returns False if the broker refused.

    A task the helper has not prepared yet goes to preparation (the `helper` queue),
    which dispatches it again when done; a prepared one goes to execution. With
    `countdown` (seconds) a worker starts it no earlier than that (a task waiting for a
    rate limit slot); it is stamped as dispatched when it is due, so the sweeper does not
    take it for lost meanwhile.

    A refusal is logged, not raised: the task is saved and queued, and the sweeper
    dispatches it again (ROSTER_REDISPATCH_AFTER), so nothing is lost.
    """
    due = timezone.now() + timedelta(seconds=countdown or 0)
    Task.objects.filter(pk=task_id, status=TaskStatus.QUEUED).update(dispatched_at=due)
    prepared = Task.objects.filter(pk=task_id, prepared_at__isnull=False).exists()
    try:
        celery_app.send_task(
            EXECUTE_TASK if prepared else PREPARE_TASK, args=[task_id], countdown=countdown
        )
    except Exception:
        logger.exception("could not dispatch task %s; the sweeper will retry", task_id)
        return False
    return True
