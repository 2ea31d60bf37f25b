"""Strategy plugins: a small protocol and a registry fed by ``flashmm.strategies`` entry points."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from flashmm.strategy.base import QuoteContext, Strategy, StrategyBase

__all__ = ["QuoteContext", "Strategy", "StrategyBase", "available_strategies", "get_strategy_class"]


def available_strategies() -> dict[str, Any]:
    from flashmm.strategy.avellaneda import AvellanedaStrategy

    found: dict[str, Any] = {"avellaneda": AvellanedaStrategy}
    for ep in entry_points(group="flashmm.strategies"):
        if ep.name not in found:
            found[ep.name] = ep
    return found


def get_strategy_class(name: str) -> Any:
    """The strategy class registered as ``name``. Raises KeyError with the known names."""
    found = available_strategies()
    if name not in found:
        raise KeyError(f"unknown strategy; available: {', '.join(sorted(found))}")
    obj = found[name]
    return obj if isinstance(obj, type) else obj.load()
