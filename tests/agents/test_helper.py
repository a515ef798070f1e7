"""The local helper: builtin answers, and a local model server reached over a real socket
(the sandbox process stands in for Ollama / llama.cpp), with builtin taking over when the
server fails."""

from __future__ import annotations

import logging
import re
import runpy
import socket
import uuid
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from agents.helper import (
    Complexity,
    ComplexityLevel,
    HelperResult,
    Turn,
    helper_classify_complexity,
    helper_compress_history,
    helper_extract_page,
    helper_summarize,
    helper_title,
)
from agents.helper.operations import COMPLEXITY_SYSTEM, TITLE_SYSTEM
from billing.estimation import prompt_tokens_estimate, tokens_estimate
from tests.canary import SANDBOX_KEY

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "tests" / "data" / "pages"

INCIDENT = (
    "Our PostgreSQL replication lag spiked during the nightly backup window. The database "
    "team thinks the WAL archiving to object storage is throttled. Can you investigate the "
    "replication lag, propose a fix for the backup schedule, and write a short runbook for "
    "the on-call engineers?"
)
MEETING_NOTES = """The quarterly budget review showed that cloud spending grew by 40 percent.
Most of the growth came from the analytics cluster, which runs around the clock.

The team agreed to move batch jobs to spot instances. Lunch was pizza. Storage costs stayed
flat because old snapshots were deleted in March.

The cloud spending forecast for next quarter assumes the analytics cluster shrinks by half.
Finance asked for a weekly report on cloud spending per team. Someone mentioned that the
office plants need watering. The next review is on the first Monday of July, and each team
lead should bring a plan for cutting cloud spending by a fifth before then."""
TRANSLATE = "Translate this sentence into French: The meeting has moved to Thursday."
IMPLEMENT = """Implement a token bucket rate limiter and refactor this client so the limiter
is injected, with tests. First extract the clock, then add the limiter, and finally write
unit tests for bursts and refills.

```python
import time

class Client:
    def __init__(self):
        self.last = 0

    def call(self):
        if time.time() - self.last < 1:
            raise RuntimeError("too fast")
        self.last = time.time()
```
"""


def flat(text: str) -> str:
    return " ".join(text.split())


def sentences_of(text: str) -> set[str]:
    return {s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()}


def thread(turns: int) -> list[Turn]:
    topics = [
        "the invoice export job fails on the last day of the month",
        "the retry policy for the payment webhook",
        "moving the reports page to server-side pagination",
        "the budget alert that fired twice for the research role",
        "rotating the encryption keys for provider credentials",
    ]
    result = []
    for i in range(turns):
        topic = topics[i % len(topics)]
        if i % 2 == 0:
            content = (
                f"Can you look at {topic}? It started after the release on day {i}. "
                f"The logs show a timeout after {30 + i} seconds."
            )
        else:
            content = (
                f"I checked {topic}. The cause is a missing index on the usage table. "
                f"Adding the index brings the query down to {i} milliseconds. "
                "I also added a test so it does not come back."
            )
        result.append(Turn(role="user" if i % 2 == 0 else "assistant", content=content))
    return result


# --- builtin ------------------------------------------------------------------------------


def test_title_is_short_and_names_a_salient_keyword() -> None:
    result = helper_title(text=INCIDENT)

    assert result.backend == "builtin"
    assert result.operation == "title"
    assert result.fallback_reason == ""
    title = result.value
    assert title
    assert len(title.split()) <= 8
    assert len(title) <= 80
    assert re.search(r"replication|backup|PostgreSQL", title)
    assert "PostgreSQL" in title or "Postgresql" not in title  # acronyms keep their case


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "Untitled"),
        ("   \n ", "Untitled"),
        ("?!", "Untitled"),
        ("42", "42"),
        ("1. 404 500 503", "404 500 503"),
        ("- " + "1234 " * 30, " ".join(["1234"] * 8)),
    ],
)
def test_title_is_never_empty(text: str, expected: str) -> None:
    assert helper_title(text=text).value == expected


def test_summary_is_shorter_within_budget_and_made_of_input_sentences() -> None:
    result = helper_summarize(text=MEETING_NOTES, max_tokens=60)

    summary = result.value
    assert result.backend == "builtin"
    assert result.operation == "summarize"
    assert len(summary) < len(MEETING_NOTES)
    assert tokens_estimate(summary) <= 60
    assert result.output_tokens == tokens_estimate(summary)
    chosen = sentences_of(summary)
    assert chosen
    for sentence in chosen:
        assert sentence in flat(MEETING_NOTES)
    assert "cloud spending" in summary
    assert "plants" not in summary


