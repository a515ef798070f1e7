"""Threads: a follow-up sends its thread's earlier turns, and the local helper condenses
the older ones into a summary that is computed once and reused by later turns."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from agents import liveness, threads
from agents.execution import task_execute
from agents.helper import helper_compress_history
from agents.models import PreparedPrompt, RoleBinding, ThreadSummary
from agents.preparation import conversation_build, task_prepare
from agents.sandbox.behaviour import count_tokens
from agents.services import credential_create
from agents.threads import History, history_prepare, thread_turns
from billing.estimation import prompt_tokens_estimate
from billing.models import Usage
from office.models import Role, Task, TaskStatus
from office.services import task_submit
from tests.canary import SANDBOX_KEY
from tests.factories import RoleFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.django_db

RATIO = 0.4
ROOT = Path(__file__).resolve().parents[2]


def prompt_of(number: int) -> str:
    return f"Turn {number:02d}: note that the harbour crane {number:02d} needs a new cable."


def answer_of(number: int) -> str:
    return f"Noted: crane {number:02d} gets a new cable before the storm season starts."


TURN_TOKENS = prompt_tokens_estimate(prompt_of(1), answer_of(1))


def follow_up(parent: Task | None, number: int, **fields: object) -> Task:
    """A finished turn of a thread, as task_submit and the worker would leave it."""
    defaults: dict[str, object] = {
        "role": parent.role if parent else RoleFactory(),
        "created_by": parent.created_by if parent else UserFactory(),
        "prompt": prompt_of(number),
        "status": TaskStatus.DONE,
        "result": answer_of(number),
        "follow_up_of": parent,
        "thread_root_id": parent.thread_id if parent else None,
        "thread_turn": parent.thread_turn + 1 if parent else 1,
    }
    return TaskFactory(**{**defaults, **fields})


def thread_of(turns: int) -> list[Task]:
    tasks: list[Task] = []
    for number in range(1, turns + 1):
        tasks.append(follow_up(tasks[-1] if tasks else None, number))
    return tasks


def test_the_history_is_the_chain_of_earlier_turns_not_other_branches():
    first, second, third = thread_of(3)
    follow_up(second, 3, prompt="A sibling branch of the third turn.")
    fourth = follow_up(third, 4, status=TaskStatus.QUEUED, result="")

    turns = thread_turns(task=fourth)

    assert [(t.number, t.prompt, t.answer) for t in turns] == [
        (n, prompt_of(n), answer_of(n)) for n in (1, 2, 3)
    ]
    assert thread_turns(task=first) == []


def test_a_short_history_is_sent_verbatim_in_alternating_messages():
    *_, last = thread_of(3)
    task = follow_up(last, 4, status=TaskStatus.QUEUED, result="", prompt="And crane 05?")

    history = history_prepare(task=task, budget=10_000, ratio=RATIO)

    assert history.summary is None
    assert history.tokens == history.uncompressed_tokens == 3 * TURN_TOKENS
    assert history.tokens_saved == 0
    assert history.helper_results == ()
    messages = conversation_build(history=history, pages=[], page_notes=[], prompt=task.prompt)
    assert messages == [
        {"role": "user", "content": prompt_of(1)},
        {"role": "assistant", "content": answer_of(1)},
        {"role": "user", "content": prompt_of(2)},
        {"role": "assistant", "content": answer_of(2)},
        {"role": "user", "content": prompt_of(3)},
        {"role": "assistant", "content": answer_of(3)},
        {"role": "user", "content": "And crane 05?"},
    ]


def test_a_turn_without_an_answer_is_sent_as_such():
    first = follow_up(None, 1, status=TaskStatus.FAILED, result="", error="HTTP 500 (gave up)")
    task = follow_up(first, 2, status=TaskStatus.QUEUED, result="")

    [turn] = thread_turns(task=task)

    assert turn.answer == "(No answer: the task ended failed: HTTP 500 (gave up).)"


def test_the_31st_turn_sends_its_history_compressed_and_the_32nd_reuses_the_summary(
    monkeypatch,
):
    """The acceptance test: 30 earlier turns are over the budget; what the 31st sends of
    them is at most RATIO of the uncompressed history, and the summary is computed once."""
    budget = 30 * TURN_TOKENS - 1  # 29 turns fit, 30 do not
    calls = []
    monkeypatch.setattr(
        threads,
        "helper_compress_history",
        lambda **kwargs: calls.append(kwargs) or helper_compress_history(**kwargs),
    )
    tasks = thread_of(30)
    below = follow_up(tasks[-2], 30, status=TaskStatus.QUEUED, result="")
    assert history_prepare(task=below, budget=budget, ratio=RATIO).summary is None

    turn_31 = follow_up(tasks[-1], 31, status=TaskStatus.QUEUED, result="")
    history = history_prepare(task=turn_31, budget=budget, ratio=RATIO)

    uncompressed = 30 * TURN_TOKENS
    assert history.uncompressed_tokens == uncompressed
    assert history.tokens <= RATIO * uncompressed
    assert history.tokens_saved == uncompressed - history.tokens
    assert history.tokens_saved >= (1 - RATIO) * uncompressed
    summary = history.summary
    assert summary is not None
    assert (summary.turns, summary.through_task_id) == (
        30 - len(history.turns),
        tasks[29 - len(history.turns)].pk,
    )
    assert len(history.turns) >= 1  # the latest turns stay verbatim
    assert [t.number for t in history.turns] == list(range(summary.turns + 1, 31))
    assert summary.source_tokens == summary.turns * TURN_TOKENS
    assert len(calls) == 1
    assert len(history.helper_results) == 1
    assert history.helper_results[0].operation == "compress_history"

    # The 31st turn finishes; the 32nd reuses the summary as it is.
    Task.objects.filter(pk=turn_31.pk).update(status=TaskStatus.DONE, result=answer_of(31))
    turn_31.refresh_from_db()
    turn_32 = follow_up(turn_31, 32, status=TaskStatus.QUEUED, result="")
    again = history_prepare(task=turn_32, budget=budget, ratio=RATIO)

    assert again.summary == summary
    assert again.helper_results == ()
    assert len(calls) == 1
    assert ThreadSummary.objects.count() == 1
    assert [t.number for t in again.turns] == list(range(summary.turns + 1, 32))
    assert again.tokens <= budget


def test_a_summary_outgrown_is_extended_from_itself_not_rebuilt_from_every_turn(monkeypatch):
    budget = 10 * TURN_TOKENS
    inputs = []
    monkeypatch.setattr(
        threads,
        "helper_compress_history",
        lambda **kwargs: inputs.append(kwargs["turns"]) or helper_compress_history(**kwargs),
    )
    tasks = [follow_up(None, 1)]
    summaries: list[ThreadSummary] = []
    for number in range(2, 41):
        task = follow_up(tasks[-1], number, status=TaskStatus.QUEUED, result="")
        history = history_prepare(task=task, budget=budget, ratio=RATIO)
        assert history.tokens <= budget
        if history.helper_results:
            summaries.append(history.summary)
        Task.objects.filter(pk=task.pk).update(status=TaskStatus.DONE, result=answer_of(number))
        task.refresh_from_db()
        tasks.append(task)

    assert len(summaries) >= 3
    assert len(inputs) == len(summaries) == ThreadSummary.objects.count()
    for earlier, later, turns in zip(summaries, summaries[1:], inputs[1:], strict=False):
        assert later.extends == earlier
        assert later.turns > earlier.turns
        # The input: the earlier summary's lines, then only the turns after it.
        folded = 2 * (later.turns - earlier.turns)
        assert len(turns) == len(earlier.text.splitlines()) + folded
        assert prompt_of(1) not in [turn.content for turn in turns[-folded:]]


def test_branches_of_a_thread_share_the_summary_of_their_common_turns():
    budget = 10 * TURN_TOKENS - 1
    tasks = thread_of(10)
    branch_a = follow_up(tasks[-1], 11, status=TaskStatus.QUEUED, result="")
    branch_b = follow_up(tasks[-1], 11, status=TaskStatus.QUEUED, result="", prompt="Other way")

    first = history_prepare(task=branch_a, budget=budget, ratio=RATIO)
    second = history_prepare(task=branch_b, budget=budget, ratio=RATIO)

    assert first.summary is not None
    assert second.summary == first.summary
    assert second.helper_results == ()


# --- Through preparation and execution, against the sandbox ---------------------------------


@pytest.fixture
def role(sandbox) -> Role:  # type: ignore[no-untyped-def]
    from billing.catalog import catalog_parse, catalog_sync
    from billing.models import CatalogModel

    catalog_sync(
        entries=catalog_parse(
            {
                "data": [
                    {
                        "id": "deepseek/deepseek-v4-pro",
                        "name": "DeepSeek V4 Pro",
                        "pricing": {"prompt": "0.000000435", "completion": "0.00000087"},
                    }
                ]
            }
        )
    )
    role = Role.objects.create(slug="scribe", name="Scribe", system_prompt="Keep notes.")
    credential = credential_create(
        label="scribe-cred",
        provider="openrouter",
        base_url=f"{sandbox.url}/api/v1",
        raw_secret=SANDBOX_KEY,
    )
    RoleBinding.objects.create(
        role=role,
        model=CatalogModel.objects.get(slug="deepseek/deepseek-v4-pro"),
        credential=credential,
        max_tokens=100,
    )
    return role


def test_a_thread_run_turn_by_turn_records_its_re_read_tax_and_savings(
    role, sandbox, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.ROSTER_THREAD_HISTORY_TOKENS = 300
    settings.ROSTER_THREAD_COMPRESSION_RATIO = RATIO
    monkeypatch.setattr(
        "office.services.celery_app.send_task", lambda name, args, countdown=None: None
    )
    person = UserFactory()
    previous = None
    tasks = []
    for number in range(1, 15):
        with django_capture_on_commit_callbacks(execute=True):
            task = task_submit(
                role=role, prompt=prompt_of(number), created_by=person, follow_up_of=previous
            )
            task_prepare(task_id=task.pk, worker_id=liveness.worker_id())
        assert task_execute(task_id=task.pk, worker_id=liveness.worker_id()) == TaskStatus.DONE
        task.refresh_from_db()
        tasks.append(task)
        previous = task

    for number, task in enumerate(tasks, start=1):
        assert task.thread_turn == number
        assert task.thread_id == tasks[0].pk
        assert task.history_tokens <= settings.ROSTER_THREAD_HISTORY_TOKENS
        messages = PreparedPrompt.objects.get(task=task).messages
        # What the provider was sent: system, the history, the prompt (4 tokens apiece).
        [entry] = sandbox.requests(
            call_id=Usage.objects.get(task=task, helper_operation="").call_id
        )
        history_sent = entry["input_tokens"] - (count_tokens("Keep notes.") + 4)
        history_sent -= count_tokens(task.prompt) + 4
        assert abs(history_sent - task.history_tokens) <= len(messages)  # rounding per message
        if number == 1:
            assert (task.history_tokens, task.history_tokens_saved) == (0, 0)
    compressed = [task for task in tasks if task.history_summarized_turns]
    assert compressed
    for task in compressed:
        assert task.history_tokens_saved > 0
        assert (
            PreparedPrompt.objects.get(task=task)
            .messages[0]["content"]
            .startswith(f"[Summary of turns 1-{task.history_summarized_turns} of this conversation")
        )
    assert ThreadSummary.objects.count() < len(compressed)  # reused, not rewritten each turn
    # Each summary was computed once: one helper ledger row apiece, at cost 0.
    compressions = Usage.objects.filter(helper_operation="compress_history")
    assert compressions.count() == ThreadSummary.objects.count()
    assert {row.cost for row in compressions} == {0}
    assert all(row.shadow_cost > 0 for row in compressions)


def test_history_is_empty_for_a_task_that_follows_nothing_up():
    assert history_prepare(task=TaskFactory(), budget=10, ratio=RATIO) == History()


# --- Settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROSTER_THREAD_COMPRESSION_RATIO": "1"}, "must be a number between 0 and 1"),
        ({"ROSTER_THREAD_COMPRESSION_RATIO": "half"}, "must be a number"),
        ({"ROSTER_THREAD_HISTORY_TOKENS": "0"}, "ROSTER_THREAD_HISTORY_TOKENS must be"),
        ({"ROSTER_TASK_MAX_URLS": "-2"}, "ROSTER_TASK_MAX_URLS must be a whole number > 0"),
        ({"ROSTER_PAGE_MAX_TOKENS": "4k"}, "ROSTER_PAGE_MAX_TOKENS must be a whole number"),
    ],
)
def test_bad_thread_and_page_settings_fail_loudly(monkeypatch, env, message) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        runpy.run_path(str(ROOT / "office" / "settings.py"))


def test_thread_settings_defaults_and_queues(monkeypatch) -> None:
    namespace = runpy.run_path(str(ROOT / "office" / "settings.py"))

    assert namespace["ROSTER_THREAD_HISTORY_TOKENS"] == 4000
    assert namespace["ROSTER_THREAD_COMPRESSION_RATIO"] == 0.5
    assert (namespace["ROSTER_TASK_MAX_URLS"], namespace["ROSTER_PAGE_MAX_TOKENS"]) == (5, 4000)
    # Preparation goes to the helper queue; a worker without -Q consumes both queues.
    assert namespace["CELERY_TASK_ROUTES"] == {"agents.tasks.prepare_task": {"queue": "helper"}}
    assert [q.name for q in namespace["CELERY_TASK_QUEUES"]] == ["celery", "helper"]
