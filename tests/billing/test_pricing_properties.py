"""Properties of the cost engine, checked on generated usage and prices (hypothesis).

The oracle `expected_cost` is written apart from billing.pricing, from the billing rules
in its module docstring, with Python's exact Fraction: a cost must equal it to the last
digit, never approximately.
"""

from __future__ import annotations

from dataclasses import fields, replace
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from billing.money import EXACT
from billing.pricing import (
    PricingError,
    TokenUsage,
    UnitPrices,
    cost_breakdown,
    cost_drift,
    cost_of,
    dearest_token_prices,
    resolve_prices,
)

# Token counts up to ten million per kind: far past any context window.
counts = st.integers(min_value=0, max_value=10_000_000)
# Per-token prices as OpenRouter writes them: up to 10 significant digits, up to 23 places.
price_values = st.builds(
    lambda digits, places: Decimal(digits).scaleb(-places),
    st.integers(min_value=0, max_value=10**10),
    st.integers(min_value=0, max_value=23),
)
maybe_price = st.none() | price_values
# Tier ratios as providers set them (Anthropic 2x input, 1.5x output; Google 2x, 1.5x).
tier_ratios = st.sampled_from([Decimal("1"), Decimal("1.25"), Decimal("1.5"), Decimal("2")])
discounts = st.builds(
    lambda thousandths: Decimal(thousandths).scaleb(-3), st.integers(min_value=0, max_value=1000)
)


@st.composite
def usages(draw: st.DrawFn, *, fees: bool = True) -> TokenUsage:
    cached, write_5m, write_1h, uncached = (draw(counts) for _ in range(4))
    reasoning, visible = draw(counts), draw(counts)
    small = st.integers(min_value=0, max_value=50)
    return TokenUsage(
        input_tokens=uncached + cached + write_5m + write_1h,
        cached_input_tokens=cached,
        cache_write_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=visible + reasoning,
        reasoning_tokens=reasoning,
        images=draw(small) if fees else 0,
        web_searches=draw(small) if fees else 0,
        requests=draw(st.integers(min_value=0, max_value=3)) if fees else 0,
        is_batch=draw(st.booleans()),
    )


@st.composite
def unit_prices(draw: st.DrawFn, *, tier: bool | None = None) -> UnitPrices:
    """Priced models; a tier (when drawn) never cheaper than the base, as in real life."""
    optional: dict[str, Any] = {
        kind: draw(maybe_price)
        for kind in (
            "input_cache_read",
            "input_cache_write",
            "input_cache_write_1h",
            "internal_reasoning",
            "request",
            "image",
            "web_search",
        )
    }
    base = UnitPrices(
        prompt=draw(price_values),
        completion=draw(price_values),
        **optional,
        batch_discount=draw(st.none() | discounts),
    )
    if not (draw(st.booleans()) if tier is None else tier):
        return base
    assert base.prompt is not None
    assert base.completion is not None
    read = base.input_cache_read if base.input_cache_read is not None else base.prompt
    return replace(
        base,
        long_context_threshold=draw(counts),
        long_context_prompt=EXACT.multiply(base.prompt, draw(tier_ratios)),
        long_context_completion=EXACT.multiply(base.completion, draw(tier_ratios)),
        long_context_input_cache_read=draw(
            st.none() | tier_ratios.map(lambda ratio: EXACT.multiply(read, ratio))
        ),
    )


def expected_cost(usage: TokenUsage, prices: UnitPrices) -> Fraction:
    """The billing rules, by hand, in exact fractions."""

    def exact(value: Decimal | None) -> Fraction | None:
        return None if value is None else Fraction(value)

    assert prices.prompt is not None
    assert prices.completion is not None
    prompt, completion = Fraction(prices.prompt), Fraction(prices.completion)
    read, write_5m = exact(prices.input_cache_read), exact(prices.input_cache_write)
    write_1h, reasoning = exact(prices.input_cache_write_1h), exact(prices.internal_reasoning)
    threshold = prices.long_context_threshold
    if threshold is not None and usage.input_tokens > threshold:
        tier_prompt = exact(prices.long_context_prompt) or prompt
        tier_completion = exact(prices.long_context_completion) or completion
        # Derived prices keep their ratio to the price they derive from.
        input_ratio = tier_prompt / prompt if prompt else Fraction(1)
        output_ratio = tier_completion / completion if completion else Fraction(1)
        tier_read = exact(prices.long_context_input_cache_read)
        if tier_read is None and read is not None:
            tier_read = read * input_ratio
        read = tier_read
        write_5m = None if write_5m is None else write_5m * input_ratio
        write_1h = None if write_1h is None else write_1h * input_ratio
        reasoning = None if reasoning is None else reasoning * output_ratio
        prompt, completion = tier_prompt, tier_completion
    read = prompt if read is None else read
    write_5m = prompt if write_5m is None else write_5m
    write_1h = write_5m if write_1h is None else write_1h
    reasoning = completion if reasoning is None else reasoning
    tokens = (
        usage.uncached_input_tokens * prompt
        + usage.cached_input_tokens * read
        + usage.cache_write_tokens * write_5m
        + usage.cache_write_1h_tokens * write_1h
        + usage.visible_output_tokens * completion
        + usage.reasoning_tokens * reasoning
    )
    if usage.is_batch and prices.batch_discount is not None:
        tokens *= 1 - Fraction(prices.batch_discount)
    fees = (
        usage.requests * (exact(prices.request) or 0)
        + usage.images * (exact(prices.image) or 0)
        + usage.web_searches * (exact(prices.web_search) or 0)
    )
    return tokens + fees


