"""Spend reports read from the ledger.

Money is summed in Python with billing.money: ExactDecimalField stores amounts as text on
SQLite, where an SQL SUM would go through floats. Token counts are integers and are
summed in SQL.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Count, Sum

from billing.models import Usage, UsageStatus
from billing.money import money_sum
from office.models import Role

# Rows that cost money: settled calls, and calls whose worker died, priced at an estimate.
# Pending rows are still in flight; failed calls were not billed.
BILLED_STATUSES = (UsageStatus.SETTLED, UsageStatus.ESTIMATED)


@dataclass(frozen=True)
class RoleSpend:
    """What one role spent in a period."""

    role_slug: str
    role_name: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost: Decimal


def spend_by_role(*, start: datetime, end: datetime) -> list[RoleSpend]:
    """Billed calls, tokens and exact cost per role for ledger rows created in [start, end).

    Returns one RoleSpend per role with billed calls, most expensive first (then by slug).
    """
    rows = Usage.objects.filter(
        status__in=BILLED_STATUSES, created_at__gte=start, created_at__lt=end
    )
    counts = {
        row["role_id"]: row
        for row in rows.order_by()
        .values("role_id")
        .annotate(
            calls=Count("id"), input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens")
        )
    }
    costs: defaultdict[int, list[Decimal]] = defaultdict(list)
    for role_id, cost in rows.order_by().values_list("role_id", "cost").iterator():
        costs[role_id].append(cost)
    roles = Role.objects.in_bulk(list(counts))

    report = [
        RoleSpend(
            role_slug=roles[role_id].slug,
            role_name=roles[role_id].name,
            calls=row["calls"],
            input_tokens=row["input_tokens"] or 0,
            output_tokens=row["output_tokens"] or 0,
            cost=money_sum(costs[role_id]),
        )
        for role_id, row in counts.items()
    ]
    report.sort(key=lambda spend: (-spend.cost, spend.role_slug))
    return report
