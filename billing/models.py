"""What it costs: the model catalog, its price history and the usage ledger."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing.pricing import PRICE_KINDS, UnitPrices
from office.fields import money_field
from office.models import Role, Task


class CatalogSource(models.TextChoices):
    """Where a catalog model comes from, which says whether a catalog sync may change it."""

    OPENROUTER = "openrouter", "OpenRouter catalog (kept by the sync)"
    MANUAL = "manual", "Added by hand, e.g. an Ollama model (the sync leaves it alone)"
    LOCAL_HELPER = "local_helper", "Roster's local helper (free; never bound to a role)"


class CatalogModel(models.Model):
    """A model in the catalog. Never deleted: a model that vanished from OpenRouter's
    listing is unavailable. Models not from OpenRouter (`source`) are left to admins."""

    slug = models.CharField(
        max_length=200,
        unique=True,
        help_text="OpenRouter id, or a name of your own for a model added by hand.",
    )
    source = models.CharField(
        max_length=20,
        choices=CatalogSource.choices,
        default=CatalogSource.OPENROUTER,
        db_default=CatalogSource.OPENROUTER,
        help_text=(
            "A catalog sync adds prices to, and marks unavailable, only models from "
            "OpenRouter's catalog."
        ),
    )
    name = models.CharField(max_length=300)
    context_length = models.PositiveIntegerField(null=True, blank=True)
    max_completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    input_modalities = models.JSONField(default=list, blank=True)
    output_modalities = models.JSONField(default=list, blank=True)
    is_available = models.BooleanField(default=True, db_index=True)
    free_when_unpriced = models.BooleanField(
        default=False,
        help_text=(
            "The catalog gives no price, but this model costs nothing (e.g. a local "
            "server). Without this, unpriced models are refused under a hard budget."
        ),
    )
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def vendor(self) -> str:
        return self.slug.split("/", 1)[0] if "/" in self.slug else ""


class PriceSource(models.TextChoices):
    SYNC = "sync", "Catalog sync"
    OVERRIDE = "override", "Admin override"
    LOCAL = "local", "Local model: free"


class ModelPrice(models.Model):
    """One version of a model's unit prices, in force from `valid_from` until the next.

    Rows are added, never edited: a ledger row points at the version it was charged at.
    """

    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="prices")
    valid_from = models.DateTimeField(default=timezone.now, db_index=True)
    source = models.CharField(max_length=10, choices=PriceSource.choices)
    prompt = money_field(null=True, blank=True, help_text="USD per input token.")
    completion = money_field(null=True, blank=True, help_text="USD per output token.")
    input_cache_read = money_field(null=True, blank=True, help_text="USD per cached token.")
    input_cache_write = money_field(
        null=True, blank=True, help_text="USD per token written to a 5-minute cache."
    )
    input_cache_write_1h = money_field(
        null=True, blank=True, help_text="USD per token written to a 1-hour cache."
    )
    internal_reasoning = money_field(null=True, blank=True, help_text="USD per reasoning token.")
    request = money_field(null=True, blank=True, help_text="USD per request.")
    image = money_field(null=True, blank=True, help_text="USD per image.")
    web_search = money_field(null=True, blank=True, help_text="USD per web search.")
    # Long-context tier: a request whose input exceeds the threshold is charged at these
    # prices for all its tokens (as Google and Anthropic price their long contexts).
    long_context_threshold = models.PositiveIntegerField(
        null=True, blank=True, help_text="Input tokens above which the tier prices apply."
    )
    long_context_prompt = money_field(null=True, blank=True)
    long_context_completion = money_field(null=True, blank=True)
    long_context_input_cache_read = money_field(null=True, blank=True)
    batch_discount = money_field(
        null=True, blank=True, help_text="Fraction off for batch calls, e.g. 0.5."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "-valid_from", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    *[
                        Q(**{f"{kind}__isnull": True}) | Q(**{f"{kind}__gte": 0})
                        for kind in PRICE_KINDS
                    ]
                ),
                name="modelprice_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(batch_discount__isnull=True)
                | (Q(batch_discount__gte=0) & Q(batch_discount__lte=1)),
                name="modelprice_batch_discount_fraction",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model.slug} from {self.valid_from:%Y-%m-%d %H:%M}"

    def unit_prices(self) -> UnitPrices:
        return UnitPrices(
            **{kind: getattr(self, kind) for kind in PRICE_KINDS},
            long_context_threshold=self.long_context_threshold,
            long_context_prompt=self.long_context_prompt,
            long_context_completion=self.long_context_completion,
            long_context_input_cache_read=self.long_context_input_cache_read,
            batch_discount=self.batch_discount,
        )


class UsageStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # written before the call; the call may be in flight
    SETTLED = "settled", "Settled"  # the provider answered and reported usage
    FAILED = "failed", "Failed"  # the provider refused or errored: nothing to bill
    ESTIMATED = "estimated", "Estimated"  # the worker died mid-call: usage estimated


class PricingBasis(models.TextChoices):
    COMPUTED = "computed", "Computed from usage and prices"
    REPORTED = "reported", "Provider reported its cost (ours kept too)"
    ESTIMATED = "estimated", "Usage missing: estimated from text length"
    UNPRICED = "unpriced", "Model has no price: cost unknown, not zero"


class HelperOperation(models.TextChoices):
    """The local helper's operations (agents.helper), as the ledger records them."""

    TITLE = "title", "Title"
    SUMMARIZE = "summarize", "Summary"
    COMPRESS_HISTORY = "compress_history", "History compression"
    EXTRACT_PAGE = "extract_page", "Page extraction"
    CLASSIFY_COMPLEXITY = "classify_complexity", "Complexity estimate"


