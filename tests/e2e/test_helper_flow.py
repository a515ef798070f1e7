"""The local helper's preparation end to end: tasks go through a real worker (both queues)
to the sandbox provider over loopback. The role reads a page's text, never its HTML; pages
that cannot be read are skipped and the task says why; a 30-turn thread's 31st task sends
its history compressed, and the summary is computed once and reused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.models import PreparedPrompt, ThreadSummary
from agents.sandbox.behaviour import Prompt, Turn, answer_text, count_tokens, prompt_digest
from agents.sandbox.pages import ARTICLE_PARAGRAPHS, BOILERPLATE_FOOTER
from billing.estimation import prompt_tokens_estimate
from billing.models import Usage
from office.models import Task, TaskStatus
from office.services import task_submit
from tests.e2e.conftest import bind_role
from tests.e2e.test_task_flow import wait_for_terminal
from tests.factories import UserFactory
from tests.processes import OfficeProcess, start_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MODEL = "deepseek/deepseek-v4-pro"
SYSTEM = "You are a test role."
RATIO = 0.4
MAX_PAGE_BYTES = 64 * 1024


def prompt_of(number: int) -> str:
    """Twelve words of fixed length: the sandbox's answer (which repeats the first twelve
    words) is then as long on every turn, so the history grows by the same tokens a turn."""
    return f"Turn {number:02d}: note that the harbour crane {number:02d} needs a new cable."


def answer_shape(prompt: str) -> str:
    probe = Prompt(model=MODEL, system=SYSTEM, turns=(Turn(role="user", text=prompt),))
    return answer_text(probe, digest="0" * 64)


TURN_TOKENS = prompt_tokens_estimate(prompt_of(1), answer_shape(prompt_of(1)))
# 29 earlier turns fit the budget, 30 do not: the 31st task is the first to compress.
HISTORY_BUDGET = 30 * TURN_TOKENS - 1


@pytest.fixture(scope="module")
def helper_worker(
    django_db_setup: None, django_db_blocker: object, clean_broker: None, process_log_dir: Path
) -> Iterator[OfficeProcess]:
    """A worker on both queues that may fetch the sandbox's pages (loopback)."""
    worker = start_worker(
        process_log_dir,
        concurrency=4,
        env={
            "ROSTER_FETCH_ALLOW": "127.0.0.1",
            "ROSTER_FETCH_MAX_BYTES": str(MAX_PAGE_BYTES),
            "ROSTER_THREAD_HISTORY_TOKENS": str(HISTORY_BUDGET),
            "ROSTER_THREAD_COMPRESSION_RATIO": str(RATIO),
        },
    )
    yield worker
    worker.stop()


@pytest.fixture
def role(sandbox, catalog):  # type: ignore[no-untyped-def]
    return bind_role(
        slug="reader",
        model=catalog[MODEL],
        provider="openrouter",
        base_url=sandbox.url + "/api/v1",
        system_prompt=SYSTEM,
    )


def sent_prompt(task: Task) -> Prompt:
    """The request preparation assembled for the task, as the sandbox reads one."""
    messages = PreparedPrompt.objects.get(task=task).messages
    turns = tuple(Turn(role=m["role"], text=m["content"]) for m in messages)
    return Prompt(model=MODEL, system=SYSTEM, turns=turns)


def assert_provider_got(task: Task, prompt: Prompt, sandbox) -> dict:  # type: ignore[no-untyped-def]
    """The answer carries the digest of what the provider read: exactly `prompt`.
    Returns the sandbox's log entry of the call."""
    assert task.result == answer_text(prompt, digest=prompt_digest(prompt))
    [call] = Usage.objects.filter(task=task, helper_operation="")
    [entry] = sandbox.requests(call_id=call.call_id)
    assert call.input_tokens == entry["input_tokens"]
    return entry