def test_summary_keeps_the_input_order_of_its_sentences() -> None:
    summary = helper_summarize(text=MEETING_NOTES, max_tokens=80).value
    pieces = [p for p in re.split(r"(?<=[.!?])\s+", summary) if p]
    offsets = [flat(MEETING_NOTES).index(p) for p in pieces]
    assert offsets == sorted(offsets)


def test_summary_of_a_text_that_fits_is_the_text() -> None:
    assert helper_summarize(text="  Short enough.  ", max_tokens=50).value == "Short enough."


def test_summary_of_one_long_sentence_is_cut_to_the_budget() -> None:
    text = "word " * 200
    summary = helper_summarize(text=text, max_tokens=10).value
    assert tokens_estimate(summary) <= 10
    assert summary.endswith("\u2026")


@pytest.mark.parametrize("max_tokens", [0, -5])
def test_summary_refuses_a_budget_below_one(max_tokens: int) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        helper_summarize(text=MEETING_NOTES, max_tokens=max_tokens)
    with pytest.raises(ValueError, match="max_tokens"):
        helper_compress_history(turns=thread(4), max_tokens=max_tokens)


def test_compress_history_of_a_30_turn_thread_fits_and_names_the_speakers() -> None:
    turns = thread(30)
    whole = " ".join(t.content for t in turns)

    result = helper_compress_history(turns=turns, max_tokens=200)

    text = result.value
    assert result.operation == "compress_history"
    assert result.backend == "builtin"
    assert tokens_estimate(text) <= 200
    assert tokens_estimate(text) < tokens_estimate(whole)
    lines = text.splitlines()
    assert lines
    for line in lines:
        speaker, _, said = line.partition(": ")
        assert speaker in {"User", "Assistant"}
        for sentence in sentences_of(said):
            assert sentence in whole
    # Later turns weigh more: the thread's last turn is represented.
    assert "29 milliseconds" in lines[-1]


def test_compress_history_of_a_short_thread_keeps_every_turn() -> None:
    turns = [Turn(role="user", content="Hi, what is 2 + 2?"), Turn(role="assistant", content="4")]
    result = helper_compress_history(turns=turns, max_tokens=100)
    assert result.value == "User: Hi, what is 2 + 2?\nAssistant: 4"


def test_extract_page_drops_boilerplate_and_keeps_the_article() -> None:
    html = (PAGES / "article.html").read_text()

    result = helper_extract_page(html=html, url="https://engineering.example.com/posts/backups/")

    text = result.value
    assert result.operation == "extract_page"
    assert result.backend == "builtin"
    assert "read replicas of our orders database fell up to forty minutes" in text
    assert "bandwidth limit of 200 MB/s" in text
    for boilerplate in ("cookie", "Subscribe", "Privacy policy", "Careers", "All rights"):
        assert boilerplate not in text
    assert "<" not in text
    assert "gtag" not in text
    assert result.input_tokens == prompt_tokens_estimate(
        "Extract the main text of this web page, without navigation or boilerplate.", html
    )


@pytest.mark.parametrize(
    "html",
    [
        "<p>Tiny &amp; <b>bold</b></p><script>var secret = 1;</script>",
        "<html><body><div><span>Only</span> <em>inline</em> text</div></body></html>",
        "Plain text line one.\n\nLine two.",
    ],
)
def test_extract_page_never_returns_html(html: str) -> None:
    text = helper_extract_page(html=html, url="").value
    assert text
    assert "<" not in text
    assert "secret" not in text


def test_a_translation_request_is_low_complexity() -> None:
    result = helper_classify_complexity(text=TRANSLATE)

    complexity = result.value
    assert result.operation == "classify_complexity"
    assert complexity.level is ComplexityLevel.LOW
    assert complexity.signals["kind"] == "low"
    assert complexity.score < 25


def test_an_implement_and_refactor_request_with_code_is_high_complexity() -> None:
    complexity = helper_classify_complexity(text=IMPLEMENT).value

    assert complexity.level is ComplexityLevel.HIGH
    assert complexity.score >= 60
    assert complexity.signals["code_blocks"] == 1
    assert complexity.signals["kind"] == "high"
    assert complexity.signals["steps"] >= 2
    assert "implement" in str(complexity.signals["kind_terms"])


def test_an_explanation_request_is_medium_complexity() -> None:
    text = "Explain how TCP congestion control works and compare Reno with CUBIC."
    assert helper_classify_complexity(text=text).value.level is ComplexityLevel.MEDIUM


def test_complexity_score_is_the_sum_of_its_signal_points() -> None:
    complexity = helper_classify_complexity(text=IMPLEMENT).value
    points = sum(v for k, v in complexity.signals.items() if k.endswith("_points"))
    assert complexity.score == max(0, min(100, int(points)))


