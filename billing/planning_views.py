"""Planning pages for managers: the cost calculator and what-if re-pricing.

Thin: forms check what people type, billing.calculator and billing.whatif compute. The
forms live here because they exist only for these pages.

The calculator's live fragment answers 200 even when a field is wrong: the errors are
part of the fragment (htmx does not swap 4xx answers by default, and an error the person
cannot see is no help). Only a request naming no known row is a 400.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from billing.calculator import (
    HISTORY_DAYS,
    MAX_TASKS_PER_MONTH,
    MAX_TOKENS_PER_TASK,
    CalculatorError,
    CostEstimate,
    ModelChoice,
    RoleWorkload,
    Workload,
    calculator_apply_models,
    calculator_model_choices,
    calculator_roles,
    calculator_workloads,
    estimate_monthly_cost,
    history_window,
    role_bound_model_slug,
)
from billing.models import CatalogModel
from billing.money import money_sum
from billing.periods import local_day, period_days
from billing.whatif import WhatIfError, whatif_reprice
from office.fields import decimal_text
from office.models import Role

VIEW_REPORTS = "billing.view_reports"
APPLY_CALCULATOR = "billing.apply_calculator"

# --- Forms --------------------------------------------------------------------------------


class WholeNumberField(forms.IntegerField):
    """A whole number that may be typed with thousands separators: "1,000", "1 000"."""

    def to_python(self, value: Any) -> int | None:
        if isinstance(value, str):
            value = re.sub(r"[,_\s\u00a0\u202f]", "", value)
        return super().to_python(value)


class PercentField(forms.DecimalField):
    """A percentage 0-100 with up to two decimals; a trailing "%" is allowed."""

    def to_python(self, value: Any) -> Decimal | None:
        if isinstance(value, str):
            value = value.strip().removesuffix("%").strip()
        return super().to_python(value)


def _count_errors(noun: str, limit: int) -> dict[str, str]:
    return {
        "required": f"Enter the number of {noun}.",
        "invalid": f"Enter the number of {noun} as a whole number, e.g. 1000.",
        "min_value": f"The number of {noun} cannot be negative.",
        "max_value": f"At most {limit:,} {noun}.",
    }


class CalculatorRowForm(forms.Form):
    """One role's row of the calculator; prefixed with the role's slug."""

    model = forms.CharField(
        max_length=200,
        error_messages={"required": "Choose a model from the list."},
        widget=forms.TextInput(attrs={"list": "calc-models", "autocomplete": "off"}),
    )
    tasks = WholeNumberField(
        min_value=0,
        max_value=MAX_TASKS_PER_MONTH,
        error_messages=_count_errors("tasks per month", MAX_TASKS_PER_MONTH),
        widget=forms.TextInput(attrs={"inputmode": "numeric", "size": 9}),
    )
    input_tokens = WholeNumberField(
        min_value=0,
        max_value=MAX_TOKENS_PER_TASK,
        error_messages=_count_errors("input tokens", MAX_TOKENS_PER_TASK),
        widget=forms.TextInput(attrs={"inputmode": "numeric", "size": 9}),
    )
    output_tokens = WholeNumberField(
        min_value=0,
        max_value=MAX_TOKENS_PER_TASK,
        error_messages=_count_errors("output tokens", MAX_TOKENS_PER_TASK),
        widget=forms.TextInput(attrs={"inputmode": "numeric", "size": 9}),
    )
    cache_hit = PercentField(
        min_value=0,
        max_value=100,
        max_digits=5,
        decimal_places=2,
        error_messages={
            "required": "Enter the cache hit ratio (0 to 100 %).",
            "invalid": "Enter the cache hit ratio as a number from 0 to 100.",
            "min_value": "The cache hit ratio cannot be negative.",
            "max_value": "The cache hit ratio is at most 100 %%.",  # %-formatted by Django
            "max_decimal_places": "Use at most two decimals.",
            "max_digits": "Enter a number from 0 to 100 with at most two decimals.",
        },
        widget=forms.TextInput(attrs={"inputmode": "decimal", "size": 5}),
    )

    FIELDS = ("model", "tasks", "input_tokens", "output_tokens", "cache_hit")

    def __init__(self, *args: Any, choices: Mapping[str, ModelChoice], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.choices = choices

    def clean_model(self) -> str:
        slug: str = self.cleaned_data["model"].strip()
        if slug in self.choices:
            return slug
        known = CatalogModel.objects.filter(slug=slug).first()
        if known is None:
            raise forms.ValidationError(f"Unknown model “{slug}”: choose one from the list.")
        if not known.is_available:
            raise forms.ValidationError(f"{slug} is no longer in the catalog: choose another.")
        raise forms.ValidationError(f"{slug} has no price in force: choose another.")

    def workload(self) -> Workload:
        data = self.cleaned_data
        return Workload(
            tasks_per_month=data["tasks"],
            input_tokens_per_task=data["input_tokens"],
            output_tokens_per_task=data["output_tokens"],
            cache_hit_percent=data["cache_hit"],
        )


class WhatIfForm(forms.Form):
    """Which month to re-price, with which model, for one role or for every role."""

    month = forms.CharField(
        max_length=7,
        widget=forms.TextInput(attrs={"type": "month", "placeholder": "YYYY-MM"}),
        error_messages={"required": "Enter a month as YYYY-MM."},
    )
    scope = forms.ChoiceField(
        choices=[("role", "One role"), ("all", "Every role")],
        required=False,
        widget=forms.RadioSelect,
    )
    role = forms.CharField(required=False, widget=forms.Select)
    model = forms.CharField(
        max_length=200,
        widget=forms.TextInput(attrs={"list": "whatif-models", "autocomplete": "off"}),
        error_messages={"required": "Choose the model to re-price with (its catalog id)."},
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].widget.choices = [("", "—"), *Role.objects.values_list("slug", "name")]

    def clean_month(self) -> tuple[date, date]:
        text: str = self.cleaned_data["month"].strip()
        match = re.fullmatch(r"(\d{4})-(\d{2})", text)
        try:
            if match is None:
                raise ValueError(text)
            return period_days(period="month", day=date(int(match[1]), int(match[2]), 1))
        except (ValueError, OverflowError):  # month 13, year 0, or past date.max
            raise forms.ValidationError(
                f"“{text}” is not a month: use YYYY-MM, e.g. 2026-06."
            ) from None

    def clean_model(self) -> CatalogModel:
        slug: str = self.cleaned_data["model"].strip()
        model = CatalogModel.objects.filter(slug=slug).first()
        if model is None:
            raise forms.ValidationError(f"Unknown model “{slug}”: use a catalog id from the list.")
        return model

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        data["scope"] = data.get("scope") or "role"
        if data["scope"] == "all":
            data["role"] = None  # the role picker still submits a value; it does not apply
            return data
        slug = data.get("role") or ""
        if not slug:
            self.add_error("role", "Choose a role, or re-price every role (scope=all).")
            return data
        role = Role.objects.filter(slug=slug).first()
        if role is None:
            self.add_error("role", f"Unknown role “{slug}”.")
        data["role"] = role
        return data


# --- The calculator -----------------------------------------------------------------------


@dataclass(frozen=True)
class CalculatorRow:
    """A role's row as the page shows it: its form, the chosen model and the estimate."""

    role: Role
    bound_model: str | None
    history: RoleWorkload
    form: CalculatorRowForm
    choice: ModelChoice | None
    estimate: CostEstimate | None

    @property
    def slug(self) -> str:
        return self.role.slug

    @property
    def live_ids(self) -> str:
        """Ids of the parts a live update replaces (hx-select-oob): never the inputs,
        so that nothing typed while a request is in flight is overwritten."""
        parts = [f"calc-note-{self.slug}-{name}" for name in CalculatorRowForm.FIELDS]
        return ",".join([*parts, f"calc-cost-{self.slug}", "calc-totals"])

    @property
    def change(self) -> str | None:
        """The model Apply would bind the role to, when it differs from the bound one."""
        if self.choice is None or self.bound_model is None:
            return None
        return self.choice.slug if self.choice.slug != self.bound_model else None


