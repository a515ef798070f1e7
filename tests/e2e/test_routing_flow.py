"""Routing policies end to end: tasks go through a real worker process to the sandbox
provider over loopback. Tiered picks by complexity and by hint; a fallback chain moves on
after a 500 and after a hang (its candidate's own timeout) and bills only what reached the
provider; escalation re-runs a
poor cheap answer on the strong model and keeps a good one. Every decision is recorded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from agents.models import Credential, RoleBinding, RouteCandidate
from agents.services import credential_create
from billing.models import CatalogModel, Usage, UsageStatus
from office.models import Role, Task, TaskStatus
from office.services import task_submit
from tests import processes
from tests.canary import SANDBOX_KEY
from tests.e2e.test_task_flow import wait_for_terminal
from tests.processes import OfficeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# A hang must move on quickly: the hanging candidate has its own short timeout, while the
# worker keeps the suite's provider timeout for every other call.
CANDIDATE_TIMEOUT = 2

LOW = "google/gemini-2.5-flash-lite"
MEDIUM = "openai/gpt-4.1-mini"
HIGH = "anthropic/claude-haiku-4.5"
BACKUP = "deepseek/deepseek-v4-pro"

TRANSLATE = "Translate 'good morning' into French."
MULTI_PART_CODING = """Implement a Python module that parses ISO 8601 durations, then
refactor the billing code to use it.
1. Write a parser function with full error handling.
2. Add unit tests for every edge case.
3. Then optimize the hot path and explain the design.
```python
def parse(text):
    return text
```
Which cases are ambiguous? How should leap seconds be handled? What about negative ones?"""


@pytest.fixture(scope="module")
def routing_worker(
    django_db_setup: None, django_db_blocker: object, clean_broker: None, process_log_dir: Path
) -> Iterator[OfficeProcess]:
    worker = processes.start_worker(process_log_dir, concurrency=4)
    yield worker
    worker.stop()


# --- Setup helpers --------------------------------------------------------------------------

WIRES = {
    # provider kind: base-URL suffix on the sandbox
    "openrouter": "/api/v1",
    "openai": "/v1",
    "anthropic": "",
}


def credential(sandbox, label: str, provider: str = "openrouter") -> Credential:
    return credential_create(
        label=label,
        provider=provider,
        base_url=sandbox.url + WIRES[provider],
        raw_secret=SANDBOX_KEY,
        is_simulated=True,
    )


def routed_role(
    sandbox,
    catalog: dict[str, CatalogModel],
    *,
    slug: str,
    policy: str,
    candidates: list[tuple[str, str, str]],
    rules: str = "",
    timeouts: dict[int, int] | None = None,
) -> Role:
    """A role bound to BACKUP whose `policy` routes over (slot, model, provider) candidates;
    `timeouts` gives some of them (by position, from 1) their own timeout in seconds."""
    role = Role.objects.create(slug=slug, name=slug.title(), system_prompt="You are a test role.")
    binding = RoleBinding.objects.create(
        role=role,
        model=catalog[BACKUP],
        credential=credential(sandbox, f"{slug} bound"),
        max_tokens=256,
        policy=policy,
        escalation_rules=rules,
    )
    for position, (slot, model, provider) in enumerate(candidates, start=1):
        RouteCandidate.objects.create(
            binding=binding,
            slot=slot,
            position=position,
            model=catalog[model],
            credential=credential(sandbox, f"{slug} {slot} {position}", provider),
            timeout_seconds=(timeouts or {}).get(position),
        )
    return role


def sandbox_seq(sandbox) -> int:
    entries = sandbox.requests()
    return max((entry["seq"] for entry in entries), default=0)


def sandbox_since(sandbox, seq: int) -> list[dict]:
    response = httpx.get(f"{sandbox.url}/_sandbox/requests", params={"since": seq}, timeout=5)
    response.raise_for_status()
    return response.json()["requests"]


def run(role: Role, prompt: str, **fields: str) -> Task:
    task = task_submit(role=role, prompt=prompt, **fields)
    return wait_for_terminal(task)


def calls(task: Task) -> list[Usage]:
    """The task's provider calls (not the local helper's rows)."""
    return list(Usage.objects.filter(task=task, helper_operation="").order_by("attempt"))


def steps(task: Task) -> list[tuple[str, str, str]]:
    return [(d["step"], d.get("model", ""), d["outcome"]) for d in task.routing_decisions]


def assert_billed_exactly_what_reached_the_provider(task: Task, entries: list[dict]) -> None:
    """Every call the sandbox logged has exactly one ledger row of this task; refused rows
    cost 0; a settled row costs what the sandbox charged; the task's cost is their sum."""
    rows = {row.call_id: row for row in calls(task)}
    logged = [entry["call_id"] for entry in entries]
    assert len(logged) == len(set(logged)), "one log entry per call"
    assert set(logged) <= set(rows), "every logged call has its ledger row"
    for entry in entries:
        row = rows[entry["call_id"]]
        if entry["status"] == 200:
            assert row.status == UsageStatus.SETTLED
            assert row.cost == Decimal(entry["cost"])
            assert (row.input_tokens, row.output_tokens) == (
                entry["input_tokens"],
                entry["output_tokens"],
            )
        else:
            assert (row.status, row.http_status, row.cost) == (
                UsageStatus.FAILED,
                entry["status"],
                0,
            )
    for row in rows.values():
        if row.call_id not in logged:  # never answered (a hang we gave up on): it may
            # have been billed all the same, so it is an estimate at its worst case
            assert (row.status, row.basis) == (UsageStatus.ESTIMATED, "estimated")
    billed = [row.cost for row in rows.values() if row.status != UsageStatus.FAILED]
    assert task.cost == sum(billed, Decimal(0))