def test_builtin_answers_are_deterministic() -> None:
    def run_all() -> list[HelperResult]:  # type: ignore[type-arg]
        return [
            helper_title(text=INCIDENT),
            helper_summarize(text=MEETING_NOTES, max_tokens=50),
            helper_compress_history(turns=thread(30), max_tokens=150),
            helper_extract_page(html=(PAGES / "article.html").read_text(), url=""),
            helper_classify_complexity(text=IMPLEMENT),
        ]

    assert run_all() == run_all()


def test_token_counts_are_what_a_paid_model_would_read_and_write() -> None:
    title = helper_title(text=INCIDENT)
    assert title.input_tokens == prompt_tokens_estimate(TITLE_SYSTEM, INCIDENT)
    assert title.output_tokens == tokens_estimate(title.value)

    complexity = helper_classify_complexity(text=TRANSLATE)
    assert complexity.input_tokens == prompt_tokens_estimate(COMPLEXITY_SYSTEM, TRANSLATE)
    assert complexity.output_tokens > 0


# --- openai_compatible, against the sandbox process ---------------------------------------

KEY = SANDBOX_KEY


@pytest.fixture
def local_model(settings, sandbox) -> str:  # type: ignore[no-untyped-def]
    """Point the helper at the sandbox's OpenAI-compatible endpoint; return the model name.

    Each test gets its own model name, so its requests are easy to find in the log.
    """
    model = f"helper-{uuid.uuid4().hex[:8]}"
    settings.ROSTER_HELPER_BACKEND = "openai_compatible"
    settings.ROSTER_HELPER_URL = f"{sandbox.url}/v1"
    settings.ROSTER_HELPER_MODEL = model
    settings.ROSTER_HELPER_API_KEY = KEY
    settings.ROSTER_HELPER_TIMEOUT = 10.0
    return model


