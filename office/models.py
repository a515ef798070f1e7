"""The office domain: roles, the tasks people and programs give them, API tokens."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection
from decimal import Decimal

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from office.fields import money_field


class Role(models.Model):
    """A job in the office (coder, researcher, ...). Which model does it lives in `agents`."""

    slug = models.SlugField(
        max_length=50,
        unique=True,
        validators=[RegexValidator(r"^[a-z][a-z0-9-]*$", "lowercase letters, digits, dashes")],
        help_text="Stable name used by the API, e.g. 'coder'.",
    )
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    system_prompt = models.TextField(
        blank=True, help_text="Sent before every task of this role (a cacheable prefix)."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class TaskStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    # The local helper is writing the task's title, fetching its pages and condensing its
    # thread's history (on the `helper` queue), before a role's model is called.
    PREPARING = "preparing", "Preparing"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    OVER_BUDGET = "over_budget", "Over budget"
    # Someone stopped it before it ended: no provider call starts after the cancel (a call
    # already in flight finishes and is billed; the ledger stays true).
    CANCELLED = "cancelled", "Cancelled"


class TaskTier(models.TextChoices):
    """How hard a task is, as the person or program giving it says (a routing hint)."""

    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"


class TaskKind(models.TextChoices):
    """What a task is: a task of its own, or a spec-then-execute task and its two steps.

    A `spec_execute` task makes no call itself: its strategy role writes an implementation
    spec (a `spec` step), then its role carries the spec out (an `execute` step); its
    status and result follow the steps (agents.workflows).
    """

    TASK = "task", "Task"
    SPEC_EXECUTE = "spec_execute", "Spec then execute"
    SPEC = "spec", "Spec step"
    EXECUTE = "execute", "Execution step"


# What people and programs may submit; the steps are created by the workflow.
SUBMITTABLE_KINDS = (TaskKind.TASK, TaskKind.SPEC_EXECUTE)
STEP_KINDS = (TaskKind.SPEC, TaskKind.EXECUTE)

TERMINAL_STATUSES = frozenset(
    {TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.OVER_BUDGET, TaskStatus.CANCELLED}
)
# Not ended yet: waiting for, or in the hands of, a helper or a worker.
UNFINISHED_STATUSES = (TaskStatus.QUEUED, TaskStatus.PREPARING, TaskStatus.RUNNING)
# A task that ended without a result may be tried again (as a new task: office.services).
RETRYABLE_STATUSES = frozenset({TaskStatus.FAILED, TaskStatus.OVER_BUDGET, TaskStatus.CANCELLED})


class Task(models.Model):
    """One piece of work for a role. Totals are kept here by billing, for display."""

    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="tasks")
    title = models.CharField(max_length=200, blank=True)
    prompt = models.TextField()
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    tier_hint = models.CharField(
        max_length=10,
        choices=TaskTier.choices,
        blank=True,
        help_text="How hard the task is; a tiered role uses it instead of its classifier.",
    )
    # Pages the role should read: http(s) URLs as given; the helper fetches them and the
    # role sees their text (docs/helper.md).
    urls = models.JSONField(default=list, blank=True)
    # A thread: this task follows up an earlier one (same person); the prompt sent to the
    # provider carries the thread's earlier turns. `thread_root` is the thread's first
    # task (null for a task that starts no thread or is that first task) and
    # `thread_turn` this task's position in it (1 for the first).
    follow_up_of = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="follow_ups"
    )
    thread_root = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    thread_turn = models.PositiveIntegerField(default=1)
    status = models.CharField(
        max_length=20, choices=TaskStatus.choices, default=TaskStatus.QUEUED, db_index=True
    )
    result = models.TextField(blank=True)
    error = models.TextField(blank=True, help_text="Why the task failed, in words.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="roster_tasks",
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Which worker holds the task while it runs, and how often it was claimed: a task
    # whose worker died is requeued by the sweeper, a bounded number of times.
    claimed_by = models.CharField(max_length=200, blank=True)
    executions = models.PositiveSmallIntegerField(default=0)
    # The helper's preparation (agents.preparation): when it finished (null: not yet; the
    # next dispatch prepares the task) and how often it was claimed.
    prepared_at = models.DateTimeField(null=True, blank=True)
    preparations = models.PositiveSmallIntegerField(default=0)
    # What preparation did, for display (written by agents). `page_notes`: one entry per
    # URL, {"url", "included" (bool), "note" (in words), "tokens"}. History figures are
    # token estimates: `history_tokens` is what this task re-sent of its thread (the
    # re-read tax), `history_tokens_saved` what the helper's summary of older turns saved
    # against sending them verbatim, `history_summarized_turns` how many turns it covers.
    page_notes = models.JSONField(default=list, blank=True)
    history_tokens = models.PositiveIntegerField(default=0)
    history_tokens_saved = models.PositiveIntegerField(default=0)
    history_summarized_turns = models.PositiveIntegerField(default=0)
    # Totals, kept by billing as calls settle (office only shows them).
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost = money_field(default=Decimal("0"))
    provider_calls = models.PositiveIntegerField(default=0)
    model_label = models.CharField(max_length=200, blank=True, help_text="Model that answered.")
    # What routing decided and why, one entry per step, in order (written by agents; each
    # entry has at least "step", "outcome" and "why"; see docs/routing.md).
    routing_decisions = models.JSONField(default=list, blank=True)
    # Spec then execute (TaskKind): the parent task names both roles (`role` carries the
    # spec out, `strategy_role` writes it); each step points at its parent.
    kind = models.CharField(max_length=20, choices=TaskKind.choices, default=TaskKind.TASK)
    parent = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="steps"
    )
    strategy_role = models.ForeignKey(
        Role,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Spec then execute: the role that writes the implementation spec.",
    )
    prefix = models.TextField(
        blank=True,
        help_text=(
            "Stable text sent after the role's system prompt and before the prompt, "
            "cacheable (a step's spec template or spec)."
        ),
    )

    # A retry is a new task with the same inputs; it points at the task it retries.
    retry_of = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="retries"
    )
    # The client's `Idempotency-Key` on creation (API): the same key from the same person
    # returns the task it created first instead of a second one.
    idempotency_key = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            # Staff read their own tasks; this lets a person read everyone's (managers,
            # and staff when ROSTER_STAFF_SEE_ALL_TASKS is on).
            ("view_all_tasks", "Can read every person's tasks"),
        ]
        indexes = [
            models.Index(fields=["status", "dispatched_at"]),
            # "Most expensive tasks" reports read the top of this on PostgreSQL.
            models.Index(models.F("cost").desc(), "id", name="task_cost_desc"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["created_by", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="task_idempotency_key_once_per_person",
            ),
            # A workflow creates each of its steps once, however often it is advanced.
            models.UniqueConstraint(
                fields=["parent", "kind"],
                condition=models.Q(parent__isnull=False),
                name="task_one_step_of_each_kind",
            ),
            models.CheckConstraint(
                condition=models.Q(kind__in=STEP_KINDS, parent__isnull=False)
                | (~models.Q(kind__in=STEP_KINDS) & models.Q(parent__isnull=True)),
                name="task_steps_have_a_parent",
            ),
            models.CheckConstraint(
                condition=models.Q(kind=TaskKind.SPEC_EXECUTE, strategy_role__isnull=False)
                | (~models.Q(kind=TaskKind.SPEC_EXECUTE) & models.Q(strategy_role__isnull=True)),
                name="task_spec_execute_has_a_strategy_role",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title or self.prompt[:40]}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def thread_id(self) -> int | None:
        """The id of the thread's first task: this task's own id when it starts one."""
        return self.thread_root_id or self.pk


def _hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A per-agent API token. Only its SHA-256 is stored; the token is shown once."""

    PREFIX = "rst_"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, help_text="Which program uses this token.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    key_hint = models.CharField(max_length=16, editable=False, help_text="First characters.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Which roles the token may use; none chosen: every role its user may use.
    roles = models.ManyToManyField(
        Role,
        blank=True,
        related_name="+",
        help_text="Roles this token may use. Leave empty for all roles.",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_hint}…)"

    @classmethod
    def new_raw_key(cls) -> str:
        return cls.PREFIX + secrets.token_urlsafe(32)

    def set_key(self, raw: str) -> None:
        self.key_hash = _hash_token(raw)
        self.key_hint = raw[:10]

    @classmethod
    def hash_of(cls, raw: str) -> str:
        return _hash_token(raw)

    def allows_role(self, role: Role, *, scope: Collection[int] | None = None) -> bool:
        """Whether this token may use `role` (a token with no roles chosen may use all).
        `scope` is the ids of the token's roles when the caller has read them already."""
        scoped = [r.pk for r in self.roles.all()] if scope is None else scope
        return not scoped or role.pk in scoped

    def is_usable(self, *, now: timezone.datetime | None = None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now
