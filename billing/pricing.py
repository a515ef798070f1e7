"""The cost engine: pure functions from token usage and unit prices to an exact cost.

Conventions (one normalised shape for every wire format; adapters convert at the edge):
- `input_tokens` counts every prompt token, including cached reads and cache writes;
- `output_tokens` counts every completion token, including reasoning tokens;
- `cached_input_tokens`, `cache_write_tokens` (5-minute cache) and `cache_write_1h_tokens`
  (1-hour cache) are parts of `input_tokens`, `reasoning_tokens` a part of `output_tokens`.

Billing rules, and where they come from:
- Each part is charged at its own price when the catalog gives one, else at the price of
  the whole it belongs to: cache reads and 5-minute cache writes fall back to the input
  price, 1-hour writes to the 5-minute write price and then the input price, reasoning to
  the output price (OpenAI, Anthropic and Google all bill reasoning as output tokens).
- Fixed fees (per request, per image, per web search) are charged only when the catalog
  prices them: OpenRouter lists the fees a model has.
- Long-context tier: when a call's input exceeds `long_context_threshold`, all of the
  call's tokens are charged at the tier (Anthropic's "long context pricing" for requests
  over 200K input tokens, Google's Gemini 2.5 Pro prices for prompts over 200K). A price
  without its own tier price keeps its ratio to the price it derives from: cache reads and
  writes move with the input price, reasoning with the output price. Anthropic: "prompt
  caching multipliers apply on top of long context pricing"; Google's tier cache price is
  twice the base one, like its input price.
- Batch: a call sent through a batch API has its token charges multiplied by
  (1 - batch_discount); fixed fees are charged in full. OpenAI's Batch API saves "50% on
  inputs and outputs" and Anthropic's Message Batches give "a 50% discount on both input
  and output tokens" (cache reads and writes included); both list tool fees such as web
  search ($10 per 1,000) apart, with no batch rate. A batch call on a model without a
  batch discount is charged in full: a missing discount never under-bills.

All arithmetic runs in `billing.money.EXACT`, which raises instead of rounding.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from billing.money import EXACT, ZERO, money_mul, money_sum

# OpenRouter marks router models whose price depends on where a request lands with "-1".
VARIABLE_PRICE_SENTINEL = Decimal("-1")
ONE = Decimal(1)

_Fallback = TypeVar("_Fallback", Decimal, Decimal | None)


class PricingError(Exception):
    """A price or usage value that cannot be charged (malformed, negative, unpriced)."""


@dataclass(frozen=True)
class TokenUsage:
    """What one call used, in the normalised shape above (see the module docstring).

    Raises PricingError on construction for negative or non-integer counts and for parts
    larger than their whole.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0  # written to a 5-minute cache
    cache_write_1h_tokens: int = 0  # written to a 1-hour cache
    reasoning_tokens: int = 0
    images: int = 0
    web_searches: int = 0
    requests: int = 1
    is_batch: bool = False  # sent through a provider's batch API (discounted)

    def __post_init__(self) -> None:
        for field in fields(self):
            if field.name == "is_batch":
                continue
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise PricingError(f"{field.name} must be a whole number >= 0, got {value!r}")
        cache_writes = self.cache_write_tokens + self.cache_write_1h_tokens
        if self.cached_input_tokens + cache_writes > self.input_tokens:
            raise PricingError(
                f"cached ({self.cached_input_tokens}) + cache-write ({cache_writes}) tokens "
                f"exceed input tokens ({self.input_tokens})"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise PricingError(
                f"reasoning tokens ({self.reasoning_tokens}) exceed output tokens "
                f"({self.output_tokens})"
            )

    @property
    def uncached_input_tokens(self) -> int:
        """Prompt tokens neither read from nor written to a cache."""
        return (
            self.input_tokens
            - self.cached_input_tokens
            - self.cache_write_tokens
            - self.cache_write_1h_tokens
        )

    @property
    def visible_output_tokens(self) -> int:
        """Completion tokens that are not reasoning."""
        return self.output_tokens - self.reasoning_tokens


# The catalog's price kinds, by OpenRouter's names. All are USD per token except
# `request` and `web_search` (per call) and `image` (per image).
PRICE_KINDS = (
    "prompt",
    "completion",
    "input_cache_read",
    "input_cache_write",
    "input_cache_write_1h",
    "internal_reasoning",
    "request",
    "image",
    "web_search",
)
# The kinds charged per token, which the long-context tier and the batch discount change.
TOKEN_PRICE_KINDS = PRICE_KINDS[:6]
# Set by admins only (OpenRouter's listing has neither); ModelPrice has the same fields.
LONG_CONTEXT_FIELDS = (
    "long_context_threshold",
    "long_context_prompt",
    "long_context_completion",
    "long_context_input_cache_read",
)


@dataclass(frozen=True)
class UnitPrices:
    """Unit prices of one model at one time; None means the catalog gives no price."""

    prompt: Decimal | None = None
    completion: Decimal | None = None
    input_cache_read: Decimal | None = None
    input_cache_write: Decimal | None = None
    input_cache_write_1h: Decimal | None = None
    internal_reasoning: Decimal | None = None
    request: Decimal | None = None
    image: Decimal | None = None
    web_search: Decimal | None = None
    # Long-context tier and batch discount (not in OpenRouter's listing; set by admins).
    long_context_threshold: int | None = None
    long_context_prompt: Decimal | None = None
    long_context_completion: Decimal | None = None
    long_context_input_cache_read: Decimal | None = None
    batch_discount: Decimal | None = None

    @property
    def is_priced(self) -> bool:
        """True when input and output have a price (zero counts: free is a price)."""
        return self.prompt is not None and self.completion is not None

    @classmethod
    def from_openrouter(cls, pricing: Mapping[str, Any] | None) -> UnitPrices:
        """Parse an OpenRouter `pricing` object exactly; "-1" (variable) becomes None.

        Raises PricingError for a value that is not a decimal string or is negative.
        """
        values: dict[str, Any] = {}
        for kind in PRICE_KINDS:
            raw = (pricing or {}).get(kind)
            values[kind] = parse_price(raw, kind=kind)
        return cls(**values)

    def as_dict(self) -> dict[str, Decimal | None]:
        """The catalog price kinds only (no tier, no batch discount), by kind."""
        return {kind: getattr(self, kind) for kind in PRICE_KINDS}


def parse_price(raw: Any, *, kind: str) -> Decimal | None:
    """Turn one catalog price string into a Decimal, exactly as written.

    Returns None for a missing price or OpenRouter's "-1" variable-price sentinel.
    Raises PricingError for floats, malformed strings and negative prices.
    """
    if raw is None or raw == "":
        return None
    if isinstance(raw, float):
        raise PricingError(f"price {kind!r} is a JSON number ({raw!r}); expected a string")
    if not isinstance(raw, str | int):
        raise PricingError(f"price {kind!r} has type {type(raw).__name__}; expected a string")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise PricingError(f"price {kind!r} is not a decimal number: {raw!r}") from None
    if not value.is_finite():
        raise PricingError(f"price {kind!r} is not finite: {raw!r}")
    if value == VARIABLE_PRICE_SENTINEL:
        return None
    if value < 0:
        raise PricingError(f"price {kind!r} is negative: {raw!r}")
    return value


@dataclass(frozen=True)
class CostBreakdown:
    """What one call cost, part by part, in USD.

    Token parts are net of the batch discount when one applied; fees never are.
    """

    input: Decimal
    cached_input: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    output: Decimal
    reasoning: Decimal
    request: Decimal
    images: Decimal
    web_search: Decimal

    @property
    def total(self) -> Decimal:
        """The exact sum of every part."""
        return money_sum(getattr(self, field.name) for field in fields(self))


def long_context_applies(usage: TokenUsage, prices: UnitPrices) -> bool:
    """Return True when the call's input exceeds the model's long-context threshold."""
    threshold = prices.long_context_threshold
    return threshold is not None and usage.input_tokens > threshold


def resolve_prices(usage: TokenUsage, prices: UnitPrices) -> UnitPrices:
    """Return the flat unit prices one call is charged at.

    When the call's input exceeds the long-context threshold, every token price is its
    tier price: the tier's own when it gives one, else the base price scaled like the
    price it derives from (see the module docstring). The tier fields are cleared either
    way, so the result can be stored on a ledger row, and resolving it again changes
    nothing; a model without base input and output prices stays unpriced whatever its
    tier. The batch discount is kept: it applies only if the call was a batch call.
    Raises PricingError when a tier price must be derived and cannot be exactly (a base
    price of zero under a paid tier, or a ratio without a finite decimal expansion; the
    admin refuses such prices, see `price_version_problems`).
    """
    flat = replace(prices, **dict.fromkeys(LONG_CONTEXT_FIELDS))
    # A tier is a premium on base prices: it never prices a model that has none.
    if not prices.is_priced or not long_context_applies(usage, prices):
        return flat
    prompt_tier, completion_tier = prices.long_context_prompt, prices.long_context_completion
    return replace(
        flat,
        prompt=_or(prompt_tier, prices.prompt),
        completion=_or(completion_tier, prices.completion),
        input_cache_read=_or(
            prices.long_context_input_cache_read,
            _scaled(prices.input_cache_read, prices.prompt, prompt_tier, "input_cache_read"),
        ),
        input_cache_write=_scaled(
            prices.input_cache_write, prices.prompt, prompt_tier, "input_cache_write"
        ),
        input_cache_write_1h=_scaled(
            prices.input_cache_write_1h, prices.prompt, prompt_tier, "input_cache_write_1h"
        ),
        internal_reasoning=_scaled(
            prices.internal_reasoning, prices.completion, completion_tier, "internal_reasoning"
        ),
    )


def _or(price: Decimal | None, fallback: _Fallback) -> Decimal | _Fallback:
    """`price`, or `fallback` when none is given (zero is a price, and is kept)."""
    return fallback if price is None else price


def _scaled(
    price: Decimal | None, base: Decimal | None, tier: Decimal | None, kind: str
) -> Decimal | None:
    """`price` x tier / base exactly: a derived price moved by its base price's tier ratio."""
    if price is None or base is None or tier is None or price == 0 or tier == base:
        return price
    if base == 0:
        raise PricingError(
            f"Cannot derive the long-context {kind} price: the base price it derives from "
            "is zero. Give the tier its own price."
        )
    try:
        return EXACT.divide(EXACT.multiply(price, tier), base)
    except decimal.Inexact:
        raise PricingError(
            f"The long-context {kind} price ({price} x {tier} / {base}) has no exact "
            "decimal value. Choose tier prices in an exact ratio to the base prices."
        ) from None


def _kept_fraction(usage: TokenUsage, prices: UnitPrices) -> Decimal:
    """The share of the token charges that is billed: 1 - batch_discount for batch calls.

    Raises PricingError for a discount outside [0, 1].
    """
    discount = prices.batch_discount
    if not usage.is_batch or discount is None:
        return ONE
    if not ZERO <= discount <= ONE:
        raise PricingError(f"batch discount must be between 0 and 1, got {discount}")
    return EXACT.subtract(ONE, discount)


def cost_breakdown(usage: TokenUsage, prices: UnitPrices) -> CostBreakdown:
    """Price each part of a call's usage exactly and return the parts.

    `prices` may still carry a long-context tier: it is resolved here for this call
    (prices already resolved by `resolve_prices` give the same result).
    Raises PricingError when the model has no input or output price (unpriced models are
    never silently free), and for tier or discount values that cannot be charged exactly.
    """
    prices = resolve_prices(usage, prices)
    if prices.prompt is None or prices.completion is None:
        raise PricingError("the model has no input/output price (unpriced or variable)")
    prompt, completion = prices.prompt, prices.completion
    kept = _kept_fraction(usage, prices)

    def tokens(count: int, price: Decimal) -> Decimal:
        if count == 0:
            return ZERO
        charge = money_mul(price, count)
        return charge if kept == ONE else EXACT.multiply(charge, kept)

    def fee(count: int, price: Decimal | None) -> Decimal:
        # An unlisted fee is no fee: the catalog names the fees a model charges.
        if count == 0 or price is None:
            return ZERO
        return money_mul(price, count)

    write_5m = _or(prices.input_cache_write, prompt)
    return CostBreakdown(
        input=tokens(usage.uncached_input_tokens, prompt),
        cached_input=tokens(usage.cached_input_tokens, _or(prices.input_cache_read, prompt)),
        cache_write=tokens(usage.cache_write_tokens, write_5m),
        cache_write_1h=tokens(
            usage.cache_write_1h_tokens, _or(prices.input_cache_write_1h, write_5m)
        ),
        output=tokens(usage.visible_output_tokens, completion),
        reasoning=tokens(usage.reasoning_tokens, _or(prices.internal_reasoning, completion)),
        request=fee(usage.requests, prices.request),
        images=fee(usage.images, prices.image),
        web_search=fee(usage.web_searches, prices.web_search),
    )


def cost_of(usage: TokenUsage, prices: UnitPrices) -> Decimal:
    """Return the exact cost in USD of one call. Raises PricingError like cost_breakdown."""
    return cost_breakdown(usage, prices).total


def dearest_token_prices(
    prices: UnitPrices, *, input_tokens: int
) -> tuple[Decimal, Decimal] | None:
    """Return the dearest (input-side, output-side) price per token that a call with
    `input_tokens` input tokens can be charged, or None for an unpriced model.

    For a worst-case bound: the long-context tier is applied when the input exceeds its
    threshold (a tier 1-hour cache write can cost four times the base input price), the
    batch discount is not. Raises PricingError like resolve_prices.
    """
    resolved = resolve_prices(TokenUsage(input_tokens=input_tokens), prices)
    if resolved.prompt is None or resolved.completion is None:
        return None
    # A kind without its own price is charged at one of these, so the max is over them.
    input_side = (
        resolved.prompt,
        resolved.input_cache_read,
        resolved.input_cache_write,
        resolved.input_cache_write_1h,
    )
    output_side = (resolved.completion, resolved.internal_reasoning)
    return (
        max(price for price in input_side if price is not None),
        max(price for price in output_side if price is not None),
    )


def cost_drift(
    *, computed: Decimal, reported: Decimal, tolerance: Decimal, floor: Decimal
) -> Decimal | None:
    """Return |computed - reported| when it is drift, else None.

    Drift is a difference above `tolerance` (a fraction) of the larger figure and above
    `floor` (USD): the relative test ignores rounding on big calls, the floor ignores
    sub-micro-dollar noise (float artefacts in a provider's JSON) on tiny ones.
    Raises PricingError for a negative argument.
    """
    for name, value in (
        ("computed", computed),
        ("reported", reported),
        ("tolerance", tolerance),
        ("floor", floor),
    ):
        if value < 0:
            raise PricingError(f"{name} must be >= 0, got {value}")
    difference = EXACT.abs(EXACT.subtract(computed, reported))
    if difference > EXACT.multiply(tolerance, max(computed, reported)) and difference > floor:
        return difference
    return None


def price_version_problems(prices: UnitPrices, *, max_places: int) -> list[str]:
    """Return why calls could not be charged exactly at these prices ([] when they can).

    Checks what a form cannot see field by field: a long-context threshold without tier
    prices (or tier prices without a threshold), negative prices (the database constraint
    covers the catalog kinds only), a batch discount outside [0, 1], tier
    prices that cannot be derived exactly, and unit prices that, once the tier and the
    batch discount apply, need more than `max_places` decimal places (the ledger's columns
    hold that many; the database would round a longer one).
    """
    has_threshold = prices.long_context_threshold is not None
    tier_prices = [getattr(prices, name) for name in LONG_CONTEXT_FIELDS[1:]]
    problems: list[str] = []
    if has_threshold and all(price is None for price in tier_prices):
        problems.append("A long-context threshold needs at least one long-context price.")
    if not has_threshold and any(price is not None for price in tier_prices):
        problems.append("Long-context prices need a long-context threshold.")
    if has_threshold and not prices.is_priced:
        problems.append("A long-context tier needs base input and output prices.")
    for name in (*PRICE_KINDS, *LONG_CONTEXT_FIELDS):
        value = getattr(prices, name)
        if value is not None and value < 0:
            problems.append(f"The {name.replace('_', ' ')} cannot be negative.")
    if prices.batch_discount is not None and not ZERO <= prices.batch_discount <= ONE:
        problems.append("The batch discount is a fraction between 0 and 1, e.g. 0.5.")
    if problems:
        return problems

    calls = [TokenUsage(is_batch=True)]
    if prices.long_context_threshold is not None:
        calls.append(TokenUsage(input_tokens=prices.long_context_threshold + 1, is_batch=True))
    for call in calls:
        try:
            resolved = resolve_prices(call, prices)
        except PricingError as exc:
            problems.append(str(exc))
            continue
        kept = _kept_fraction(call, resolved)
        for kind in TOKEN_PRICE_KINDS:
            price = getattr(resolved, kind)
            if price is None:
                continue
            charged = EXACT.multiply(price, kept)
            if max(_decimal_places(price), _decimal_places(charged)) > max_places:
                tier = " in the long-context tier" if call.input_tokens else ""
                discounted = "" if kept == ONE else f", {charged:f} after the batch discount"
                problems.append(
                    f"The {kind.replace('_', ' ')} price{tier} ({price:f}{discounted}) has "
                    f"more than {max_places} decimal places and cannot be stored exactly."
                )
    return problems


def _decimal_places(value: Decimal) -> int:
    exponent = value.normalize(EXACT).as_tuple().exponent
    assert isinstance(exponent, int)  # finite values only: prices are validated
    return max(0, -exponent)