@dataclass(frozen=True)
class CalculatorTotals:
    monthly: Decimal
    rows_counted: int
    rows_with_errors: int
    changes: list[CalculatorRow]
    applicable: list[CalculatorRow]  # bound roles with a valid model: what Apply posts
    query: str  # the calculator's inputs, to come back to after Apply


def _has_row_data(data: QueryDict, slug: str) -> bool:
    # Exact keys, not a prefix test: role "coder" must not claim "coder-tasks-model".
    return any(f"{slug}-{name}" in data for name in CalculatorRowForm.FIELDS)


def _calculator_rows(data: QueryDict | None) -> tuple[list[CalculatorRow], list[ModelChoice]]:
    """Every active role's row, bound to `data` where it has the row's fields and to the
    role's defaults (bound model, workload from history) otherwise."""
    choices = calculator_model_choices()
    roles = calculator_roles()
    workloads = calculator_workloads(roles=roles)
    rows = []
    for role in roles:
        bound = role_bound_model_slug(role)
        history = workloads[role.pk]
        if data is not None and _has_row_data(data, role.slug):
            row_data: QueryDict | dict[str, Any] = data
        else:
            # Defaults go through the same validation, so a role bound to a model that
            # left the catalog says so at once.
            row_data = {
                f"{role.slug}-model": bound or "",
                f"{role.slug}-tasks": history.tasks_per_month,
                f"{role.slug}-input_tokens": history.input_tokens_per_task,
                f"{role.slug}-output_tokens": history.output_tokens_per_task,
                f"{role.slug}-cache_hit": decimal_text(history.cache_hit_percent),
            }
        form = CalculatorRowForm(row_data, prefix=role.slug, choices=choices)
        choice, estimate = None, None
        if form.is_valid():
            choice = choices[form.cleaned_data["model"]]
            try:
                estimate = estimate_monthly_cost(workload=form.workload(), prices=choice.prices)
            except ValueError as exc:
                form.add_error(None, f"Cannot compute this row: {exc}.")
        elif "model" not in form.errors:
            choice = choices.get(form.cleaned_data.get("model", ""))
        rows.append(
            CalculatorRow(
                role=role,
                bound_model=bound,
                history=history,
                form=form,
                choice=choice,
                estimate=estimate,
            )
        )
    return rows, list(choices.values())