def logged(sandbox, model: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return [entry for entry in sandbox.requests() if entry["model"] == model]


def test_title_is_asked_of_the_local_model_over_http(local_model: str, sandbox) -> None:  # type: ignore[no-untyped-def]
    result = helper_title(text=INCIDENT)

    assert result.backend == "openai_compatible"
    assert result.fallback_reason == ""
    # The sandbox answers "Sandbox answer from MODEL: <first words>", cut to a title.
    assert result.value.startswith("Sandbox answer from")
    assert len(result.value.split()) <= 8
    [entry] = logged(sandbox, local_model)
    assert entry["path"] == "/v1/chat/completions"
    assert entry["status"] == 200
    assert result.input_tokens == entry["input_tokens"]
    assert result.output_tokens == entry["output_tokens"]


def test_summary_from_the_local_model_fits_max_tokens(local_model: str, sandbox) -> None:  # type: ignore[no-untyped-def]
    result = helper_summarize(text=MEETING_NOTES, max_tokens=12)

    assert result.backend == "openai_compatible"
    assert tokens_estimate(result.value) <= 12
    [entry] = logged(sandbox, local_model)
    assert entry["output_tokens"] <= 12


def test_history_is_compressed_by_the_local_model(local_model: str, sandbox) -> None:  # type: ignore[no-untyped-def]
    result = helper_compress_history(turns=thread(30), max_tokens=40)

    assert result.backend == "openai_compatible"
    assert tokens_estimate(result.value) <= 40
    assert len(logged(sandbox, local_model)) == 1


def test_complexity_is_read_from_the_local_models_json(local_model: str, sandbox) -> None:  # type: ignore[no-untyped-def]
    # The sandbox echoes the start of the user message, so this text comes back as the
    # model's answer, wrapped in prose as real models like to do.
    result = helper_classify_complexity(text='{"level": "high", "score": 77}')

    assert result.backend == "openai_compatible"
    assert result.value == Complexity(
        level=ComplexityLevel.HIGH, score=77, signals={"model": local_model}
    )
    assert len(logged(sandbox, local_model)) == 1


def test_an_unparseable_complexity_answer_falls_back_to_builtin(local_model: str, sandbox) -> None:  # type: ignore[no-untyped-def]
    result = helper_classify_complexity(text=TRANSLATE)

    assert result.backend == "builtin"
    assert "unusable" in result.fallback_reason
    assert result.value == helper_classify_complexity_builtin(TRANSLATE)
    assert len(logged(sandbox, local_model)) == 1


def helper_classify_complexity_builtin(text: str) -> Complexity:
    from agents.helper.complexity import complexity_score

    return complexity_score(text=text)


def test_a_dead_server_falls_back_to_builtin_and_says_why(settings, caplog) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.ROSTER_HELPER_BACKEND = "openai_compatible"
    settings.ROSTER_HELPER_URL = f"http://127.0.0.1:{port}/v1"
    settings.ROSTER_HELPER_MODEL = "llama3.2:3b"

    with caplog.at_level(logging.WARNING, logger="agents.helper.operations"):
        result = helper_title(text=INCIDENT)

    assert result.backend == "builtin"
    assert result.value == helper_title_builtin(INCIDENT)
    assert "could not connect" in result.fallback_reason
    assert f"127.0.0.1:{port}" in result.fallback_reason
    assert result.input_tokens == prompt_tokens_estimate(TITLE_SYSTEM, INCIDENT)
    assert any("could not connect" in r.getMessage() for r in caplog.records)


def helper_title_builtin(text: str) -> str:
    from agents.helper.titles import title_extract

    return title_extract(text=text)


def test_a_slow_server_times_out_and_builtin_answers(local_model: str, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ROSTER_HELPER_TIMEOUT = 0.5

    result = helper_summarize(text="[[sandbox latency=3]] " + MEETING_NOTES, max_tokens=40)

    assert result.backend == "builtin"
    assert "did not answer within 0.5 s" in result.fallback_reason
    assert tokens_estimate(result.value) <= 40


@pytest.mark.parametrize(
    ("directive", "reason"),
    [("fault=500", "HTTP 500"), ("fault=malformed", "malformed JSON")],
)
def test_a_failing_server_falls_back_to_builtin(
    local_model: str, directive: str, reason: str
) -> None:
    result = helper_title(text=f"[[sandbox {directive}]] {INCIDENT}")

    assert result.backend == "builtin"
    assert reason in result.fallback_reason
    assert result.value


def test_the_key_never_appears_in_a_fallback_reason_or_the_log(local_model: str, caplog) -> None:  # type: ignore[no-untyped-def]
    # The sandbox's 401 echoes the key verbatim, as some real servers do.
    with caplog.at_level(logging.WARNING):
        result = helper_title(text=f"[[sandbox fault=401]] {INCIDENT}")

    assert result.backend == "builtin"
    assert "HTTP 401" in result.fallback_reason
    assert KEY not in result.fallback_reason
    assert KEY[8:] not in result.fallback_reason
    assert all(KEY not in r.getMessage() for r in caplog.records)


def test_an_input_that_fits_is_not_sent_to_the_local_model(local_model: str, sandbox) -> None:  # type: ignore[no-untyped-def]
    result = helper_summarize(text="Already short.", max_tokens=100)

    assert result.value == "Already short."
    assert result.backend == "builtin"
    assert result.fallback_reason == ""
    assert logged(sandbox, local_model) == []


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROSTER_HELPER_BACKEND": "ollama"}, "ROSTER_HELPER_BACKEND must be one of"),
        ({"ROSTER_HELPER_BACKEND": "openai_compatible"}, "needs ROSTER_HELPER_URL"),
        (
            {"ROSTER_HELPER_BACKEND": "openai_compatible", "ROSTER_HELPER_URL": "127.0.0.1:11434"},
            "needs ROSTER_HELPER_URL",
        ),
        (
            {
                "ROSTER_HELPER_BACKEND": "openai_compatible",
                "ROSTER_HELPER_URL": "http://127.0.0.1:11434/v1",
            },
            "needs ROSTER_HELPER_MODEL",
        ),
        ({"ROSTER_HELPER_TIMEOUT": "soon"}, "ROSTER_HELPER_TIMEOUT must be a number"),
        ({"ROSTER_HELPER_TIMEOUT": "0"}, "ROSTER_HELPER_TIMEOUT must be a number of seconds > 0"),
        ({"ROSTER_HELPER_MAX_INPUT_TOKENS": "-1"}, "ROSTER_HELPER_MAX_INPUT_TOKENS must be"),
    ],
)
def test_bad_helper_settings_fail_loudly(monkeypatch, env: dict[str, str], message: str) -> None:  # type: ignore[no-untyped-def]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        runpy.run_path(str(ROOT / "office" / "settings.py"))


def test_good_helper_settings_are_read(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ROSTER_HELPER_BACKEND", "openai_compatible")
    monkeypatch.setenv("ROSTER_HELPER_URL", "http://127.0.0.1:11434/v1")
    monkeypatch.setenv("ROSTER_HELPER_MODEL", "llama3.2:3b")
    monkeypatch.setenv("ROSTER_HELPER_TIMEOUT", "7.5")

    namespace = runpy.run_path(str(ROOT / "office" / "settings.py"))

    assert namespace["ROSTER_HELPER_BACKEND"] == "openai_compatible"
    assert namespace["ROSTER_HELPER_TIMEOUT"] == 7.5
    assert namespace["ROSTER_HELPER_API_KEY"] == ""
