"""Admin for the catalog, its price history and the ledger.

Price versions and ledger rows are history: the admin shows them and never edits them.
Adding a price in the admin is the one write it allows: an override, in force from now.
Money columns are never sortable here, because SQLite stores them as text (see
`office.fields.ExactDecimalField`) and would order them as strings.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils import timezone

from billing.models import CatalogModel, CatalogSource, ModelPrice, PriceSource, Usage
from billing.money import EXACT
from billing.pricing import LONG_CONTEXT_FIELDS, PRICE_KINDS, UnitPrices, price_version_problems
from office.admin_history import HistoryAdminMixin
from office.fields import decimal_text

PER_MILLION = Decimal(1_000_000)
# Per-million prices are shown to four places at most: enough to tell models apart.
PER_MILLION_PLACES = Decimal("0.0001")
# Wide enough for any stored amount, so that display never rounds a digit away.
_DISPLAY = decimal.Context(prec=60)


def _exact(value: Decimal | None) -> str:
    """Every digit of a stored amount, without the column's trailing zeros."""
    return "—" if value is None else decimal_text(value)


def _usd_per_million(price_per_token: Decimal | None) -> str:
    """A per-token price as USD per million tokens, e.g. "$2.50", "$0.0833" or "—"."""
    if price_per_token is None:
        return "—"
    value = EXACT.multiply(price_per_token, PER_MILLION).normalize(_DISPLAY)
    if value.as_tuple().exponent < PER_MILLION_PLACES.as_tuple().exponent:
        value = value.quantize(PER_MILLION_PLACES, rounding=decimal.ROUND_HALF_UP)
    whole, _, places = format(value, "f").partition(".")
    return f"${whole}.{places.ljust(2, '0')}"


def _price_column(kind: str) -> Callable[[ModelPrice], str]:
    @admin.display(description=kind.replace("_", " "))
    def column(price: ModelPrice) -> str:
        return _exact(getattr(price, kind))

    column.__name__ = f"{kind}_exact"
    return column


PRICE_COLUMNS = [_price_column(kind) for kind in PRICE_KINDS]