# --- Tiered ---------------------------------------------------------------------------------


TIERS = [("low", LOW, "openrouter"), ("medium", MEDIUM, "openai"), ("high", HIGH, "anthropic")]


@pytest.mark.parametrize(
    ("prompt", "hint", "model", "upstream", "source"),
    [
        (TRANSLATE, "", LOW, LOW, "classifier"),
        (MULTI_PART_CODING, "", HIGH, "claude-haiku-4.5", "classifier"),
        (TRANSLATE, "high", HIGH, "claude-haiku-4.5", "hint"),
    ],
    ids=["translate-low", "coding-high", "hint-high"],
)
def test_tiered_role_picks_its_model_by_complexity_or_hint(
    routing_worker, sandbox, catalog, prompt, hint, model, upstream, source
):
    role = routed_role(
        sandbox, catalog, slug=f"tiered-{source}-{model[:6]}", policy="tiered", candidates=TIERS
    )

    task = run(role, prompt, tier_hint=hint)

    assert task.status == TaskStatus.DONE, task.error
    [call] = calls(task)
    assert call.model.slug == model
    assert task.result.startswith(f"Sandbox answer from {upstream}: ")
    tier = task.routing_decisions[0]
    assert tier["step"] == "tier"
    assert tier["data"]["source"] == source
    if source == "hint":
        assert tier["why"] == "The task's tier hint 'high' wins; the classifier was not asked."
    else:
        assert tier["why"].startswith(f"The helper classified the prompt as {tier['outcome']} (")
        assert tier["data"]["backend"] == "builtin"
    assert steps(task)[1:] == [("route", "", "tiered"), ("candidate", model, "answered")]


# --- Fallback -------------------------------------------------------------------------------


def fallback_role(sandbox, catalog, slug: str, *, first_timeout: int | None = None) -> Role:
    # The first link stands for a local model; the second, on another wire, for the cloud.
    return routed_role(
        sandbox,
        catalog,
        slug=slug,
        policy="fallback",
        candidates=[("chain", LOW, "openrouter"), ("chain", MEDIUM, "openai")],
        timeouts={1: first_timeout} if first_timeout else None,
    )


def test_fallback_moves_on_after_a_server_error_and_bills_only_what_reached_the_provider(
    routing_worker, sandbox, catalog
):
    role = fallback_role(sandbox, catalog, "fallback-500")
    seq = sandbox_seq(sandbox)

    task = run(role, f"Draft the memo. [[sandbox fault=500@{LOW}]]")

    assert task.status == TaskStatus.DONE, task.error
    entries = sandbox_since(sandbox, seq)
    assert [(e["model"], e["status"]) for e in entries] == [(LOW, 500), ("gpt-4.1-mini", 200)]
    assert_billed_exactly_what_reached_the_provider(task, entries)
    failed, answered = calls(task)
    assert (failed.model.slug, failed.http_status) == (LOW, 500)
    assert answered.cost > 0
    assert task.cost == answered.cost
    assert task.result.startswith("Sandbox answer from gpt-4.1-mini: Draft the memo.")
    assert task.model_label.endswith("(fallback 2 of 2)")
    assert steps(task) == [
        ("route", "", "fallback"),
        ("candidate", LOW, "failed"),
        ("candidate", MEDIUM, "answered"),
    ]
    assert "HTTP 500" in task.routing_decisions[1]["why"]
    assert "Moving on to the next candidate." in task.routing_decisions[1]["why"]


