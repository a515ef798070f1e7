"""Admin for budgets, their period counters and the alerts they raise.

Budgets are edited here; their counters and alerts are written only by billing services
and shown read-only. Money columns are not sortable (SQLite stores them as text, see
`office.fields.ExactDecimalField`) and show every digit of the stored amount.
"""

from __future__ import annotations

import decimal
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from billing.models import Alert, Budget, BudgetPeriod, BudgetScope
from billing.money import EXACT
from billing.periods import local_day
from office.admin_history import HistoryAdminMixin
from office.fields import decimal_text

THRESHOLD_MIN, THRESHOLD_MAX = 1, 100
# The budget page shows about three months of counters; the full history is in the
# Budget periods list.
RECENT_PERIODS = timedelta(days=93)
_PERCENT = decimal.Context(prec=28, rounding=decimal.ROUND_HALF_UP)


def _usd(amount: Decimal | None) -> str:
    return "—" if amount is None else f"${decimal_text(amount)}"


def _spent_percentage(period: BudgetPeriod) -> str:
    """Spent as a share of the budget's limit, e.g. "80.2%"."""
    share = _PERCENT.divide(EXACT.multiply(period.spent, 100), period.budget.limit)
    return f"{share.quantize(Decimal('0.1'), context=_PERCENT)}%"


def thresholds_parse(text: str) -> list[int]:
    """Parse "50, 80, 100" into [50, 80, 100] (sorted).

    Raises forms.ValidationError naming the offending entries: not a whole number,
    outside 1..100, repeated, or none at all.
    """
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if not entries:
        raise forms.ValidationError(
            "Enter at least one percentage of the limit, e.g. 50, 80, 100.", code="required"
        )
    not_numbers = [entry for entry in entries if not entry.isascii() or not entry.isdigit()]
    if not_numbers:
        raise forms.ValidationError(
            "Thresholds are whole percentages separated by commas, e.g. 50, 80, 100; "
            f"not a whole number: {', '.join(not_numbers)}.",
            code="invalid",
        )
    values = [int(entry) for entry in entries]
    out_of_range = [str(value) for value in values if not THRESHOLD_MIN <= value <= THRESHOLD_MAX]
    if out_of_range:
        raise forms.ValidationError(
            f"Each threshold must be between {THRESHOLD_MIN} and {THRESHOLD_MAX} (percent "
            f"of the limit); out of range: {', '.join(out_of_range)}.",
            code="out_of_range",
        )
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise forms.ValidationError(
            f"Each threshold once; repeated: {', '.join(map(str, repeated))}.", code="repeated"
        )
    return sorted(values)


