"""Parser for Binance spot messages: REST depth snapshot, depthUpdate, trade, bookTicker.

Shared by the file replay and the live WebSocket feed. Decimal strings are
converted to integer ticks and lots with the market's tick and lot size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from flashmm.marketdata import BookTicker, DepthDiff, DepthSnapshot, Levels, MarketEvent, Trade


class ParseError(ValueError):
    """A message that is not valid Binance market data."""


@dataclass(frozen=True, slots=True)
class Scale:
    """Multipliers from decimal strings to ticks and lots for one symbol."""

    inv_tick: float
    inv_lot: float

    @classmethod
    def of(cls, tick_size: float, lot_size: float) -> Scale:
        return cls(1.0 / tick_size, 1.0 / lot_size)


def ts_to_ns(ts: int) -> int:
    """Local timestamps come in s, ms, µs or ns: tell them apart by magnitude."""
    if ts >= 100_000_000_000_000_000:  # 1e17: nanoseconds
        return ts
    if ts >= 100_000_000_000_000:  # 1e14: microseconds
        return ts * 1_000
    if ts >= 100_000_000_000:  # 1e11: milliseconds
        return ts * 1_000_000
    return ts * 1_000_000_000


def _levels(raw: Any, sc: Scale) -> Levels:
    it, il = sc.inv_tick, sc.inv_lot
    return [(int(float(p) * it + 0.5), int(float(q) * il + 0.5)) for p, q in raw]


def stream_symbol(stream: str) -> str:
    return stream.split("@", 1)[0].lower()


class BinanceParser:
    """Turns raw JSON into :mod:`flashmm.marketdata` events.

    ``scales`` maps a lower-case symbol to its :class:`Scale`. Messages of
    other symbols give ``None``. A REST snapshot carries no symbol, so the
    caller passes ``snapshot_symbol``.
    """

    def __init__(self, scales: Mapping[str, Scale]) -> None:
        self.scales = dict(scales)

    def parse_json(
        self, raw: bytes | str, ts_ns: int, snapshot_symbol: str = ""
    ) -> MarketEvent | None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"bad JSON: {exc}") from None
        if not isinstance(msg, dict):
            raise ParseError("message is not a JSON object")
        return self.parse(msg, ts_ns, snapshot_symbol)

    def parse(
        self, msg: dict[str, Any], ts_ns: int, snapshot_symbol: str = ""
    ) -> MarketEvent | None:
        try:
            stream = msg.get("stream")
            if stream is None:
                if "lastUpdateId" in msg:
                    sc = self.scales.get(snapshot_symbol)
                    if sc is None:
                        return None
                    return DepthSnapshot(
                        snapshot_symbol,
                        ts_ns,
                        int(msg["lastUpdateId"]),
                        _levels(msg["bids"], sc),
                        _levels(msg["asks"], sc),
                    )
                data = msg  # a raw (non-combined) stream message
                sym = str(data.get("s", "")).lower()
            else:
                data = msg["data"]
                sym = stream_symbol(stream)
            sc = self.scales.get(sym)
            if sc is None:
                return None
            kind = data.get("e")
            if kind == "depthUpdate":
                return DepthDiff(
                    sym,
                    ts_ns,
                    int(data["U"]),
                    int(data["u"]),
                    _levels(data["b"], sc),
                    _levels(data["a"], sc),
                    int(data.get("E", 0)),
                )
            if kind == "trade":
                return Trade(
                    sym,
                    ts_ns,
                    int(float(data["p"]) * sc.inv_tick + 0.5),
                    int(float(data["q"]) * sc.inv_lot + 0.5),
                    bool(data["m"]),
                    int(data.get("T", 0)),
                )
            if kind is None and "u" in data and "b" in data and "a" in data:
                return BookTicker(
                    sym,
                    ts_ns,
                    int(data["u"]),
                    int(float(data["b"]) * sc.inv_tick + 0.5),
                    int(float(data["B"]) * sc.inv_lot + 0.5),
                    int(float(data["a"]) * sc.inv_tick + 0.5),
                    int(float(data["A"]) * sc.inv_lot + 0.5),
                )
            return None  # another message type we do not use
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ParseError(f"malformed message ({type(exc).__name__}: {exc})") from None

    def parse_line(self, line: bytes, snapshot_symbol: str = "") -> MarketEvent | None:
        """Parse one recorded ``<timestamp> <json>`` line."""
        sp = line.find(b" ")
        if sp <= 0:
            raise ParseError("no '<timestamp> <json>' separator")
        try:
            ts = int(line[:sp])
        except ValueError:
            raise ParseError("timestamp is not an integer") from None
        return self.parse_json(line[sp + 1 :], ts_to_ns(ts), snapshot_symbol)