def _totals(rows: list[CalculatorRow]) -> CalculatorTotals:
    counted = [row for row in rows if row.estimate is not None]
    # A valid model choice can be applied even while the row's numbers have an error.
    applicable = [row for row in rows if row.choice is not None and row.bound_model is not None]
    query = {
        row.form.add_prefix(name): row.form.data.get(row.form.add_prefix(name), "")
        for row in rows
        for name in CalculatorRowForm.FIELDS
    }
    return CalculatorTotals(
        monthly=money_sum(row.estimate.monthly for row in counted if row.estimate),
        rows_counted=len(counted),
        rows_with_errors=len(rows) - len(counted),
        changes=[row for row in applicable if row.change],
        applicable=applicable,
        query=urlencode({key: str(value) for key, value in query.items()}),
    )


def _calculator_context(request: HttpRequest, data: QueryDict | None) -> dict[str, Any]:
    rows, choices = _calculator_rows(data)
    first, last = history_window(now=timezone.now())
    return {
        "rows": rows,
        "choices": choices,
        "totals": _totals(rows),
        "history_days": HISTORY_DAYS,
        "history_first": first,
        "history_last": last,
        "can_apply": request.user.has_perm(APPLY_CALCULATOR),
    }


@require_GET
@login_required
@permission_required(VIEW_REPORTS, raise_exception=True)
def calculator(request: HttpRequest) -> HttpResponse:
    """The calculator: one row per active role, prefilled from history. "Recalculate"
    (no JavaScript) submits the rows here as query parameters."""
    data = request.GET if request.GET else None
    return render(request, "billing/calculator.html", _calculator_context(request, data))


