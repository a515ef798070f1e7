"""The cost engine: exact Decimal, each part at its own price, unpriced never free."""

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from billing.pricing import (
    PricingError,
    TokenUsage,
    UnitPrices,
    cost_breakdown,
    cost_drift,
    cost_of,
    dearest_token_prices,
    price_version_problems,
    resolve_prices,
)


def prices(**kw: str) -> UnitPrices:
    return UnitPrices.from_openrouter(kw)


def test_input_and_output_tokens_times_prices_exactly() -> None:
    cost = cost_of(
        TokenUsage(input_tokens=1000, output_tokens=500),
        prices(prompt="0.0000001", completion="0.0000004"),
    )
    assert cost == Decimal("0.0003")


def test_float_artefact_prices_are_kept_to_the_last_digit() -> None:
    usage = TokenUsage(input_tokens=1234567, output_tokens=0, cache_write_tokens=1234567)
    cost = cost_of(
        usage,
        prices(
            prompt="0.0000001",
            completion="0.0000004",
            input_cache_write="0.00000008333333333333334",
        ),
    )
    assert cost == Decimal("0.10288058333333334156378")


def test_cached_cache_write_and_reasoning_tokens_are_charged_at_their_own_prices() -> None:
    usage = TokenUsage(
        input_tokens=1000,
        cached_input_tokens=600,
        cache_write_tokens=100,
        output_tokens=300,
        reasoning_tokens=200,
    )
    parts = cost_breakdown(
        usage,
        prices(
            prompt="0.000001",
            completion="0.000004",
            input_cache_read="0.0000001",
            input_cache_write="0.00000125",
            internal_reasoning="0.000002",
            request="0.001",
        ),
    )
    assert parts.input == Decimal("0.000300")  # 300 uncached
    assert parts.cached_input == Decimal("0.0000600")
    assert parts.cache_write == Decimal("0.000125")
    assert parts.output == Decimal("0.000400")  # 100 visible
    assert parts.reasoning == Decimal("0.000400")
    assert parts.request == Decimal("0.001")
    assert parts.total == Decimal("0.0022850")


def test_parts_without_their_own_price_fall_back_to_input_or_output_price() -> None:
    usage = TokenUsage(input_tokens=10, cached_input_tokens=4, output_tokens=6, reasoning_tokens=2)
    assert cost_of(usage, prices(prompt="1", completion="10")) == Decimal(10 * 1 + 6 * 10)


def test_variable_or_missing_price_is_unpriced_not_zero() -> None:
    assert not prices(prompt="-1", completion="-1").is_priced
    assert not prices(prompt="0.1").is_priced
    assert prices(prompt="0", completion="0").is_priced  # free is a price
    with pytest.raises(PricingError, match="no input/output price"):
        cost_of(TokenUsage(input_tokens=1), prices(prompt="-1", completion="-1"))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (0.5, "JSON number"),
        ("abc", "not a decimal"),
        ("-0.5", "negative"),
        ("NaN", "not finite"),
        ([], "type list"),
    ],
)
def test_malformed_prices_are_refused(raw: Any, message: str) -> None:
    with pytest.raises(PricingError, match=message):
        UnitPrices.from_openrouter({"prompt": raw, "completion": "1"})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_tokens": -1},
        {"input_tokens": 1, "cached_input_tokens": 2},
        {"output_tokens": 1, "reasoning_tokens": 2},
        {"input_tokens": True},
    ],
)
def test_impossible_usage_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(PricingError):
        TokenUsage(**kwargs)


# --- Cache writes by lifetime ---------------------------------------------------------------

SONNET = {  # Anthropic's Claude Sonnet 4 list prices, USD per token
    "prompt": "0.000003",
    "completion": "0.000015",
    "input_cache_read": "0.0000003",
    "input_cache_write": "0.00000375",
    "input_cache_write_1h": "0.000006",
    "web_search": "0.01",
}


def test_one_hour_cache_writes_have_their_own_price() -> None:
    usage = TokenUsage(input_tokens=3000, cache_write_tokens=1000, cache_write_1h_tokens=2000)
    parts = cost_breakdown(usage, prices(**SONNET))
    assert parts.cache_write == Decimal("0.00375")  # 1000 x 3.75/M
    assert parts.cache_write_1h == Decimal("0.012")  # 2000 x 6/M
    assert parts.total == Decimal("0.01575")


def test_one_hour_writes_fall_back_to_the_five_minute_price_then_input() -> None:
    usage = TokenUsage(input_tokens=100, cache_write_1h_tokens=100)
    with_5m = prices(prompt="0.000003", completion="0", input_cache_write="0.00000375")
    assert cost_of(usage, with_5m) == Decimal("0.000375")
    assert cost_of(usage, prices(prompt="0.000003", completion="0")) == Decimal("0.0003")


