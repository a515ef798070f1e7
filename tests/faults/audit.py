"""After a fault scenario: is the office's account still true?

The sandbox provider's request log is the judge of what was really charged. The audit
reads it next to the ledger, the tasks, the rollups and the budget counters, and counts
what the issue's acceptance names: tasks stuck, requests unbilled or billed twice, sums
that disagree, hard budgets overspent.

What an estimate is allowed to be: a call whose answer was lost after it left (the worker
died, the connection dropped, the answer was unreadable) is billed as an estimate at its
worst case (billing.ledger.usage_estimate). The provider may then have charged it (the
estimate must not be below the charge; so must an answer without usage, settled at an
estimate from its texts) or not (it never finished: a hang, a worker killed
before the request left); the second kind is counted, not an error: Roster cannot know,
and errs on the side of the budget. Every settled call must equal its charge exactly.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from billing.alerts import BILLED_STATUSES
from billing.models import Budget, BudgetPeriod, PricingBasis, Usage, UsageStatus
from billing.reconcile import export_read, reconcile
from billing.rollups import rollups_rebuild
from office.models import TERMINAL_STATUSES, Task, TaskStatus

ZERO = Decimal("0")


@dataclass
class Audit:
    tasks: Counter[str] = field(default_factory=Counter)
    requests: int = 0  # sandbox log entries of the scenario
    charged: int = 0  # of which answered (200): the provider charged them
    stuck: list[str] = field(default_factory=list)
    unbilled: list[str] = field(default_factory=list)
    double_billed: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # settled cost != charge, estimate < it
    sums: list[str] = field(default_factory=list)
    overspend: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)  # failed tasks without a reason
    estimated_charged: int = 0
    estimated_uncharged: int = 0

    @property
    def problems(self) -> list[str]:
        return [
            *(f"stuck: {x}" for x in self.stuck),
            *(f"unbilled: {x}" for x in self.unbilled),
            *(f"double-billed: {x}" for x in self.double_billed),
            *(f"cost: {x}" for x in self.mismatched),
            *(f"sum: {x}" for x in self.sums),
            *(f"overspend: {x}" for x in self.overspend),
            *(f"no reason: {x}" for x in self.unexplained),
        ]

    def summary(self) -> str:
        return (
            f"tasks {dict(sorted(self.tasks.items()))}; {self.requests} provider requests, "
            f"{self.charged} charged; {len(self.unbilled)} unbilled, "
            f"{len(self.double_billed)} double-billed, {len(self.stuck)} stuck, "
            f"{len(self.overspend)} overspent, {len(self.mismatched) + len(self.sums)} "
            f"sums off; estimates: {self.estimated_charged} of charged calls, "
            f"{self.estimated_uncharged} of calls the provider never charged"
        )


def tasks_settle(task_ids: list[int], *, timeout: float) -> list[Task]:
    """Wait until every task has ended and no call is left pending; return the tasks."""
    deadline = time.monotonic() + timeout
    while True:
        open_tasks = Task.objects.filter(pk__in=task_ids).exclude(status__in=TERMINAL_STATUSES)
        pending = Usage.objects.filter(task_id__in=task_ids, status=UsageStatus.PENDING)
        if not open_tasks.exists() and not pending.exists():
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    return list(Task.objects.filter(pk__in=task_ids).order_by("pk"))


def office_audit(*, tasks: list[Task], entries: list[dict]) -> Audit:
    """Audit the scenario's tasks against the sandbox log entries it produced."""
    audit = Audit(tasks=Counter(task.status for task in tasks), requests=len(entries))
    task_ids = [task.pk for task in tasks]
    for task in tasks:
        if task.status not in TERMINAL_STATUSES:
            audit.stuck.append(f"task {task.pk} is {task.status}")
        if task.status in (TaskStatus.FAILED, TaskStatus.OVER_BUDGET) and not task.error.strip():
            audit.unexplained.append(f"task {task.pk} ended {task.status} without a reason")
    rows = list(Usage.objects.filter(task_id__in=task_ids).order_by("pk"))
    for row in rows:
        if row.status == UsageStatus.PENDING:
            audit.stuck.append(f"ledger row {row.pk} ({row.call_id}) is still pending")

    _provider_side(audit, rows=rows, entries=entries)
    _sums(audit, tasks=tasks, rows=rows)
    return audit


