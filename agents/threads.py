"""Threads: the earlier turns a follow-up sends with its prompt, condensed when long.

A follow-up (`Task.follow_up_of`) continues a thread; its history is the chain of tasks
it follows, first to last, each one turn: the task's prompt and its answer. The history
goes to the provider verbatim while it fits ROSTER_THREAD_HISTORY_TOKENS (estimated,
billing.estimation's rule). Past that, the older turns are replaced by a summary the
local helper writes (`ThreadSummary`), so that what is sent comes to at most
ROSTER_THREAD_COMPRESSION_RATIO of the budget: the summary plus the most recent turns
that fit in half of that.

A summary is written once and reused: later turns send it, plus the turns after it,
until that again exceeds the budget; the next summary is then built from this one and
the turns after it (incrementally), never from the whole thread again. The margin
between the ratio and the budget is what lets a summary serve many turns.

Summaries are keyed by the last task they cover, so branches of a thread (two
follow-ups of the same task) share the summaries of their common turns.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.db.models import Q

from agents.helper import HelperResult, Turn, helper_compress_history
from agents.models import ThreadSummary
from billing.estimation import prompt_tokens_estimate, tokens_estimate
from office.models import Task, TaskStatus

logger = logging.getLogger(__name__)

SUMMARY_LINE = re.compile(r"^(User|Assistant): (.+)$")
# How an earlier summary reads as one turn of the input to the next summary, when its
# lines are not the builtin's "User: ..." / "Assistant: ..." lines (a local model's prose).
EARLIER_SUMMARY_ROLE = "summary of the earlier conversation"


@dataclass(frozen=True)
class ThreadTurn:
    """One earlier task of the thread: what was asked and what came back."""

    task_id: int
    number: int  # position in the thread, 1 for its first task
    prompt: str
    answer: str

    @property
    def tokens(self) -> int:
        """Estimated tokens of the turn sent verbatim: two messages."""
        return prompt_tokens_estimate(self.prompt, self.answer)


@dataclass(frozen=True)
class History:
    """What a task sends of its thread: a summary of the older turns (or none) and the
    turns after it, verbatim.

    `tokens` is the estimate of what that adds to the request (the re-read tax);
    `uncompressed_tokens` what the turns would add verbatim; `helper_results` the helper
    work done for this task (a new summary), to be recorded in the ledger.
    """

    summary: ThreadSummary | None = None
    turns: tuple[ThreadTurn, ...] = ()
    tokens: int = 0
    uncompressed_tokens: int = 0
    helper_results: tuple[HelperResult[str], ...] = field(default_factory=tuple)

    @property
    def summarized_turns(self) -> int:
        return self.summary.turns if self.summary is not None else 0

    @property
    def tokens_saved(self) -> int:
        return max(0, self.uncompressed_tokens - self.tokens)


def thread_turns(*, task: Task) -> list[ThreadTurn]:
    """The turns before `task` in its thread, first to last ([] for a task that follows
    nothing up)."""
    if task.follow_up_of_id is None:
        return []
    root = task.thread_root_id or task.follow_up_of_id
    rows = {
        row["pk"]: row
        for row in Task.objects.filter(
            Q(pk=root) | Q(thread_root_id=root), thread_turn__lt=task.thread_turn
        ).values("pk", "follow_up_of_id", "prompt", "result", "error", "status", "thread_turn")
    }
    chain: list[ThreadTurn] = []
    current: int | None = task.follow_up_of_id
    while current is not None and current in rows:
        row = rows[current]
        chain.append(
            ThreadTurn(
                task_id=row["pk"],
                number=row["thread_turn"],
                prompt=row["prompt"],
                answer=_answer_of(row),
            )
        )
        current = row["follow_up_of_id"]
    chain.reverse()
    return chain


def _answer_of(row: dict[str, object]) -> str:
    result = str(row["result"] or "").strip()
    if result:
        return result
    # An assistant message is never empty (providers refuse one), and the model should
    # know the earlier request got no answer.
    status = TaskStatus(str(row["status"])).label.lower()
    error = str(row["error"] or "").strip()
    return f"(No answer: the task ended {status}{f': {error}' if error else ''}.)"


def summary_block(summary: ThreadSummary) -> str:
    """The summary as it opens the first message sent after it (ends with a blank line)."""
    return (
        f"[Summary of turns 1-{summary.turns} of this conversation, written by the office's "
        f"local helper]\n{summary.text}\n[End of summary]\n\n"
    )


def _frame_tokens(turns: int) -> int:
    """Tokens the summary block adds around the summary text (an upper bound)."""
    empty = ThreadSummary(turns=turns, text="")
    return tokens_estimate(summary_block(empty)) + 1


def _sent_tokens(summary: ThreadSummary | None, turns: Sequence[ThreadTurn]) -> int:
    block = tokens_estimate(summary_block(summary)) if summary is not None else 0
    return block + sum(turn.tokens for turn in turns)


def history_prepare(*, task: Task, budget: int, ratio: float) -> History:
    """Return what `task` sends of its thread, writing a new summary when the history
    (with the latest summary it can reuse) exceeds `budget` tokens.

    The new summary is built so that the history comes to at most `ratio` x `budget`
    tokens (estimated): the most recent turns that fit in half of that stay verbatim.
    """
    turns = thread_turns(task=task)
    if not turns:
        return History()
    uncompressed = sum(turn.tokens for turn in turns)
    by_task = {turn.task_id: turn for turn in turns}
    summary = ThreadSummary.objects.filter(through_task_id__in=by_task).order_by("-turns").first()
    after = _turns_after(turns, summary)
    sent = _sent_tokens(summary, after)
    if sent <= budget:
        return History(
            summary=summary, turns=tuple(after), tokens=sent, uncompressed_tokens=uncompressed
        )

    target = max(1, int(budget * ratio))
    keep: list[ThreadTurn] = []
    kept_tokens = 0
    for turn in reversed(after):
        if kept_tokens + turn.tokens > target // 2:
            break
        keep.insert(0, turn)
        kept_tokens += turn.tokens
    fold = after[: len(after) - len(keep)]
    if not fold:
        # Only when an earlier summary alone outgrows a budget lowered since it was
        # written: it is sent as it is rather than summarised again.
        return History(
            summary=summary, turns=tuple(after), tokens=sent, uncompressed_tokens=uncompressed
        )
    last = fold[-1]
    max_tokens = max(1, target - kept_tokens - _frame_tokens(last.number))
    result = helper_compress_history(turns=_summary_input(summary, fold), max_tokens=max_tokens)
    new_summary = _summary_save(
        previous=summary,
        through=last,
        result=result,
        source_tokens=sum(turn.tokens for turn in turns if turn.number <= last.number),
    )
    logger.info(
        "task %s: turns 1-%s of its thread summarised in %s tokens (history %s -> %s)",
        task.pk,
        last.number,
        new_summary.tokens,
        uncompressed,
        _sent_tokens(new_summary, keep),
    )
    return History(
        summary=new_summary,
        turns=tuple(keep),
        tokens=_sent_tokens(new_summary, keep),
        uncompressed_tokens=uncompressed,
        helper_results=(result,),
    )


def _turns_after(turns: list[ThreadTurn], summary: ThreadSummary | None) -> list[ThreadTurn]:
    if summary is None:
        return turns
    return [turn for turn in turns if turn.number > summary.turns]


def _summary_input(previous: ThreadSummary | None, fold: Sequence[ThreadTurn]) -> list[Turn]:
    """The turns the next summary condenses: the previous summary's lines (as the turns
    they summarise), then the turns after it."""
    turns: list[Turn] = []
    if previous is not None:
        lines = [SUMMARY_LINE.match(line) for line in previous.text.splitlines() if line.strip()]
        if lines and all(lines):
            turns += [Turn(role=m.group(1).lower(), content=m.group(2)) for m in lines if m]
        else:
            turns.append(Turn(role=EARLIER_SUMMARY_ROLE, content=previous.text))
    for turn in fold:
        turns += [
            Turn(role="user", content=turn.prompt),
            Turn(role="assistant", content=turn.answer),
        ]
    return turns


def _summary_save(
    *,
    previous: ThreadSummary | None,
    through: ThreadTurn,
    result: HelperResult[str],
    source_tokens: int,
) -> ThreadSummary:
    """Store the summary through `through`; if another worker stored one meanwhile (two
    branches of a thread at once), that one is kept and returned."""
    try:
        with transaction.atomic():
            return ThreadSummary.objects.create(
                through_task_id=through.task_id,
                turns=through.number,
                text=result.value,
                tokens=tokens_estimate(result.value),
                source_tokens=source_tokens,
                extends=previous,
                backend=result.backend,
                fallback_reason=result.fallback_reason,
            )
    except IntegrityError:
        return ThreadSummary.objects.get(through_task_id=through.task_id)
