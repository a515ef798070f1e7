"""How work gets done: provider credentials, role bindings, worker liveness."""

from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from agents.providers.registry import ProviderKind
from billing.models import CatalogModel
from office.models import Role, Task

RATE_LIMIT_MESSAGE = "Enter a whole number of at least 1, or leave it blank for no limit."


class Credential(models.Model):
    """An office's own key for one provider (bring your own key).

    The secret is Fernet-encrypted (agents.secrets); only its last four characters are
    kept in clear, for people to tell keys apart.
    """

    label = models.CharField(max_length=100, unique=True)
    provider = models.CharField(max_length=20, choices=ProviderKind.choices)
    base_url = models.URLField(
        max_length=300,
        blank=True,
        help_text="Leave blank for the provider's public endpoint.",
    )
    secret_encrypted = models.TextField(editable=False)
    secret_last4 = models.CharField(max_length=4, editable=False)
    is_simulated = models.BooleanField(
        default=False,
        help_text="Points at the sandbox provider: answers are simulated, not a real model.",
    )
    # Enforced across every worker by agents.ratelimit; blank means no limit.
    requests_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1, message=RATE_LIMIT_MESSAGE)],
        help_text=(
            "Most requests this key may send in any 60 seconds, across all workers. "
            "Blank: no limit."
        ),
    )
    tokens_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1, message=RATE_LIMIT_MESSAGE)],
        help_text=(
            "Most tokens this key may use in any 60 seconds, across all workers. A call "
            "counts its prompt and max tokens until the provider reports what it used. "
            "Blank: no limit."
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["label"]
        constraints = [
            models.CheckConstraint(
                condition=Q(requests_per_minute__isnull=True) | Q(requests_per_minute__gte=1),
                name="credential_requests_per_minute_positive",
            ),
            models.CheckConstraint(
                condition=Q(tokens_per_minute__isnull=True) | Q(tokens_per_minute__gte=1),
                name="credential_tokens_per_minute_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.get_provider_display()}, ····{self.secret_last4})"

    @property
    def masked_secret(self) -> str:
        return f"····{self.secret_last4}" if self.secret_last4 else "(none)"

    @property
    def is_rate_limited(self) -> bool:
        return bool(self.requests_per_minute or self.tokens_per_minute)


class RoutingPolicy(models.TextChoices):
    """How a role's tasks pick their model (agents.routing; docs/routing.md)."""

    SINGLE = "single", "Single: the bound model"
    TIERED = "tiered", "Tiered: a low, medium or high model by the task's complexity"
    FALLBACK = "fallback", "Fallback: a chain, the next model when one fails"
    ESCALATE = "escalate", "Escalate: a cheap model first, a strong one if its answer fails"


class CandidateSlot(models.TextChoices):
    """The part a route candidate plays; each policy uses its own slots."""

    LOW = "low", "Tier low"
    MEDIUM = "medium", "Tier medium"
    HIGH = "high", "Tier high"
    CHAIN = "chain", "Fallback chain"
    CHEAP = "cheap", "Escalate: cheap (answers first)"
    STRONG = "strong", "Escalate: strong (answers when the cheap answer fails)"


class RoleBinding(models.Model):
    """Which model, through which credential, answers a role's tasks; with a policy other
    than `single`, the route candidates (RouteCandidate) do instead."""

    role = models.OneToOneField(Role, on_delete=models.CASCADE, related_name="binding")
    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="bindings")
    credential = models.ForeignKey(Credential, on_delete=models.PROTECT, related_name="bindings")
    upstream_model = models.CharField(
        max_length=200,
        blank=True,
        help_text=(
            "Model name sent to the provider. Blank: the catalog id for OpenRouter and "
            "the sandbox, the part after the vendor prefix for a direct provider."
        ),
    )
    max_tokens = models.PositiveIntegerField(
        default=1024, help_text="Upper bound on output tokens per call."
    )
    over_budget_model = models.ForeignKey(
        CatalogModel,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="over_budget_bindings",
        help_text="Answers instead when a 'downgrade' budget is reached (a free model).",
    )
    over_budget_credential = models.ForeignKey(
        Credential,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="over_budget_bindings",
        help_text="Credential for the over-budget model (blank: the binding's credential).",
    )
    policy = models.CharField(
        max_length=20,
        choices=RoutingPolicy.choices,
        default=RoutingPolicy.SINGLE,
        help_text=(
            "Single uses the model above. The other policies use the route candidates "
            "below (see docs/routing.md)."
        ),
    )
    escalation_rules = models.TextField(
        blank=True,
        help_text=(
            "Escalate only: when the cheap answer is not good enough, one rule per line: "
            "empty, refusal, min_chars N, truncated, json_schema {...}, self_assessment. "
            "Blank: empty, refusal, self_assessment."
        ),
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.role} → {self.model} via {self.credential.label}"


class RouteCandidate(models.Model):
    """One model a routing policy may call for a role: a tier, a link of a fallback chain,
    or the cheap or strong model of an escalation."""

    binding = models.ForeignKey(RoleBinding, on_delete=models.CASCADE, related_name="candidates")
    slot = models.CharField(max_length=10, choices=CandidateSlot.choices)
    position = models.PositiveSmallIntegerField(
        default=0, help_text="Order in a fallback chain (lowest first)."
    )
    model = models.ForeignKey(
        CatalogModel, on_delete=models.PROTECT, related_name="route_candidates"
    )
    credential = models.ForeignKey(
        Credential, on_delete=models.PROTECT, related_name="route_candidates"
    )
    upstream_model = models.CharField(
        max_length=200,
        blank=True,
        help_text="Model name sent to the provider; blank: derived from the catalog id.",
    )
    attempts = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text=(
            "Calls before giving up on this model (retryable errors). Blank: 1 in a "
            "fallback chain, ROSTER_PROVIDER_MAX_ATTEMPTS otherwise."
        ),
    )

    timeout_seconds = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        verbose_name="timeout (seconds)",
        help_text=(
            "Seconds to wait for this model's answer before the attempt counts as failed "
            "(a hung local server is left quickly). Blank: ROSTER_PROVIDER_TIMEOUT."
        ),
    )

    class Meta:
        ordering = ["binding", "position", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(attempts__isnull=True) | models.Q(attempts__gte=1),
                name="routecandidate_attempts_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(timeout_seconds__isnull=True) | models.Q(timeout_seconds__gte=1),
                name="routecandidate_timeout_positive",
                violation_error_message=(
                    "Enter a timeout of at least 1 second, or leave it blank for "
                    "ROSTER_PROVIDER_TIMEOUT."
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_slot_display()}: {self.model} via {self.credential.label}"


class WorkerHeartbeat(models.Model):
    """One row per live worker process; the sweeper requeues tasks of silent workers."""

    worker_id = models.CharField(max_length=200, unique=True)
    hostname = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    # Ids of the tasks this worker was executing when it wrote `last_seen`.
    running_tasks = models.JSONField(default=list, blank=True)

    def __str__(self) -> str:
        return self.worker_id


class RateWindow(models.Model):
    """The database rate limiter's state for one credential: the calls it granted in the
    last window, oldest first, as [time in microseconds, tokens, grant id] lists.

    Kept by the database backend of agents.ratelimit (used when Redis is not the broker),
    read and written under a row lock.
    """

    credential = models.OneToOneField(
        Credential, on_delete=models.CASCADE, primary_key=True, related_name="rate_window"
    )
    entries = models.JSONField(default=list, blank=True)

    def __str__(self) -> str:
        return f"rate window of credential {self.credential_id}"


class ThreadSummary(models.Model):
    """A thread's turns 1..`turns` condensed by the local helper (agents.threads).

    Written once, by the first task whose history no longer fits the budget, and reused
    by every later turn of the thread (and of its branches) until the history outgrows
    the budget again; the next summary is then built from this one and the turns after
    it, never from the whole thread again.
    """

    # The last task whose turn this summary covers; every follow-up below it may use it.
    through_task = models.OneToOneField(
        Task, on_delete=models.CASCADE, related_name="thread_summary"
    )
    turns = models.PositiveIntegerField(help_text="Turns 1..turns of the thread.")
    text = models.TextField()
    tokens = models.PositiveIntegerField(help_text="Estimated tokens of the summary text.")
    source_tokens = models.PositiveIntegerField(
        help_text="Estimated tokens of the turns it stands for, sent verbatim."
    )
    extends = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The earlier summary this one was built from.",
    )
    backend = models.CharField(max_length=30)
    fallback_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "thread summaries"

    def __str__(self) -> str:
        return f"summary of turns 1-{self.turns} through task {self.through_task_id}"


