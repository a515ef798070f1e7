"""Extractive summaries: pick the input's most telling sentences, in their original order.

No model: a sentence scores by how frequent its content words are across the whole text
(the text's own topic words) and by where it stands (openings carry the point; in a
conversation, later turns carry the current state). Sentences are chosen best first while
they fit the token budget, then put back in reading order, so every sentence of a summary
is a sentence of the input (white space aside).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from agents.helper.interface import Turn
from billing.estimation import CHARS_PER_TOKEN, tokens_estimate

# Most frequent English function words: they say nothing about a text's topic.
_STOPWORDS_TEXT = """
    a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each
    few for from further had has have having he her here hers herself him himself his
    how i if in into is it its itself just let me more most my myself no nor not now of
    off ok okay on once only or other our ours ourselves out over own please same she
    should so some such than thank thanks that the their theirs them themselves then
    there these they this those through to too under until up very was we were what when
    where which while who whom why will with would yes you your yours yourself
    yourselves
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())

WORD = re.compile(r"\w[\w'-]*")
# A sentence ends at . ! ? (or an ellipsis), possibly followed by closing quotes or
# brackets, then white space.
SENTENCE_END = re.compile(r"(?:(?<=[.!?\u2026])|(?<=[.!?\u2026][\"'\u201d\u2019)\]]))\s+")
FENCE = re.compile(r"^\s*(```|~~~)")
# A line that starts a block of its own, the marker dropped: a list item or a quote.
ITEM = re.compile(r"^\s*(?:[-*+\u2022>]|\d{1,3}[.)])\s+")
# Markdown headings label a section rather than say something: left out of summaries.
HEADING = re.compile(r"^\s*#{1,6}\s")

# Position bonuses (multipliers on a sentence's score).
FIRST_SENTENCE_BONUS = 1.5  # the very first sentence of a text usually states its point
PARAGRAPH_OPENING_BONUS = 1.2  # so does the first sentence of a paragraph or a turn
RECENCY_BONUS = 0.5  # the last turn of a thread scores up to 1.5x its first
SHORT_SENTENCE_WORDS = 3  # fewer content words than this: a fragment ("Sure.", "Hi Bob,")
SHORT_SENTENCE_FACTOR = 0.3
# Two sentences sharing this much of their vocabulary say the same thing: keep one.
DUPLICATE_OVERLAP = 0.8
ELLIPSIS = "\u2026"


@dataclass(frozen=True)
class Sentence:
    text: str  # from the input, white space normalised
    position: int  # reading order across the whole input
    group: int  # paragraph (summaries) or turn (history) it belongs to
    opens_group: bool
    words: frozenset[str]  # its content words, lower-cased


def summary_extract(*, text: str, max_tokens: int) -> str:
    """Return the input's most telling sentences, in order, within max_tokens (estimated).

    A text that already fits is returned whole (stripped). Raises ValueError when
    max_tokens < 1.
    """
    check_budget(max_tokens)
    text = text.strip()
    if tokens_estimate(text) <= max_tokens:
        return text
    sentences = sentences_split(text)
    if not sentences:
        return text_trim(text=" ".join(text.split()), max_tokens=max_tokens)
    scores = _scores(sentences, recency=False)
    budget = max_tokens * CHARS_PER_TOKEN
    chosen: list[Sentence] = []
    used = -1  # the joining space before the first sentence is not written
    for sentence in _best_first(sentences, scores):
        cost = len(sentence.text) + 1
        if used + cost <= budget and not _repeats(sentence, chosen):
            chosen.append(sentence)
            used += cost
    if not chosen:
        best = _best_first(sentences, scores)[0]
        return text_trim(text=best.text, max_tokens=max_tokens)
    return " ".join(s.text for s in sorted(chosen, key=lambda s: s.position))


def history_compress(*, turns: Sequence[Turn], max_tokens: int) -> str:
    """Return the thread as lines "User: ..." / "Assistant: ..." within max_tokens.

    Every turn's text is kept whole when the thread fits; otherwise its most telling
    sentences, favouring later turns, each under its speaker's label. Raises ValueError
    when max_tokens < 1.
    """
    check_budget(max_tokens)
    labelled = _labelled(turns)
    whole = transcript_render(turns=turns)
    if tokens_estimate(whole) <= max_tokens:
        return whole
    sentences: list[Sentence] = []
    for index, (_, content) in enumerate(labelled):
        sentences += sentences_split(content, turn=index, start=len(sentences))
    if not sentences:
        return text_trim(text=" ".join(whole.split()), max_tokens=max_tokens)
    scores = _scores(sentences, recency=True)
    budget = max_tokens * CHARS_PER_TOKEN
    chosen: list[Sentence] = []
    turns_used: set[int] = set()
    used = -1  # the newline before the first line is not written
    for sentence in _best_first(sentences, scores):
        if sentence.group in turns_used:
            cost = len(sentence.text) + 1  # a space within the turn's line
        else:
            cost = 1 + len(labelled[sentence.group][0]) + 2 + len(sentence.text)
        if used + cost <= budget and not _repeats(sentence, chosen):
            chosen.append(sentence)
            turns_used.add(sentence.group)
            used += cost
    if not chosen:
        best = _best_first(sentences, scores)[0]
        label = labelled[best.group][0]
        return text_trim(text=f"{label}: {best.text}", max_tokens=max_tokens)
    lines: dict[int, list[str]] = {}
    for sentence in sorted(chosen, key=lambda s: s.position):
        lines.setdefault(sentence.group, []).append(sentence.text)
    return "\n".join(f"{labelled[group][0]}: {' '.join(texts)}" for group, texts in lines.items())


