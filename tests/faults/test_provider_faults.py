"""The provider misbehaves in every way it can, many times at once: 429 storms with
Retry-After, 500s and 503s, hangs past the timeout, malformed JSON, answers cut off
mid-body, answers without usage. Every task must still end, and the ledger must bill
exactly what the provider charged: a refusal costs nothing, a lost answer is an
estimate no lower than its charge, a settled answer is its charge to the last digit."""

from __future__ import annotations

import pytest

from billing.models import Budget, BudgetAction, BudgetPeriodKind, BudgetScope, Usage
from office.models import TaskStatus
from office.services import task_submit
from tests.faults.audit import office_audit, tasks_settle
from tests.faults.conftest import bind_role

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

# (directive, tasks): each task's prompt is its own, so `times` counts per task.
FAULTS = (
    ("fault=429 retry_after=0.2 times=2", 40),  # a storm: 40 tasks refused at once, twice
    ("fault=500 times=2", 30),
    ("fault=503 times=1", 20),
    ("fault=hang times=1", 6),  # never answers; the worker gives up after 1.5 s
    ("fault=malformed times=1", 20),
    ("fault=truncated times=1", 20),
    ("fault=no_usage", 15),
)


def test_provider_faults_storm(fault_office, catalog, tally):
    role = bind_role(
        slug="storm",
        model=catalog["openai/gpt-4.1-mini"],
        provider="openrouter",
        base_url=fault_office.sandbox.url + "/api/v1",
    )
    Budget.objects.create(
        name="Storm role", scope=BudgetScope.ROLE, role=role, period=BudgetPeriodKind.DAY,
        limit=20, action=BudgetAction.BLOCK,
    )  # fmt: skip
    since = fault_office.log_position()
    workers = fault_office.workers(count=2, concurrency=12)
    try:
        tasks = [
            task_submit(role=role, prompt=f"Task {kind} {n}: write it. [[sandbox {directive}]]")
            for kind, (directive, count) in enumerate(FAULTS)
            for n in range(count)
        ]
        tasks = tasks_settle([t.pk for t in tasks], timeout=150)
        entries = fault_office.sandbox.requests(since=since)
        audit = office_audit(tasks=tasks, entries=entries)
    finally:
        workers.stop()

    tally.record("provider faults", audit)
    logged = [e["fault"] for e in entries if e["fault"]]
    for fault in sorted(set(logged)):
        tally.add(f"provider {fault}", logged.count(fault))
    hangs = Usage.objects.filter(task__in=tasks, error__contains="timed out").count()
    tally.add("provider hang", hangs)

    assert audit.problems == [], (audit.summary(), audit.problems[:5])
    assert audit.tasks == {TaskStatus.DONE: len(tasks)}, audit.summary()
    expected = sum(count * (2 if "times=2" in d else 1) for d, count in FAULTS)
    assert len(logged) + hangs == expected
    # The cut and unreadable answers were charged by the provider: billed as estimates.
    assert audit.estimated_charged >= 40