class PreparedPrompt(models.Model):
    """What the local helper prepared for a task: the conversation to send the role's
    model after its system prompt (thread history, page text, the prompt), as
    [{"role": "user" | "assistant", "content": ...}], and what it found out on the way.

    Written once by agents.preparation; every execution (and re-execution) of the task
    sends the same messages.
    """

    task = models.OneToOneField(
        Task, on_delete=models.CASCADE, primary_key=True, related_name="prepared_prompt"
    )
    messages = models.JSONField(default=list)
    summary = models.ForeignKey(
        ThreadSummary, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The helper's complexity reading of the prompt, for a tiered role without a tier
    # hint (agents.routing.ComplexityReading as JSON); null when not asked.
    complexity = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"prepared prompt of task {self.task_id}"


class ConfigStamp(models.Model):
    """One row whose `stamp` changes whenever what a call is planned from changes: a
    role, a role binding, a route candidate, a credential, a catalog model, a price or
    the roles an API token is limited to.

    Database triggers write it (agents migration 0008), so every change counts, the
    admin's, a catalog sync's bulk writes and raw SQL alike. A process keeps what it read
    of those tables for as long as the stamp it read with them is unchanged
    (agents.runtime): one cheap read per call instead of a dozen. The stamp is a fresh
    unique value per change (a sequence on PostgreSQL, a random 64-bit number on
    SQLite), never a counter a rolled-back transaction could hand out twice.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    stamp = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="configstamp_one_row")]

    def __str__(self) -> str:
        return f"config stamp {self.stamp}"
