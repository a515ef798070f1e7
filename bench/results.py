"""The line a benchmark prints for each target it checks, which bench/run_all.py collects
into the table of docs/benchmarks.md.

    RESULT {"benchmark": "...", "target": "...", "figure": "...", "verdict": "pass", ...}

One JSON object after the word RESULT, on one line: a human can read it and the harness
needs no parser of its own. `verdict` is "pass", "FAIL" or "-" (a figure with no target).
`sandbox_rps`, when given, is the highest request rate the benchmark sent the sandbox
provider, shown beside the sandbox's own capacity to show that it was not the bottleneck.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

PREFIX = "RESULT "


class Result(TypedDict, total=False):
    benchmark: str
    target: str
    figure: str
    verdict: str
    note: str
    sandbox_rps: float


def verdict(passed: bool | None) -> str:
    """The table's word for a target met, missed, or not set."""
    if passed is None:
        return "-"
    return "pass" if passed else "FAIL"


def result_print(
    *,
    benchmark: str,
    target: str,
    figure: str,
    passed: bool | None,
    note: str = "",
    sandbox_rps: float | None = None,
) -> None:
    """Print one RESULT line (flushed: the harness reads the output as it comes)."""
    line: dict[str, Any] = {
        "benchmark": benchmark,
        "target": target,
        "figure": figure,
        "verdict": verdict(passed),
    }
    if note:
        line["note"] = note
    if sandbox_rps is not None:
        line["sandbox_rps"] = round(sandbox_rps, 1)
    print(PREFIX + json.dumps(line, ensure_ascii=False), flush=True)


def results_parse(output: str) -> list[Result]:
    """Every RESULT line in a benchmark's output; a line that is not valid JSON is kept
    as a figure with no verdict, so a malformed line shows in the table rather than
    vanishing."""
    found: list[Result] = []
    for line in output.splitlines():
        if not line.startswith(PREFIX):
            continue
        try:
            parsed = json.loads(line[len(PREFIX) :])
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and {"benchmark", "target", "figure", "verdict"} <= set(parsed):
            found.append(Result(**parsed))  # type: ignore[typeddict-item]
        else:
            found.append(
                Result(benchmark="(unreadable RESULT line)", target="", figure=line, verdict="-")
            )
    return found
