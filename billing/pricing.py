"""The cost engine: pure functions from token usage and unit prices to an exact cost.

Conventions (one normalised shape for every wire format; adapters convert at the edge):
- `input_tokens` counts every prompt token, including cached reads and cache writes;
- `output_tokens` counts every completion token, including reasoning tokens;
- `cached_input_tokens`, `cache_write_tokens` are parts of `input_tokens`,
  `reasoning_tokens` a part of `output_tokens`.
Each part is charged at its own price when the catalog gives one, else at the price of
the whole it belongs to (a model without a cache-read price bills cached tokens as input).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from billing.money import EXACT, ZERO, money_mul

# OpenRouter marks router models whose price depends on where a request lands with "-1".
VARIABLE_PRICE_SENTINEL = Decimal("-1")


class PricingError(Exception):
    """A price or usage value that cannot be charged (malformed, negative, unpriced)."""


@dataclass(frozen=True)
class TokenUsage:
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
        return (
            self.input_tokens
            - self.cached_input_tokens
            - self.cache_write_tokens
            - self.cache_write_1h_tokens
        )

    @property
    def visible_output_tokens(self) -> int:
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
        values: dict[str, Decimal | None] = {}
        for kind in PRICE_KINDS:
            raw = (pricing or {}).get(kind)
            values[kind] = parse_price(raw, kind=kind)
        return cls(**values)

    def as_dict(self) -> dict[str, Decimal | None]:
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
    input: Decimal
    cached_input: Decimal
    cache_write: Decimal
    output: Decimal
    reasoning: Decimal
    request: Decimal
    images: Decimal
    web_search: Decimal

    @property
    def total(self) -> Decimal:
        total = ZERO
        for field in fields(self):
            total = EXACT.add(total, getattr(self, field.name))
        return total


def resolve_prices(usage: TokenUsage, prices: UnitPrices) -> UnitPrices:
    """The flat unit prices one call is charged at: the long-context tier applied when the
    call's input exceeds its threshold (for all the call's tokens), tier fields cleared.
    The batch discount stays (it applies only when the call was a batch call)."""
    tier_applies = (
        prices.long_context_threshold is not None
        and usage.input_tokens > prices.long_context_threshold
    )
    prompt, completion, cache_read = prices.prompt, prices.completion, prices.input_cache_read
    if tier_applies:
        prompt = prices.long_context_prompt if prices.long_context_prompt is not None else prompt
        if prices.long_context_completion is not None:
            completion = prices.long_context_completion
        if prices.long_context_input_cache_read is not None:
            cache_read = prices.long_context_input_cache_read
    return replace(
        prices,
        prompt=prompt,
        completion=completion,
        input_cache_read=cache_read,
        long_context_threshold=None,
        long_context_prompt=None,
        long_context_completion=None,
        long_context_input_cache_read=None,
    )


def cost_breakdown(usage: TokenUsage, prices: UnitPrices) -> CostBreakdown:
    """Price each part of a call's usage exactly.

    Raises PricingError when the model has no input or output price (unpriced models are
    never silently free).
    """
    if not prices.is_priced:
        raise PricingError("the model has no input/output price (unpriced or variable)")
    prompt, completion = prices.prompt, prices.completion
    assert prompt is not None
    assert completion is not None

    def charge(count: int, price: Decimal | None, fallback: Decimal) -> Decimal:
        if count == 0:
            return ZERO
        return money_mul(price if price is not None else fallback, count)

    return CostBreakdown(
        input=charge(usage.uncached_input_tokens, prompt, prompt),
        cached_input=charge(usage.cached_input_tokens, prices.input_cache_read, prompt),
        cache_write=charge(usage.cache_write_tokens, prices.input_cache_write, prompt),
        output=charge(usage.visible_output_tokens, completion, completion),
        reasoning=charge(usage.reasoning_tokens, prices.internal_reasoning, completion),
        request=charge(usage.requests, prices.request, ZERO),
        images=charge(usage.images, prices.image, ZERO),
        web_search=charge(usage.web_searches, prices.web_search, ZERO),
    )


def cost_of(usage: TokenUsage, prices: UnitPrices) -> Decimal:
    """Return the exact cost in USD of one call. Raises PricingError if unpriced."""
    return cost_breakdown(usage, prices).total
