"""Preparing a task with the local helper (in-process; pages and the provider are the real
sandbox over loopback): title, page text, complexity for routing, the claim, the hand-over
to execution, and the sweeper's care of a preparation whose worker died."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from agents import liveness
from agents.execution import task_execute
from agents.models import PreparedPrompt, RoleBinding, RouteCandidate, WorkerHeartbeat
from agents.preparation import task_prepare
from agents.sandbox.behaviour import Prompt, Turn, answer_text, count_input_tokens, prompt_digest
from agents.sandbox.pages import ARTICLE_PARAGRAPHS, BOILERPLATE_FOOTER
from agents.services import credential_create
from billing.catalog import catalog_parse, catalog_sync
from billing.models import CatalogModel, Usage
from office.models import Role, Task, TaskStatus
from tests.canary import SANDBOX_KEY
from tests.factories import ModelPriceFactory

pytestmark = pytest.mark.django_db

MODEL = "deepseek/deepseek-v4-pro"
SYSTEM = "Be brief."


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
                    }
                ]
            }
        )
    )
    return CatalogModel.objects.get(slug=MODEL)


@pytest.fixture
def role(sandbox, model) -> Role:  # type: ignore[no-untyped-def]
    role = Role.objects.create(slug="reader", name="Reader", system_prompt=SYSTEM)
    credential = credential_create(
        label="reader-cred",
        provider="openrouter",
        base_url=f"{sandbox.url}/api/v1",
        raw_secret=SANDBOX_KEY,
    )
    RoleBinding.objects.create(role=role, model=model, credential=credential, max_tokens=100)
    return role


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, list[int]]]:
    """What the office sends to the broker (task name, args), instead of sending it."""
    messages: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(
        "office.services.celery_app.send_task",
        lambda name, args, countdown=None: messages.append((name, list(args))),
    )
    return messages


@pytest.fixture
def loopback_allowed(settings) -> None:  # type: ignore[no-untyped-def]
    settings.ROSTER_FETCH_ALLOW = ["127.0.0.1"]


def prepare(task: Task, django_capture_on_commit_callbacks) -> Task:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        task_prepare(task_id=task.pk, worker_id=liveness.worker_id())
    task.refresh_from_db()
    return task


def provider_call(task: Task) -> Usage:
    return Usage.objects.get(task=task, helper_operation="")


def messages_of(task: Task) -> list[dict[str, str]]:
    return PreparedPrompt.objects.get(task=task).messages


def test_the_helper_writes_a_title_and_hands_the_task_to_execution(
    role, sent, django_capture_on_commit_callbacks
):
    task = Task.objects.create(
        role=role, prompt="Plan the nightly backup window for the PostgreSQL replicas."
    )

    task = prepare(task, django_capture_on_commit_callbacks)

    assert task.status == TaskStatus.QUEUED
    assert task.prepared_at is not None
    assert task.preparations == 1
    assert "Backup" in task.title
    assert messages_of(task) == [{"role": "user", "content": task.prompt}]
    assert sent == [("agents.tasks.execute_task", [task.pk])]


def test_a_title_given_by_a_person_is_kept(role, sent, django_capture_on_commit_callbacks):
    task = Task.objects.create(role=role, prompt="Draft the invite.", title="Friday invite")

    assert prepare(task, django_capture_on_commit_callbacks).title == "Friday invite"


def test_preparation_delivered_twice_runs_once(role, sent, django_capture_on_commit_callbacks):
    task = Task.objects.create(role=role, prompt="Draft the invite.")
    prepare(task, django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks(execute=True):
        status = task_prepare(task_id=task.pk, worker_id="another-worker")

    task.refresh_from_db()
    assert status == TaskStatus.QUEUED
    assert task.preparations == 1
    assert sent == [("agents.tasks.execute_task", [task.pk])]


def test_an_unprepared_task_is_dispatched_to_preparation(role, sent):
    from office.services import task_dispatch

    task = Task.objects.create(role=role, prompt="Hello")
    task_dispatch(task_id=task.pk)
    Task.objects.filter(pk=task.pk).update(prepared_at=timezone.now())
    task_dispatch(task_id=task.pk)

    assert sent == [
        ("agents.tasks.prepare_task", [task.pk]),
        ("agents.tasks.execute_task", [task.pk]),
    ]


def test_the_role_reads_the_page_text_not_its_html(
    role, sandbox, sent, loopback_allowed, django_capture_on_commit_callbacks
):
    url = f"{sandbox.url}/_sandbox/pages/article"
    prompt = "What should visitors do at the tide pools?"
    task = Task.objects.create(role=role, prompt=prompt, urls=[url])

    task = prepare(task, django_capture_on_commit_callbacks)

    [message] = messages_of(task)
    content = message["content"]
    assert content.startswith(f"[Page 1: {url} (its text, extracted by the office)]\n")
    assert content.endswith(f"[End of page 1]\n\n{prompt}")
    for paragraph in ARTICLE_PARAGRAPHS:
        assert paragraph in content
    for html in ("<p>", "<script", "window.analytics", BOILERPLATE_FOOTER, "Sign in"):
        assert html not in content
    [note] = task.page_notes
    assert note["url"] == url
    assert note["included"] is True
    assert note["tokens"] > 50
    assert note["note"].startswith("Included:")

    # Execution sends exactly those messages: the sandbox's answer carries their digest.
    assert task_execute(task_id=task.pk, worker_id=liveness.worker_id()) == TaskStatus.DONE
    task.refresh_from_db()
    sent_prompt = Prompt(
        model=MODEL, system=SYSTEM, turns=(Turn(role="user", text=content),), max_tokens=100
    )
    assert task.result == answer_text(sent_prompt, digest=prompt_digest(sent_prompt))
    [entry] = sandbox.requests(call_id=provider_call(task).call_id)
    assert entry["input_tokens"] == count_input_tokens(sent_prompt)


def test_pages_that_cannot_be_read_are_left_out_and_the_task_says_why(
    role, sandbox, sent, loopback_allowed, settings, django_capture_on_commit_callbacks
):
    settings.ROSTER_FETCH_MAX_BYTES = 64 * 1024
    binary = f"{sandbox.url}/_sandbox/pages/binary"
    big = f"{sandbox.url}/_sandbox/pages/big?kib=256"
    metadata = "http://169.254.169.254/latest/meta-data/"
    task = Task.objects.create(role=role, prompt="Summarise these.", urls=[binary, big, metadata])

    task = prepare(task, django_capture_on_commit_callbacks)

    assert task.status == TaskStatus.QUEUED
    notes = {note["url"]: note for note in task.page_notes}
    assert not any(note["included"] for note in notes.values())
    assert "application/octet-stream, not a web page" in notes[binary]["note"]
    assert "larger than 65536 bytes" in notes[big]["note"]
    assert "169.254.169.254" in notes[metadata]["note"]
    assert "link-local" in notes[metadata]["note"]
    [message] = messages_of(task)
    # The role is told, so its answer can say what it could not read.
    assert f"[Page skipped: {binary}. " in message["content"]
    assert f"[Page skipped: {metadata}. " in message["content"]
    assert message["content"].endswith("Summarise these.")
    assert task_execute(task_id=task.pk, worker_id=liveness.worker_id()) == TaskStatus.DONE


def test_a_private_address_is_refused_without_the_allow_list(
    role, sandbox, sent, django_capture_on_commit_callbacks
):
    url = f"{sandbox.url}/_sandbox/pages/article"
    task = Task.objects.create(role=role, prompt="Read this.", urls=[url])

    task = prepare(task, django_capture_on_commit_callbacks)

    [note] = task.page_notes
    assert note["included"] is False
    assert "loopback" in note["note"]
    assert "ROSTER_FETCH_ALLOW" in note["note"]


def test_a_long_page_text_is_shortened_by_the_helper(
    role, sandbox, sent, loopback_allowed, settings, django_capture_on_commit_callbacks
):
    settings.ROSTER_PAGE_MAX_TOKENS = 60
    url = f"{sandbox.url}/_sandbox/pages/plain"
    task = Task.objects.create(role=role, prompt="Read this.", urls=[url])

    task = prepare(task, django_capture_on_commit_callbacks)

    [note] = task.page_notes
    assert note["included"] is True
    assert "shortened by the helper" in note["note"]
    assert note["tokens"] <= 60


def test_a_tiered_role_is_classified_once_by_the_helper_before_execution(
    role, sandbox, sent, model, monkeypatch, django_capture_on_commit_callbacks
):
    binding = role.binding
    binding.policy = "tiered"
    binding.save()
    tiers = {"low": ModelPriceFactory().model, "medium": model, "high": ModelPriceFactory().model}
    for tier, tier_model in tiers.items():
        RouteCandidate.objects.create(
            binding=binding, slot=tier, model=tier_model, credential=binding.credential
        )
    task = Task.objects.create(role=role, prompt="Translate 'good morning' into French.")

    task = prepare(task, django_capture_on_commit_callbacks)
    assert PreparedPrompt.objects.get(task=task).complexity["level"] == "low"
    # The helper's work is priced at the model the route calls: the low tier's.
    rows = Usage.objects.filter(task=task).exclude(helper_operation="")
    assert sorted(rows.values_list("helper_operation", flat=True)) == [
        "classify_complexity",
        "title",
    ]
    assert {row.shadow_model for row in rows} == {tiers["low"]}

    def not_again(*, text: str) -> None:
        raise AssertionError("routing asked the classifier again")

    monkeypatch.setattr("agents.routing.helper_classify_complexity", not_again)
    assert task_execute(task_id=task.pk, worker_id=liveness.worker_id()) == TaskStatus.DONE
    task.refresh_from_db()
    [tier] = [d for d in task.routing_decisions if d["step"] == "tier"]
    assert tier["outcome"] == "low"
    assert tier["data"]["source"] == "classifier"


def test_every_helper_operation_is_a_ledger_row_at_cost_0_priced_at_the_roles_model(
    role, model, sandbox, sent, loopback_allowed, settings, django_capture_on_commit_callbacks
):
    settings.ROSTER_PAGE_MAX_TOKENS = 100
    urls = [f"{sandbox.url}/_sandbox/pages/article", f"{sandbox.url}/_sandbox/pages/binary"]
    task = Task.objects.create(role=role, prompt="What lives in tide pools?", urls=urls)

    task = prepare(task, django_capture_on_commit_callbacks)

    rows = list(Usage.objects.filter(task=task).order_by("id"))
    assert [row.helper_operation for row in rows] == ["title", "extract_page", "summarize"]
    for row in rows:
        assert row.cost == 0
        assert row.status == "settled"
        assert row.helper_backend == "builtin"
        assert row.shadow_model == model
        assert row.input_tokens > 0
        assert row.shadow_cost == (
            row.input_tokens * Decimal("0.000000435") + row.output_tokens * Decimal("0.00000087")
        )
    # The task's paid totals are the provider calls' alone.
    assert (task.cost, task.input_tokens, task.provider_calls) == (0, 0, 0)
    # The page's HTML is what the extraction read.
    assert rows[1].input_tokens > rows[1].output_tokens


def test_a_preparation_that_raises_fails_the_task_with_a_reason(
    role, sent, monkeypatch, django_capture_on_commit_callbacks
):
    def broken(**_: object) -> None:
        raise RuntimeError("the helper fell over")

    monkeypatch.setattr("agents.preparation.history_prepare", broken)
    task = Task.objects.create(role=role, prompt="Hello", title="Hi")

    task = prepare(task, django_capture_on_commit_callbacks)

    assert task.status == TaskStatus.FAILED
    assert task.error == (
        "The local helper could not prepare this task: RuntimeError: the helper fell over"
    )
    assert task.finished_at is not None
    assert sent == []


def test_a_task_executed_without_preparation_sends_its_prompt_alone(role, sandbox):
    task = Task.objects.create(role=role, prompt="Hello there")

    assert task_execute(task_id=task.pk, worker_id=liveness.worker_id()) == TaskStatus.DONE


# --- The sweeper ---------------------------------------------------------------------------


def stuck_in_preparation(role: Role, *, preparations: int) -> Task:
    long_ago = timezone.now() - timedelta(minutes=10)
    WorkerHeartbeat.objects.create(
        worker_id="dead", hostname="h", pid=1, started_at=long_ago, last_seen=long_ago
    )
    return Task.objects.create(
        role=role,
        prompt="Hello",
        status=TaskStatus.PREPARING,
        claimed_by="dead",
        started_at=long_ago,
        preparations=preparations,
    )


def test_the_sweeper_requeues_a_task_whose_helper_worker_died(
    role, sent, django_capture_on_commit_callbacks
):
    task = stuck_in_preparation(role, preparations=1)

    with django_capture_on_commit_callbacks(execute=True):
        report = liveness.tasks_sweep_stale()

    task.refresh_from_db()
    assert report.requeued == [task.pk]
    assert (task.status, task.claimed_by, task.prepared_at) == (TaskStatus.QUEUED, "", None)
    assert sent == [("agents.tasks.prepare_task", [task.pk])]


def test_the_sweeper_fails_a_task_whose_preparation_killed_its_worker_too_often(
    role, sent, settings, django_capture_on_commit_callbacks
):
    settings.ROSTER_MAX_EXECUTIONS = 3
    task = stuck_in_preparation(role, preparations=3)

    with django_capture_on_commit_callbacks(execute=True):
        report = liveness.tasks_sweep_stale()

    task.refresh_from_db()
    assert report.failed == [task.pk]
    assert task.status == TaskStatus.FAILED
    assert task.error == "The worker preparing this task stopped 3 times; giving up."
    assert sent == []


def test_a_task_prepared_and_executed_on_one_worker_stays_listed_in_its_heartbeat(role):
    task = Task.objects.create(role=role, prompt="Hello")
    with liveness.running(task.pk):  # the preparing thread, still leaving its block
        with liveness.running(task.pk):  # the executing thread
            pass
        liveness.heartbeat_beat()
        beat = WorkerHeartbeat.objects.get(worker_id=liveness.worker_id())
        assert beat.running_tasks == [task.pk]
    liveness.heartbeat_beat()
    assert WorkerHeartbeat.objects.get(worker_id=liveness.worker_id()).running_tasks == []
