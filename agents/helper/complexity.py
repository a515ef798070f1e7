"""How hard a request is, from signals anyone can check: no model, same text, same answer.

Each signal adds points (the output kind can also take some away); the sum, clamped to
0..100, is the score, and two thresholds turn it into a level. docs/helper.md explains
every signal and weight; keep the two in step.
"""

from __future__ import annotations

import re

from agents.helper.interface import Complexity, ComplexityLevel
from billing.estimation import tokens_estimate

# Score at or above which a request is MEDIUM, and HIGH.
MEDIUM_FROM = 25
HIGH_FROM = 60

# Length in estimated tokens: (at least this many tokens, points), largest first.
LENGTH_POINTS = ((1500, 25), (400, 20), (100, 10), (0, 0))
CODE_BLOCK_POINTS = 20  # at least one fenced code block
CODE_LINES_FROM = 3  # this many code-looking lines (fenced or not) ...
CODE_LINES_POINTS = 10  # ... add these points
QUESTION_POINTS = ((3, 10), (2, 5), (0, 0))  # (at least this many questions, points)
KIND_POINTS = {"high": 45, "medium": 25, "none": 0, "low": -15}
EXTRA_DELIVERABLE_POINTS = 5  # per distinct high or medium request beyond the first ...
EXTRA_DELIVERABLE_MAX = 10  # ... up to this
STEP_POINTS = ((4, 15), (2, 10), (0, 0))  # (at least this many step markers, points)

# What the request asks to produce. A request naming several kinds takes the highest.
HIGH_KINDS = {
    "implement": r"\bimplement",
    "refactor": r"\brefactor",
    "design": r"\bdesign(?:ing)?\b",
    "architect": r"\barchitect",
    "prove": r"\bprove\b|\bproof\b",
    "debug": r"\bdebug",
    "optimize": r"\boptimi[sz]",
    "migrate": r"\bmigrat",
    "derive": r"\bderive\b",
    "build": r"\bbuild (?:a|an|the)\b",
    "write code": r"\bwrite (?:a |an |the )?(?:\w+ )?"
    r"(?:function|class|program|script|module|parser|algorithm|query|api|endpoint)s?\b",
    "tests": r"\b(?:with|add|write|and) (?:unit |integration )?tests?\b",
}
MEDIUM_KINDS = {
    "explain": r"\bexplain",
    "compare": r"\bcompar",
    "analyze": r"\banaly[sz]",
    "review": r"\breview",
    "plan": r"\bplan\b",
    "draft": r"\bdraft\b",
    "write prose": r"\bwrite (?:a |an |the )?(?:\w+ )?(?:essay|report|article|proposal|post)\b",
    "evaluate": r"\bevaluat|\bassess",
}
LOW_KINDS = {
    "summarize": r"\bsummari[sz]|\bsum up\b|\btl;?dr\b",
    "translate": r"\btranslat",
    "title": r"\btitle\b",
    "reply": r"\breply\b|\brespond to\b|\banswer (?:this|the) (?:email|message)\b",
    "rephrase": r"\brephrase|\breword|\bparaphrase|\brewrite (?:this|the) (?:sentence|line)",
    "proofread": r"\bproofread|\bfix (?:the )?(?:typos?|spelling|grammar)\b",
    "classify": r"\bclassify|\bcategori[sz]e|\btag\b",
    "extract": r"\bextract\b",
    "define": r"\bdefine\b|\bwhat does .{1,40} mean\b",
}

FENCE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)
# Lines that look like code in most languages. Each shape needs code punctuation, so a
# wrapped prose line that happens to start with "for" or "if" does not count.
CODE_LINE = re.compile(
    r"""^\s*(?:
        (?:def|fn|func|function)\s+\w+\s*\(.*
      | class\s+\w+\s*[(:{<].*
      | (?:import\s+[\w.]+|from\s+[\w.]+\s+import\s|\#include\s|using\s+[\w.]+;).*
      | (?:const|let|var)\s+\w+\s*[:=].*
      | (?:if|for|while|elif|else|try|except|catch|switch)\b.*[:{]\s*
      | (?:return|await|yield)\b.*
      | (?:SELECT|INSERT|UPDATE|DELETE|CREATE)\s.*
      | .*[;{}]\s*
      | [\w.\[\]"']+\s*(?:=|\+=|-=|:=)\s*\S.*
      | .*\S\s*(?:=>|->|::)\s*\S.*
      | (?://|/\*|\*/).*
      | </?[a-zA-Z][\w-]*(?:\s[^>]*)?/?>.*
    )$""",
    re.VERBOSE,
)
# Questions asked without a question mark still start with a question word.
QUESTION_WORD = re.compile(
    r"(?:^|[.!?]\s+|\n)\s*(?:what|why|how|which|when|where|who|whom|whose)\b", re.IGNORECASE
)
NUMBERED_STEP = re.compile(r"^\s*(?:\d{1,2}[.)]|[a-h][.)]|step \d+\b)\s*\S", re.MULTILINE | re.I)
SEQUENCE_WORD = re.compile(
    r"\b(?:first(?:ly)?|second(?:ly)?|then|next|after that|afterwards|finally|lastly)\b",
    re.IGNORECASE,
)


def complexity_score(*, text: str) -> Complexity:
    """Return the complexity of a request, its score and the signals that made it."""
    tokens = tokens_estimate(text)
    code_blocks = len(FENCE.findall(text)) // 2
    code_lines = sum(1 for line in text.splitlines() if line.strip() and CODE_LINE.match(line))
    question_marks = text.count("?")
    question_words = len(QUESTION_WORD.findall(text))
    questions = max(question_marks, question_words)
    lowered = text.lower()
    high = [name for name, pattern in HIGH_KINDS.items() if re.search(pattern, lowered)]
    medium = [name for name, pattern in MEDIUM_KINDS.items() if re.search(pattern, lowered)]
    low = [name for name, pattern in LOW_KINDS.items() if re.search(pattern, lowered)]
    kind = "high" if high else "medium" if medium else "low" if low else "none"
    deliverables = len(high) + len(medium)
    steps = len(NUMBERED_STEP.findall(text)) + len(SEQUENCE_WORD.findall(text))

    points = {
        "length_points": _banded(tokens, LENGTH_POINTS),
        "code_block_points": CODE_BLOCK_POINTS if code_blocks else 0,
        "code_line_points": CODE_LINES_POINTS if code_lines >= CODE_LINES_FROM else 0,
        "question_points": _banded(questions, QUESTION_POINTS),
        "kind_points": KIND_POINTS[kind],
        "deliverable_points": min(
            EXTRA_DELIVERABLE_MAX, EXTRA_DELIVERABLE_POINTS * max(0, deliverables - 1)
        ),
        "step_points": _banded(steps, STEP_POINTS),
    }
    score = max(0, min(100, sum(points.values())))
    if score >= HIGH_FROM:
        level = ComplexityLevel.HIGH
    elif score >= MEDIUM_FROM:
        level = ComplexityLevel.MEDIUM
    else:
        level = ComplexityLevel.LOW
    signals: dict[str, int | bool | str] = {
        "tokens": tokens,
        "code_blocks": code_blocks,
        "code_lines": code_lines,
        "question_marks": question_marks,
        "question_words": question_words,
        "kind": kind,
        "kind_terms": ",".join(high or medium or low),
        "deliverables": deliverables,
        "steps": steps,
        **points,
    }
    return Complexity(level=level, score=score, signals=signals)


def _banded(value: int, bands: tuple[tuple[int, int], ...]) -> int:
    for at_least, points in bands:
        if value >= at_least:
            return points
    return 0