def _provider_side(audit: Audit, *, rows: list[Usage], entries: list[dict]) -> None:
    by_call: dict[str, list[Usage]] = {}
    for row in rows:
        by_call.setdefault(row.call_id, []).append(row)
    charged: dict[str, Decimal | None] = {}
    for entry in entries:
        call_id = entry.get("call_id")
        found = by_call.get(call_id or "", [])
        billed = [row for row in found if row.status in BILLED_STATUSES]
        if entry["status"] != 200:
            # Refused or failed at the provider: one ledger row, closed; billed only as
            # the estimate of a worker that died before it read the refusal.
            if len(found) != 1:
                audit.double_billed.append(
                    f"HTTP {entry['status']} request {call_id} has {len(found)} ledger rows"
                )
            elif billed and billed[0].status != UsageStatus.ESTIMATED:
                audit.mismatched.append(
                    f"HTTP {entry['status']} request {call_id} billed as {billed[0].status}"
                )
            continue
        audit.charged += 1
        if call_id in charged:
            audit.double_billed.append(f"the provider logged {call_id} twice")
            continue
        cost = None if entry["cost"] is None else Decimal(entry["cost"])
        charged[call_id] = cost
        if not billed:
            state = found[0].status if found else "no ledger row"
            audit.unbilled.append(f"{call_id} ({state}), charged {cost}")
            continue
        if len(billed) > 1:
            audit.double_billed.append(f"{call_id} billed {len(billed)} times")
            continue
        [row] = billed
        # An answer without usage is settled at an estimate from its texts (basis
        # estimated): held to the same rule as a lost answer's estimate.
        if row.status == UsageStatus.ESTIMATED or row.basis == PricingBasis.ESTIMATED:
            audit.estimated_charged += 1
            if cost is not None and row.cost < cost:
                audit.mismatched.append(f"{call_id}: estimate {row.cost} below the charge {cost}")
        elif cost is not None and row.cost != cost:
            audit.mismatched.append(f"{call_id}: settled at {row.cost}, charged {cost}")
    for row in rows:
        if row.helper_operation or row.status not in BILLED_STATUSES or row.call_id in charged:
            continue
        if row.status == UsageStatus.ESTIMATED:
            audit.estimated_uncharged += 1
        elif row.cost > 0:
            audit.mismatched.append(f"{row.call_id}: settled at {row.cost}, never charged")

    # The product's own reconciliation must agree: no unbilled, no double billing.
    if charged:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "sandbox.jsonl"
            path.write_text("".join(json.dumps(e) + "\n" for e in entries if e["status"] == 200))
            result = reconcile(export_read(path))
        if result.unbilled or result.double_billed:
            audit.unbilled.extend(
                f"reconcile: {d}" for d in result.differences if not d.startswith("cost")
            )


def _sums(audit: Audit, *, tasks: list[Task], rows: list[Usage]) -> None:
    billed = [row for row in rows if row.status in BILLED_STATUSES]
    per_task: dict[int, Decimal] = {}
    for row in billed:
        per_task[row.task_id] = per_task.get(row.task_id, ZERO) + row.cost
    for task in tasks:
        if task.cost != per_task.get(task.pk, ZERO):
            audit.sums.append(
                f"task {task.pk} cost {task.cost} != its ledger {per_task.get(task.pk)}"
            )
    report = rollups_rebuild(dry_run=True)
    audit.sums.extend(f"rollups: {difference}" for difference in report.differences)
    for period in BudgetPeriod.objects.select_related("budget"):
        spent = sum((row.cost for row in billed if period.pk in (row.budget_periods or [])), ZERO)
        if period.spent != spent:
            audit.sums.append(f"{period.budget} spent {period.spent} != its ledger {spent}")
        if period.reserved != ZERO:
            audit.sums.append(f"{period.budget} still reserves {period.reserved}")
        budget: Budget = period.budget
        if budget.is_hard and period.spent > budget.limit:
            audit.overspend.append(f"{budget} spent {period.spent} of {budget.limit}")
