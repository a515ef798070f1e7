"""Manager pages: the monthly spend report and its CSV exports. Thin: a form checks the
query, billing.reports reads, billing.charts draws."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, cast

from django import forms
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from billing import reports
from billing.charts import Bar, TrendPoint, bar_chart, trend_chart
from billing.money import money_sum
from billing.periods import local_day
from office.fields import decimal_text

CHART_BARS = 8  # bars per chart; the rest are summed into "Other"


class ReportQueryForm(forms.Form):
    """The report's query string: ?month=YYYY-MM (default: this month) and, for CSV, by."""

    month = forms.CharField(label="Month", required=False, max_length=20)
    by = forms.ChoiceField(
        label="Breakdown",
        required=False,
        choices=[(name, name) for name in reports.EXPORTS],
        error_messages={
            "invalid_choice": "Unknown breakdown %(value)s: choose one of "
            + ", ".join(reports.EXPORTS)
            + "."
        },
    )

    def clean_month(self) -> tuple[date, date]:
        text = self.cleaned_data["month"]
        if not text:
            today = local_day(timezone.now())
            return reports.month_days(month=f"{today:%Y-%m}")
        try:
            return reports.month_days(month=text)
        except ValueError as exc:
            raise forms.ValidationError(str(exc), code="invalid_month") from exc


@require_GET
@login_required
@permission_required("billing.view_reports", raise_exception=True)
def report_month(request: HttpRequest) -> HttpResponse:
    """The monthly report: totals, charts, breakdowns, top tasks and CSV links.

    A malformed month answers 400 with the form's message, never a 500.
    """
    form = ReportQueryForm(request.GET)
    if not form.is_valid():
        context = {"form": form, "month": form["month"].value() or ""}
        return render(request, "billing/reports.html", context, status=400)
    start, end = form.cleaned_data["month"]
    report = reports.spend_report(start=start, end=end)
    context = {
        "form": form,
        "report": report,
        "month": f"{start:%Y-%m}",
        "month_name": f"{start:%B %Y}",
        "previous_month": f"{_month_before(start):%Y-%m}",
        "next_month": f"{end:%Y-%m}",
        "time_zone": timezone.get_current_timezone_name(),
        "exports": reports.EXPORTS,
        "trend_svg": _trend_svg(report.daily),
        "role_svg": bar_chart(bars=_bars(report.by_role), title="Spend by role"),
        "model_svg": bar_chart(bars=_bars(report.by_model), title="Spend by model"),
        "breakdowns": [
            ("role", "By role", report.by_role),
            ("model", "By model", report.by_model),
            ("provider", "By provider", report.by_provider),
            ("person", "By person", report.by_person),
        ],
    }
    return render(request, "billing/reports.html", context)


@require_GET
@login_required
@permission_required("billing.view_reports", raise_exception=True)
def report_export(request: HttpRequest) -> HttpResponseBase:
    """One month as CSV, ?month=YYYY-MM&by=role|model|provider|person|day|task.

    Money is exact decimal text. An empty month is a header row alone. Bad input
    answers 400 with a page that says what was wrong.
    """
    form = ReportQueryForm(request.GET)
    if form.is_valid() and not form.cleaned_data["by"]:
        form.add_error("by", "Choose a breakdown: " + ", ".join(reports.EXPORTS) + ".")
    if not form.is_valid():
        return render(request, "billing/report_bad_request.html", {"form": form}, status=400)
    start, end = form.cleaned_data["month"]
    by = form.cleaned_data["by"]
    header: list[str]
    records: Iterable[dict[str, Any]]
    if by == "task":
        header = list(reports.TASK_COLUMNS)
        records = (task.as_record() for task in reports.tasks_all(start=start, end=end))
    else:
        header = reports.breakdown_columns(by=by)
        rows = reports.spend_breakdown(start=start, end=end, by=cast(reports.Dimension, by))
        records = (row.as_record(by=by) for row in rows)
    response = StreamingHttpResponse(_csv_lines(header, records), content_type="text/csv")
    response["Content-Disposition"] = (
        f'attachment; filename="roster-spend-{start:%Y-%m}-by-{by}.csv"'
    )
    return response


class _Echo:
    """A file-like object whose write() hands the line back, for streaming csv.writer."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(header: list[str], records: Iterable[dict[str, Any]]) -> Iterator[str]:
    # Streamed: a month's tasks can be many rows, and none of them needs holding.
    writer = csv.DictWriter(_Echo(), fieldnames=header, lineterminator="\n")
    yield writer.writeheader()
    for record in records:
        yield writer.writerow(record)


def _month_before(first: date) -> date:
    return (first - timedelta(days=1)).replace(day=1)


def _bars(rows: list[reports.BreakdownRow]) -> list[Bar]:
    """The costliest rows as bars, the rest summed into "Other" so a chart stays short."""
    shown, rest = rows[:CHART_BARS], rows[CHART_BARS:]
    bars = [
        Bar(
            label=row.label,
            value=row.spend.cost,
            value_text=_chart_usd(row.spend.cost),
            tooltip=f"{row.label}: ${decimal_text(row.spend.cost)}, {row.spend.calls:,} calls",
        )
        for row in shown
    ]
    if rest:
        other = money_sum(row.spend.cost for row in rest)
        bars.append(
            Bar(
                label=f"Other ({len(rest)})",
                value=other,
                value_text=_chart_usd(other),
                tooltip=f"{len(rest)} others: ${decimal_text(other)}",
            )
        )
    return bars


def _chart_usd(amount: Decimal) -> str:
    """An amount short enough for a chart: cents from a dollar up, six places below."""
    places = Decimal("0.01") if amount >= 1 else Decimal("0.000001")
    return f"${amount.quantize(places, rounding=ROUND_HALF_UP):,}"


def _trend_svg(daily: list[reports.DailyPoint]) -> str:
    points = [
        TrendPoint(
            label=f"{point.day.day} {point.day:%b}",
            value=point.spend.cost,
            tooltip=f"{point.day:%a} {point.day.day} {point.day:%b}: "
            f"${decimal_text(point.spend.cost)}, {point.spend.calls:,} calls",
        )
        for point in daily
    ]
    top = max((point.value for point in points), default=None)
    return trend_chart(
        points=points,
        title="Spend per day",
        top_label=f"{_chart_usd(top)} on the costliest day" if top else "",
    )
