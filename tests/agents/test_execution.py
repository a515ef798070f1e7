"""The execution service against the real sandbox provider over loopback (in-process, no
worker): claiming, retries, failures, billing of every attempt, worker-death recovery, and
routing policies (fallback, escalation, tiers, budgets) with their recorded decisions."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone

from agents.execution import task_execute
from agents.liveness import heartbeat_beat, running, tasks_sweep_stale, worker_id
from agents.models import RoleBinding, RouteCandidate, WorkerHeartbeat
from agents.services import credential_create
from billing.catalog import catalog_parse, catalog_sync
from billing.ledger import CallTarget, usage_open
from billing.models import Budget, CatalogModel, Usage, UsageStatus
from office.models import Role, Task, TaskStatus
from tests.canary import OPENAI_KEY, SANDBOX_KEY

pytestmark = pytest.mark.django_db

# Not a sandbox key: the sandbox refuses it with a 401 that echoes it.
CANARY = OPENAI_KEY
MODEL = "deepseek/deepseek-v4-pro"


@pytest.fixture
def model() -> CatalogModel:
    catalog_sync(
        entries=catalog_parse(
            {
                "data": [
                    {
                        "id": MODEL,
                        "name": "DeepSeek V4 Pro",
                        "pricing": {"prompt": "0.000000435", "completion": "0.00000087"},
                    },
                    {
                        "id": "openrouter/auto",
                        "name": "Auto",
                        "pricing": {"prompt": "-1", "completion": "-1"},
                    },
                ]
            }
        )
    )
    return CatalogModel.objects.get(slug=MODEL)


def make_role(sandbox, model: CatalogModel, *, secret: str = SANDBOX_KEY, slug: str = "coder"):
    role = Role.objects.create(slug=slug, name=slug, system_prompt="Be brief.")
    credential = credential_create(
        label=f"{slug}-cred",
        provider="openrouter",
        base_url=f"{sandbox.url}/api/v1",
        raw_secret=secret,
    )
    RoleBinding.objects.create(role=role, model=model, credential=credential, max_tokens=100)
    return role


def run(task: Task) -> Task:
    task_execute(task_id=task.pk, worker_id=worker_id())
    task.refresh_from_db()
    return task


def test_task_runs_once_even_if_the_message_is_delivered_twice(sandbox, model):
    task = Task.objects.create(role=make_role(sandbox, model), prompt="Hello there")

    assert run(task).status == TaskStatus.DONE
    assert task_execute(task_id=task.pk, worker_id="another") == TaskStatus.DONE

    assert Usage.objects.filter(task=task).count() == 1
    assert len(sandbox.requests(call_id=Usage.objects.get(task=task).call_id)) == 1


def test_invalid_key_fails_task_with_readable_reason_and_never_stores_the_key(
    sandbox, model, caplog
):
    caplog.set_level(logging.DEBUG)
    task = Task.objects.create(role=make_role(sandbox, model, secret=CANARY), prompt="Hi")

    task = run(task)

    assert task.status == TaskStatus.FAILED
    assert "401" in task.error
    assert CANARY not in task.error
    row = Usage.objects.get(task=task)
    assert (row.status, row.http_status, row.cost) == (UsageStatus.FAILED, 401, 0)
    assert CANARY not in row.error
    assert CANARY not in caplog.text
    # The provider did echo it: the sandbox's 401 names the key, proving we redacted.
    assert task.provider_calls == 1


def test_server_errors_are_retried_up_to_the_bound_and_every_attempt_is_billed_zero(
    sandbox, model, settings
):
    settings.ROSTER_PROVIDER_MAX_ATTEMPTS = 3
    settings.ROSTER_RETRY_MAX_WAIT = 0.01
    task = Task.objects.create(role=make_role(sandbox, model), prompt="x [[sandbox fault=500]]")

    task = run(task)

    assert task.status == TaskStatus.FAILED
    assert "500" in task.error
    assert "gave up after 3 attempts" in task.error
    rows = list(Usage.objects.filter(task=task).order_by("attempt"))
    assert [(r.attempt, r.status, r.http_status) for r in rows] == [
        (1, "failed", 500),
        (2, "failed", 500),
        (3, "failed", 500),
    ]
    assert task.cost == 0


def test_retry_after_above_the_cap_fails_without_waiting(sandbox, model, settings):
    settings.ROSTER_RETRY_MAX_WAIT = 5
    task = Task.objects.create(
        role=make_role(sandbox, model), prompt="x [[sandbox fault=429 retry_after=120]]"
    )

    task = run(task)

    assert task.status == TaskStatus.FAILED
    assert "retry after 120s" in task.error
    assert Usage.objects.filter(task=task).count() == 1


def test_malformed_answer_is_retried(sandbox, model, settings):
    settings.ROSTER_RETRY_MAX_WAIT = 0.01
    task = Task.objects.create(
        role=make_role(sandbox, model), prompt="x [[sandbox fault=malformed times=1]]"
    )

    task = run(task)

    assert task.status == TaskStatus.DONE
    lost, answered = Usage.objects.filter(task=task).order_by("attempt")
    # The unreadable answer was a 200: the provider may have billed it, so it is spend at
    # its worst case, never a silent $0.
    assert (lost.status, lost.basis, lost.http_status) == ("estimated", "estimated", 200)
    assert lost.output_tokens == lost.max_output_tokens
    assert lost.cost > 0
    assert "may have billed it" in lost.error
    assert answered.status == "settled"


def test_answer_without_usage_is_settled_as_an_estimate(sandbox, model):
    task = Task.objects.create(
        role=make_role(sandbox, model), prompt="abcd [[sandbox fault=no_usage]]"
    )

    task = run(task)

    assert task.status == TaskStatus.DONE
    row = Usage.objects.get(task=task)
    assert (row.status, row.basis, row.reported_cost) == ("settled", "estimated", None)
    # ceil(len/4) + 4 per message, for the system prompt and the user prompt.
    expected_in = (-(-len("Be brief.") // 4) + 4) + (-(-len(task.prompt) // 4) + 4)
    assert row.input_tokens == expected_in
    assert row.output_tokens == -(-len(task.result) // 4)
    assert row.cost == Decimal(expected_in) * Decimal("0.000000435") + Decimal(
        row.output_tokens
    ) * Decimal("0.00000087")


def test_unpriced_model_is_marked_unpriced_not_free(sandbox, model):
    role = make_role(sandbox, model)
    RoleBinding.objects.filter(role=role).update(
        model=CatalogModel.objects.get(slug="openrouter/auto")
    )
    task = run(Task.objects.create(role=role, prompt="route me"))

    row = Usage.objects.get(task=task)
    assert (row.status, row.basis, row.cost) == ("settled", "unpriced", 0)
    assert row.price_prompt is None


def test_unbound_role_fails_with_reason(model):
    role = Role.objects.create(slug="idle", name="Idle")
    task = run(Task.objects.create(role=role, prompt="anything"))

    assert task.status == TaskStatus.FAILED
    assert "no model bound" in task.error
    assert not Usage.objects.filter(task=task).exists()


def _orphan(
    sandbox, model, *, executions: int, holder: str = "dead:1:x", age=timedelta(minutes=5)
) -> tuple[Task, Usage]:
    """A task left running by a worker that is gone, with its call still pending."""
    role = make_role(sandbox, model)
    task = Task.objects.create(
        role=role,
        prompt="orphan",
        status=TaskStatus.RUNNING,
        claimed_by=holder,
        started_at=timezone.now() - age,
        executions=executions,
    )
    binding = RoleBinding.objects.get(role=role)
    pending = usage_open(
        task=task,
        target=CallTarget(
            model=model,
            provider="openrouter",
            credential_id=binding.credential_id,
            credential_label="c",
            upstream_model=MODEL,
        ),
        attempt=1,
        estimated_input_tokens=10,
        input_tokens_bound=40,
        max_output_tokens=100,
    )
    return task, pending


def test_sweeper_requeues_a_dead_workers_task_and_the_rerun_bills_the_lost_call_as_estimate(
    sandbox, model, django_capture_on_commit_callbacks
):
    task, pending = _orphan(sandbox, model, executions=1)
    heartbeat_beat()  # a live worker (this process) must not be swept

    with django_capture_on_commit_callbacks() as callbacks:
        report = tasks_sweep_stale()

    assert report.requeued == [task.pk]
    assert len(callbacks) == 1
    task.refresh_from_db()
    assert (task.status, task.claimed_by) == (TaskStatus.QUEUED, "")

    task = run(task)

    assert task.status == TaskStatus.DONE
    pending.refresh_from_db()
    assert (pending.status, pending.basis) == (UsageStatus.ESTIMATED, "estimated")
    assert (pending.input_tokens, pending.output_tokens) == (10, 100)
    assert pending.cost == Decimal(10) * Decimal("0.000000435") + Decimal(100) * Decimal(
        "0.00000087"
    )
    settled = Usage.objects.get(task=task, status=UsageStatus.SETTLED)
    assert task.cost == pending.cost + settled.cost


def test_sweeper_fails_a_task_whose_worker_died_too_often(sandbox, model, settings):
    settings.ROSTER_MAX_EXECUTIONS = 3
    task, pending = _orphan(sandbox, model, executions=3)

    report = tasks_sweep_stale()

    assert report.failed == [task.pk]
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    assert "stopped 3 times" in task.error
    pending.refresh_from_db()
    assert pending.status == UsageStatus.ESTIMATED


def test_sweeper_leaves_a_long_v1_call_alone_and_fails_one_whose_web_process_died(
    sandbox, model, settings
):
    """A /v1 call's task is held by a web process, which writes no heartbeat: a call
    running for minutes is not taken for dead; one older than any call can be is."""
    settings.ROSTER_PROXY_STALE_AFTER = 3600
    long_call, long_pending = _orphan(sandbox, model, executions=1, holder="proxy:web:1:x")

    assert tasks_sweep_stale().failed == []
    long_call.refresh_from_db()
    long_pending.refresh_from_db()
    assert (long_call.status, long_pending.status) == (TaskStatus.RUNNING, UsageStatus.PENDING)

    Task.objects.filter(pk=long_call.pk).update(started_at=timezone.now() - timedelta(seconds=3601))
    assert tasks_sweep_stale().failed == [long_call.pk]
    long_call.refresh_from_db()
    assert (
        long_call.error == "The web process serving this /v1 call stopped; it is not called again."
    )
    long_pending.refresh_from_db()
    assert long_pending.status == UsageStatus.ESTIMATED  # kept as spend, never dropped


def _running_here(role) -> Task:
    return Task.objects.create(
        role=role,
        prompt="busy",
        status=TaskStatus.RUNNING,
        claimed_by=worker_id(),
        started_at=timezone.now() - timedelta(minutes=5),
        executions=1,
    )


def test_sweeper_leaves_tasks_a_live_worker_is_executing_alone(sandbox, model):
    task = _running_here(make_role(sandbox, model))

    with running(task.pk):
        heartbeat_beat()
        report = tasks_sweep_stale()

    assert report.requeued == []
    assert report.failed == []
    task.refresh_from_db()
    assert task.status == TaskStatus.RUNNING
    assert WorkerHeartbeat.objects.get(worker_id=worker_id()).running_tasks == [task.pk]


def test_sweeper_requeues_a_task_its_live_worker_no_longer_executes(
    sandbox, model, django_capture_on_commit_callbacks
):
    """The worker is alive but not executing the task (its outcome was lost, e.g. with
    the database's last commits): the task must not stay running forever."""
    task = _running_here(make_role(sandbox, model))
    heartbeat_beat()  # lists no task

    with django_capture_on_commit_callbacks(execute=False):
        report = tasks_sweep_stale()

    assert report.requeued == [task.pk]
    task.refresh_from_db()
    assert task.status == TaskStatus.QUEUED


def test_sweeper_redispatches_queued_tasks_nobody_picked_up(sandbox, model):
    role = make_role(sandbox, model)
    stale = Task.objects.create(
        role=role, prompt="lost", dispatched_at=timezone.now() - timedelta(hours=1)
    )
    fresh = Task.objects.create(role=role, prompt="waiting", dispatched_at=timezone.now())

    report = tasks_sweep_stale()

    assert report.redispatched == [stale.pk]
    stale.refresh_from_db()
    assert stale.dispatched_at > fresh.dispatched_at - timedelta(seconds=1)


# --- Routing policies -----------------------------------------------------------------------

CHEAP, STRONG, LOCAL, FREE = (
    "google/gemini-2.5-flash-lite",
    "anthropic/claude-sonnet-4.5",
    "meta-llama/llama-3.1-8b-instruct",
    "moonshotai/kimi-k2.6:free",
)


@pytest.fixture
def models(model) -> dict[str, CatalogModel]:
    """Four more priced models (one free) besides MODEL."""
    catalog_sync(
        entries=catalog_parse(
            {
                "data": [
                    {"id": slug, "name": slug, "pricing": {"prompt": p, "completion": c}}
                    for slug, p, c in (
                        (CHEAP, "0.0000001", "0.0000004"),
                        (STRONG, "0.000003", "0.000015"),
                        (LOCAL, "0.00000002", "0.00000005"),
                        (FREE, "0", "0"),
                    )
                ]
            }
        )
    )
    return {m.slug: m for m in CatalogModel.objects.all()}


def routed_role(sandbox, models, policy: str, slots, *, rules: str = "", slug: str = "router"):
    """A role whose binding (bound to MODEL) routes with `policy` over `slots`:
    (slot, model slug, key) triples; each candidate gets its own credential."""
    role = make_role(sandbox, models[MODEL], slug=slug)
    binding = RoleBinding.objects.get(role=role)
    RoleBinding.objects.filter(pk=binding.pk).update(policy=policy, escalation_rules=rules)
    for position, (slot, slug_, key) in enumerate(slots, start=1):
        credential = credential_create(
            label=f"{slot}-{position}",
            provider="openrouter",
            base_url=f"{sandbox.url}/api/v1",
            raw_secret=key,
        )
        RouteCandidate.objects.create(
            binding=binding,
            slot=slot,
            position=position,
            model=models[slug_],
            credential=credential,
        )
    return role


def calls_of(task: Task) -> list[Usage]:
    return list(Usage.objects.filter(task=task).order_by("attempt"))


def steps(task: Task) -> list[tuple[str, str, str]]:
    return [(d["step"], d.get("model", ""), d["outcome"]) for d in task.routing_decisions]


def test_single_policy_records_its_route_and_answer(sandbox, model):
    task = run(Task.objects.create(role=make_role(sandbox, model), prompt="Hello"))

    assert task.status == TaskStatus.DONE
    assert steps(task) == [("route", "", "single"), ("candidate", MODEL, "answered")]
    assert all(d["execution"] == 1 for d in task.routing_decisions)
    assert task.model_label == f"{MODEL} via coder-cred"


def test_fallback_moves_on_after_a_server_error_and_bills_only_calls_that_happened(sandbox, models):
    role = routed_role(
        sandbox, models, "fallback", [("chain", LOCAL, SANDBOX_KEY), ("chain", CHEAP, SANDBOX_KEY)]
    )

    task = run(Task.objects.create(role=role, prompt=f"Sum it [[sandbox fault=500@{LOCAL}]]"))

    assert task.status == TaskStatus.DONE, task.error
    failed, answered = calls_of(task)
    assert (failed.model.slug, failed.status, failed.http_status, failed.cost) == (
        LOCAL,
        "failed",
        500,
        0,
    )
    assert (answered.model.slug, answered.status) == (CHEAP, "settled")
    assert task.cost == answered.cost > 0
    assert task.result.startswith(f"Sandbox answer from {CHEAP}")
    assert task.model_label == f"{CHEAP} via chain-2 (fallback 2 of 2)"
    assert steps(task) == [
        ("route", "", "fallback"),
        ("candidate", LOCAL, "failed"),
        ("candidate", CHEAP, "answered"),
    ]
    assert "HTTP 500" in task.routing_decisions[1]["why"]
    assert "gave up after 1 attempt)" in task.routing_decisions[1]["why"]
    assert task.routing_decisions[1]["why"].endswith("Moving on to the next candidate.")


def test_fallback_moves_on_after_a_permanent_error(sandbox, models):
    role = routed_role(
        sandbox, models, "fallback", [("chain", LOCAL, CANARY), ("chain", CHEAP, SANDBOX_KEY)]
    )

    task = run(Task.objects.create(role=role, prompt="Hi"))

    assert task.status == TaskStatus.DONE, task.error
    assert [(c.status, c.http_status) for c in calls_of(task)] == [
        ("failed", 401),
        ("settled", 200),
    ]
    assert CANARY not in str(task.routing_decisions)


def test_fallback_with_every_candidate_failing_names_each_reason(sandbox, models, settings):
    settings.ROSTER_RETRY_MAX_WAIT = 0.01
    role = routed_role(
        sandbox, models, "fallback", [("chain", LOCAL, SANDBOX_KEY), ("chain", CHEAP, SANDBOX_KEY)]
    )

    task = run(Task.objects.create(role=role, prompt="x [[sandbox fault=503]]"))

    assert task.status == TaskStatus.FAILED
    assert task.error.startswith(f"No model answered. 1) {LOCAL} via chain-1: ")
    assert f"; 2) {CHEAP} via chain-2: " in task.error
    assert [c.status for c in calls_of(task)] == ["failed", "failed"]
    assert task.cost == 0


def escalating_role(sandbox, models, rules: str = "", **keys: str):
    return routed_role(
        sandbox,
        models,
        "escalate",
        [
            ("cheap", CHEAP, keys.get("cheap", SANDBOX_KEY)),
            ("strong", STRONG, keys.get("strong", SANDBOX_KEY)),
        ],
        rules=rules,
    )


def test_escalate_keeps_a_good_cheap_answer_without_its_self_check_line(sandbox, models):
    task = run(Task.objects.create(role=escalating_role(sandbox, models), prompt="Translate hi"))

    assert task.status == TaskStatus.DONE, task.error
    [call] = calls_of(task)
    assert (call.model.slug, call.status) == (CHEAP, "settled")
    assert task.result.startswith(f"Sandbox answer from {CHEAP}: Translate hi [ref ")
    assert "ROSTER-SELF-CHECK" not in task.result
    # The provider was asked for the line and billed for it: its tokens are in the row.
    [entry] = sandbox.requests(call_id=call.call_id)
    assert call.output_tokens == entry["output_tokens"] > -(-len(task.result) // 4)
    assert steps(task) == [
        ("route", "", "escalate"),
        ("check", CHEAP, "good"),
        ("candidate", CHEAP, "answered"),
        ("candidate", STRONG, "skipped"),
    ]
    assert task.routing_decisions[1]["why"] == (
        "The answer passed every rule (empty, refusal, self_assessment); self-check: confident."
    )
    assert task.model_label == f"{CHEAP} via cheap-1"


def test_escalate_reruns_a_poor_cheap_answer_on_the_strong_model(sandbox, models):
    task = run(
        Task.objects.create(
            role=escalating_role(sandbox, models),
            prompt=f"Write the parser [[sandbox quality=poor@{CHEAP}]]",
        )
    )

    assert task.status == TaskStatus.DONE, task.error
    cheap, strong = calls_of(task)
    assert (cheap.model.slug, cheap.status) == (CHEAP, "settled")
    assert (strong.model.slug, strong.status) == (STRONG, "settled")
    assert cheap.cost > 0
    assert strong.cost > 0
    assert task.cost == cheap.cost + strong.cost
    assert task.provider_calls == 2
    assert task.result.startswith(f"Sandbox answer from {STRONG}: Write the parser")
    assert task.model_label == (
        f"{STRONG} via strong-2 (escalated from {CHEAP}: its answer failed the check)"
    )
    assert steps(task) == [
        ("route", "", "escalate"),
        ("check", CHEAP, "escalate"),
        ("candidate", CHEAP, "rejected"),
        ("candidate", STRONG, "answered"),
    ]
    check = task.routing_decisions[1]
    assert check["data"]["failures"] == [
        "the answer is a refusal (starts with 'sorry, i')",
        "the model says it is not confident: simulated poor answer",
    ]
    assert check["data"]["self_assessment"] == {
        "confident": False,
        "reason": "simulated poor answer",
    }
    # Only the cheap call was asked for a self-check.
    [cheap_entry] = sandbox.requests(call_id=cheap.call_id)
    [strong_entry] = sandbox.requests(call_id=strong.call_id)
    assert cheap_entry["input_tokens"] > strong_entry["input_tokens"]


def test_escalate_rules_alone_decide_when_no_self_check_is_asked(sandbox, models):
    task = run(
        Task.objects.create(
            role=escalating_role(sandbox, models, rules="min_chars 500"), prompt="Explain VAT"
        )
    )

    assert task.status == TaskStatus.DONE
    assert [c.model.slug for c in calls_of(task)] == [CHEAP, STRONG]
    check = task.routing_decisions[1]
    assert check["data"]["self_assessment"] == {"problem": "not asked"}
    assert "fewer than 500" in check["why"]


def test_escalate_goes_to_the_strong_model_when_the_cheap_one_fails(sandbox, models):
    task = run(
        Task.objects.create(role=escalating_role(sandbox, models, cheap=CANARY), prompt="Hi")
    )

    assert task.status == TaskStatus.DONE, task.error
    assert [(c.model.slug, c.status) for c in calls_of(task)] == [
        (CHEAP, "failed"),
        (STRONG, "settled"),
    ]
    assert task.model_label == f"{STRONG} via strong-2 (escalated from {CHEAP}: it failed)"


def test_escalate_keeps_the_cheap_answer_when_the_strong_model_fails(sandbox, models):
    task = run(
        Task.objects.create(
            role=escalating_role(sandbox, models, strong=CANARY),
            prompt=f"Hi [[sandbox quality=poor@{CHEAP}]]",
        )
    )

    assert task.status == TaskStatus.FAILED
    assert task.error.startswith("The cheap answer failed the check (the answer is a refusal")
    assert "the strong model did not answer: 1) " in task.error
    assert task.result.startswith("Sorry, I cannot answer that properly.")
    assert CANARY not in task.error


def test_tiered_with_a_hint_calls_the_hinted_tier(sandbox, models):
    role = routed_role(
        sandbox,
        models,
        "tiered",
        [
            ("low", LOCAL, SANDBOX_KEY),
            ("medium", CHEAP, SANDBOX_KEY),
            ("high", STRONG, SANDBOX_KEY),
        ],
    )

    task = run(Task.objects.create(role=role, prompt="Design the system", tier_hint="high"))

    assert task.status == TaskStatus.DONE
    assert [c.model.slug for c in calls_of(task)] == [STRONG]
    assert task.model_label == f"{STRONG} via high-3 (tier high)"
    assert steps(task)[:2] == [("tier", "", "high"), ("route", "", "tiered")]


def test_a_misconfigured_route_fails_the_task_with_the_reason(sandbox, models):
    role = routed_role(sandbox, models, "fallback", [("chain", LOCAL, SANDBOX_KEY)])

    task = run(Task.objects.create(role=role, prompt="Hi"))

    assert task.status == TaskStatus.FAILED
    assert "its fallback chain has 1 candidate(s)" in task.error
    assert not Usage.objects.filter(task=task).exists()


def budget_for(role: Role, limit: str, action: str) -> Budget:
    return Budget.objects.create(
        name=action, scope="role", role=role, period="month", limit=Decimal(limit), action=action
    )


def test_a_downgrade_budget_switches_any_route_to_the_over_budget_model(sandbox, models):
    role = routed_role(
        sandbox, models, "fallback", [("chain", STRONG, SANDBOX_KEY), ("chain", CHEAP, SANDBOX_KEY)]
    )
    RoleBinding.objects.filter(role=role).update(over_budget_model=models[FREE])
    budget_for(role, "0.00001", "downgrade")

    task = run(Task.objects.create(role=role, prompt="Summarise"))

    assert task.status == TaskStatus.DONE, task.error
    [call] = calls_of(task)
    assert (call.model.slug, call.cost) == (FREE, 0)
    assert "(downgraded: over budget)" in task.model_label
    assert steps(task) == [
        ("route", "", "fallback"),
        ("downgrade", FREE, "over_budget_model"),
        ("candidate", CHEAP, "abandoned"),
        ("candidate", FREE, "answered"),
    ]
    assert task.routing_decisions[1]["why"].endswith(
        f"The over-budget model answers instead of {STRONG} via chain-1."
    )


def test_a_blocking_budget_stopping_the_escalation_keeps_the_cheap_answer(sandbox, models):
    role = routed_role(
        sandbox,
        models,
        "escalate",
        [("cheap", FREE, SANDBOX_KEY), ("strong", STRONG, SANDBOX_KEY)],
    )
    budget_for(role, "0.00001", "block")

    task = run(Task.objects.create(role=role, prompt=f"Hi [[sandbox quality=poor@{FREE}]]"))

    assert task.status == TaskStatus.OVER_BUDGET
    assert "would be exceeded" in task.error
    assert task.result.startswith("Sorry, I cannot answer that properly.")
    assert [(c.model.slug, c.status) for c in calls_of(task)] == [(FREE, "settled")]
    assert steps(task)[-1] == ("candidate", STRONG, "abandoned")


def test_a_candidate_whose_model_has_no_price_is_skipped_without_a_call(sandbox, models):
    role = routed_role(
        sandbox, models, "fallback", [("chain", LOCAL, SANDBOX_KEY), ("chain", CHEAP, SANDBOX_KEY)]
    )
    models[LOCAL].prices.all().delete()

    task = run(Task.objects.create(role=role, prompt="Hi"))

    assert task.status == TaskStatus.DONE, task.error
    assert [c.model.slug for c in calls_of(task)] == [CHEAP]
    assert steps(task)[1] == ("candidate", LOCAL, "skipped")
    assert "has no price in the catalog" in task.routing_decisions[1]["why"]


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_task_stops_its_next_call_and_bills_the_one_in_flight(sandbox, models):
    from office.services import task_cancel

    role = routed_role(
        sandbox, models, "fallback", [("chain", LOCAL, SANDBOX_KEY), ("chain", CHEAP, SANDBOX_KEY)]
    )
    task = Task.objects.create(role=role, prompt=f"Sum it [[sandbox latency=1 fault=500@{LOCAL}]]")
    staff = User.objects.create_user("canceller")
    cancelled: list[Task] = []

    def cancel_while_the_first_call_is_in_flight() -> None:
        deadline = time.monotonic() + 10
        while not Usage.objects.filter(task=task).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        cancelled.append(task_cancel(task=Task.objects.get(pk=task.pk), by=staff))
        connection.close()

    canceller = threading.Thread(target=cancel_while_the_first_call_is_in_flight)
    canceller.start()
    status = task_execute(task_id=task.pk, worker_id=worker_id())
    canceller.join()

    task.refresh_from_db()
    assert status == task.status == TaskStatus.CANCELLED
    assert task.error == "Cancelled by canceller."
    # The call in flight was made and stays in the ledger; the fallback was never called.
    (call,) = calls_of(task)
    assert (call.model.slug, call.status, call.http_status) == (LOCAL, "failed", 500)
    assert len(sandbox.requests(call_id=call.call_id)) == 1
