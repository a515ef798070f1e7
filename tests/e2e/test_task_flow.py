"""A task goes from submission through a real worker to the sandbox provider and into the
ledger, on each wire format, with retries billed attempt by attempt."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents.sandbox.behaviour import Prompt, Turn, answer_text, prompt_digest
from billing.models import Usage, UsageStatus
from office.models import Task, TaskStatus
from office.services import task_submit
from tests.e2e.conftest import bind_role, snapshot_pricing
from tests.processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DONE_TIMEOUT = 60


def wait_for_terminal(task: Task, timeout: float = DONE_TIMEOUT) -> Task:
    def terminal() -> Task | None:
        task.refresh_from_db()
        return task if task.is_terminal else None

    wait_until(terminal, timeout=timeout, what=f"task {task.pk} to finish ({task.status})")
    return task


def expected_answer(*, model: str, system: str, prompt: str) -> str:
    request = Prompt(model=model, system=system, turns=(Turn(role="user", text=prompt),))
    return answer_text(request, digest=prompt_digest(request))


def expected_cost(entry: dict, pricing: dict[str, str]) -> Decimal:
    """tokens x catalog price strings, written out by hand (not via the cost engine)."""
    uncached = entry["input_tokens"] - entry["cached_input_tokens"] - entry["cache_write_tokens"]
    cost = Decimal(uncached) * Decimal(pricing["prompt"])
    if entry["cached_input_tokens"]:
        cost += Decimal(entry["cached_input_tokens"]) * Decimal(pricing["input_cache_read"])
    if entry["cache_write_tokens"]:
        cost += Decimal(entry["cache_write_tokens"]) * Decimal(pricing["input_cache_write"])
    cost += Decimal(entry["output_tokens"]) * Decimal(pricing["completion"])
    return cost


WIRE_CASES = [
    # (provider kind, catalog model, base-URL suffix, sandbox wire name)
    ("openrouter", "deepseek/deepseek-v4-pro", "/api/v1", "openrouter"),
    ("openai", "openai/gpt-4.1-mini", "/v1", "openai"),
    ("anthropic", "anthropic/claude-haiku-4.5", "", "anthropic"),
    ("gemini", "google/gemini-2.5-flash-lite", "", "gemini"),
]


@pytest.mark.parametrize(("provider", "slug", "suffix", "wire"), WIRE_CASES)
def test_task_runs_through_worker_and_is_billed_exactly(
    office_processes, sandbox, catalog, provider, slug, suffix, wire
):
    role = bind_role(
        slug=f"role-{provider}",
        model=catalog[slug],
        provider=provider,
        base_url=sandbox.url + suffix,
    )
    prompt = f"Summarise the quarterly report for {provider}, please."
    task = task_submit(role=role, prompt=prompt)

    wait_for_terminal(task)

    assert task.status == TaskStatus.DONE, task.error
    upstream = slug if provider == "openrouter" else slug.split("/", 1)[1]
    assert task.result == expected_answer(model=upstream, system=role.system_prompt, prompt=prompt)
    rows = list(Usage.objects.filter(task=task, helper_operation=""))  # provider calls
    assert len(rows) == 1
    row = rows[0]
    assert row.status == UsageStatus.SETTLED
    [entry] = sandbox.requests(call_id=row.call_id)
    assert entry["wire"] == wire
    assert entry["status"] == 200
    for field in (
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
    ):
        assert getattr(row, field) == entry[field], field
    pricing = snapshot_pricing(slug)
    assert row.cost == expected_cost(entry, pricing)
    assert row.price_prompt == Decimal(pricing["prompt"])
    assert row.price_completion == Decimal(pricing["completion"])
    assert row.cost == Decimal(entry["cost"])
    if wire == "openrouter":
        assert row.reported_cost == Decimal(entry["cost"])
        assert row.basis == "reported"
    else:
        assert row.reported_cost is None
        assert row.basis == "computed"
    assert task.cost == row.cost
    assert task.input_tokens == row.input_tokens
    assert task.output_tokens == row.output_tokens


def test_rate_limited_call_is_retried_and_both_attempts_are_in_the_ledger(
    office_processes, sandbox, catalog
):
    role = bind_role(
        slug="retrier",
        model=catalog["deepseek/deepseek-v4-pro"],
        provider="openrouter",
        base_url=sandbox.url + "/api/v1",
    )
    task = task_submit(
        role=role, prompt="Draft a memo. [[sandbox fault=429 times=1 retry_after=1]]"
    )

    wait_for_terminal(task)

    assert task.status == TaskStatus.DONE, task.error
    failed, settled = Usage.objects.filter(task=task, helper_operation="").order_by("attempt")
    assert (failed.attempt, failed.status, failed.http_status) == (1, UsageStatus.FAILED, 429)
    assert failed.cost == 0
    assert (settled.attempt, settled.status) == (2, UsageStatus.SETTLED)
    assert settled.cost > 0
    assert task.cost == settled.cost
    statuses = [
        entry["status"]
        for entry in sandbox.requests()
        if entry["call_id"] in {failed.call_id, settled.call_id}
    ]
    assert sorted(statuses) == [200, 429]
