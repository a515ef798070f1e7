"""The helper's boundary types: what its operations take and what they return."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")


class Operation(StrEnum):
    TITLE = "title"
    SUMMARIZE = "summarize"
    COMPRESS_HISTORY = "compress_history"
    EXTRACT_PAGE = "extract_page"
    CLASSIFY_COMPLEXITY = "classify_complexity"


class Backend(StrEnum):
    BUILTIN = "builtin"
    OPENAI_COMPATIBLE = "openai_compatible"


class ComplexityLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True)
class Complexity:
    level: ComplexityLevel
    score: int  # 0..100
    # What the score was made of (docs/helper.md lists every signal and its weight); a
    # local model's verdict carries the model's name instead.
    signals: dict[str, int | bool | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str


@dataclass(frozen=True)
class HelperResult(Generic[T]):
    """One helper answer and what it absorbed.

    Token counts follow `billing.estimation` (or the local server's own usage counts), so
    the caller can price them at what the role's paid model would have charged.
    """

    value: T
    operation: str  # an Operation value
    backend: str  # the backend that produced `value`: a Backend value
    # "" unless the configured backend failed and builtin answered instead; then why, in
    # words fit for a log or a task page (never a key).
    fallback_reason: str
    input_tokens: int
    output_tokens: int
