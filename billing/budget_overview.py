"""Budget reads for people: where each budget stands this period, and its alert history.

Reads only. The counters are the ones reservations and settlements keep (BudgetPeriod,
billing.budgets); a budget whose period has no counter row yet (no paid call since the
period began) is read the way its first reservation would start it: from the rollups.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.db.models import Q, QuerySet
from django.utils import timezone

from billing.budgets import HUNDRED, budget_spent_from_rollups, thresholds_crossed
from billing.models import Alert, Budget, BudgetPeriod
from billing.money import EXACT, ZERO, money_sum
from billing.periods import local_day, period_days

# Percentages are for display: one decimal place, never used in a money calculation.
_PERCENT = decimal.Context(prec=34, rounding=decimal.ROUND_HALF_UP)
_ONE_PLACE = Decimal("0.1")


@dataclass(frozen=True)
class BudgetState:
    """One budget in its current period: spent (settled calls), reserved (calls in
    flight, at their worst case) and what that is of the limit."""

    budget: Budget
    start: date
    end: date
    spent: Decimal
    reserved: Decimal

    @property
    def last_day(self) -> date:
        """The period's last local day (periods are half-open: `end` is the day after)."""
        return date.fromordinal(self.end.toordinal() - 1)

    @property
    def remaining(self) -> Decimal:
        """What is left of the limit after spend and reservations; zero at the least."""
        return max(ZERO, EXACT.subtract(self.budget.limit, money_sum([self.spent, self.reserved])))

    @property
    def spent_percent(self) -> Decimal:
        """Spent as a percentage of the limit (one decimal place; may pass 100)."""
        return _percent(self.spent, self.budget.limit)

    @property
    def reserved_percent(self) -> Decimal:
        """Reserved as a percentage of the limit (one decimal place)."""
        return _percent(self.reserved, self.budget.limit)

    @property
    def spent_bar(self) -> Decimal:
        """The spent part of a bar, 0 to 100."""
        return min(HUNDRED, self.spent_percent)

    @property
    def reserved_bar(self) -> Decimal:
        """The reserved part of a bar, after the spent part; the two stay within 100."""
        return max(ZERO, min(HUNDRED - self.spent_bar, self.reserved_percent))

    @property
    def is_reached(self) -> bool:
        """Whether spend has reached the limit."""
        return self.spent >= self.budget.limit

    @property
    def thresholds_reached(self) -> list[int]:
        """The alert thresholds (percent) spend has reached this period."""
        return thresholds_crossed(
            limit=self.budget.limit,
            thresholds=self.budget.thresholds,
            before=ZERO,
            after=self.spent,
        )


def budget_states(
    *, today: date | None = None, role_ids: Iterable[int] | None = None, active_only: bool = True
) -> list[BudgetState]:
    """Each budget in the period containing `today` (local; default: now), office
    budgets first, then by name. `role_ids` keeps the office budgets and those of these
    roles; `active_only=False` includes paused budgets."""
    today = today or local_day(timezone.now())
    budgets: QuerySet[Budget] = Budget.objects.select_related("role").order_by(
        "scope", "name", "pk"
    )
    if active_only:
        budgets = budgets.filter(is_active=True)
    if role_ids is not None:
        budgets = budgets.filter(Q(role__isnull=True) | Q(role_id__in=list(role_ids)))
    budget_list = list(budgets)
    counters = {
        period.budget_id: period
        for period in BudgetPeriod.objects.filter(
            budget__in=budget_list, start__lte=today, end__gt=today
        )
    }
    states = []
    for budget in budget_list:
        counter = counters.get(budget.pk)
        if counter is not None:
            state = BudgetState(budget, counter.start, counter.end, counter.spent, counter.reserved)
        else:
            start, end = period_days(period=budget.period, day=today)
            state = BudgetState(
                budget,
                start,
                end,
                budget_spent_from_rollups(budget=budget, start=start, end=end),
                ZERO,
            )
        states.append(state)
    return states


def alerts_recent(*, limit: int = 100) -> list[Alert]:
    """The latest alerts of every kind (budget thresholds, cost drift, manual checks),
    newest first, with their budget and call loaded."""
    return list(
        Alert.objects.select_related("budget", "budget__role", "usage").order_by(
            "-created_at", "-pk"
        )[:limit]
    )


def _percent(part: Decimal, whole: Decimal) -> Decimal:
    return _PERCENT.divide(_PERCENT.multiply(part, HUNDRED), whole).quantize(
        _ONE_PLACE, context=_PERCENT
    )
