"""What it costs: the model catalog, its price history and the usage ledger."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.pricing import PRICE_KINDS, UnitPrices
from office.fields import money_field
from office.models import Role, Task


class CatalogModel(models.Model):
    """A model in the OpenRouter catalog. Never deleted: a vanished model is unavailable."""

    slug = models.CharField(max_length=200, unique=True, help_text="OpenRouter id.")
    name = models.CharField(max_length=300)
    context_length = models.PositiveIntegerField(null=True, blank=True)
    max_completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    input_modalities = models.JSONField(default=list, blank=True)
    output_modalities = models.JSONField(default=list, blank=True)
    is_available = models.BooleanField(default=True, db_index=True)
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
    input_cache_write = money_field(null=True, blank=True, help_text="USD per token written.")
    internal_reasoning = money_field(null=True, blank=True, help_text="USD per reasoning token.")
    request = money_field(null=True, blank=True, help_text="USD per request.")
    image = money_field(null=True, blank=True, help_text="USD per image.")
    web_search = money_field(null=True, blank=True, help_text="USD per web search.")
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
        ]

    def __str__(self) -> str:
        return f"{self.model.slug} from {self.valid_from:%Y-%m-%d %H:%M}"

    def unit_prices(self) -> UnitPrices:
        return UnitPrices(**{kind: getattr(self, kind) for kind in PRICE_KINDS})


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


class Usage(models.Model):
    """The ledger: one row per provider call, append-only.

    The row is written `pending` before the call leaves, and settled once with the usage
    the provider reported and the unit prices in force (copied here, so a later price
    change never rewrites past spend).
    """

    call_id = models.CharField(max_length=64, unique=True)
    task = models.ForeignKey(Task, on_delete=models.PROTECT, related_name="usage")
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="usage")
    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="usage")
    price = models.ForeignKey(ModelPrice, on_delete=models.PROTECT, related_name="usage")
    provider = models.CharField(max_length=20, help_text="Provider kind, e.g. openrouter.")
    # The credential lives in `agents`, which depends on billing; keep its id and label.
    credential_id = models.PositiveBigIntegerField(null=True, blank=True)
    credential_label = models.CharField(max_length=100, blank=True)
    upstream_model = models.CharField(max_length=200, blank=True)
    attempt = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(
        max_length=10, choices=UsageStatus.choices, default=UsageStatus.PENDING, db_index=True
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
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    images = models.PositiveIntegerField(default=0)
    web_searches = models.PositiveIntegerField(default=0)
    # Unit prices applied, copied from `price` at settlement.
    price_prompt = money_field(null=True, blank=True)
    price_completion = money_field(null=True, blank=True)
    price_input_cache_read = money_field(null=True, blank=True)
    price_input_cache_write = money_field(null=True, blank=True)
    price_internal_reasoning = money_field(null=True, blank=True)
    price_request = money_field(null=True, blank=True)
    price_image = money_field(null=True, blank=True)
    price_web_search = money_field(null=True, blank=True)
    cost = money_field(default=Decimal("0"), help_text="Our cost: usage x unit prices.")
    reported_cost = money_field(null=True, blank=True, help_text="The provider's own figure.")
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    provider_request_id = models.CharField(max_length=200, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(cost__gte=0), name="usage_cost_non_negative"),
            models.CheckConstraint(
                condition=Q(reported_cost__isnull=True) | Q(reported_cost__gte=0),
                name="usage_reported_cost_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.call_id} {self.status} {self.cost}"
