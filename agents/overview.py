"""The office overview: each active role with its model, this month's spend, its budgets
and its queue. A read across the three apps, so it lives here: `agents` is the one app
that may use both `office` and `billing` (DESIGN.md: dependencies point one way)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from django.db.models import Prefetch
from django.utils import timezone

from agents.models import RoleBinding, RouteCandidate, RoutingPolicy
from billing.budget_overview import BudgetState, budget_states
from billing.money import ZERO, money_sum
from billing.periods import local_day, period_days
from billing.reports import spend_breakdown
from office.models import Role, TaskStatus
from office.selectors import queue_depth_by_role, roles_active


@dataclass(frozen=True)
class RoleOverview:
    """One role as the overview shows it."""

    role: Role
    binding: RoleBinding | None
    spent: Decimal  # this month, settled and estimated calls (rollups)
    queue: dict[str, int]  # status -> tasks not yet ended
    budgets: list[BudgetState] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        """The catalog models that may answer: the bound one, or a policy's candidates
        in order; empty when unbound."""
        if self.binding is None:
            return []
        candidates = [c.model.slug for c in self.binding.candidates.all()]
        if candidates and self.binding.policy != RoutingPolicy.SINGLE:
            return list(dict.fromkeys(candidates))
        return [self.binding.model.slug]

    @property
    def simulated(self) -> bool:
        """Whether the role answers through the sandbox provider (no real model)."""
        return self.binding is not None and self.binding.credential.is_simulated

    @property
    def queued(self) -> int:
        return self.queue.get(TaskStatus.QUEUED, 0)

    @property
    def preparing(self) -> int:
        return self.queue.get(TaskStatus.PREPARING, 0)

    @property
    def running(self) -> int:
        return self.queue.get(TaskStatus.RUNNING, 0)

    @property
    def in_queue(self) -> int:
        return sum(self.queue.values())


@dataclass(frozen=True)
class OfficeOverview:
    """The whole office this month: its roles, what they spent, the office budgets."""

    month_start: date
    month_end: date
    roles: list[RoleOverview]
    office_budgets: list[BudgetState]
    spent: Decimal

    @property
    def in_queue(self) -> int:
        return sum(role.in_queue for role in self.roles)

    @property
    def running(self) -> int:
        return sum(role.running for role in self.roles)


def office_overview(*, today: date | None = None) -> OfficeOverview:
    """The overview of the month containing `today` (local; default: now): every active
    role, by slug, with its binding, the month's spend, its budgets in their current
    periods and its tasks not yet ended; and the office-wide budgets. A fixed number of
    queries, whatever the number of roles."""
    today = today or local_day(timezone.now())
    start, end = period_days(period="month", day=today)
    roles = list(roles_active())
    bindings = {
        binding.role_id: binding
        for binding in RoleBinding.objects.filter(role__in=roles)
        .select_related("model", "credential")
        .prefetch_related(
            Prefetch(
                "candidates",
                queryset=RouteCandidate.objects.select_related("model").order_by("position", "pk"),
            )
        )
    }
    spent_by_slug = {
        row.key: row.spend.cost for row in spend_breakdown(start=start, end=end, by="role")
    }
    depth = queue_depth_by_role()
    states = budget_states(today=today, role_ids=[role.pk for role in roles])
    office_budgets = [state for state in states if state.budget.role_id is None]
    rows = [
        RoleOverview(
            role=role,
            binding=bindings.get(role.pk),
            spent=spent_by_slug.get(role.slug, ZERO),
            queue=depth.get(role.pk, {}),
            budgets=[state for state in states if state.budget.role_id == role.pk],
        )
        for role in roles
    ]
    return OfficeOverview(
        month_start=start,
        month_end=end,
        roles=rows,
        office_budgets=office_budgets,
        # Every role's spend, inactive ones too: the office paid it.
        spent=money_sum(spent_by_slug.values()),
    )
