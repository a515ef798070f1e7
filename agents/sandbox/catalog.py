"""The prices the sandbox charges: an OpenRouter catalog file, read once at start."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from billing.pricing import PricingError, UnitPrices


class CatalogError(Exception):
    """The catalog file is missing or is not an OpenRouter `/api/v1/models` response."""


@dataclass(frozen=True)
class SandboxCatalog:
    """Unit prices by model id, with lookup by the id without its "vendor/" prefix."""

    prices: dict[str, UnitPrices] = field(default_factory=dict)
    # Entries whose pricing could not be parsed: charged as unpriced (no cost), listed so
    # the command can say so instead of hiding it.
    unreadable: tuple[str, ...] = ()
    _by_short_id: dict[str, str] = field(default_factory=dict, repr=False)

    def prices_for(self, model: str) -> UnitPrices | None:
        """Return the prices of a model, or None if the catalog does not know it.

        An exact id wins; otherwise the first id, in sorted order, whose part after the
        "vendor/" prefix equals the model ("gpt-4o" finds "openai/gpt-4o").
        """
        exact = self.prices.get(model)
        if exact is not None:
            return exact
        full_id = self._by_short_id.get(model)
        return None if full_id is None else self.prices[full_id]


def catalog_from_models(models: list[Any]) -> SandboxCatalog:
    """Build a catalog from the `data` list of an OpenRouter models response."""
    prices: dict[str, UnitPrices] = {}
    unreadable: list[str] = []
    for entry in models:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        try:
            prices[entry["id"]] = UnitPrices.from_openrouter(entry.get("pricing"))
        except PricingError:
            unreadable.append(entry["id"])
    by_short_id: dict[str, str] = {}
    for model_id in sorted(prices):
        _, slash, short_id = model_id.partition("/")
        if slash:
            by_short_id.setdefault(short_id, model_id)
    return SandboxCatalog(prices=prices, unreadable=tuple(unreadable), _by_short_id=by_short_id)


def load_catalog(path: Path | str) -> SandboxCatalog:
    """Read an OpenRouter catalog JSON file (`{"data": [{"id", "pricing"}, ...]}`).

    Prices stay exact: `UnitPrices.from_openrouter` parses the strings as Decimals.
    Raises CatalogError when the file is missing, not JSON, or has no `data` list.
    """
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read the catalog {path}: {exc.strerror}") from None
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"the catalog {path} is not valid JSON: {exc}") from None
    models = document.get("data") if isinstance(document, dict) else None
    if not isinstance(models, list):
        raise CatalogError(f'the catalog {path} has no "data" list of models')
    return catalog_from_models(models)