@given(usages(), unit_prices())
def test_cost_is_an_exact_decimal_equal_to_the_hand_formula(
    usage: TokenUsage, prices: UnitPrices
) -> None:
    cost = cost_of(usage, prices)
    assert type(cost) is Decimal
    assert Fraction(cost) == expected_cost(usage, prices)


@given(usages(), unit_prices())
def test_every_part_is_a_non_negative_decimal_and_the_parts_add_up(
    usage: TokenUsage, prices: UnitPrices
) -> None:
    parts = cost_breakdown(usage, prices)
    values = [getattr(parts, field.name) for field in fields(parts)]
    assert all(type(value) is Decimal and value >= 0 for value in values)
    assert Fraction(parts.total) == sum(Fraction(value) for value in values)


@given(usages(), unit_prices())
def test_a_call_costs_the_sum_of_its_parts_billed_apart(
    usage: TokenUsage, prices: UnitPrices
) -> None:
    # Billed apart, each part would fall on its own side of the tier threshold: the parts
    # are priced at the prices the whole call was charged at.
    flat = resolve_prices(usage, prices)
    batch = usage.is_batch
    parts = [
        TokenUsage(input_tokens=usage.uncached_input_tokens, requests=0, is_batch=batch),
        TokenUsage(
            input_tokens=usage.cached_input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            requests=0,
            is_batch=batch,
        ),
        TokenUsage(
            input_tokens=usage.cache_write_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            requests=0,
            is_batch=batch,
        ),
        TokenUsage(
            input_tokens=usage.cache_write_1h_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            requests=0,
            is_batch=batch,
        ),
        TokenUsage(output_tokens=usage.visible_output_tokens, requests=0, is_batch=batch),
        TokenUsage(
            output_tokens=usage.reasoning_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            requests=0,
            is_batch=batch,
        ),
        TokenUsage(
            requests=usage.requests,
            images=usage.images,
            web_searches=usage.web_searches,
            is_batch=batch,
        ),
    ]
    total = sum((Fraction(cost_of(part, flat)) for part in parts), Fraction(0))
    assert Fraction(cost_of(usage, prices)) == total


@given(usages(fees=False), usages(fees=False), unit_prices(), st.booleans())
def test_splitting_tokens_across_two_calls_keeps_the_total(
    first: TokenUsage, second: TokenUsage, prices: UnitPrices, batch: bool
) -> None:
    first, second = replace(first, is_batch=batch), replace(second, is_batch=batch)
    whole = TokenUsage(
        **{
            field.name: getattr(first, field.name) + getattr(second, field.name)
            for field in fields(TokenUsage)
            if field.name != "is_batch"
        },
        is_batch=batch,
    )
    threshold = prices.long_context_threshold
    if threshold is not None:
        # The tier is per call: only calls on the same side of it add up.
        sides = {call.input_tokens > threshold for call in (first, second, whole)}
        assume(len(sides) == 1)
    assert cost_of(whole, prices) == EXACT.add(cost_of(first, prices), cost_of(second, prices))


@given(unit_prices(), st.integers(0, 3), st.integers(0, 50), st.integers(0, 50), st.booleans())
def test_zero_tokens_cost_only_the_fixed_fees(
    prices: UnitPrices, requests: int, images: int, searches: int, batch: bool
) -> None:
    usage = TokenUsage(requests=requests, images=images, web_searches=searches, is_batch=batch)
    fees = [
        (requests, prices.request),
        (images, prices.image),
        (searches, prices.web_search),
    ]
    expected = sum((Fraction(price or 0) * count for count, price in fees), Fraction(0))
    assert Fraction(cost_of(usage, prices)) == expected
    if prices.request is not None:
        assert cost_of(TokenUsage(), prices) == prices.request


