"""The budgets page for managers: each budget this period, and the alert history.
Thin: billing.budget_overview reads."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from billing import reports
from billing.budget_overview import alerts_recent, budget_states
from billing.periods import local_day

# Alerts the page lists; older ones stay in the admin.
ALERTS_SHOWN = 100


@require_GET
@login_required
@permission_required(["billing.view_reports", "billing.view_budget"], raise_exception=True)
def budgets_overview(request: HttpRequest) -> HttpResponse:
    """Every budget (paused ones too, marked) with its period's spend, reservations and
    bar, its action and thresholds; then the latest alerts; and this month's CSVs."""
    today = local_day(timezone.now())
    states = budget_states(today=today, active_only=False)
    alerts = alerts_recent(limit=ALERTS_SHOWN)
    context = {
        "states": states,
        "alerts": alerts,
        "alerts_shown": ALERTS_SHOWN,
        "today": today,
        "month": f"{today:%Y-%m}",
        "exports": reports.EXPORTS,
        "time_zone": timezone.get_current_timezone_name(),
    }
    return render(request, "billing/budgets.html", context)
