"""The cost engine: exact Decimal, each part at its own price, unpriced never free."""

from decimal import Decimal

import pytest

from billing.pricing import PricingError, TokenUsage, UnitPrices, cost_breakdown, cost_of


def prices(**kw: str) -> UnitPrices:
    return UnitPrices.from_openrouter(kw)


def test_input_and_output_tokens_times_prices_exactly():
    cost = cost_of(
        TokenUsage(input_tokens=1000, output_tokens=500),
        prices(prompt="0.0000001", completion="0.0000004"),
    )
    assert cost == Decimal("0.0003")


def test_float_artefact_prices_are_kept_to_the_last_digit():
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


def test_cached_cache_write_and_reasoning_tokens_are_charged_at_their_own_prices():
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


def test_parts_without_their_own_price_fall_back_to_input_or_output_price():
    usage = TokenUsage(input_tokens=10, cached_input_tokens=4, output_tokens=6, reasoning_tokens=2)
    assert cost_of(usage, prices(prompt="1", completion="10")) == Decimal(10 * 1 + 6 * 10)


def test_variable_or_missing_price_is_unpriced_not_zero():
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
def test_malformed_prices_are_refused(raw, message):
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
def test_impossible_usage_is_refused(kwargs):
    with pytest.raises(PricingError):
        TokenUsage(**kwargs)