@given(usages(), usages(fees=False), unit_prices())
def test_more_tokens_never_cost_less_even_across_the_tier(
    usage: TokenUsage, extra: TokenUsage, prices: UnitPrices
) -> None:
    more = TokenUsage(
        **{
            field.name: getattr(usage, field.name) + getattr(extra, field.name)
            for field in fields(TokenUsage)
            if field.name != "is_batch"
        },
        is_batch=usage.is_batch,
    )
    assert cost_of(more, prices) >= cost_of(usage, prices)


@given(usages(), unit_prices(tier=True))
def test_tier_applies_to_the_whole_call_exactly_above_the_threshold(
    usage: TokenUsage, prices: UnitPrices
) -> None:
    threshold = prices.long_context_threshold
    assert threshold is not None
    below = replace(prices, long_context_threshold=None)
    tiered = replace(prices, long_context_threshold=0)
    expected = below if usage.input_tokens <= threshold else tiered
    assert cost_of(usage, prices) == cost_of(usage, expected)
    assert cost_of(usage, tiered) >= cost_of(usage, below)


@given(usages(), unit_prices())
def test_batch_discount_never_increases_the_cost(usage: TokenUsage, prices: UnitPrices) -> None:
    batch = cost_of(replace(usage, is_batch=True), prices)
    standard = cost_of(replace(usage, is_batch=False), prices)
    assert batch <= standard
    if not prices.batch_discount:
        assert batch == standard


@given(usages(), unit_prices(), st.sampled_from(["prompt", "completion"]))
def test_a_model_without_input_or_output_price_is_never_charged(
    usage: TokenUsage, prices: UnitPrices, missing: str
) -> None:
    unpriced = replace(prices, **{missing: None})
    assert not unpriced.is_priced
    with pytest.raises(PricingError, match="no input/output price"):
        cost_of(usage, unpriced)


@given(usages(), unit_prices())
def test_the_ledgers_resolved_prices_give_the_same_cost(
    usage: TokenUsage, prices: UnitPrices
) -> None:
    resolved = resolve_prices(usage, prices)
    assert resolve_prices(usage, resolved) == resolved
    assert resolved.long_context_threshold is None
    assert cost_of(usage, resolved) == cost_of(usage, prices)


@given(usages(fees=False), unit_prices())
def test_dearest_prices_bound_what_a_call_can_cost(usage: TokenUsage, prices: UnitPrices) -> None:
    dearest = dearest_token_prices(prices, input_tokens=usage.input_tokens)
    assert dearest is not None
    input_price, output_price = dearest
    bound = Fraction(input_price) * usage.input_tokens + Fraction(output_price) * (
        usage.output_tokens
    )
    assert Fraction(cost_of(usage, prices)) <= bound


amounts = st.builds(
    lambda digits, places: Decimal(digits).scaleb(-places),
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=26),
)


@given(amounts, amounts, discounts, amounts)
def test_cost_drift_is_the_difference_beyond_both_limits(
    computed: Decimal, reported: Decimal, tolerance: Decimal, floor: Decimal
) -> None:
    drift = cost_drift(computed=computed, reported=reported, tolerance=tolerance, floor=floor)
    other_way = cost_drift(computed=reported, reported=computed, tolerance=tolerance, floor=floor)
    assert drift == other_way
    difference = abs(Fraction(computed) - Fraction(reported))
    beyond = difference > Fraction(tolerance) * max(Fraction(computed), Fraction(reported))
    if beyond and difference > Fraction(floor):
        assert drift is not None
        assert Fraction(drift) == difference
    else:
        assert drift is None


@given(amounts, discounts, st.integers(min_value=900, max_value=1100), st.booleans())
def test_cost_drift_limit_is_a_fraction_of_the_larger_figure(
    computed: Decimal, tolerance: Decimal, per_mille: int, reported_higher: bool
) -> None:
    # A difference close to the limit, where the choice of the larger figure decides.
    difference = EXACT.multiply(EXACT.multiply(computed, tolerance), Decimal(per_mille).scaleb(-3))
    other = EXACT.add(computed, difference)
    ours, theirs = (computed, other) if reported_higher else (other, computed)
    drift = cost_drift(computed=ours, reported=theirs, tolerance=tolerance, floor=Decimal(0))
    beyond = Fraction(difference) > Fraction(tolerance) * Fraction(other)
    assert drift == (difference if beyond and difference > 0 else None)
