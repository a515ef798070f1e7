"""JSON bodies whose Decimal values are written as exact number literals.

Python's json cannot write a Decimal, and going through float would lose digits (a cost
of 0.00000008333333333333334 USD x 3 tokens is not a float). Real OpenRouter sends
`usage.cost` as a JSON number, so the sandbox does too: each Decimal is first written
as a unique placeholder string, which is then replaced by the Decimal's digits.
"""

from __future__ import annotations

import json
import secrets
from decimal import Decimal
from typing import Any

# Random per process, so no text a client sends can ever look like a placeholder.
_PLACEHOLDER = f"__sandbox_exact_{secrets.token_hex(8)}_"


def decimal_literal(value: Decimal) -> str:
    """Return a Decimal as a JSON number literal with all its digits, no exponent."""
    if not value.is_finite():
        raise ValueError(f"{value!r} has no JSON number literal")
    return format(value, "f")


def dumps_exact(payload: Any) -> bytes:
    """Serialise payload as compact UTF-8 JSON, Decimals as exact number literals."""
    literals: list[str] = []

    def placeholder(value: object) -> str:
        if isinstance(value, Decimal):
            literals.append(decimal_literal(value))
            return f"{_PLACEHOLDER}{len(literals) - 1}"
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    text = json.dumps(payload, default=placeholder, ensure_ascii=False, separators=(",", ":"))
    for index, literal in enumerate(literals):
        text = text.replace(f'"{_PLACEHOLDER}{index}"', literal, 1)
    return text.encode("utf-8")