def test_fallback_moves_on_after_a_hang_past_the_candidates_own_timeout(
    routing_worker, sandbox, catalog
):
    role = fallback_role(sandbox, catalog, "fallback-hang", first_timeout=CANDIDATE_TIMEOUT)
    seq = sandbox_seq(sandbox)

    started = time.monotonic()
    task = run(role, f"Draft the memo. [[sandbox fault=hang@{LOW}]]")
    elapsed = time.monotonic() - started

    assert task.status == TaskStatus.DONE, task.error
    entries = sandbox_since(sandbox, seq)
    # The abandoned hang is never answered, so the sandbox logs only the second call.
    assert [(e["model"], e["status"]) for e in entries] == [("gpt-4.1-mini", 200)]
    assert_billed_exactly_what_reached_the_provider(task, entries)
    hung, answered = calls(task)
    # Roster cannot know whether a provider that timed out went on to bill the call: it
    # is spend at its worst case, an estimate the provider's export can correct.
    assert (hung.status, hung.http_status) == (UsageStatus.ESTIMATED, None)
    assert hung.output_tokens == hung.max_output_tokens
    assert hung.cost > 0
    assert f"timed out after {CANDIDATE_TIMEOUT} s" in hung.error
    assert task.cost == hung.cost + answered.cost
    assert f"timed out after {CANDIDATE_TIMEOUT} s" in task.routing_decisions[1]["why"]
    assert task.routing_decisions[0]["data"]["candidates"][0]["timeout_seconds"] == 2
    assert steps(task)[-1] == ("candidate", MEDIUM, "answered")
    # Left after its own 2 s, far below the worker's provider timeout (20 s in the suite).
    assert elapsed < 15


# --- Escalate -------------------------------------------------------------------------------


def escalating_role(sandbox, catalog, slug: str) -> Role:
    return routed_role(
        sandbox,
        catalog,
        slug=slug,
        policy="escalate",
        candidates=[("cheap", LOW, "openrouter"), ("strong", HIGH, "anthropic")],
    )


def test_escalate_reruns_a_poor_cheap_answer_on_the_strong_model(routing_worker, sandbox, catalog):
    role = escalating_role(sandbox, catalog, "escalate-poor")
    seq = sandbox_seq(sandbox)

    task = run(role, f"Write the quarterly summary. [[sandbox quality=poor@{LOW}]]")

    assert task.status == TaskStatus.DONE, task.error
    entries = sandbox_since(sandbox, seq)
    assert [(e["model"], e["status"]) for e in entries] == [
        (LOW, 200),
        ("claude-haiku-4.5", 200),
    ]
    assert_billed_exactly_what_reached_the_provider(task, entries)
    cheap, strong = calls(task)
    assert (cheap.status, strong.status) == (UsageStatus.SETTLED, UsageStatus.SETTLED)
    assert cheap.cost > 0
    assert strong.cost > 0
    assert task.cost == cheap.cost + strong.cost
    assert task.result.startswith("Sandbox answer from claude-haiku-4.5: Write the quarterly")
    assert steps(task) == [
        ("route", "", "escalate"),
        ("check", LOW, "escalate"),
        ("candidate", LOW, "rejected"),
        ("candidate", HIGH, "answered"),
    ]
    check = task.routing_decisions[1]
    assert check["why"] == (
        "The answer is not good enough: the answer is a refusal (starts with 'sorry, i'); "
        "the model says it is not confident: simulated poor answer. The strong model answers "
        "instead."
    )


def test_escalate_keeps_a_good_cheap_answer(routing_worker, sandbox, catalog):
    role = escalating_role(sandbox, catalog, "escalate-good")
    seq = sandbox_seq(sandbox)

    task = run(role, "Write the quarterly summary.")

    assert task.status == TaskStatus.DONE, task.error
    entries = sandbox_since(sandbox, seq)
    assert [e["model"] for e in entries] == [LOW]
    assert_billed_exactly_what_reached_the_provider(task, entries)
    [cheap] = calls(task)
    assert task.cost == cheap.cost
    assert task.result.startswith(f"Sandbox answer from {LOW}: Write the quarterly summary.")
    assert "ROSTER-SELF-CHECK" not in task.result
    assert steps(task) == [
        ("route", "", "escalate"),
        ("check", LOW, "good"),
        ("candidate", LOW, "answered"),
        ("candidate", HIGH, "skipped"),
    ]
    assert task.routing_decisions[3]["why"] == "Not needed: the cheap answer passed."
