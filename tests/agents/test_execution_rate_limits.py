"""Per-credential rate limits in the execution service, against the real limiter (the
database backend, committed for real) and the sandbox provider over loopback: a slot is
taken before each call, a refused task goes back to the queue (not failed, and not
counted as a lost execution) and is dispatched again when its slot frees, a call that can
never fit fails the task, an unreachable limiter delays it, and the window keeps the
tokens a call really used."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from agents.execution import task_execute
from agents.liveness import worker_id
from agents.models import Credential, RateWindow, RoleBinding, RouteCandidate
from agents.ratelimit import rate_limiter, rate_slot_acquire
from agents.services import credential_create
from billing.catalog import catalog_parse, catalog_sync
from billing.models import CatalogModel, Usage
from office.models import Role, Task, TaskStatus
from office.services import celery_app
from tests.canary import SANDBOX_KEY
from tests.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "deepseek/deepseek-v4-pro"
CHEAP = "vendor/cheap-model"
WINDOW = 1.0  # the limits' "minute", shortened so a freed slot is seconds away


@pytest.fixture(autouse=True)
def short_window(settings: Any) -> None:
    settings.ROSTER_RATE_LIMIT_BACKEND = "database"
    settings.ROSTER_RATE_LIMIT_WINDOW_SECONDS = WINDOW
    settings.ROSTER_RATE_LIMIT_MARGIN_SECONDS = 0


@pytest.fixture
def dispatches(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What is sent to the broker, instead of sending it."""
    sent: list[dict[str, Any]] = []

    def send_task(name: str, args: list[Any], countdown: float | None = None) -> None:
        sent.append({"name": name, "task_id": args[0], "countdown": countdown})

    monkeypatch.setattr(celery_app, "send_task", send_task)
    return sent


@pytest.fixture
def models() -> dict[str, CatalogModel]:
    catalog_sync(
        entries=catalog_parse(
            {
                "data": [
                    {
                        "id": slug,
                        "name": slug,
                        "pricing": {"prompt": "0.000000435", "completion": "0.00000087"},
                    }
                    for slug in (MODEL, CHEAP)
                ]
            }
        )
    )
    return {model.slug: model for model in CatalogModel.objects.all()}


def limited_credential(sandbox, label: str, **limits: int) -> Credential:
    credential = credential_create(
        label=label, provider="openrouter", base_url=f"{sandbox.url}/api/v1", raw_secret=SANDBOX_KEY
    )
    Credential.objects.filter(pk=credential.pk).update(**limits)
    credential.refresh_from_db()
    return credential


def limited_role(sandbox, models, *, max_tokens: int = 100, **limits: int) -> Role:
    role = Role.objects.create(slug="writer", name="Writer", system_prompt="Be brief.")
    RoleBinding.objects.create(
        role=role,
        model=models[MODEL],
        credential=limited_credential(sandbox, "limited key", **limits),
        max_tokens=max_tokens,
    )
    return role


def execute(task: Task) -> Task:
    task_execute(task_id=task.pk, worker_id=worker_id())
    task.refresh_from_db()
    return task


def requests_of(sandbox, task: Task) -> list[dict]:
    return [
        e for row in Usage.objects.filter(task=task) for e in sandbox.requests(call_id=row.call_id)
    ]


def test_a_task_refused_a_slot_waits_in_the_queue_and_runs_when_it_frees(
    sandbox, models, dispatches
):
    role = limited_role(sandbox, models, requests_per_minute=1)
    first = execute(Task.objects.create(role=role, prompt="First"))
    assert first.status == TaskStatus.DONE
    waiting = Task.objects.create(role=role, prompt="Second")

    before = timezone.now()
    assert task_execute(task_id=waiting.pk, worker_id=worker_id()) == TaskStatus.QUEUED
    waiting.refresh_from_db()

    # Back in the queue, not failed; no call was made, nothing billed.
    assert (waiting.status, waiting.claimed_by, waiting.error) == (TaskStatus.QUEUED, "", "")
    assert waiting.executions == 0  # waiting is not an execution lost to a dead worker
    assert not Usage.objects.filter(task=waiting).exists()
    route, wait = waiting.routing_decisions
    assert route["step"] == "route"
    assert (wait["step"], wait["outcome"], wait["model"]) == ("rate_limit", "wait", MODEL)
    assert wait["why"].startswith("1 request/minute reached for credential 'limited key'.")
    assert "Back in the queue; tries again in " in wait["why"]
    assert wait["data"]["credential"] == "limited key"
    assert 0 < wait["data"]["wait_seconds"] <= WINDOW
    # Dispatched again when the slot frees, plus a little jitter; due then, for the sweeper.
    [again] = dispatches
    assert again["task_id"] == waiting.pk
    assert (
        wait["data"]["wait_seconds"]
        <= again["countdown"]
        <= wait["data"]["wait_seconds"] * 1.1 + 0.25
    )
    assert waiting.dispatched_at >= before + timedelta(seconds=wait["data"]["wait_seconds"])

    time.sleep(again["countdown"])
    waiting = execute(waiting)

    assert waiting.status == TaskStatus.DONE, waiting.error
    assert waiting.executions == 1
    assert [(d["step"], d["outcome"], d["execution"]) for d in waiting.routing_decisions] == [
        ("route", "single", 1),
        ("rate_limit", "wait", 1),
        ("route", "single", 1),
        ("candidate", "answered", 1),
    ]
    assert len(requests_of(sandbox, waiting)) == 1


