"""The sandbox provider's pure rules: tokens, answers, directives, faults, cache, prices."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path

import pytest

from agents.sandbox.behaviour import (
    FILLER_WORDS,
    CacheMode,
    DirectiveError,
    Directives,
    Fault,
    FaultCounter,
    Prompt,
    PromptCacheMemory,
    Turn,
    answer_text,
    complete,
    count_input_tokens,
    count_tokens,
    fit_to_max_tokens,
    parse_directives,
    prompt_digest,
)
from agents.sandbox.catalog import CatalogError, catalog_from_models, load_catalog
from agents.sandbox.wire.base import answer_pieces
from agents.sandbox.wire.exact_json import dumps_exact
from billing.pricing import TokenUsage, UnitPrices, cost_of


def prompt(*user_texts: str, system: str = "", model: str = "m", **extra: object) -> Prompt:
    return Prompt(
        model=model,
        system=system,
        turns=tuple(Turn(role="user", text=text) for text in user_texts),
        **extra,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("é" * 8, 2), ("🙂" * 5, 2)],
)
def test_tokens_are_code_points_divided_by_four_rounded_up(text: str, tokens: int) -> None:
    assert count_tokens(text) == tokens


def test_input_tokens_add_four_per_message_and_skip_an_empty_system_prompt() -> None:
    assert count_input_tokens(prompt("12345678", system="")) == 2 + 4
    assert count_input_tokens(prompt("12345678", "x", system="sys")) == (1 + 4) + (2 + 4) + (1 + 4)


def test_answer_is_deterministic_and_quotes_the_last_user_message() -> None:
    request = Prompt(
        model="openai/gpt-4o",
        system="Be brief.",
        turns=(
            Turn("user", "first question"),
            Turn("assistant", "first answer"),
            Turn("user", " ".join(f"w{i}" for i in range(20))),
        ),
    )
    digest = prompt_digest(request)
    answer = answer_text(request, digest=digest)
    assert answer == (
        "Sandbox answer from openai/gpt-4o: w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 "
        f"[ref {digest[:8]}]"
    )
    assert answer == answer_text(request, digest=prompt_digest(request))


def test_digest_covers_system_and_messages_but_not_the_model() -> None:
    base = prompt("hello", system="s")
    assert prompt_digest(base) == prompt_digest(prompt("hello", system="s", model="other"))
    assert prompt_digest(base) != prompt_digest(prompt("hello", system="t"))
    assert prompt_digest(base) != prompt_digest(prompt("hello!", system="s"))
    canonical = json.dumps(["s", [["user", "hello"]]], separators=(",", ":"))
    assert len(prompt_digest(base)) == 64
    assert prompt_digest(base) == hashlib.sha256(canonical.encode()).hexdigest()


def test_words_directive_sets_the_answer_length_with_filler() -> None:
    request = prompt("hi")
    digest = prompt_digest(request)
    long = answer_text(request, digest=digest, words=40)
    assert len(long.split()) == 40
    assert long.startswith("Sandbox answer from m: hi")
    base = answer_text(request, digest=digest).split()
    assert long.split()[: len(base)] == base
    assert long.split()[len(base) :] == [
        FILLER_WORDS[i % len(FILLER_WORDS)] for i in range(40 - len(base))
    ]
    assert answer_text(request, digest=digest, words=2) == "Sandbox answer"
    assert answer_text(request, digest=digest, words=0) == ""


def test_answer_without_a_user_message_says_so() -> None:
    request = Prompt(model="m", system="", turns=(Turn("assistant", "hello"),))
    assert "(no user message)" in answer_text(request, digest=prompt_digest(request))


def test_max_tokens_truncates_to_four_characters_a_token() -> None:
    text = "x" * 100
    assert fit_to_max_tokens(text, reasoning=0, max_tokens=None) == (text, 0, False)
    assert fit_to_max_tokens(text, reasoning=0, max_tokens=25) == (text, 0, False)
    assert fit_to_max_tokens(text, reasoning=0, max_tokens=10) == ("x" * 40, 0, True)


def test_reasoning_is_spent_before_the_answer_within_max_tokens() -> None:
    assert fit_to_max_tokens("x" * 100, reasoning=5, max_tokens=10) == ("x" * 20, 5, True)
    assert fit_to_max_tokens("x" * 100, reasoning=50, max_tokens=10) == ("", 10, True)
    assert fit_to_max_tokens("abcd", reasoning=5, max_tokens=6) == ("abcd", 5, False)


def test_directives_come_from_markers_and_header_and_the_header_wins() -> None:
    directives = parse_directives(
        "fault=429 retry_after=2",
        ["system text", "please [[sandbox fault=500 times=2 reasoning=7]] thanks"],
    )
    assert directives.fault is Fault.RATE_LIMITED
    assert directives.times == 2
    assert directives.retry_after == "2"
    assert directives.reasoning == 7
    assert directives.source == "[[sandbox fault=500 times=2 reasoning=7]] fault=429 retry_after=2"


def test_no_directives_means_defaults() -> None:
    assert parse_directives(None, ["plain text", "[[not a sandbox marker]]"]) == Directives()
    assert parse_directives("  ", []) == Directives()


def test_every_fault_and_number_directive_parses() -> None:
    for fault in Fault:
        assert parse_directives(f"fault={fault.value}", []).fault is fault
    parsed = parse_directives("latency=0.25, words=3; reasoning=0", [])
    assert (parsed.latency, parsed.words, parsed.reasoning) == (0.25, 3, 0)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("colour=blue", "unknown sandbox directive 'colour'"),
        ("fault=418", "unknown sandbox fault '418'"),
        ("latency=soon", "latency='soon' is not a number"),
        ("latency=-1", "must be between 0 and 3600"),
        ("latency=nan", "must be between 0 and 3600"),
        ("times=-1", "times='-1' is not a whole number"),
        ("words=2000000", "above the limit"),
        ("fault", "is not key=value"),
    ],
)
def test_bad_directives_are_rejected_with_a_clear_message(header: str, message: str) -> None:
    with pytest.raises(DirectiveError, match=message.replace("(", r"\(")):
        parse_directives(header, [])


def test_fault_with_times_applies_to_the_first_n_identical_requests_only() -> None:
    counter = FaultCounter()
    directives = parse_directives("fault=500 times=2", [])
    results = [counter.fault_applies(directives, model="m", digest="d") for _ in range(4)]
    assert results == [True, True, False, False]
    # Another model or other messages are another request: counted on their own.
    assert counter.fault_applies(directives, model="other", digest="d")
    assert counter.fault_applies(directives, model="m", digest="e")
    counter.clear()
    assert counter.fault_applies(directives, model="m", digest="d")


def test_fault_without_times_always_applies_and_no_fault_never_does() -> None:
    counter = FaultCounter()
    always = parse_directives("fault=503", [])
    assert all(counter.fault_applies(always, model="m", digest="d") for _ in range(5))
    assert not counter.fault_applies(Directives(), model="m", digest="d")


def test_automatic_cache_reads_a_repeated_system_prompt() -> None:
    memory = PromptCacheMemory()
    request = prompt("hi", system="x" * 10)
    assert memory.account(request, scope="openai", mode=CacheMode.AUTOMATIC) == (0, 0)
    assert memory.account(request, scope="openai", mode=CacheMode.AUTOMATIC) == (3 + 4, 0)
    # Other models and other providers have their own caches.
    other_model = prompt("hi", system="x" * 10, model="n")
    assert memory.account(other_model, scope="openai", mode=CacheMode.AUTOMATIC) == (0, 0)
    assert memory.account(request, scope="gemini", mode=CacheMode.AUTOMATIC) == (0, 0)
    assert memory.account(prompt("hi"), scope="openai", mode=CacheMode.AUTOMATIC) == (0, 0)


def test_explicit_cache_writes_then_reads_only_a_marked_system_prompt() -> None:
    memory = PromptCacheMemory()
    unmarked = prompt("hi", system="y" * 10)
    assert memory.account(unmarked, scope="anthropic", mode=CacheMode.EXPLICIT) == (0, 0)
    assert memory.account(unmarked, scope="anthropic", mode=CacheMode.EXPLICIT) == (0, 0)
    marked = prompt("hi", system="y" * 10, cache_marked=True)
    assert memory.account(marked, scope="anthropic", mode=CacheMode.EXPLICIT) == (0, 7)
    assert memory.account(marked, scope="anthropic", mode=CacheMode.EXPLICIT) == (7, 0)
    memory.clear()
    assert memory.account(marked, scope="anthropic", mode=CacheMode.EXPLICIT) == (0, 7)


def test_complete_reports_normalised_usage() -> None:
    memory = PromptCacheMemory()
    request = prompt("what is the plan?", system="You plan.", max_tokens=1000)
    directives = parse_directives("reasoning=9", [])
    digest = prompt_digest(request)
    first = complete(
        request, directives, digest=digest, cache=memory, scope="o", mode=CacheMode.AUTOMATIC
    )
    second = complete(
        request, directives, digest=digest, cache=memory, scope="o", mode=CacheMode.AUTOMATIC
    )
    assert first.text == second.text == answer_text(request, digest=digest)
    input_tokens = (3 + 4) + (5 + 4)
    assert first.usage == TokenUsage(
        input_tokens=input_tokens,
        output_tokens=count_tokens(first.text) + 9,
        reasoning_tokens=9,
    )
    assert second.usage.cached_input_tokens == 7
    assert not first.truncated


def test_complete_truncates_at_max_tokens() -> None:
    request = prompt("hello", max_tokens=3)
    result = complete(
        request,
        Directives(),
        digest=prompt_digest(request),
        cache=PromptCacheMemory(),
        scope="o",
        mode=CacheMode.AUTOMATIC,
    )
    assert result.truncated
    assert result.text == "Sandbox answ"
    assert result.usage.output_tokens == 3


def test_stream_pieces_join_back_exactly() -> None:
    for text in ["", "one", "Sandbox answer  from x ", "  lead", "a\nb\tc"]:
        assert "".join(answer_pieces(text)) == text
    assert answer_pieces("a b  c") == ["a ", "b  ", "c"]


def test_exact_json_writes_decimals_as_number_literals() -> None:
    cost = Decimal("0.00000008333333333333334") * 3
    body = dumps_exact({"usage": {"cost": cost, "note": "0.1"}, "n": [Decimal("5E+3")]})
    assert body == b'{"usage":{"cost":0.00000025000000000000002,"note":"0.1"},"n":[5000]}'
    assert json.loads(body, parse_float=Decimal)["usage"]["cost"] == cost


CATALOG = [
    {"id": "openai/gpt-4o", "pricing": {"prompt": "0.0000025", "completion": "0.00001"}},
    {"id": "zeta/gpt-4o", "pricing": {"prompt": "1", "completion": "1"}},
    {"id": "azure/gpt-4o", "pricing": {"prompt": "0.000003", "completion": "0.00002"}},
    {"id": "openrouter/auto", "pricing": {"prompt": "-1", "completion": "-1"}},
    {"id": "broken/model", "pricing": {"prompt": "cheap", "completion": "0"}},
    {"id": "gpt-4o", "pricing": {"prompt": "0.5", "completion": "0.5"}},
]


def test_catalog_prefers_an_exact_id_then_the_first_sorted_vendor_match() -> None:
    catalog = catalog_from_models(CATALOG)
    assert catalog.prices_for("openai/gpt-4o") == UnitPrices(
        prompt=Decimal("0.0000025"), completion=Decimal("0.00001")
    )
    assert catalog.prices_for("gpt-4o") == UnitPrices(
        prompt=Decimal("0.5"), completion=Decimal("0.5")
    )
    without_exact = catalog_from_models(CATALOG[:-1])
    assert without_exact.prices_for("gpt-4o") == UnitPrices(
        prompt=Decimal("0.000003"), completion=Decimal("0.00002")
    )
    assert catalog.prices_for("nobody/knows") is None
    auto = catalog.prices_for("openrouter/auto")
    assert auto is not None
    assert not auto.is_priced
    assert catalog.unreadable == ("broken/model",)
    assert catalog.prices_for("broken/model") is None


def test_bundled_catalog_loads_and_prices_by_short_name() -> None:
    from django.conf import settings

    catalog = load_catalog(settings.ROSTER_CATALOG_SNAPSHOT)
    prices = catalog.prices_for("claude-3-haiku")
    assert prices is not None
    assert prices.input_cache_write == Decimal("0.0000003")
    usage = TokenUsage(input_tokens=100, output_tokens=10, cache_write_tokens=40)
    assert (
        cost_of(usage, prices)
        == Decimal("0.0000003") * 40 + Decimal("0.00000025") * 60 + Decimal("0.00000125") * 10
    )


def test_catalog_errors_are_readable(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read the catalog"):
        load_catalog(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(CatalogError, match="not valid JSON"):
        load_catalog(bad)
    bad.write_text('{"models": []}')
    with pytest.raises(CatalogError, match='no "data" list'):
        load_catalog(bad)
