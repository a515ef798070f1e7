"""Recorded provider usage, through the real adapter parse functions and the cost engine.

Each file in tests/data/usage holds one answer exactly as the provider returned it, the
model's documented prices, and the cost worked out by hand from the provider's own
billing rules (the arithmetic is in its "why" field). The engine must agree to the last
digit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agents.providers import anthropic, gemini, openai_compat
from agents.providers.base import ChatResult
from agents.providers.http import parse_json
from billing.pricing import (
    PricingError,
    TokenUsage,
    UnitPrices,
    cost_drift,
    cost_of,
    parse_price,
    resolve_prices,
)

USAGE_DIR = Path(__file__).resolve().parent.parent / "data" / "usage"
FIXTURES = sorted(USAGE_DIR.glob("*.json"))

PARSERS: dict[str, Callable[..., ChatResult]] = {
    "openai": openai_compat.parse_chat_completion,
    "anthropic": anthropic.parse_message,
    "gemini": gemini.parse_generate_response,
}


def load(path: Path) -> dict[str, Any]:
    """A fixture, with JSON numbers read exactly (as the adapters read provider answers)."""
    return parse_json(path.read_text(encoding="utf-8"))


def unit_prices(raw: dict[str, Any]) -> UnitPrices:
    """The fixture's documented prices: per-token strings, the tier threshold in tokens."""
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "long_context_threshold":
            assert isinstance(value, int)
            values[name] = value
        else:
            assert isinstance(value, str), f"price {name} must be a string, got {value!r}"
            values[name] = parse_price(value, kind=name)
    return UnitPrices(**values)


def optional_decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda path: path.stem)
def test_recorded_usage_costs_what_the_providers_rules_say(path: Path) -> None:
    fixture = load(path)
    expected = fixture["expected"]
    prices = unit_prices(fixture["prices"])

    result = PARSERS[fixture["wire"]](
        fixture["response"], provider_label=fixture["provider"], secret=""
    )

    assert result.usage == TokenUsage(**expected["usage"])
    # Some batch APIs say so in the usage (Anthropic's service_tier); OpenAI's output lines
    # do not, and the caller knows it sent a batch.
    assert fixture["batch"] or not result.usage.is_batch
    usage = replace(result.usage, is_batch=fixture["batch"])
    cost = cost_of(usage, prices)
    assert type(cost) is Decimal
    assert cost == Decimal(expected["cost"])
    # The ledger stores the resolved prices and prices the call with them: same figure.
    assert cost_of(usage, resolve_prices(usage, prices)) == cost
    assert result.reported_cost == optional_decimal(expected["reported_cost"])
    if "drift_rule" in fixture:
        assert result.reported_cost is not None
        drift = cost_drift(
            computed=cost,
            reported=result.reported_cost,
            tolerance=Decimal(fixture["drift_rule"]["tolerance"]),
            floor=Decimal(fixture["drift_rule"]["floor"]),
        )
        assert drift == optional_decimal(expected["drift"])


@pytest.mark.parametrize("path", FIXTURES, ids=lambda path: path.stem)
def test_fixture_shows_its_sources_and_arithmetic(path: Path) -> None:
    fixture = load(path)
    assert fixture["sources"]
    assert all(isinstance(line, str) and line for line in fixture["why"])
    assert fixture["expected"]["cost"] in " ".join(fixture["why"])


def test_every_provider_has_recorded_usage() -> None:
    providers = {load(path)["provider"] for path in FIXTURES}
    assert providers >= {"OpenAI", "Anthropic", "Google", "OpenRouter"}


def test_a_recorded_call_on_an_unpriced_model_is_not_free() -> None:
    fixture = load(USAGE_DIR / "openai_o3_cached_reasoning.json")
    result = openai_compat.parse_chat_completion(
        fixture["response"], provider_label="OpenAI", secret=""
    )
    assert result.usage is not None
    with pytest.raises(PricingError):
        cost_of(result.usage, UnitPrices.from_openrouter({"prompt": "-1", "completion": "-1"}))