class VendorListFilter(admin.SimpleListFilter):
    """Filter models by the vendor prefix of their OpenRouter id ("openai/gpt-4o")."""

    title = "vendor"
    parameter_name = "vendor"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        slugs = CatalogModel.objects.values_list("slug", flat=True)
        vendors = {slug.split("/", 1)[0] for slug in slugs if "/" in slug}
        return [(vendor, vendor) for vendor in sorted(vendors)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(slug__startswith=f"{self.value()}/")
        return queryset


class ModelPriceInline(admin.TabularInline):
    model = ModelPrice
    fields = ["valid_from", "source", *PRICE_COLUMNS]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelPrice]:
        return super().get_queryset(request).order_by("-valid_from", "-id")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "source",
        "context_length",
        "is_available",
        "prompt_per_million",
        "completion_per_million",
    ]
    list_filter = ["is_available", "source", VendorListFilter]
    search_fields = ["slug", "name"]
    inlines = [ModelPriceInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[CatalogModel]:
        # The current price of each listed model in one query, not one per row.
        current = ModelPrice.objects.filter(
            model=OuterRef("pk"), valid_from__lte=timezone.now()
        ).order_by("-valid_from", "-id")
        return (
            super()
            .get_queryset(request)
            .annotate(
                current_prompt=Subquery(current.values("prompt")[:1]),
                current_completion=Subquery(current.values("completion")[:1]),
            )
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # The slug is the key the sync matches on; the timestamps belong to the sync.
        if obj is None:
            return ["first_seen_at", "last_synced_at"]
        return ["slug", "first_seen_at", "last_synced_at"]

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        # A model added here is not OpenRouter's: the next sync must not mark it unavailable.
        return {"source": CatalogSource.MANUAL, **super().get_changeform_initial_data(request)}

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Catalog models are never deleted: a vanished model is marked unavailable.
        return False

    @admin.display(description="prompt / 1M tokens")
    def prompt_per_million(self, obj: CatalogModel) -> str:
        return _usd_per_million(getattr(obj, "current_prompt", None))

    @admin.display(description="completion / 1M tokens")
    def completion_per_million(self, obj: CatalogModel) -> str:
        return _usd_per_million(getattr(obj, "current_completion", None))


# Every price column has the same scale; a price needing more places would be rounded.
_PRICE_PLACES = cast(models.DecimalField, ModelPrice._meta.get_field("prompt")).decimal_places


class ModelPriceAddForm(forms.ModelForm):
    """A new price version (an override): every price kind, the long-context tier and the
    batch discount, refused when calls could not be charged exactly at it."""

    class Meta:
        model = ModelPrice
        fields = ["model", *PRICE_KINDS, *LONG_CONTEXT_FIELDS, "batch_discount"]
        help_texts = {
            "long_context_prompt": (
                "USD per input token for the whole call when its input exceeds the "
                "threshold. Cache prices move with it: a cache read or write keeps its "
                "ratio to the input price (Anthropic: 1.25x, 2x, 0.1x)."
            ),
            "long_context_completion": (
                "USD per output token above the threshold; a reasoning price moves with it."
            ),
            "long_context_input_cache_read": (
                "USD per cached token above the threshold, when the provider lists one "
                "(Google does); else the cache-read price keeps its ratio to input."
            ),
            "batch_discount": (
                "Fraction off the token charges of batch calls, e.g. 0.5 (OpenAI and "
                "Anthropic batch APIs). Per-request, image and web search fees are not "
                "discounted."
            ),
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            # Field errors first: the combined checks need every value.
            return cleaned
        prices = UnitPrices(
            **{name: cleaned.get(name) for name in PRICE_KINDS},
            **{name: cleaned.get(name) for name in LONG_CONTEXT_FIELDS},
            batch_discount=cleaned.get("batch_discount"),
        )
        problems = price_version_problems(prices, max_places=_PRICE_PLACES)
        if problems:
            raise ValidationError(problems)
        return cleaned


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ["model", "valid_from", "source", *PRICE_COLUMNS[:4], "created_at"]
    list_filter = ["source"]
    search_fields = ["model__slug"]
    list_select_related = ["model"]
    sortable_by = ["model", "valid_from", "source", "created_at"]
    autocomplete_fields = ["model"]

    _tier_fieldsets: list[tuple[str, dict[str, Any]]] = [
        (
            "Long-context tier",
            {
                "fields": list(LONG_CONTEXT_FIELDS),
                "description": (
                    "For models that charge more for long prompts (Anthropic's 1M-token "
                    "context, Gemini 2.5 Pro): when a call's input exceeds the threshold, "
                    "all of its tokens are charged at these prices."
                ),
            },
        ),
        ("Batch", {"fields": ["batch_discount"]}),
    ]
    _history_fields = ["model", "source", "valid_from", *PRICE_KINDS, "created_at"]

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = ModelPriceAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            description = (
                "A price added here is an override, in force from now until a catalog "
                "sync brings a different provider price; calls already under way keep the "
                "price they started with. Prices are USD per token (request and web "
                "search: per call). Leave a price empty for none: without an input and an "
                "output price the model is unpriced."
            )
            main = {"fields": ["model", *PRICE_KINDS], "description": description}
            return [(None, main), *self._tier_fieldsets]
        return [(None, {"fields": self._history_fields}), *self._tier_fieldsets]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return [*self._history_fields, *LONG_CONTEXT_FIELDS, "batch_discount"]

    def save_model(self, request: HttpRequest, obj: ModelPrice, form: Any, change: bool) -> None:
        # A price added by hand is an override in force from now; it yields to the next
        # sync that brings a different provider price.
        if not change:
            obj.source = PriceSource.OVERRIDE
            obj.valid_from = timezone.now()
        super().save_model(request, obj, form, change)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Price versions are history that ledger rows point at.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Usage)
class UsageAdmin(HistoryAdminMixin, admin.ModelAdmin):
    # The ledger is append-only: written by billing services, never by hand.
    list_display = [
        "call_id",
        "task",
        "role",
        "model",
        "status",
        "helper_operation",
        "tokens",
        "cost_exact",
        "reported_cost_exact",
        "shadow_cost_exact",
        "created_at",
    ]
    list_filter = [
        "status",
        "provider",
        "helper_operation",
        ("role", admin.RelatedOnlyFieldListFilter),
        ("model", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["call_id"]
    list_select_related = ["task", "role", "model"]
    sortable_by = ["call_id", "task", "role", "model", "status", "created_at"]

    @admin.display(description="tokens in / out")
    def tokens(self, obj: Usage) -> str:
        return f"{obj.input_tokens:,} / {obj.output_tokens:,}"

    @admin.display(description="cost (USD)")
    def cost_exact(self, obj: Usage) -> str:
        return _exact(obj.cost)

    @admin.display(description="reported cost (USD)")
    def reported_cost_exact(self, obj: Usage) -> str:
        return _exact(obj.reported_cost)

    @admin.display(description="helper saved (USD)")
    def shadow_cost_exact(self, obj: Usage) -> str:
        # Only local helper rows have a shadow price; for them "—" means unknown.
        return _exact(obj.shadow_cost) if obj.is_helper else ""


from billing import admin_budgets  # noqa: E402,F401
