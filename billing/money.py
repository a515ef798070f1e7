"""Decimal arithmetic for money: one context, exact or loud.

Python's default context keeps 28 significant digits, which is less than a price with
23 decimal places times a large token count needs. Every cost calculation runs in
`EXACT`, which has room for any sum we store and raises instead of rounding silently.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from decimal import Decimal

ZERO = Decimal("0")

EXACT = decimal.Context(
    prec=60,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow, decimal.DivisionByZero],
)

# Display rounding only: amounts are stored exactly.
DISPLAY_PLACES = Decimal("0.000001")


def money_sum(values: Iterable[Decimal | None]) -> Decimal:
    """Return the exact sum of the given amounts (None counts as zero)."""
    total = ZERO
    for value in values:
        if value is not None:
            total = EXACT.add(total, value)
    return total


def money_mul(amount: Decimal, count: int) -> Decimal:
    """Return amount x count exactly (a unit price times a number of units)."""
    return EXACT.multiply(amount, Decimal(count))


def format_usd(amount: Decimal | None) -> str:
    """Format an amount for people: $ with six decimal places, or an em dash for None."""
    if amount is None:
        return "—"
    return f"${amount.quantize(DISPLAY_PLACES, rounding=decimal.ROUND_HALF_UP):,}"
