"""The usage API: this month's spend and the budgets, for the roles a token may use."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from billing.api.serializers import UsageOutputSerializer
from billing.budget_overview import budget_states
from billing.money import money_sum
from billing.periods import local_day, period_days
from billing.selectors import role_spend
from office.api.base import AgentApiView, token_of
from office.api.schema import error_responses
from office.selectors import roles_active


class UsageApi(AgentApiView):
    """GET /api/usage/: this month's spend per role the token may use, and the state of
    the budgets over them (limit, spent, reserved, remaining)."""

    @extend_schema(
        operation_id="usage_read",
        summary="Read this month's spend and budget state for the roles you may use",
        responses={200: UsageOutputSerializer, **error_responses(401, 429)},
    )
    def get(self, request: Request) -> Response:
        now = timezone.now()
        start, end = period_days(period="month", day=local_day(now))
        roles = list(roles_active())
        scope = {role.pk for role in token_of(request).roles.all()}
        if scope:
            roles = [role for role in roles if role.pk in scope]
        spends = role_spend(roles=roles, start=start, end=end)
        usage = {
            "month": f"{start:%Y-%m}",
            "roles": spends,
            "cost": money_sum(row.spend.cost for row in spends),
            "budgets": budget_states(today=local_day(now), role_ids=[role.pk for role in roles]),
        }
        return Response(UsageOutputSerializer(usage).data)
