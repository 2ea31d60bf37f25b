"""The picture of a running bot: one frozen :class:`Snapshot`, built once per publish.

:meth:`flashmm.engine.Engine.snapshot` builds the engine's part; operations
add theirs (:class:`OpsView`: journal, recovery, readiness) with
:meth:`Snapshot.with_ops`. The Rich panel reads the fields; the control
socket (``flashmm status --json``), Prometheus metrics and the HTTP API (and
its stream) read :meth:`Snapshot.to_dict`, the one plain-data form, versioned
by ``schema`` (:data:`SCHEMA_VERSION`). Fills and orders have one plain form
too (:func:`fill_dict`, :class:`OrderView`), used by the API, its stream and
the run summary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flashmm.types import Fill, MarketSpec, Order, OrderState

__all__ = [
    "SCHEMA_VERSION",
    "LatencyView",
    "MarketView",
    "ModelView",
    "OpsView",
    "OrderView",
    "SignalView",
    "Snapshot",
    "fill_dict",
]

#: Version of :meth:`Snapshot.to_dict`'s shape (a key removed or changed bumps it).
SCHEMA_VERSION = 1


def _plain(v: Any) -> Any:
    """Nested views as plain data (tuples as lists, mappings as dicts)."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return v


@dataclass(frozen=True, slots=True)
class OrderView:
    """One of our orders: ``size`` is what still rests (``remaining_lots``), in units."""

    market: str
    client_id: int
    side: str
    price: float
    size: float
    state: str
    price_ticks: int
    size_lots: int
    remaining_lots: int
    note: str = ""

    @classmethod
    def of(cls, order: Order, spec: MarketSpec, note: str = "") -> OrderView:
        return cls(
            order.market,
            order.client_id,
            order.side.name.lower(),
            spec.price(order.price_ticks),
            spec.size(order.remaining_lots),
            order.state.name.lower(),
            order.price_ticks,
            order.size_lots,
            order.remaining_lots,
            note,
        )

    @property
    def live(self) -> bool:
        """Not on its way out (a cancel in flight is not a quote any more)."""
        return self.state != OrderState.PENDING_CANCEL.name.lower()


def fill_dict(fill: Fill, spec: MarketSpec | None) -> dict[str, Any]:
    """A fill as plain data: units from ``spec`` (None without one) beside ticks and lots."""
    return {
        "market": fill.market,
        "fill_id": fill.fill_id,
        "client_id": fill.client_id,
        "side": fill.side.name.lower(),
        "price": spec.price(fill.price_ticks) if spec is not None else None,
        "size": spec.size(fill.size_lots) if spec is not None else None,
        "price_ticks": fill.price_ticks,
        "size_lots": fill.size_lots,
        "fee_usdc": fill.fee_usdc,
        "liquidity": fill.liquidity.name.lower(),
        "ts_ns": fill.ts_ns,
    }


@dataclass(frozen=True, slots=True)
class SignalView:
    """The last signal of a market and what the strategy made of it."""

    direction: int
    confidence: float
    expected_bps: float
    source: str
    skew_bps: float
    widen: float


@dataclass(frozen=True, slots=True)
class MarketView:
    """One market: book, our quotes, position and P&L, signal, guards."""

    reference: str
    mid: float | None
    bid: float | None
    ask: float | None
    spread_bps: float | None
    quoted_spread_bps: float | None
    synced: bool
    book_checks: int
    book_mismatches: int
    #: our orders, highest price first
    quotes: tuple[OrderView, ...]
    position_lots: int
    position: float
    position_usdc: float
    limit_usage: float
    avg_price: float | None
    realized_usdc: float
    unrealized_usdc: float
    fees_usdc: float
    pnl_usdc: float
    fills: int
    volume_usdc: float
    orders_sent: int
    cancels_sent: int
    rejects: int
    signal: SignalView
    #: the signal source's own status (a model adds its breaker, hit rate, latency)
    signal_status: Mapping[str, object]
    sigma_bps: float
    kill_switch: Mapping[str, object]
    price_band: Mapping[str, object]
    blocked: str | None
    data_age_ms: float | None


@dataclass(frozen=True, slots=True)
class ModelView:
    """The prediction model, one shape whether a model runs or the rule quotes alone.

    ``state`` is the first market's model breaker (``closed``, ``open``,
    ``half_open``, ``disabled``) or None without a model; ``sources`` is what
    answered each market's last signal; ``breakers`` the risk breakers named
    ``model*`` (``ok`` or ``tripped: <reason>``).
    """

    state: str | None = None
    reason: str = ""
    source: str = ""
    hit_rate_moved: float | None = None
    calibration_error_pts: float | None = None
    online: Any = None
    sources: Mapping[str, str] = field(default_factory=dict)
    breakers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LatencyView:
    p50_us: float
    p99_us: float
    samples: int


@dataclass(frozen=True, slots=True)
class OpsView:
    """What operations add: process, readiness, journal, recovery, durable fills."""

    uptime_s: float
    pid: int
    socket: str
    ready: bool
    fills_durable: int
    #: path, fills_durable, pending_writes, error, failure (None without a journal)
    journal: Mapping[str, Any] | None
    recovery: Mapping[str, Any]
    metrics_port: int | None
    #: the API's HTTP connections: open, max, idle_closed, refused (None without the API)
    api_connections: Mapping[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The engine (and, with :attr:`ops`, its operations) at one instant."""

    mode: str
    profile: str
    state: str
    reason: str
    now_ns: int
    #: the engine's uptime on its own clock (recorded time on a replay)
    uptime_s: float
    events: int
    feed_gaps: int
    markets: Mapping[str, MarketView]
    pnl_usdc: float
    fees_usdc: float
    #: fills the engine booked (:meth:`fills_shown` counts durable ones under a journal)
    fills: int
    volume_usdc: float
    drawdown_usdc: float
    breakers: Mapping[str, Mapping[str, object]]
    latency: LatencyView
    quotes_sent: int
    live_orders: int
    venue: Mapping[str, Any]
    model: ModelView
    ops: OpsView | None = None

    def with_ops(self, ops: OpsView) -> Snapshot:
        return dataclasses.replace(self, ops=ops)

    @property
    def fills_shown(self) -> int:
        """Fills to show: with a journal, only those it has made durable."""
        if self.ops is None or self.ops.journal is None:
            return self.fills
        return min(self.fills, self.ops.fills_durable)

    def to_dict(self) -> dict[str, Any]:
        """The one plain-data form (``flashmm status --json``, the API, metrics)."""
        d: dict[str, Any] = {"schema": SCHEMA_VERSION}
        for f in dataclasses.fields(self):
            if f.name != "ops":
                d[f.name] = _plain(getattr(self, f.name))
        o = self.ops
        if o is None:
            return d
        d["engine_uptime_s"] = self.uptime_s
        d["uptime_s"] = round(o.uptime_s, 3)
        d["fills_durable"] = o.fills_durable
        if o.journal is not None:
            d["fills_seen"] = self.fills
            d["fills_pending"] = max(0, self.fills - o.fills_durable)
            d["fills"] = self.fills_shown
        d.update(
            pid=o.pid,
            socket=o.socket,
            ready=o.ready,
            journal=_plain(o.journal),
            recovery=_plain(o.recovery),
            metrics_port=o.metrics_port,
        )
        return d