def test_waiting_again_and_again_never_counts_toward_the_execution_limit(
    sandbox, models, dispatches, settings
):
    settings.ROSTER_MAX_EXECUTIONS = 1
    settings.ROSTER_RATE_LIMIT_WINDOW_SECONDS = 30  # the slot stays taken for the test
    role = limited_role(sandbox, models, requests_per_minute=1)
    execute(Task.objects.create(role=role, prompt="Takes the only slot"))
    waiting = Task.objects.create(role=role, prompt="Waits")

    for _ in range(3):
        waiting = execute(waiting)

    assert (waiting.status, waiting.executions) == (TaskStatus.QUEUED, 0)
    assert [d["step"] for d in waiting.routing_decisions].count("rate_limit") == 3
    assert len(dispatches) == 3


def test_a_call_that_can_never_fit_the_tokens_per_minute_fails_the_task(sandbox, models):
    role = limited_role(sandbox, models, max_tokens=500, tokens_per_minute=100)

    task = execute(Task.objects.create(role=role, prompt="Too big for this key"))

    assert task.status == TaskStatus.FAILED
    assert task.error.startswith("This call may use up to ")
    assert "more than credential 'limited key' allows in a minute (100 tokens/minute)" in task.error
    assert not Usage.objects.filter(task=task).exists()
    assert task.routing_decisions[-1]["outcome"] == "skipped"


def test_an_unreachable_limiter_puts_the_task_back_for_a_short_while(
    sandbox, models, dispatches, settings
):
    settings.ROSTER_RATE_LIMIT_BACKEND = "redis"
    settings.ROSTER_RATE_LIMIT_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nobody there
    settings.ROSTER_RATE_LIMIT_UNAVAILABLE_DELAY = 2.0
    role = limited_role(sandbox, models, requests_per_minute=5)

    task = execute(Task.objects.create(role=role, prompt="Hello"))

    assert (task.status, task.executions) == (TaskStatus.QUEUED, 0)
    decision = task.routing_decisions[-1]
    assert (decision["step"], decision["outcome"]) == ("rate_limit", "unavailable")
    assert decision["why"].startswith("The rate limiter cannot reach Redis at 127.0.0.1:")
    [again] = dispatches
    assert 2.0 <= again["countdown"] <= 2.0 * 1.1 + 0.25
    assert not Usage.objects.filter(task=task).exists()


def test_the_window_keeps_the_tokens_a_call_used_not_its_worst_case(sandbox, models):
    role = limited_role(sandbox, models, tokens_per_minute=100_000)

    task = execute(Task.objects.create(role=role, prompt="Count me"))

    call = Usage.objects.get(task=task)
    [(_, tokens, _)] = RateWindow.objects.get(pk=role.binding.credential_id).entries
    assert tokens == call.input_tokens + call.output_tokens
    assert tokens < call.estimated_input_tokens + call.max_output_tokens


def test_a_call_the_provider_refused_gives_its_tokens_back(sandbox, models):
    role = limited_role(sandbox, models, tokens_per_minute=100_000)

    task = execute(Task.objects.create(role=role, prompt="No [[sandbox fault=400]]"))

    assert task.status == TaskStatus.FAILED
    [(_, tokens, _)] = RateWindow.objects.get(pk=role.binding.credential_id).entries
    assert tokens == 0


def test_an_escalation_waits_for_its_strong_slot_rather_than_paying_the_cheap_answer_again(
    sandbox, models, dispatches
):
    role = Role.objects.create(slug="escalating", name="Escalating", system_prompt="Be brief.")
    binding = RoleBinding.objects.create(
        role=role,
        model=models[MODEL],
        credential=limited_credential(sandbox, "bound key"),
        max_tokens=100,
        policy="escalate",
    )
    strong_key = limited_credential(sandbox, "strong key", requests_per_minute=1)
    RouteCandidate.objects.create(
        binding=binding,
        slot="cheap",
        model=models[CHEAP],
        credential=limited_credential(sandbox, "cheap key"),
    )
    RouteCandidate.objects.create(
        binding=binding, slot="strong", model=models[MODEL], credential=strong_key
    )
    assert rate_slot_acquire(credential=strong_key, tokens=1).granted  # someone else's call

    task = execute(
        Task.objects.create(role=role, prompt=f"Summarise [[sandbox quality=poor@{CHEAP}]]")
    )

    assert task.status == TaskStatus.DONE, task.error
    assert [row.model.slug for row in Usage.objects.filter(task=task).order_by("attempt")] == [
        CHEAP,
        MODEL,
    ]
    assert "rate_limit" not in [d["step"] for d in task.routing_decisions]
    assert dispatches == []


def test_the_limiter_holds_grants_for_the_configured_window_plus_the_margin(settings):
    settings.ROSTER_RATE_LIMIT_WINDOW_SECONDS = 60
    settings.ROSTER_RATE_LIMIT_MARGIN_SECONDS = 1

    assert rate_limiter().window_us == 61_000_000

    settings.ROSTER_RATE_LIMIT_WINDOW_SECONDS = 5
    assert rate_limiter().window_us == 6_000_000