def test_a_free_part_stays_free_and_does_not_fall_back() -> None:
    usage = TokenUsage(input_tokens=100, cached_input_tokens=100, cache_write_1h_tokens=0)
    assert cost_of(usage, prices(prompt="1", completion="1", input_cache_read="0")) == 0


def test_zero_tokens_cost_only_the_fixed_fees() -> None:
    usage = TokenUsage(images=2, web_searches=3)
    cost = cost_of(usage, prices(prompt="1", completion="1", request="0.001", image="0.002"))
    # No web search price: the model charges no such fee.
    assert cost == Decimal("0.005")


# --- Long-context tier ----------------------------------------------------------------------

TIERED = UnitPrices(
    **{kind: Decimal(value) for kind, value in SONNET.items()},
    long_context_threshold=200_000,
    long_context_prompt=Decimal("0.000006"),
    long_context_completion=Decimal("0.0000225"),
)


def test_tier_applies_only_above_the_threshold_and_to_the_whole_call() -> None:
    at_threshold = TokenUsage(input_tokens=200_000, output_tokens=1000)
    above = TokenUsage(input_tokens=200_001, output_tokens=1000)
    assert cost_of(at_threshold, TIERED) == Decimal("0.6") + Decimal("0.015")
    assert cost_of(above, TIERED) == Decimal("1.200006") + Decimal("0.0225")


def test_cache_prices_keep_their_multiplier_on_top_of_the_tier() -> None:
    # Anthropic: 0.1x reads, 1.25x 5-minute and 2x 1-hour writes of the $6 tier input.
    usage = TokenUsage(
        input_tokens=300_000,
        cached_input_tokens=100_000,
        cache_write_tokens=10_000,
        cache_write_1h_tokens=10_000,
    )
    resolved = resolve_prices(usage, TIERED)
    assert resolved.prompt == Decimal("0.000006")
    assert resolved.completion == Decimal("0.0000225")
    assert resolved.input_cache_read == Decimal("0.0000006")
    assert resolved.input_cache_write == Decimal("0.0000075")
    assert resolved.input_cache_write_1h == Decimal("0.000012")
    assert resolved.long_context_threshold is None
    assert resolved.web_search == Decimal("0.01")  # fees are not tiered


def test_tier_cache_read_price_given_by_the_tier_wins_and_reasoning_follows_output() -> None:
    gemini_pro = UnitPrices(
        prompt=Decimal("0.00000125"),
        completion=Decimal("0.00001"),
        input_cache_read=Decimal("0.000000125"),
        internal_reasoning=Decimal("0.00001"),
        long_context_threshold=200_000,
        long_context_prompt=Decimal("0.0000025"),
        long_context_completion=Decimal("0.000015"),
        long_context_input_cache_read=Decimal("0.00000025"),
    )
    resolved = resolve_prices(TokenUsage(input_tokens=200_001), gemini_pro)
    assert resolved.input_cache_read == Decimal("0.00000025")
    assert resolved.internal_reasoning == Decimal("0.000015")


def test_resolving_twice_changes_nothing_and_cost_of_resolves_itself() -> None:
    usage = TokenUsage(input_tokens=250_000, cached_input_tokens=50_000, output_tokens=10)
    once = resolve_prices(usage, TIERED)
    assert resolve_prices(usage, once) == once
    assert cost_of(usage, TIERED) == cost_of(usage, once)


def test_tier_price_that_cannot_be_derived_exactly_is_refused() -> None:
    inexact = UnitPrices(
        prompt=Decimal("0.000003"),
        completion=Decimal("0.000015"),
        input_cache_read=Decimal("0.000001"),
        long_context_threshold=10,
        long_context_prompt=Decimal("0.000007"),
    )
    with pytest.raises(PricingError, match="no exact decimal value"):
        cost_of(TokenUsage(input_tokens=11), inexact)
    assert cost_of(TokenUsage(input_tokens=10), inexact) == Decimal("0.00003")

    free_base = replace(inexact, prompt=Decimal("0"))
    with pytest.raises(PricingError, match="base price it derives from is zero"):
        resolve_prices(TokenUsage(input_tokens=11), free_base)


