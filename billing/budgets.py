"""Budgets: reserve the worst case before a paid call, settle the truth after.

Each budget has one counter row per period (BudgetPeriod) holding what calls in flight
have reserved and what has been spent. A reservation locks the counters of every budget
that applies (the office's and the role's, in counter id order, as settlements do, so no
two transactions wait for each other in a cycle), checks
`spent + reserved + worst case <= limit` for hard budgets, and adds the worst case to
`reserved`, all in the transaction that writes the pending ledger row.
Settlement moves the call's reservation to `spent` at its actual cost; a failed call
releases it. Because the worst case bounds the actual cost, concurrent calls can never
together push settled spend over a hard limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from billing.alerts import alert_record_threshold
from billing.models import Budget, BudgetPeriod, CatalogModel, UsageRollup
from billing.money import EXACT, ZERO, format_usd, money_mul, money_sum
from billing.periods import local_day, period_days
from billing.pricing import UnitPrices, dearest_token_prices
from office.models import Role

HUNDRED = Decimal(100)


class BudgetExceeded(Exception):
    """A paid call refused by a hard budget; `action` says what the budget wants done."""

    def __init__(self, message: str, *, budget: Budget, action: str) -> None:
        super().__init__(message)
        self.message = message
        self.budget = budget
        self.action = action


@dataclass(frozen=True)
class Reservation:
    amount: Decimal
    period_ids: list[int]


def worst_case_cost(
    *, prices: UnitPrices, input_tokens: int, max_output_tokens: int
) -> Decimal | None:
    """The most one call can cost: every input token at the dearest input-side price
    (cache writes cost more than plain input; the long-context tier when the input can
    exceed its threshold), every output token at the dearest output-side price, plus the
    per-request fee. None when the model is unpriced."""
    dearest = dearest_token_prices(prices, input_tokens=input_tokens)
    if dearest is None:
        return None
    input_price, output_price = dearest
    return money_sum(
        [
            money_mul(input_price, input_tokens),
            money_mul(output_price, max_output_tokens),
            prices.request,
        ]
    )


def budgets_for_role(*, role_id: int) -> list[Budget]:
    """Active budgets that apply to a role's calls: the office's and the role's own."""
    return list(
        Budget.objects.filter(is_active=True)
        .filter(Q(scope="office") | Q(scope="role", role_id=role_id))
        .order_by("pk")
    )


def budget_reserve(
    *,
    role: Role,
    model: CatalogModel,
    amount: Decimal | None,
    at: datetime,
) -> Reservation:
    """Reserve `amount` (the call's worst case; None for an unpriced model) against every
    budget that applies. Must run inside the transaction that writes the pending row.

    Returns the reservation to store on the row. Raises BudgetExceeded when a hard
    budget would be exceeded, or when the model is unpriced under a hard budget (fail
    closed) and the admin has not marked it free.
    """
    if amount is None and model.free_when_unpriced:
        amount = ZERO
    day = local_day(at)
    if connection.vendor == "postgresql":
        reserved = _reserve_in_one_statement(role_id=role.pk, model=model, amount=amount, day=day)
        if reserved is not None:
            return reserved
    budgets = budgets_for_role(role_id=role.pk)
    if not budgets:
        return Reservation(amount=amount or ZERO, period_ids=[])
    periods = _periods_locked(budgets=budgets, day=day)
    for period in periods:
        budget = period.budget
        if not budget.is_hard:
            continue
        if amount is None or money_sum([period.spent, period.reserved, amount]) > budget.limit:
            raise _exceeded(budget=budget, period=period, model=model, amount=amount)
    amount = amount or ZERO
    for period in periods:
        BudgetPeriod.objects.filter(pk=period.pk).update(
            reserved=money_sum([period.reserved, amount])
        )
    return Reservation(amount=amount, period_ids=[period.pk for period in periods])


def _reserve_in_one_statement(
    *, role_id: int, model: CatalogModel, amount: Decimal | None, day: date
) -> Reservation | None:
    """budget_reserve on PostgreSQL: one call of `billing_budget_reserve` (migration
    billing 0011), with the same locks, checks and messages. Returns None, having changed
    nothing, when a budget has no counter for this period yet (the caller creates it)."""
    starts = [period_days(period=kind, day=day)[0] for kind in ("day", "week", "month")]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT * FROM billing_budget_reserve(%s, %s, %s, %s, %s)", [role_id, *starts, amount]
        )
        rows = cursor.fetchall()
    if any(period_id is None for _, period_id, *_ in rows):
        return None
    refused = next((row for row in rows if row[4]), None)
    if refused is not None:
        budget_id, period_id, spent, reserved, _ = refused
        period = BudgetPeriod(pk=period_id, budget_id=budget_id, spent=spent, reserved=reserved)
        budget = Budget.objects.get(pk=budget_id)
        raise _exceeded(budget=budget, period=period, model=model, amount=amount)
    return Reservation(amount=amount or ZERO, period_ids=[row[1] for row in rows])


