"""The office overview page, the site's start page. Thin: agents.overview reads."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from agents.overview import office_overview


@require_GET
@login_required
@permission_required("office.view_task", raise_exception=True)
def office_overview_page(request: HttpRequest) -> HttpResponse:
    """Each active role: its model, this month's spend and budget bars, its queue."""
    overview = office_overview()
    return render(
        request,
        "agents/overview.html",
        {"overview": overview, "time_zone": timezone.get_current_timezone_name()},
    )