def transcript_render(*, turns: Sequence[Turn]) -> str:
    """Return the whole thread as lines "User: ..." / "Assistant: ..." (empty turns left out)."""
    return "\n".join(f"{label}: {content}" for label, content in _labelled(turns))


def _labelled(turns: Sequence[Turn]) -> list[tuple[str, str]]:
    labelled = [(speaker_label(turn.role), turn.content.strip()) for turn in turns]
    return [(label, content) for label, content in labelled if content]


def speaker_label(role: str) -> str:
    """Return how a turn's speaker is written: "User", "Assistant" (any role capitalised)."""
    return role.strip().capitalize() or "Unknown"


def sentences_split(text: str, *, turn: int | None = None, start: int = 0) -> list[Sentence]:
    """Return the prose sentences of text in order, white space normalised; code left out.

    Hard-wrapped lines are joined back into their sentences; list items and headings
    stand alone. Sentences are grouped by paragraph (blank-line separated), or all under
    `turn` when the text is one turn of a conversation. `start` numbers the first one.
    """
    sentences: list[Sentence] = []
    for paragraph, block in _blocks(text):
        for index, piece in enumerate(SENTENCE_END.split(block)):
            piece = " ".join(piece.split())
            if not piece:
                continue
            words = frozenset(
                w for w in (m.group(0).lower() for m in WORD.finditer(piece)) if w not in STOPWORDS
            )
            sentences.append(
                Sentence(
                    text=piece,
                    position=start + len(sentences),
                    group=paragraph if turn is None else turn,
                    opens_group=index == 0,
                    words=words,
                )
            )
    return sentences


def _blocks(text: str) -> list[tuple[int, str]]:
    """Return (paragraph number, text) for each run of lines that reads as one block."""
    blocks: list[tuple[int, str]] = []
    lines: list[str] = []
    paragraph = 0
    in_fence = False

    def close() -> None:
        if lines:
            blocks.append((paragraph, " ".join(lines)))
            lines.clear()

    for line in text.splitlines():
        if FENCE.match(line):
            close()
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if not line.strip():
            if lines or blocks:
                close()
                paragraph = len(blocks)
            continue
        if HEADING.match(line):
            close()
            continue
        item = ITEM.match(line)
        if item:
            close()
            line = line[item.end() :]
        lines.append(line.strip())
    close()
    return blocks


def text_trim(*, text: str, max_tokens: int) -> str:
    """Return text cut at a word boundary, with an ellipsis, to fit max_tokens (estimated)."""
    budget = max_tokens * CHARS_PER_TOKEN
    if len(text) <= budget:
        return text
    room = budget - len(ELLIPSIS)
    cut = text[:room]
    if not text[room].isspace() and " " in cut.strip():
        cut = cut[: cut.rstrip().rfind(" ")]
    return cut.rstrip() + ELLIPSIS


def check_budget(max_tokens: int) -> None:
    """Raise ValueError for a token budget below 1."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")


def _scores(sentences: Sequence[Sentence], *, recency: bool) -> list[float]:
    frequency = Counter(word for s in sentences for word in s.words)
    top = max(frequency.values(), default=1)
    last_group = max((s.group for s in sentences), default=0)
    scores: list[float] = []
    for sentence in sentences:
        weight = sum(frequency[word] / top for word in sentence.words)
        # Dividing by the square root keeps long sentences from winning on length alone
        # without letting one-word fragments win on density.
        score = weight / math.sqrt(len(sentence.words)) if sentence.words else 0.0
        if len(sentence.words) < SHORT_SENTENCE_WORDS:
            score *= SHORT_SENTENCE_FACTOR
        if sentence.position == 0 and not recency:
            score *= FIRST_SENTENCE_BONUS
        elif sentence.opens_group:
            score *= PARAGRAPH_OPENING_BONUS
        if recency and last_group:
            score *= 1 + RECENCY_BONUS * sentence.group / last_group
        scores.append(score)
    return scores


def _best_first(sentences: Sequence[Sentence], scores: Sequence[float]) -> list[Sentence]:
    # Ties go to the earlier sentence, so the result never depends on sort stability.
    order = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))
    return [sentences[i] for i in order]


def _repeats(sentence: Sentence, chosen: Sequence[Sentence]) -> bool:
    if not sentence.words:
        return False
    for other in chosen:
        shared = len(sentence.words & other.words)
        if shared / min(len(sentence.words), len(other.words) or 1) >= DUPLICATE_OVERLAP:
            return True
    return False