def _exceeded(
    *, budget: Budget, period: BudgetPeriod, model: CatalogModel, amount: Decimal | None
) -> BudgetExceeded:
    """Why a hard budget refuses a call: the model is unpriced (`amount` None), or the
    call's worst case does not fit what is left."""
    if amount is None:
        message = (
            f"The model {model.slug} has no price, and budget {budget.name!r} is a hard "
            "limit: unpriced calls are refused (an admin can mark the model free)."
        )
    else:
        message = (
            f"Budget {budget.name!r} ({format_usd(budget.limit)} per {budget.period}) "
            f"would be exceeded: {format_usd(period.spent)} spent, "
            f"{format_usd(period.reserved)} reserved by calls in flight, and this call "
            f"may cost up to {format_usd(amount)}."
        )
    return BudgetExceeded(message, budget=budget, action=budget.action)


def budget_settle(*, period_ids: list[int], reserved: Decimal, cost: Decimal | None) -> None:
    """Replace a call's reservation by its actual cost (None: the call failed, nothing
    spent), and record threshold alerts the spend crossed. Must run inside the
    transaction that closes the ledger row."""
    if not period_ids:
        return
    for period in (
        BudgetPeriod.objects.select_for_update()
        .select_related("budget")
        .filter(pk__in=period_ids)
        .order_by("pk")
    ):
        spent_before = period.spent
        spent = money_sum([spent_before, cost])
        BudgetPeriod.objects.filter(pk=period.pk).update(
            reserved=max(ZERO, EXACT.subtract(period.reserved, reserved)), spent=spent
        )
        if cost:
            _alert_crossed(period=period, before=spent_before, after=spent)


def thresholds_crossed(
    *, limit: Decimal, thresholds: list[int], before: Decimal, after: Decimal
) -> list[int]:
    """The alert thresholds (percent of `limit`) that spend crossed going from `before`
    to `after`."""
    return [
        threshold
        for threshold in sorted(thresholds)
        if before < EXACT.divide(EXACT.multiply(limit, Decimal(threshold)), HUNDRED) <= after
    ]


def budget_alert_crossings(*, period_id: int, before: Decimal, after: Decimal) -> None:
    """Record an alert for each threshold a settlement crossed in one budget period."""
    period = BudgetPeriod.objects.select_related("budget").get(pk=period_id)
    _alert_crossed(period=period, before=before, after=after)


def budget_alerts_sweep(*, today: date | None = None) -> int:
    """Record the threshold alerts that current budget periods have reached but lack.

    Settlement records alerts as it crosses thresholds; on PostgreSQL that happens just
    after the settlement commits, so a crash in between could lose one. This sweep (beat)
    finds it again: alerts are recorded once per budget, period and threshold, so what
    was recorded already is left as it is. Returns how many alerts it recorded.
    """
    today = today or local_day(timezone.now())
    recorded = 0
    # Spent is compared in Python: money is text on SQLite.
    for period in BudgetPeriod.objects.select_related("budget").filter(
        start__lte=today, end__gt=today
    ):
        budget = period.budget
        for threshold in thresholds_crossed(
            limit=budget.limit, thresholds=budget.thresholds, before=ZERO, after=period.spent
        ):
            if alert_record_threshold(
                budget=budget, period=period, threshold=threshold, spent=period.spent
            ):
                recorded += 1
    return recorded


def _alert_crossed(*, period: BudgetPeriod, before: Decimal, after: Decimal) -> None:
    budget = period.budget
    for threshold in thresholds_crossed(
        limit=budget.limit, thresholds=budget.thresholds, before=before, after=after
    ):
        alert_record_threshold(budget=budget, period=period, threshold=threshold, spent=after)


def _periods_locked(*, budgets: list[Budget], day: date) -> list[BudgetPeriod]:
    """The counter rows of these budgets for the period containing `day`, created if
    missing, then locked in counter id order: the order settlements lock them in, so a
    reservation and a settlement never wait for each other in a cycle."""
    by_id = {budget.pk: budget for budget in budgets}
    ids = []
    for budget in budgets:
        start, end = period_days(period=budget.period, day=day)
        period_id = (
            BudgetPeriod.objects.filter(budget=budget, start=start)
            .values_list("pk", flat=True)
            .first()
        )
        ids.append(period_id or _period_create(budget=budget, start=start, end=end))
    periods = list(BudgetPeriod.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
    for period in periods:
        period.budget = by_id[period.budget_id]
    return periods


def budget_spent_from_rollups(*, budget: Budget, start: date, end: date) -> Decimal:
    """What the calls a budget covers spent over the local days [start, end), from the
    rollups: how a period's counter starts, and how a period without one reads."""
    rollups = UsageRollup.objects.filter(day__gte=start, day__lt=end)
    if budget.role_id is not None:
        rollups = rollups.filter(role_id=budget.role_id)
    # Summed in Python: money is text on SQLite.
    return money_sum(rollups.order_by().values_list("cost", flat=True))


def _period_create(*, budget: Budget, start: date, end: date) -> int:
    """Create a budget's counter row for a period; returns its id (another reservation
    may have created it meanwhile)."""
    # A budget created mid-period starts from what the period has already spent.
    spent = budget_spent_from_rollups(budget=budget, start=start, end=end)
    try:
        with transaction.atomic():
            return BudgetPeriod.objects.create(budget=budget, start=start, end=end, spent=spent).pk
    except IntegrityError:
        return BudgetPeriod.objects.values_list("pk", flat=True).get(budget=budget, start=start)