@require_POST
@login_required
@permission_required(VIEW_REPORTS, raise_exception=True)
def calculator_row(request: HttpRequest) -> HttpResponse:
    """htmx fragment: the changed row (its errors and cost) and the office total.

    The request carries every row's fields (the total needs them) and `row`, the slug of
    the row that changed. Field errors answer 200: see the module docstring.
    """
    context = _calculator_context(request, request.POST)
    row = next((r for r in context["rows"] if r.slug == request.POST.get("row")), None)
    if row is None:
        return HttpResponseBadRequest("Unknown row: name an active role's slug in `row`.")
    context["row"] = row
    html = render_to_string("billing/_calculator_row.html", context, request=request)
    html += render_to_string("billing/_calculator_totals.html", context, request=request)
    return HttpResponse(html)


@require_POST
@login_required
@permission_required([VIEW_REPORTS, APPLY_CALCULATOR], raise_exception=True)
def calculator_apply(request: HttpRequest) -> HttpResponse:
    """Bind each role to the model posted for it (`<slug>-model`); back to the page."""
    models_by_role = {
        role.slug: value
        for role in calculator_roles()
        if (value := request.POST.get(f"{role.slug}-model", "").strip())
    }
    try:
        changes = calculator_apply_models(models_by_role=models_by_role)
    except CalculatorError as exc:
        for message in exc.messages:
            messages.error(request, f"Nothing applied. {message}")
    else:
        if changes:
            summary = "; ".join(f"{c.role_slug}: {c.old_model} → {c.new_model}" for c in changes)
            messages.success(request, f"Models applied. {summary}.")
        else:
            messages.info(request, "Nothing to apply: every role already uses its model.")
    return redirect(_back_to_calculator(request.POST.get("query", "")))


def _back_to_calculator(query: str) -> str:
    # Only the calculator's own fields go back into the URL, re-encoded.
    fields = {
        f"{role.slug}-{name}" for role in calculator_roles() for name in CalculatorRowForm.FIELDS
    }
    kept = {key: value for key, value in QueryDict(query).items() if key in fields}
    url = reverse("planning:calculator")
    return f"{url}?{urlencode(kept)}" if kept else url


# --- What-if ------------------------------------------------------------------------------


@require_GET
@login_required
@permission_required(VIEW_REPORTS, raise_exception=True)
def whatif(request: HttpRequest) -> HttpResponse:
    """Re-price a month with another model: `?month=YYYY-MM&model=<slug>&role=<slug>` or
    `&scope=all`. Without parameters, the form alone; bad parameters answer 400."""
    this_month = local_day(timezone.now()).replace(day=1)
    previous = (this_month - timedelta(days=1)).replace(day=1)
    form = WhatIfForm(request.GET or None, initial={"month": f"{previous:%Y-%m}", "scope": "role"})
    report, status = None, 200
    if form.is_bound:
        if form.is_valid():
            start, end = form.cleaned_data["month"]
            try:
                report = whatif_reprice(
                    start=start,
                    end=end,
                    model=form.cleaned_data["model"],
                    role=form.cleaned_data["role"],
                )
            except WhatIfError as exc:
                form.add_error("model", str(exc))
        if report is None:
            status = 400
    context = {"form": form, "report": report, "choices": calculator_model_choices().values()}
    return render(request, "billing/whatif.html", context, status=status)
