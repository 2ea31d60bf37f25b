"""Optional Prometheus endpoint (off by default, bound to 127.0.0.1).

Nothing here runs on the hot path: the engine (or a slow timer task) calls
:meth:`Metrics.update` with the published :class:`~flashmm.snapshot.Snapshot`
(what the ``status`` command shows), and :meth:`Metrics.observe_decision_latency_us` with a batch of
latencies it collected. Needs ``prometheus-client`` (imported only when used).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from functools import partial
from operator import attrgetter
from typing import Any

from loguru import logger

from flashmm.errors import RuntimeFailure
from flashmm.snapshot import MarketView, Snapshot

__all__ = ["Metrics"]

#: Bot states exported as ``flashmm_state{state=...} 1``.
_BOT_STATES = ("starting", "running", "paused", "halted", "stopping", "stopped")

_LATENCY_BUCKETS_US = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000)

#: (field of the Snapshot, or of its MarketView per market; metric; help). Counters get
#: ``_total`` from the client and grow by what the cumulative field grew.
_GAUGES = (
    ("pnl_usdc", "flashmm_pnl_total_usdc", "Total P&L (USDC)"),
    ("drawdown_usdc", "flashmm_drawdown_usdc", "Drawdown from the P&L peak"),
)
_COUNTERS = (
    ("quotes_sent", "flashmm_requotes", "Requote batches sent to the venue"),
    ("feed_gaps", "flashmm_feed_gaps", "Feed gaps (resyncs)"),
    ("events", "flashmm_events", "Market data events processed"),
)
_MARKET_GAUGES = (
    ("pnl_usdc", "flashmm_pnl_usdc", "P&L per market (USDC)"),
    ("position_lots", "flashmm_position_lots", "Position per market (lots)"),
    ("position_usdc", "flashmm_position_usdc", "Position value per market (USDC)"),
    ("mid", "flashmm_mid_price", "Mid price per market"),
    ("realized_usdc", "flashmm_realized_pnl_usdc", "Realized P&L (USDC)"),
    ("unrealized_usdc", "flashmm_unrealized_pnl_usdc", "Unrealized P&L (USDC)"),
    ("fees_usdc", "flashmm_fees_usdc", "Fees paid, rebates negative (USDC)"),
    ("volume_usdc", "flashmm_volume_usdc", "Traded volume (USDC)"),
    ("limit_usage", "flashmm_position_limit_usage", "Position / risk.max_position_usdc"),
    ("signal.confidence", "flashmm_signal_confidence", "Signal confidence"),
    ("signal.expected_bps", "flashmm_signal_expected_bps", "Signal expected move (bps)"),
)
_MARKET_COUNTERS = (
    ("fills", "flashmm_fills", "Fills per market since start"),
    ("orders_sent", "flashmm_orders_sent", "Orders sent"),
    ("cancels_sent", "flashmm_cancels_sent", "Cancels sent"),
    ("rejects", "flashmm_rejects", "Orders rejected by the venue"),
)


class Metrics:
    """Prometheus gauges for a running bot, on its own registry.

    ``Metrics(port=9108)`` then :meth:`start`; :meth:`close` stops the
    server. Binding to anything but loopback must be asked for explicitly
    (``host="0.0.0.0"``): the endpoint has no authentication.
    """

    def __init__(self, port: int = 9108, host: str = "127.0.0.1") -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise RuntimeFailure(
                "metrics are enabled but prometheus-client is not installed;"
                " pip install prometheus-client, or turn metrics off"
            ) from exc
        self._prom = prom
        self.host = host
        self.port = port
        r = self.registry = prom.CollectorRegistry(auto_describe=True)
        g, c = partial(prom.Gauge, registry=r), partial(prom.Counter, registry=r)
        m = ["market"]
        self.gauges = {f: g(name, doc) for f, name, doc in _GAUGES}
        self.counters = {f: c(name, doc) for f, name, doc in _COUNTERS}
        self.market_gauges = {f: g(name, doc, m) for f, name, doc in _MARKET_GAUGES}
        self.market_counters = {f: c(name, doc, m) for f, name, doc in _MARKET_COUNTERS}
        self.up = g("flashmm_up", "1 while the bot runs")
        self.uptime = g("flashmm_uptime_seconds", "Seconds since start")
        self.state = g("flashmm_state", "1 for the current bot state", ["state"])
        self.quotes = g("flashmm_quotes", "Resting quotes per market and side", ["market", "side"])
        self.breaker = g("flashmm_breaker_tripped", "1 when a circuit breaker is tripped", ["name"])
        self.latency_quantile = g(
            "flashmm_decision_latency_us",
            "Decision latency quantiles reported by the engine (µs)",
            ["quantile"],
        )
        self.latency = prom.Histogram(
            "flashmm_decision_latency_seconds",
            "Feed event to requote decision latency",
            buckets=[b / 1e6 for b in _LATENCY_BUCKETS_US],
            registry=r,
        )
        self.gas = c("flashmm_requote_gas_used", "Gas used by requote transactions")
        self.gas_per_day = g("flashmm_gas_per_day_projected", "Gas per day at the current rate")
        self.venue_stat = g(
            "flashmm_venue_stat", "Venue counters (txs, reverted, dropped, ...)", ["stat"]
        )
        self.feed_age = g("flashmm_feed_age_seconds", "Age of the last market data (feed lag)", m)
        self.book_synced = g("flashmm_book_synced", "1 when the book is in sync", m)
        self.model_state = g(
            "flashmm_model_state", "1 for the model breaker's state", ["market", "state"]
        )
        self.model_onnx = g("flashmm_model_active", "1 while the ONNX model answers (0: rules)", m)
        self.journal_pending = g(
            "flashmm_journal_pending_writes", "Journal records not yet committed"
        )
        self.api_open = g("flashmm_api_connections", "The API's open HTTP connections")
        self.api_max = g("flashmm_api_connections_max", "api.max_connections")
        self.api_shed = c(
            "flashmm_api_connections_shed",
            "API connections closed at api.max_connections (idle closed, or refused)",
            ["how"],
        )
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._server: Any = None

    # -- server -----------------------------------------------------------

    def start(self) -> None:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread (port 0 = any free port)."""
        if self._server is not None:
            return
        try:
            server, _thread = self._prom.start_http_server(
                self.port, addr=self.host, registry=self.registry
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot serve metrics on {self.host}:{self.port}: {exc}") from exc
        self._server = server
        self.port = server.server_address[1]
        self.up.set(1)
        logger.info("metrics on http://{}:{}/metrics", self.host, self.port)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        self.up.set(0)

    def render(self) -> bytes:
        """The exposition text (what ``/metrics`` returns)."""
        return bytes(self._prom.generate_latest(self.registry))

    # -- updates (off the hot path) ------------------------------------------

    def observe_decision_latency_us(self, values_us: Iterable[float]) -> None:
        """Add a batch of decision latencies (µs) to the histogram."""
        observe = self.latency.observe
        for v in values_us:
            observe(v / 1e6)

    def observe_engine_latency(self, engine: Any, seen: int) -> int:
        """Add the decision latencies the engine recorded since ``seen``; returns the new mark."""
        lat_ns, mark = engine.latencies_since(seen)
        if lat_ns:
            self.observe_decision_latency_us(v / 1e3 for v in lat_ns)
        return int(mark)

    def update(self, snap: Snapshot) -> None:
        """Set every gauge from a published snapshot. ``fills`` and the other counts in
        it are cumulative; each counter grows by the difference."""
        with self._lock:
            self._update(snap)

    def _update(self, snap: Snapshot) -> None:
        self.uptime.set(snap.ops.uptime_s if snap.ops is not None else snap.uptime_s)
        for s in {*_BOT_STATES, snap.state}:
            self.state.labels(s).set(1 if s == snap.state else 0)
        for sym, m in snap.markets.items():
            self._update_market(sym, m)
        for name, b in snap.breakers.items():
            self.breaker.labels(name).set(1 if b["state"] == "tripped" else 0)
        for f, gauge in self.gauges.items():
            gauge.set(getattr(snap, f))
        for f, counter in self.counters.items():
            self._count(counter, "", f, getattr(snap, f))
        venue = snap.venue
        self._count(self.gas, "", "gas_used", venue.get("gas_used"))
        if venue.get("gas_per_day_projected") is not None:
            self.gas_per_day.set(venue["gas_per_day_projected"])
        for k, val in venue.items():
            if not isinstance(val, bool) and isinstance(val, int | float):
                self.venue_stat.labels(k).set(val)
        if snap.ops is not None and snap.ops.journal is not None:
            self.journal_pending.set(snap.ops.journal["pending_writes"])
        conns = snap.ops.api_connections if snap.ops is not None else None
        if conns is not None:
            self.api_open.set(conns["open"])
            self.api_max.set(conns["max"])
            for how in ("idle_closed", "refused"):
                self._count(self.api_shed, how, "api_connections_shed", conns[how])
        self.latency_quantile.labels("0.5").set(snap.latency.p50_us)
        self.latency_quantile.labels("0.99").set(snap.latency.p99_us)

    def _update_market(self, sym: str, m: MarketView) -> None:
        for f, gauge in self.market_gauges.items():
            value = attrgetter(f)(m)
            if value is not None:
                gauge.labels(sym).set(value)
        for f, counter in self.market_counters.items():
            self._count(counter, sym, f, getattr(m, f))
        if m.data_age_ms is not None:
            self.feed_age.labels(sym).set(m.data_age_ms / 1e3)
        self.book_synced.labels(sym).set(1 if m.synced else 0)
        if "state" in m.signal_status:
            state = str(m.signal_status["state"])
            for s in {"closed", "open", "half_open", "disabled", state}:
                self.model_state.labels(sym, s).set(1 if s == state else 0)
            self.model_onnx.labels(sym).set(1 if m.signal_status.get("source") == "onnx" else 0)
        for side in ("buy", "sell"):
            self.quotes.labels(sym, side).set(sum(q.side == side for q in m.quotes))

    def _count(self, counter: Any, label: str, key: str, v: float | None) -> None:
        """Grow ``counter`` by how much the cumulative ``v`` grew since last time."""
        if v is None:
            return
        last = self._seen.get((label, key), 0.0)
        if v > last:
            (counter.labels(label) if label else counter).inc(v - last)
        self._seen[(label, key)] = v