class BudgetForm(forms.ModelForm):
    thresholds = forms.CharField(
        help_text="Percentages of the limit that raise an alert, e.g. 50, 80, 100.",
        widget=forms.TextInput(attrs={"size": 30}),
    )

    class Meta:
        model = Budget
        fields = ["name", "scope", "role", "period", "limit", "action", "thresholds", "is_active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        thresholds = self.initial.get("thresholds")
        if isinstance(thresholds, list):
            self.initial["thresholds"] = ", ".join(str(value) for value in thresholds)
        limit = self.initial.get("limit")
        if isinstance(limit, Decimal):
            # PostgreSQL pads to the column's 26 places; show the amount as entered.
            self.initial["limit"] = decimal_text(limit)

    def clean_limit(self) -> Decimal:
        limit: Decimal = self.cleaned_data["limit"]
        if limit <= 0:
            raise forms.ValidationError(
                "The limit must be an amount in USD above zero.", code="not_positive"
            )
        return limit

    def clean_thresholds(self) -> list[int]:
        return thresholds_parse(self.cleaned_data["thresholds"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        # Scope and role are read-only once the budget exists (see BudgetAdmin).
        if "scope" in self.fields:
            scope, role = cleaned.get("scope"), cleaned.get("role")
            if scope == BudgetScope.ROLE and role is None:
                self.add_error("role", "Choose the role this budget limits.")
            elif scope == BudgetScope.OFFICE and role is not None:
                self.add_error("role", "An office budget covers every role; leave the role empty.")
        return cleaned


class PeriodFiguresMixin:
    """The money columns of a budget period, shown exactly."""

    @admin.display(description="reserved")
    def reserved_usd(self, obj: BudgetPeriod) -> str:
        return _usd(obj.reserved)

    @admin.display(description="spent")
    def spent_usd(self, obj: BudgetPeriod) -> str:
        return _usd(obj.spent)

    @admin.display(description="% of limit")
    def percentage(self, obj: BudgetPeriod) -> str:
        return _spent_percentage(obj)


class BudgetPeriodInline(HistoryAdminMixin, PeriodFiguresMixin, admin.TabularInline):
    model = BudgetPeriod
    fields = ["start", "end", "reserved_usd", "spent_usd", "percentage"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "Recent periods (the last three months)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[BudgetPeriod]:
        since = local_day(timezone.now()) - RECENT_PERIODS
        return (
            super()
            .get_queryset(request)
            .filter(start__gte=since)
            .select_related("budget")
            .order_by("-start")
        )

    # Counters belong to reservations and settlements, never to a person.


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    form = BudgetForm
    list_display = [
        "name",
        "scope",
        "role",
        "period",
        "limit_usd",
        "action",
        "thresholds_text",
        "is_active",
    ]
    list_filter = ["scope", "period", "action", "is_active"]
    list_select_related = ["role"]
    search_fields = ["name", "role__name", "role__slug"]
    sortable_by = ["name", "scope", "role", "period", "action", "is_active"]

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> list[type[Any]]:
        # A new budget has no counters yet.
        return [] if obj is None else [BudgetPeriodInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        # Counters are keyed by the period's first day and count one scope's calls:
        # changing either mid-stream would mix two budgets in one row. Make a new
        # budget and deactivate this one instead.
        return ["scope", "role", "period"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting would drop counters that calls in flight hold reservations on, and
        # the alert history; deactivate instead.
        return False

    @admin.display(description="limit (USD)")
    def limit_usd(self, obj: Budget) -> str:
        return _usd(obj.limit)

    @admin.display(description="thresholds (%)")
    def thresholds_text(self, obj: Budget) -> str:
        return ", ".join(str(value) for value in obj.thresholds)


@admin.register(BudgetPeriod)
class BudgetPeriodAdmin(HistoryAdminMixin, PeriodFiguresMixin, admin.ModelAdmin):
    list_display = ["budget", "start", "end", "reserved_usd", "spent_usd", "percentage"]
    list_filter = ["budget__period", ("budget", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["budget"]
    sortable_by = ["budget", "start", "end"]
    date_hierarchy = "start"
    fields = ["budget", "start", "end", "reserved_usd", "spent_usd", "percentage", "updated_at"]
    readonly_fields = fields


class DeliveryListFilter(admin.SimpleListFilter):
    """Alerts by delivery state: some channel got it, none did, or the last try failed."""

    title = "delivery"
    parameter_name = "delivery"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("delivered", "Delivered"), ("undelivered", "Not delivered"), ("error", "Error")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "delivered":
            return queryset.exclude(emailed_at__isnull=True, webhook_at__isnull=True)
        if self.value() == "undelivered":
            return queryset.filter(emailed_at__isnull=True, webhook_at__isnull=True)
        if self.value() == "error":
            return queryset.exclude(delivery_error="")
        return queryset


@admin.register(Alert)
class AlertAdmin(HistoryAdminMixin, admin.ModelAdmin):
    list_display = ["kind", "budget", "message", "created_at", "delivered"]
    list_filter = [
        "kind",
        DeliveryListFilter,
        ("budget", admin.RelatedOnlyFieldListFilter),
        "created_at",
    ]
    list_select_related = ["budget"]
    search_fields = ["message"]
    sortable_by = ["kind", "budget", "created_at"]
    date_hierarchy = "created_at"
    fields = [
        "kind",
        "message",
        "budget",
        "period_start",
        "threshold",
        "usage",
        "amount_usd",
        "limit_usd",
        "created_at",
        "emailed_at",
        "webhook_at",
        "delivery_error",
    ]
    readonly_fields = fields

    # Alerts are a record of what was said; billing services write them.

    @admin.display(description="delivered")
    def delivered(self, obj: Alert) -> str:
        channels = [
            name for name, at in (("email", obj.emailed_at), ("webhook", obj.webhook_at)) if at
        ]
        if obj.delivery_error:
            channels.append("error")
        return ", ".join(channels) or "—"

    @admin.display(description="amount (USD)")
    def amount_usd(self, obj: Alert) -> str:
        return _usd(obj.amount)

    @admin.display(description="limit (USD)")
    def limit_usd(self, obj: Alert) -> str:
        return _usd(obj.limit)