def test_dearest_prices_for_a_worst_case_bound_include_the_tier() -> None:
    # Sonnet 4 above 200K: a 1-hour cache write is 2x the $6 tier input price.
    tiered = dearest_token_prices(TIERED, input_tokens=200_001)
    assert tiered == (Decimal("0.000012"), Decimal("0.0000225"))
    assert dearest_token_prices(TIERED, input_tokens=200_000) == (
        Decimal("0.000006"),
        Decimal("0.000015"),
    )
    assert dearest_token_prices(prices(prompt="-1", completion="1"), input_tokens=1) is None


# --- Batch discount -------------------------------------------------------------------------


def test_batch_discount_applies_to_token_charges_not_to_fees() -> None:
    batch_prices = replace(TIERED, batch_discount=Decimal("0.5"), request=Decimal("0.001"))
    usage = TokenUsage(
        input_tokens=1000,
        cached_input_tokens=200,
        cache_write_tokens=100,
        cache_write_1h_tokens=100,
        output_tokens=100,
        web_searches=1,
        is_batch=True,
    )
    parts = cost_breakdown(usage, batch_prices)
    assert parts.input == Decimal("0.0009")  # 600 x 3/M x 0.5
    assert parts.cached_input == Decimal("0.00003")
    assert parts.cache_write == Decimal("0.0001875")
    assert parts.cache_write_1h == Decimal("0.0003")
    assert parts.output == Decimal("0.00075")
    assert parts.web_search == Decimal("0.01")
    assert parts.request == Decimal("0.001")
    full = cost_of(replace(usage, is_batch=False), batch_prices)
    assert full - parts.total == parts.total - Decimal("0.011")


def test_batch_call_without_a_discount_is_charged_in_full() -> None:
    usage = TokenUsage(input_tokens=1000, output_tokens=100)
    plain = prices(**SONNET)
    assert cost_of(replace(usage, is_batch=True), plain) == cost_of(usage, plain)


def test_batch_discount_outside_zero_to_one_is_refused() -> None:
    bad = replace(prices(**SONNET), batch_discount=Decimal("1.5"))
    with pytest.raises(PricingError, match="between 0 and 1"):
        cost_of(TokenUsage(input_tokens=1, is_batch=True), bad)


# --- Drift between our cost and the provider's ----------------------------------------------


@pytest.mark.parametrize(
    ("computed", "reported", "expected"),
    [
        ("0.0003088", "0.0003088", None),
        ("0.0152088", "0.015208800000000001", None),  # a float artefact: under the floor
        ("0.00060025", "0.00065", "0.00004975"),  # 7.7%: drift
        ("0.00065", "0.00060025", "0.00004975"),  # either way round
        ("100", "100.5", None),  # 0.5% of a large call: within tolerance
        ("100", "101.01", None),  # 1% of the larger figure (1.0101) is the limit
        ("101.01", "100", None),
        ("100", "101.5", "1.5"),
        ("0", "0.0000005", None),  # under the floor
        ("0", "0.000002", "0.000002"),
    ],
)
def test_cost_drift(computed: str, reported: str, expected: str | None) -> None:
    drift = cost_drift(
        computed=Decimal(computed),
        reported=Decimal(reported),
        tolerance=Decimal("0.01"),
        floor=Decimal("0.000001"),
    )
    assert drift == (None if expected is None else Decimal(expected))


def test_cost_drift_refuses_negative_figures() -> None:
    with pytest.raises(PricingError, match="reported must be >= 0"):
        cost_drift(
            computed=Decimal(1), reported=Decimal(-1), tolerance=Decimal(0), floor=Decimal(0)
        )


# --- Price versions that cannot be charged exactly ------------------------------------------


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"long_context_threshold": 1000}, "needs at least one long-context price"),
        ({"long_context_prompt": Decimal("0.000006")}, "need a long-context threshold"),
        ({"batch_discount": Decimal("2")}, "between 0 and 1"),
        (
            {
                "input_cache_read": Decimal("0.000001"),
                "long_context_threshold": 1000,
                "long_context_prompt": Decimal("0.000007"),
            },
            "input_cache_read price (0.000001 x 0.000007 / 0.000003) has no exact decimal",
        ),
        (
            {"prompt": Decimal("0.00000000000000000000000001"), "batch_discount": Decimal("0.5")},
            "0.000000000000000000000000005 after the batch discount) has more than 26 decimal",
        ),
    ],
)
def test_price_version_problems(changes: dict[str, Any], problem: str) -> None:
    version = replace(prices(**SONNET), **changes)
    problems = price_version_problems(version, max_places=26)
    assert any(problem in text for text in problems), problems


def test_sound_price_versions_have_no_problems() -> None:
    assert price_version_problems(prices(**SONNET), max_places=26) == []
    assert (
        price_version_problems(replace(TIERED, batch_discount=Decimal("0.5")), max_places=26) == []
    )
