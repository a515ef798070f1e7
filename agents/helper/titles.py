"""Short titles from a text's keyphrases (YAKE), with the text's first words as a fallback.

YAKE (https://github.com/LIAAD/yake) ranks candidate phrases of up to three words by
statistics of the text itself: no model, no corpus, deterministic. The best phrase, and a
second one when it adds new words and fits, become a title-cased title.
"""

from __future__ import annotations

import re

import yake

MAX_WORDS = 8
MAX_CHARS = 80
UNTITLED = "Untitled"
# A title comes from the opening of a text; reading further only costs time (YAKE is
# roughly linear in the text) and drifts towards details.
SOURCE_CHARS = 5000
CANDIDATES = 10
_SMALL_WORDS_TEXT = """
    a an and as at but by for from in into nor of on or over per the to via vs with
"""
SMALL_WORDS = frozenset(_SMALL_WORDS_TEXT.split())
FENCED_CODE = re.compile(r"^\s*(```|~~~).*?^\s*\1", re.DOTALL | re.MULTILINE)
URL = re.compile(r"\bhttps?://\S+|\bwww\.\S+")
# A model's "Title: ..." preamble.
ANSWER_LABEL = re.compile(r"^title\s*:\s*", re.IGNORECASE)
# Markdown and list decorations that would otherwise open the fallback title.
DECORATION = re.compile(r"^(?:[\s#>*_`~+\-]|\d{1,3}[.)]\s|\[[ xX]?\]\s)+")


def title_extract(*, text: str) -> str:
    """Return a short title for text: never empty, at most 8 words and 80 characters."""
    source = URL.sub(" ", FENCED_CODE.sub(" ", text[:SOURCE_CHARS]))
    # A fresh extractor per call (a quarter of a millisecond): YAKE's extractor keeps
    # caches that are not safe to share between the worker's threads.
    extractor = yake.KeywordExtractor(lan="en", n=3, top=CANDIDATES, dedup_lim=0.7)
    phrases = [
        phrase
        for phrase, _score in extractor.extract_keywords(source)
        if any(ch.isalpha() for ch in phrase) and _distinct_words(phrase)
    ]
    if phrases:
        return _from_phrases(phrases)
    fallback = title_tidy(text=source) or title_tidy(text=text)
    return fallback if any(ch.isalnum() for ch in fallback) else UNTITLED


def title_tidy(*, text: str) -> str:
    """Return text's first line cut to a title's length: first words, no decoration.

    Returns "" for a text without visible characters. Used for the fallback title and to
    tidy a local model's answer.
    """
    for line in text.splitlines():
        line = DECORATION.sub("", line.replace("**", "")).strip()
        line = ANSWER_LABEL.sub("", line).strip("\"'\u201c\u201d*_`").strip()
        if line:
            return _fit(line.split()).rstrip(".:;,") or ""
    return ""


def _from_phrases(phrases: list[str]) -> str:
    best = phrases[0]
    seen = {word.lower() for word in best.split()}
    for phrase in phrases[1:]:
        words = {word.lower() for word in phrase.split()}
        if words & seen:
            continue  # a variant of the first phrase adds nothing
        combined = f"{_title_case(best)}: {_title_case(phrase)}"
        if len(combined.split()) <= MAX_WORDS and len(combined) <= MAX_CHARS:
            return combined
        break
    return _fit(_title_case(best).split())


def _distinct_words(phrase: str) -> bool:
    # YAKE happily returns "word word word" for a repetitive text: not a title.
    words = phrase.lower().split()
    return len(set(words)) == len(words)


def _title_case(phrase: str) -> str:
    words = phrase.split()
    cased = []
    for index, word in enumerate(words):
        if not word.islower():
            cased.append(word)  # acronyms and brand spellings stay (API, PostgreSQL, iOS)
        elif index and word in SMALL_WORDS:
            cased.append(word)
        else:
            cased.append(word[0].upper() + word[1:])
    return " ".join(cased)


def _fit(words: list[str]) -> str:
    title = ""
    for word in words[:MAX_WORDS]:
        candidate = f"{title} {word}" if title else word
        if len(candidate) > MAX_CHARS:
            break
        title = candidate
    if not title and words:
        # A single word longer than the limit (a hash, a long URL) is cut, not dropped.
        title = words[0][:MAX_CHARS]
    return title