class Usage(models.Model):
    """The ledger: one row per provider call or local helper operation, append-only.

    A provider call's row is written `pending` before the call leaves, and settled once
    with the usage the provider reported and the unit prices in force (copied here, so a
    later price change never rewrites past spend). A local helper operation's row
    (`helper_operation` set) is written settled at cost 0 on the local helper's model,
    with its shadow price: what the same tokens would have cost on the role's paid model.
    """

    call_id = models.CharField(max_length=64, unique=True)
    task = models.ForeignKey(Task, on_delete=models.PROTECT, related_name="usage")
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="usage")
    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="usage")
    price = models.ForeignKey(ModelPrice, on_delete=models.PROTECT, related_name="usage")
    # The person the task was done for (its creator), for reports by person.
    person = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="roster_usage",
    )
    provider = models.CharField(max_length=20, help_text="Provider kind, e.g. openrouter.")
    # The credential lives in `agents`, which depends on billing; keep its id and label.
    credential_id = models.PositiveBigIntegerField(null=True, blank=True)
    credential_label = models.CharField(max_length=100, blank=True)
    upstream_model = models.CharField(max_length=200, blank=True)
    attempt = models.PositiveSmallIntegerField(default=1)
    # Not indexed: settlement changes it, and a change to an indexed column would make
    # every settlement rewrite all the ledger's indexes instead of a HOT update in place
    # (migration billing 0010). Open calls are found by task (indexed) or by id.
    status = models.CharField(
        max_length=10, choices=UsageStatus.choices, default=UsageStatus.PENDING
    )
    basis = models.CharField(max_length=10, choices=PricingBasis.choices, blank=True)
    # Written when the call opens: the input estimate and the output bound, so a call
    # whose worker died can still be priced at its worst case.
    estimated_input_tokens = models.PositiveBigIntegerField(default=0)
    max_output_tokens = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cached_input_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_1h_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    images = models.PositiveIntegerField(default=0)
    web_searches = models.PositiveIntegerField(default=0)
    is_batch = models.BooleanField(default=False)
    # Unit prices applied (the long-context tier already resolved), copied at settlement.
    price_prompt = money_field(null=True, blank=True)
    price_completion = money_field(null=True, blank=True)
    price_input_cache_read = money_field(null=True, blank=True)
    price_input_cache_write = money_field(null=True, blank=True)
    price_input_cache_write_1h = money_field(null=True, blank=True)
    price_internal_reasoning = money_field(null=True, blank=True)
    price_request = money_field(null=True, blank=True)
    price_image = money_field(null=True, blank=True)
    price_web_search = money_field(null=True, blank=True)
    price_batch_discount = money_field(null=True, blank=True)
    cost = money_field(default=Decimal("0"), help_text="Our cost: usage x unit prices.")
    reported_cost = money_field(null=True, blank=True, help_text="The provider's own figure.")
    # Budget reservation held while the call is pending: the worst-case cost, and the
    # budget periods (ids) it is counted against. Released or replaced at settlement.
    reserved = money_field(default=Decimal("0"))
    budget_periods = models.JSONField(default=list, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    provider_request_id = models.CharField(max_length=200, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    # Local helper operations only (blank or null on provider calls). Database defaults,
    # so that SQL written before these columns (benchmarks' bulk fills) still inserts.
    helper_operation = models.CharField(
        max_length=30,
        choices=HelperOperation.choices,
        blank=True,
        default="",
        db_default="",
        help_text="The local helper's operation; blank for a provider call.",
    )
    helper_backend = models.CharField(
        max_length=30,
        blank=True,
        default="",
        db_default="",
        help_text="builtin or openai_compatible.",
    )
    helper_fallback_reason = models.TextField(
        blank=True,
        default="",
        db_default="",
        help_text="Why the builtin backend answered instead of the local model.",
    )
    # The shadow price: the same tokens on the role's paid model, at the price version in
    # force then (copied, like a call's prices). No shadow model, or one without a price:
    # shadow_cost is None, unknown, never zero.
    shadow_model = models.ForeignKey(
        CatalogModel,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="shadowed_usage",
    )
    shadow_price = models.ForeignKey(
        ModelPrice, on_delete=models.PROTECT, null=True, blank=True, related_name="shadowed_usage"
    )
    shadow_price_prompt = money_field(null=True, blank=True)
    shadow_price_completion = money_field(null=True, blank=True)
    shadow_cost = money_field(
        null=True, blank=True, help_text="What the paid model would have charged; empty: unknown."
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(cost__gte=0), name="usage_cost_non_negative"),
            models.CheckConstraint(
                condition=Q(shadow_cost__isnull=True) | Q(shadow_cost__gte=0),
                name="usage_shadow_cost_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(reported_cost__isnull=True) | Q(reported_cost__gte=0),
                name="usage_reported_cost_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(reserved__gte=0), name="usage_reserved_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.call_id} {self.status} {self.cost}"

    @property
    def is_helper(self) -> bool:
        """True for a local helper operation, False for a provider call."""
        return bool(self.helper_operation)


class UsageRollup(models.Model):
    """Spend per day x role x model x provider x person, kept in step with the ledger.

    Local helper operations land in their own rows (the helper's model, provider
    `local`) and only in the `helper_*` measures.

    Updated in the same transaction as each settlement, so reports read O(days x roles x
    models) rows instead of every call; `manage.py cost rebuild-rollups` recomputes them
    from the ledger and reports any difference. `day` is the local date in
    ROSTER_TIME_ZONE.
    """

    day = models.DateField()
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="rollups")
    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="rollups")
    provider = models.CharField(max_length=20)
    person = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="roster_rollups",
    )
    tasks = models.PositiveBigIntegerField(
        default=0, help_text="Tasks whose first provider call closed in this rollup."
    )
    calls = models.PositiveBigIntegerField(default=0, help_text="Settled or estimated calls.")
    failed_calls = models.PositiveBigIntegerField(default=0)
    estimated_calls = models.PositiveBigIntegerField(default=0)
    unpriced_calls = models.PositiveBigIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cached_input_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    cost = money_field(default=Decimal("0"))
    reported_cost = money_field(default=Decimal("0"), help_text="Sum of provider figures given.")
    cache_savings = money_field(
        default=Decimal("0"), help_text="Cached tokens x (input price - cache-read price)."
    )
    # Local helper operations: never in the calls, tokens and cost above. Database
    # defaults too, so that SQL written before them (benchmarks' bulk fills) still inserts.
    helper_calls = models.PositiveBigIntegerField(
        default=0, db_default=0, help_text="Helper operations."
    )
    helper_unpriced_calls = models.PositiveBigIntegerField(
        default=0, db_default=0, help_text="Helper operations whose shadow price is unknown."
    )
    helper_input_tokens = models.PositiveBigIntegerField(default=0, db_default=0)
    helper_output_tokens = models.PositiveBigIntegerField(default=0, db_default=0)
    helper_savings = money_field(
        default=Decimal("0"),
        db_default=Decimal("0"),
        help_text="Shadow cost of helper operations: what they saved.",
    )

    class Meta:
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(
                "day",
                "role",
                "model",
                "provider",
                Coalesce("person", 0),
                name="usagerollup_unique_key",
            ),
        ]
        indexes = [
            models.Index(fields=["day", "role"]),
            # The report sums the helper measures over the helper's rows only (a few per
            # day and role), rather than over every row of the month.
            models.Index(
                fields=["day"], condition=Q(helper_calls__gt=0), name="usagerollup_helper_rows"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.role_id} {self.model_id} {self.provider}"


class BudgetScope(models.TextChoices):
    OFFICE = "office", "The whole office"
    ROLE = "role", "One role"


class BudgetPeriodKind(models.TextChoices):
    DAY = "day", "Day"
    WEEK = "week", "Week (ISO, from Monday)"
    MONTH = "month", "Calendar month"


class BudgetAction(models.TextChoices):
    BLOCK = "block", "Block: the task ends over budget"
    DOWNGRADE = "downgrade", "Downgrade to the role's over-budget model"
    ALERT_ONLY = "alert_only", "Alert only: never stop work"


def default_thresholds() -> list[int]:
    return [50, 80, 100]


class Budget(models.Model):
    """A spending limit for the office or one role, per day, week or month."""

    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=10, choices=BudgetScope.choices)
    role = models.ForeignKey(
        Role, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets"
    )
    period = models.CharField(max_length=10, choices=BudgetPeriodKind.choices)
    limit = money_field(help_text="USD per period.")
    action = models.CharField(
        max_length=12, choices=BudgetAction.choices, default=BudgetAction.BLOCK
    )
    thresholds = models.JSONField(
        default=default_thresholds, help_text="Alert at these percentages of the limit."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["scope", "name"]
        permissions = [
            ("view_reports", "Can view cost reports"),
            ("apply_calculator", "Can apply the calculator's model choices to roles"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(limit__gt=0), name="budget_limit_positive"),
            models.CheckConstraint(
                condition=(Q(scope="office") & Q(role__isnull=True))
                | (Q(scope="role") & Q(role__isnull=False)),
                name="budget_scope_matches_role",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_hard(self) -> bool:
        """Whether reaching the limit stops paid work (block or downgrade)."""
        return self.action != BudgetAction.ALERT_ONLY


class BudgetPeriod(models.Model):
    """A budget's counters for one period: what is reserved by calls in flight and what
    has been spent. Locked for every reservation and settlement."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="periods")
    start = models.DateField(help_text="First local day of the period.")
    end = models.DateField(help_text="First local day after the period.")
    reserved = money_field(default=Decimal("0"))
    spent = money_field(default=Decimal("0"))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-start"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "start"], name="budgetperiod_unique"),
            models.CheckConstraint(
                condition=Q(reserved__gte=0), name="budgetperiod_reserved_gte_0"
            ),
            models.CheckConstraint(condition=Q(spent__gte=0), name="budgetperiod_spent_gte_0"),
        ]

    def __str__(self) -> str:
        return f"{self.budget} {self.start}"


class AlertKind(models.TextChoices):
    THRESHOLD = "threshold", "Budget threshold crossed"
    DRIFT = "drift", "Provider-reported cost differs from ours"
    MANUAL = "manual", "Ad hoc check (cost alert)"


class Alert(models.Model):
    """Something a manager must hear about; delivered by email and webhook if configured."""

    kind = models.CharField(max_length=10, choices=AlertKind.choices)
    budget = models.ForeignKey(
        Budget, on_delete=models.CASCADE, null=True, blank=True, related_name="alerts"
    )
    period_start = models.DateField(null=True, blank=True)
    threshold = models.PositiveSmallIntegerField(null=True, blank=True)
    usage = models.ForeignKey(
        "Usage", on_delete=models.PROTECT, null=True, blank=True, related_name="alerts"
    )
    amount = money_field(null=True, blank=True, help_text="Spend (or drift) that triggered it.")
    limit = money_field(null=True, blank=True)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    webhook_at = models.DateTimeField(null=True, blank=True)
    delivery_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Once per threshold per budget period.
            models.UniqueConstraint(
                fields=["budget", "period_start", "threshold"],
                condition=Q(kind="threshold"),
                name="alert_once_per_threshold",
            ),
            # Once per call for drift.
            models.UniqueConstraint(
                fields=["usage"], condition=Q(kind="drift"), name="alert_once_per_drifting_call"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.message[:60]}"