def test_the_role_reads_the_page_text_and_is_told_of_pages_skipped(helper_worker, sandbox, role):
    article = f"{sandbox.url}/_sandbox/pages/article"
    binary = f"{sandbox.url}/_sandbox/pages/binary"
    big = f"{sandbox.url}/_sandbox/pages/big?kib=256"
    metadata = "http://169.254.169.254/latest/meta-data/"
    private = "http://10.20.30.40/wiki"
    task = task_submit(
        role=role,
        prompt="What should visitors do at the tide pools?",
        urls=[article, binary, big, metadata, private],
    )

    wait_for_terminal(task)

    assert task.status == TaskStatus.DONE, task.error
    assert task.title  # written by the helper
    notes = {note["url"]: note for note in task.page_notes}
    assert notes[article]["included"] is True
    assert "application/octet-stream, not a web page" in notes[binary]["note"]
    assert f"larger than {MAX_PAGE_BYTES} bytes" in notes[big]["note"]
    assert "link-local address" in notes[metadata]["note"]
    assert "private address" in notes[private]["note"]
    for url in (binary, big, metadata, private):
        assert notes[url]["included"] is False
        assert notes[url]["note"].startswith("Skipped: ")
    for url in (metadata, private):  # refused before any connection, and told how to allow
        assert "Only public addresses are fetched unless ROSTER_FETCH_ALLOW" in notes[url]["note"]

    prompt = sent_prompt(task)
    [message] = prompt.turns
    for paragraph in ARTICLE_PARAGRAPHS:
        assert paragraph in message.text
    for html in ("<p>", "<html", "<script", "window.analytics", BOILERPLATE_FOOTER):
        assert html not in message.text
    assert f"[Page 1: {article} (its text, extracted by the office)]" in message.text
    assert f"[Page skipped: {binary}." in message.text
    assert_provider_got(task, prompt, sandbox)

    helper_rows = Usage.objects.filter(task=task).exclude(helper_operation="")
    assert set(helper_rows.values_list("helper_operation", flat=True)) == {"title", "extract_page"}
    assert {row.cost for row in helper_rows} == {0}
    assert all(row.shadow_model.slug == MODEL for row in helper_rows)


def test_a_30_turn_threads_31st_task_sends_compressed_history_and_the_summary_is_reused(
    helper_worker, sandbox, role
):
    """The acceptance test of compression, through the worker: each turn is a task
    following up the one before."""
    person = UserFactory()
    tasks: list[Task] = []
    for number in range(1, 33):
        task = task_submit(
            role=role,
            prompt=prompt_of(number),
            created_by=person,
            follow_up_of=tasks[-1] if tasks else None,
        )
        wait_for_terminal(task)
        assert task.status == TaskStatus.DONE, (number, task.error)
        tasks.append(task)
    for number, task in enumerate(tasks[:30], start=1):
        assert task.thread_turn == number
        assert task.history_tokens == (number - 1) * TURN_TOKENS  # verbatim, no summary
        assert task.history_summarized_turns == 0

    turn_31, turn_32 = tasks[30], tasks[31]
    uncompressed = 30 * TURN_TOKENS
    assert turn_31.history_summarized_turns > 0
    assert turn_31.history_tokens <= RATIO * uncompressed
    assert turn_31.history_tokens_saved == uncompressed - turn_31.history_tokens
    # What the provider read (its own token count): the system prompt, the history and
    # the prompt; the history part is at most RATIO of the uncompressed one.
    prompt = sent_prompt(turn_31)
    entry = assert_provider_got(turn_31, prompt, sandbox)
    fixed = count_tokens(SYSTEM) + 4 + count_tokens(turn_31.prompt) + 4
    history_read = entry["input_tokens"] - fixed
    assert history_read <= RATIO * uncompressed + 1  # +1: one rounding where the summary joins
    assert uncompressed - history_read >= (1 - RATIO) * uncompressed - 1
    assert prompt.turns[0].text.startswith(
        f"[Summary of turns 1-{turn_31.history_summarized_turns} of this conversation"
    )
    assert prompt.turns[-1].text == turn_31.prompt

    # Computed once: one summary, one helper ledger row, and the 32nd turn reuses it.
    [summary] = ThreadSummary.objects.all()
    assert summary.turns == turn_31.history_summarized_turns
    assert PreparedPrompt.objects.get(task=turn_31).summary == summary
    assert PreparedPrompt.objects.get(task=turn_32).summary == summary
    compressions = Usage.objects.filter(helper_operation="compress_history")
    assert [row.task_id for row in compressions] == [turn_31.pk]
    assert compressions[0].cost == 0
    assert turn_32.history_summarized_turns == summary.turns
    assert turn_32.history_tokens == turn_31.history_tokens + TURN_TOKENS
    assert_provider_got(turn_32, sent_prompt(turn_32), sandbox)
