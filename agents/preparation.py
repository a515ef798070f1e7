"""Preparing a task: the local helper's overhead work, done before any paid call.

`prepare_task` (on the `helper` queue) runs `task_prepare`, which
- claims the task (queued and not prepared -> preparing, a conditional update);
- asks the helper, outside any transaction:
  - for the prompt's complexity, when the role routes by tiers and the task has no hint
    (execution's routing then uses this reading instead of asking again);
  - for a title, when the task has none (saved at once);
  - for the text of each URL the task names (agents.fetch, then trafilatura): a page that
    cannot be fetched, is not HTML or text, or is too large is left out and the task says
    why; a long text is summarised down to ROSTER_PAGE_MAX_TOKENS;
  - for the thread's history, condensed when over budget (agents.threads);
- records every helper operation in the ledger at cost 0, priced at what the role's paid
  model would have charged (its *shadow model*: the first model the role's route calls);
- saves the conversation to send (`PreparedPrompt`) and the figures shown on the task,
  moves the task back to queued, prepared, and dispatches its execution (default queue)
  once that commits.

Running it twice is safe: only the claim's winner works, and a task that is prepared is
never claimed again. A preparation whose worker dies is requeued by the sweeper like a
running task (agents.liveness); the redo reuses the title and any summary already saved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agents.fetch import FetchError, page_fetch
from agents.helper import helper_extract_page, helper_summarize, helper_title
from agents.models import PreparedPrompt, RoleBinding, RoutingPolicy
from agents.providers.base import ChatMessage
from agents.redaction import redact
from agents.routing import ComplexityReading, RouteError, complexity_of_prompt, route_plan
from agents.runtime import binding_for_role
from agents.threads import History, history_prepare, summary_block
from billing.estimation import tokens_estimate
from billing.ledger import usage_record_helper
from billing.models import CatalogModel
from office.models import Task, TaskStatus, TaskTier
from office.services import task_dispatch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HelperWork:
    """One helper operation, as the ledger records it."""

    operation: str
    backend: str
    input_tokens: int
    output_tokens: int
    fallback_reason: str = ""


Recorder = Callable[[HelperWork], None]


@dataclass(frozen=True)
class PageText:
    """A fetched page's text, as the role will read it."""

    url: str
    text: str


@dataclass(frozen=True)
class _Prepared:
    messages: list[dict[str, str]]
    history: History
    page_notes: list[dict[str, Any]]
    complexity: ComplexityReading | None


def task_prepare(*, task_id: int, worker_id: str) -> str:
    """Prepare a queued task and dispatch its execution. Returns the task's status
    (queued once prepared; failed if preparing it raised).

    Safe to call twice for the same task: only the caller whose conditional update moves
    it from queued (unprepared) to preparing does any work.
    """
    claimed = Task.objects.filter(
        pk=task_id, status=TaskStatus.QUEUED, prepared_at__isnull=True
    ).update(
        status=TaskStatus.PREPARING,
        claimed_by=worker_id,
        started_at=timezone.now(),
        preparations=F("preparations") + 1,
    )
    if claimed != 1:
        status = Task.objects.filter(pk=task_id).values_list("status", flat=True).first()
        logger.info("task %s not claimed for preparation (status %s)", task_id, status)
        return status or "missing"

    task = Task.objects.select_related("role").get(pk=task_id)
    try:
        prepared = _prepare(task, worker_id)
    except Exception as exc:
        # A bug or a broken local setup: the task says so rather than waiting forever.
        logger.exception("task %s: preparation failed", task_id)
        _release(
            task,
            worker_id,
            status=TaskStatus.FAILED,
            error=redact(
                f"The local helper could not prepare this task: {type(exc).__name__}: {exc}",
                settings.ROSTER_HELPER_API_KEY,
            )[:4000],
            finished_at=timezone.now(),
        )
        return TaskStatus.FAILED
    return _save(task, worker_id, prepared)


def _prepare(task: Task, worker_id: str) -> _Prepared:
    binding = binding_for_role(role=task.role)
    complexity = _complexity(task, binding)
    record = _recorder(task, shadow_model=_shadow_model(task, binding, complexity))
    if complexity is not None:
        record(
            HelperWork(
                operation="classify_complexity",
                backend=complexity.backend,
                input_tokens=complexity.input_tokens,
                output_tokens=complexity.output_tokens,
                fallback_reason=complexity.fallback_reason,
            )
        )
    if not task.title:
        _title(task, worker_id, record)
    pages, notes = _pages(task, record)
    history = history_prepare(
        task=task,
        budget=settings.ROSTER_THREAD_HISTORY_TOKENS,
        ratio=settings.ROSTER_THREAD_COMPRESSION_RATIO,
    )
    for result in history.helper_results:
        record(_work_of(result))
    return _Prepared(
        messages=conversation_build(
            history=history, pages=pages, page_notes=notes, prompt=task.prompt
        ),
        history=history,
        page_notes=notes,
        complexity=complexity,
    )


# --- The helper's steps ---------------------------------------------------------------------


def _complexity(task: Task, binding: RoleBinding | None) -> ComplexityReading | None:
    """The prompt's complexity, only where routing will need it (tiered, no hint)."""
    if binding is None or binding.policy != RoutingPolicy.TIERED:
        return None
    if task.tier_hint in TaskTier.values:
        return None
    try:
        return complexity_of_prompt(task.prompt)
    except Exception:
        # Routing asks again at execution and uses the medium tier if that fails too.
        logger.exception("task %s: complexity classification failed", task.pk)
        return None


def _title(task: Task, worker_id: str, record: Recorder) -> None:
    try:
        result = helper_title(text=task.prompt)
    except Exception:
        logger.exception("task %s: no title written", task.pk)  # the page shows the prompt
        return
    record(_work_of(result))
    title = result.value[:200]
    # Saved at once, so a redone preparation does not write it again.
    Task.objects.filter(
        pk=task.pk, status=TaskStatus.PREPARING, claimed_by=worker_id, title=""
    ).update(title=title)
    task.title = title


def _pages(task: Task, record: Recorder) -> tuple[list[PageText], list[dict[str, Any]]]:
    """Fetch and extract each URL. Returns the texts to send and one note per URL."""
    pages: list[PageText] = []
    notes: list[dict[str, Any]] = []
    limit: int = settings.ROSTER_PAGE_MAX_TOKENS
    for url in list(task.urls or [])[: settings.ROSTER_TASK_MAX_URLS]:
        try:
            page = page_fetch(url=url)
        except FetchError as exc:
            notes.append(_note(url, included=False, note=f"Skipped: {exc.message}."))
            continue
        try:
            if page.is_html:
                extracted = helper_extract_page(html=page.text, url=page.final_url)
                record(_work_of(extracted))
                text = extracted.value.strip()
            else:
                text = page.text.strip()
            if not text:
                notes.append(_note(url, included=False, note="Skipped: the page has no text."))
                continue
            tokens = tokens_estimate(text)
            note = f"Included: {tokens:,} tokens of page text."
            if tokens > limit:
                shortened = helper_summarize(text=text, max_tokens=limit)
                record(_work_of(shortened))
                text = shortened.value
                note = (
                    f"Included, shortened by the helper from {tokens:,} to "
                    f"{tokens_estimate(text):,} tokens (ROSTER_PAGE_MAX_TOKENS)."
                )
        except Exception as exc:
            logger.exception("task %s: the text of %s could not be extracted", task.pk, url)
            notes.append(
                _note(
                    url,
                    included=False,
                    note=f"Skipped: its text could not be extracted ({type(exc).__name__}).",
                )
            )
            continue
        pages.append(PageText(url=page.final_url, text=text))
        notes.append(_note(url, included=True, note=note, tokens=tokens_estimate(text)))
    return pages, notes


def _note(url: str, *, included: bool, note: str, tokens: int = 0) -> dict[str, Any]:
    return {"url": url, "included": included, "note": note, "tokens": tokens}


def _work_of(result: Any) -> HelperWork:
    return HelperWork(
        operation=str(result.operation),
        backend=str(result.backend),
        input_tokens=int(result.input_tokens),
        output_tokens=int(result.output_tokens),
        fallback_reason=result.fallback_reason or "",
    )


# --- The conversation sent to the role ------------------------------------------------------


def conversation_build(
    *,
    history: History,
    pages: list[PageText],
    page_notes: list[dict[str, Any]],
    prompt: str,
) -> list[dict[str, str]]:
    """The messages after the system prompt, alternating user and assistant: the thread's
    earlier turns (the summary of older ones opening the first message), then one user
    message with the pages' text and notes on pages left out, then the prompt."""
    messages: list[dict[str, str]] = []
    opening = summary_block(history.summary) if history.summary is not None else ""
    for turn in history.turns:
        messages.append({"role": "user", "content": opening + turn.prompt})
        messages.append({"role": "assistant", "content": turn.answer})
        opening = ""
    messages.append({"role": "user", "content": opening + _pages_block(pages, page_notes) + prompt})
    return messages


def _pages_block(pages: list[PageText], notes: list[dict[str, Any]]) -> str:
    parts = [
        f"[Page {number}: {page.url} (its text, extracted by the office)]\n"
        f"{page.text}\n[End of page {number}]"
        for number, page in enumerate(pages, start=1)
    ]
    parts += [
        f"[Page skipped: {note['url']}. {note['note'].removeprefix('Skipped: ')}]"
        for note in notes
        if not note["included"]
    ]
    return "\n\n".join(parts) + "\n\n" if parts else ""


def prompt_messages(*, task: Task) -> tuple[ChatMessage, ...]:
    """The messages to send for a task after its system prompt: what preparation saved,
    or the prompt alone for a task that was never prepared (created directly, or queued
    before preparation existed)."""
    prepared = PreparedPrompt.objects.filter(task_id=task.pk).values_list("messages", flat=True)
    messages = prepared.first()
    if not messages:
        return (ChatMessage(role="user", content=task.prompt),)
    return tuple(ChatMessage(role=m["role"], content=m["content"]) for m in messages)


def prepared_classifier(*, task: Task) -> Callable[[str], ComplexityReading] | None:
    """A classifier for routing that answers with the reading preparation saved, or None
    (routing then asks the helper itself)."""
    reading = (
        PreparedPrompt.objects.filter(task_id=task.pk).values_list("complexity", flat=True).first()
    )
    if not reading:
        return None
    saved = ComplexityReading(**reading)
    return lambda _text: saved


# --- Money: the ledger's helper rows --------------------------------------------------------


def _shadow_model(
    task: Task, binding: RoleBinding | None, complexity: ComplexityReading | None
) -> CatalogModel | None:
    """The model a paid call for this task would use first: the bound model (single), the
    tier's model (tiered), the first of the chain (fallback), the cheap one (escalate).
    What the helper's tokens would have cost there is what it saved."""
    if binding is None:
        return None

    def classify(_text: str) -> ComplexityReading:
        if complexity is None:
            raise LookupError("no complexity reading")  # routing falls back to medium
        return complexity

    try:
        route = route_plan(task=task, binding=binding, classify=classify)
    except RouteError:
        return binding.model
    return route.candidates[0].model if route.candidates else binding.model


def _recorder(task: Task, *, shadow_model: CatalogModel | None) -> Recorder:
    def record(work: HelperWork) -> None:
        helper_usage_record(task=task, work=work, shadow_model=shadow_model)

    return record


def helper_usage_record(*, task: Task, work: HelperWork, shadow_model: CatalogModel | None) -> None:
    """Write one helper operation to the ledger: cost 0, priced at `shadow_model`."""
    usage_record_helper(
        task=task,
        operation=work.operation,
        backend=work.backend,
        input_tokens=work.input_tokens,
        output_tokens=work.output_tokens,
        shadow_model=shadow_model,
        fallback_reason=work.fallback_reason,
    )


# --- Saving -------------------------------------------------------------------------------


def _save(task: Task, worker_id: str, prepared: _Prepared) -> str:
    """Store what was prepared and hand the task to execution, if this worker still holds
    it. Returns the task's status."""
    history = prepared.history
    with transaction.atomic():
        released = _release(
            task,
            worker_id,
            status=TaskStatus.QUEUED,
            prepared_at=timezone.now(),
            page_notes=prepared.page_notes,
            history_tokens=history.tokens,
            history_tokens_saved=history.tokens_saved,
            history_summarized_turns=history.summarized_turns,
        )
        if not released:
            logger.warning("task %s was taken over while being prepared here", task.pk)
            return Task.objects.filter(pk=task.pk).values_list("status", flat=True).first() or ""
        PreparedPrompt.objects.update_or_create(
            task_id=task.pk,
            defaults={
                "messages": prepared.messages,
                "summary": history.summary,
                "complexity": asdict(prepared.complexity) if prepared.complexity else None,
            },
        )
        transaction.on_commit(lambda: task_dispatch(task_id=task.pk))
    return TaskStatus.QUEUED


def _release(task: Task, worker_id: str, *, status: str, **changes: Any) -> bool:
    """Move the task out of preparing, if this worker still holds it."""
    return (
        Task.objects.filter(pk=task.pk, status=TaskStatus.PREPARING, claimed_by=worker_id).update(
            status=status, claimed_by="", **changes
        )
        == 1
    )
