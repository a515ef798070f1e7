"""The helper's five operations: the configured backend first, builtin when it fails.

Each operation has one prompt, used both to ask a local model and to count what a paid
model would have read to do the same work (the input tokens the helper absorbed), so the
two backends report comparable figures.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings

from agents.helper.complexity import complexity_score
from agents.helper.extractive import (
    check_budget,
    history_compress,
    summary_extract,
    text_trim,
    transcript_render,
)
from agents.helper.interface import (
    Backend,
    Complexity,
    ComplexityLevel,
    HelperResult,
    Operation,
    Turn,
)
from agents.helper.local_model import local_model_complete
from agents.helper.pages import page_text_extract
from agents.helper.titles import title_extract, title_tidy
from agents.providers.base import ProviderError
from agents.redaction import redact
from billing.estimation import prompt_tokens_estimate, tokens_estimate

logger = logging.getLogger(__name__)

T = TypeVar("T")

TITLE_SYSTEM = (
    "Write a title for the user's text: at most 8 words, no quotes, no final period. "
    "Reply with the title only."
)
SUMMARY_SYSTEM = (
    "Summarize the user's text in at most {words} words. Keep names, numbers, decisions "
    "and requests. Reply with the summary only."
)
HISTORY_SYSTEM = (
    "The user's message is the earlier part of a conversation between a user and an "
    "assistant. Summarize it in at most {words} words so that the conversation can go on "
    "without it: keep what the user asked for, decisions, facts, names, numbers and open "
    "questions. Reply with the summary only."
)
# Never sent (pages are always extracted in-process); it prices what a paid model would
# have read to do the same.
PAGE_SYSTEM = "Extract the main text of this web page, without navigation or boilerplate."
COMPLEXITY_SYSTEM = (
    "Rate how demanding the user's request is for a language model: low (a short, routine "
    "answer), medium, or high (code, multi-step reasoning, design). Reply with only a JSON "
    'object: {"level": "low" | "medium" | "high", "score": 0-100}.'
)
# Room for a short answer (a few tokens), with slack for models that add a preamble.
TITLE_MAX_TOKENS = 64
COMPLEXITY_MAX_TOKENS = 64
WORDS_PER_TOKEN = 0.75  # English prose; a model is told its length in words
JSON_OBJECT = re.compile(r"\{[^{}]*\}")
LEVELS = frozenset(level.value for level in ComplexityLevel)


class UnusableAnswer(ValueError):
    """A local model answered, but not in the shape the operation needs."""


@dataclass(frozen=True)
class _LocalAsk:
    """What the local model is sent: the input may be cut down to fit its context."""

    system: str
    user: str
    max_tokens: int


def helper_title(*, text: str) -> HelperResult[str]:
    """Return a short title for text (never empty, at most 8 words and 80 characters)."""
    ask = None
    if text.strip():
        ask = _LocalAsk(system=TITLE_SYSTEM, user=_fit_input(text), max_tokens=TITLE_MAX_TOKENS)
    return _helper_run(
        operation=Operation.TITLE,
        paid_prompt=(TITLE_SYSTEM, text),
        ask=ask,
        read=_title_read,
        builtin=lambda: title_extract(text=text),
        written=str,
    )


def helper_summarize(*, text: str, max_tokens: int) -> HelperResult[str]:
    """Return a summary of text within max_tokens (estimated, billing.estimation's rule).

    A text that already fits is returned as it is, without asking a local model.
    Raises ValueError when max_tokens < 1.
    """
    check_budget(max_tokens)
    system = SUMMARY_SYSTEM.format(words=_words(max_tokens))
    ask = None
    if tokens_estimate(text.strip()) > max_tokens:
        ask = _LocalAsk(system=system, user=_fit_input(text), max_tokens=max_tokens)
    return _helper_run(
        operation=Operation.SUMMARIZE,
        paid_prompt=(system, text),
        ask=ask,
        read=lambda answer: _summary_read(answer, max_tokens),
        builtin=lambda: summary_extract(text=text, max_tokens=max_tokens),
        written=str,
    )


def helper_compress_history(*, turns: Sequence[Turn], max_tokens: int) -> HelperResult[str]:
    """Return the thread condensed to max_tokens (estimated), to stand in for its turns.

    The builtin answer is lines "User: ..." / "Assistant: ..." of the turns' most telling
    sentences; a thread that already fits is returned whole without asking a local model.
    Raises ValueError when max_tokens < 1.
    """
    check_budget(max_tokens)
    system = HISTORY_SYSTEM.format(words=_words(max_tokens))
    transcript = transcript_render(turns=turns)
    ask = None
    if tokens_estimate(transcript) > max_tokens:
        limit: int = settings.ROSTER_HELPER_MAX_INPUT_TOKENS
        user = transcript
        if tokens_estimate(transcript) > limit:
            user = history_compress(turns=turns, max_tokens=limit)
        ask = _LocalAsk(system=system, user=user, max_tokens=max_tokens)
    return _helper_run(
        operation=Operation.COMPRESS_HISTORY,
        paid_prompt=(system, transcript),
        ask=ask,
        read=lambda answer: _summary_read(answer, max_tokens),
        builtin=lambda: history_compress(turns=turns, max_tokens=max_tokens),
        written=str,
    )


def helper_extract_page(*, html: str, url: str) -> HelperResult[str]:
    """Return the readable text of a fetched page (never HTML; "" for a page without text).

    Always done in-process by trafilatura, whatever the backend: a parser keeps the
    article verbatim, where a model would rewrite it and could not read a large page.
    """
    return _helper_run(
        operation=Operation.EXTRACT_PAGE,
        paid_prompt=(PAGE_SYSTEM, html),
        ask=None,
        read=str,
        builtin=lambda: page_text_extract(html=html, url=url),
        written=str,
    )


def helper_classify_complexity(*, text: str) -> HelperResult[Complexity]:
    """Return how demanding a request is: level, score 0..100 and what made the score."""
    ask = None
    if text.strip():
        ask = _LocalAsk(
            system=COMPLEXITY_SYSTEM, user=_fit_input(text), max_tokens=COMPLEXITY_MAX_TOKENS
        )
    return _helper_run(
        operation=Operation.CLASSIFY_COMPLEXITY,
        paid_prompt=(COMPLEXITY_SYSTEM, text),
        ask=ask,
        read=_complexity_read,
        builtin=lambda: complexity_score(text=text),
        written=lambda c: json.dumps({"level": c.level.value, "score": c.score}),
    )


def _helper_run(
    *,
    operation: Operation,
    paid_prompt: tuple[str, str],
    ask: _LocalAsk | None,
    read: Callable[[str], T],
    builtin: Callable[[], T],
    written: Callable[[T], str],
) -> HelperResult[T]:
    """Ask the local model when configured (and `ask` is given); else, or on failure, builtin.

    `read` turns the model's answer into the value (raising UnusableAnswer); `written` is
    the value as text, whose tokens are the output the helper wrote.
    """
    reason = ""
    if ask is not None and settings.ROSTER_HELPER_BACKEND == Backend.OPENAI_COMPATIBLE:
        try:
            answer = local_model_complete(
                system=ask.system, user=ask.user, max_tokens=ask.max_tokens
            )
            value = read(answer.text)
        except ProviderError as exc:
            reason = str(exc)
        except UnusableAnswer as exc:
            reason = f"the local model's answer was unusable: {exc}"
        else:
            return HelperResult(
                value=value,
                operation=operation.value,
                backend=Backend.OPENAI_COMPATIBLE.value,
                fallback_reason="",
                input_tokens=answer.input_tokens,
                output_tokens=answer.output_tokens,
            )
        reason = redact(reason, settings.ROSTER_HELPER_API_KEY)
        logger.warning("helper %s: %s; the builtin backend answered instead", operation, reason)
    value = builtin()
    return HelperResult(
        value=value,
        operation=operation.value,
        backend=Backend.BUILTIN.value,
        fallback_reason=reason,
        input_tokens=prompt_tokens_estimate(*paid_prompt),
        output_tokens=tokens_estimate(written(value)),
    )


def _words(max_tokens: int) -> int:
    return max(1, int(max_tokens * WORDS_PER_TOKEN))


def _fit_input(text: str) -> str:
    # A local server silently drops what overflows its context window; cutting the text
    # down here keeps the instructions and the text's most telling sentences instead.
    limit: int = settings.ROSTER_HELPER_MAX_INPUT_TOKENS
    if tokens_estimate(text) <= limit:
        return text
    return summary_extract(text=text, max_tokens=limit)


def _title_read(answer: str) -> str:
    title = title_tidy(text=answer)
    if not title:
        raise UnusableAnswer("it holds no title")
    return title


def _summary_read(answer: str, max_tokens: int) -> str:
    # Local models overshoot lengths given in words; their own sentences are cut down the
    # way builtin cuts the input's, so the promise of max_tokens holds.
    summary = summary_extract(text=answer, max_tokens=max_tokens)
    return summary or text_trim(text=answer.strip(), max_tokens=max_tokens)


def _complexity_read(answer: str) -> Complexity:
    # Models wrap JSON in prose or code fences: the first object with both fields counts.
    for candidate in JSON_OBJECT.findall(answer):
        try:
            data: Any = json.loads(candidate)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        level = str(data.get("level", "")).strip().lower()
        score = data.get("score")
        if (
            level in LEVELS
            and isinstance(score, int | float)
            and not isinstance(score, bool)
            and 0 <= score <= 100
        ):
            return Complexity(
                level=ComplexityLevel(level),
                score=round(score),
                signals={"model": settings.ROSTER_HELPER_MODEL},
            )
    raise UnusableAnswer(
        f'expected a JSON object {{"level": ..., "score": 0-100}}, got {answer[:120]!r}'
    )
