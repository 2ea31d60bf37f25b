"""Parser for Binance messages: REST depth snapshot, depthUpdate, trade, bookTicker.

Shared by the file replay and the live WebSocket feed. Decimal strings are
converted to integer ticks and lots with the market's tick and lot size.
Spot and USD-M futures messages share the format; a futures depth diff
carries ``pu`` (the previous diff's last update id), kept in
:attr:`~flashmm.marketdata.DepthDiff.prev_id`.

Every numeric field is checked: a price must be finite and > 0, a size
finite and >= 0, both below :data:`MAX_UNITS` ticks/lots, an update id a
non-negative integer. Anything else (``1e400``, ``NaN``, ``inf``, ``-1``,
``"abc"``) is a :class:`ParseError`, which the replay and the live feed
count as one bad message and skip.
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


#: largest price in ticks or size in lots accepted (2**53: exact in a float)
MAX_UNITS = 1 << 53


def _units(raw: Any, inv: float, what: str, *, positive: bool) -> int:
    """A decimal string (or number) to integer ticks/lots; ParseError when not sane."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ParseError(f"{what} is not a number: {str(raw)[:40]!r}")
    try:
        v = float(raw) * inv
    except (ValueError, OverflowError):
        raise ParseError(f"{what} is not a number: {str(raw)[:40]!r}") from None
    if not (0.0 <= v < MAX_UNITS):  # NaN fails too
        raise ParseError(f"{what} out of range: {str(raw)[:40]!r}")
    n = int(v + 0.5)
    if positive and n <= 0:
        raise ParseError(f"{what} must be > 0: {str(raw)[:40]!r}")
    return n


def _price(raw: Any, sc: Scale) -> int:
    return _units(raw, sc.inv_tick, "price", positive=True)


def _size(raw: Any, sc: Scale) -> int:
    return _units(raw, sc.inv_lot, "size", positive=False)


def _uid(raw: Any, what: str) -> int:
    """An update id: a non-negative integer (an integral JSON number or digit string)."""
    if isinstance(raw, bool):
        raise ParseError(f"{what} is not an integer: {raw!r}")
    if isinstance(raw, int):
        n = raw
    elif (isinstance(raw, str) and raw.isdigit()) or (isinstance(raw, float) and raw.is_integer()):
        n = int(raw)
    else:
        raise ParseError(f"{what} is not an integer: {str(raw)[:40]!r}")
    if n < 0 or n >= 1 << 63:
        raise ParseError(f"{what} out of range: {n}")
    return n


def _levels(raw: Any, sc: Scale) -> Levels:
    if not isinstance(raw, list):
        raise ParseError("levels are not a list")
    out = []
    for lv in raw:
        if not isinstance(lv, list) or len(lv) < 2:
            raise ParseError(f"level is not [price, size]: {str(lv)[:40]!r}")
        out.append((_price(lv[0], sc), _size(lv[1], sc)))
    return out


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
                        _uid(msg["lastUpdateId"], "lastUpdateId"),
                        _levels(msg["bids"], sc),
                        _levels(msg["asks"], sc),
                    )
                data = msg  # a raw (non-combined) stream message
                sym = str(data.get("s", "")).lower()
            else:
                data = msg["data"]
                sym = stream_symbol(stream)
            if not isinstance(data, dict):
                raise ParseError("data is not a JSON object")
            sc = self.scales.get(sym)
            if sc is None:
                return None
            kind = data.get("e")
            if kind == "depthUpdate":
                first, last = _uid(data["U"], "U"), _uid(data["u"], "u")
                if first > last:
                    raise ParseError(f"depth diff U {first} > u {last}")
                pu = data.get("pu")
                return DepthDiff(
                    sym,
                    ts_ns,
                    first,
                    last,
                    _levels(data["b"], sc),
                    _levels(data["a"], sc),
                    _uid(data.get("E", 0), "E"),
                    -1 if pu is None else _uid(pu, "pu"),
                )
            if kind == "trade":
                m = data["m"]
                if not isinstance(m, bool):
                    raise ParseError(f"trade m is not true/false: {str(m)[:40]!r}")
                return Trade(
                    sym,
                    ts_ns,
                    _price(data["p"], sc),
                    _size(data["q"], sc),
                    m,
                    _uid(data.get("T", 0), "T"),
                )
            if (kind is None or kind == "bookTicker") and "u" in data and "b" in data:
                return BookTicker(
                    sym,
                    ts_ns,
                    _uid(data["u"], "u"),
                    _price(data["b"], sc),
                    _size(data["B"], sc),
                    _price(data["a"], sc),
                    _size(data["A"], sc),
                )
            return None  # another message type we do not use
        except ParseError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
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
