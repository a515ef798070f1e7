"""Operations endpoints: `/healthz` for load balancers, `/metrics` for Prometheus.
Thin: agents.health and agents.metrics do the work. docs/operations.md."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agents.health import health_report
from agents.metrics import metrics_text


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Each check's status and detail; 200 when all pass, 503 otherwise. No login: load
    balancers call it, and it discloses nothing secret."""
    report = health_report()
    return JsonResponse(report.as_dict(), status=200 if report.ok else 503)


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """The metrics for Prometheus, to a scraper holding ROSTER_METRICS_TOKEN.

    401 without the right bearer token; with no token configured, served only when
    DEBUG is on (a developer's machine) and 403 otherwise: spend per role and model is
    not for the open internet, and a proxy in front makes every caller look local, so
    the client's address proves nothing.
    """
    token = settings.ROSTER_METRICS_TOKEN
    if not token:
        if not settings.DEBUG:
            return HttpResponse(
                "Metrics are off: set ROSTER_METRICS_TOKEN and give Prometheus that bearer "
                "token (docs/operations.md).\n",
                status=403,
                content_type="text/plain; charset=utf-8",
            )
    elif not _bearer_matches(request, token):
        response = HttpResponse(
            "Send the metrics token: Authorization: Bearer <ROSTER_METRICS_TOKEN>.\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)


def _bearer_matches(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Constant time: the comparison must not tell an attacker how much of it was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )
