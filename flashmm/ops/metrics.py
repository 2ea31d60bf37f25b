"""Optional Prometheus endpoint (off by default, bound to 127.0.0.1).

Nothing here runs on the hot path: the engine (or a slow timer task) calls
:meth:`Metrics.update` with the published :class:`~flashmm.snapshot.Snapshot`
(what the ``status`` command shows), and :meth:`Metrics.observe_decision_latency_us` with a batch of
latencies it collected. Needs ``prometheus-client`` (imported only when used).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from loguru import logger

from flashmm.errors import RuntimeFailure
from flashmm.snapshot import MarketView, Snapshot

__all__ = ["Metrics"]

#: Bot states exported as ``flashmm_state{state=...} 1``.
_BOT_STATES = ("starting", "running", "paused", "halted", "stopping", "stopped")

_LATENCY_BUCKETS_US = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000)


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
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.up = prom.Gauge("flashmm_up", "1 while the bot runs", registry=r)
        self.uptime = prom.Gauge("flashmm_uptime_seconds", "Seconds since start", registry=r)
        self.state = prom.Gauge(
            "flashmm_state", "1 for the current bot state", ["state"], registry=r
        )
        self.pnl = prom.Gauge("flashmm_pnl_usdc", "P&L per market (USDC)", ["market"], registry=r)
        self.position_lots = prom.Gauge(
            "flashmm_position_lots", "Position per market (lots)", ["market"], registry=r
        )
        self.position_usdc = prom.Gauge(
            "flashmm_position_usdc", "Position value per market (USDC)", ["market"], registry=r
        )
        self.mid = prom.Gauge("flashmm_mid_price", "Mid price per market", ["market"], registry=r)
        self.quotes = prom.Gauge(
            "flashmm_quotes", "Resting quotes per market and side", ["market", "side"], registry=r
        )
        self.fills = prom.Counter(
            "flashmm_fills", "Fills per market since start", ["market"], registry=r
        )
        self.breaker = prom.Gauge(
            "flashmm_breaker_tripped", "1 when a circuit breaker is tripped", ["name"], registry=r
        )
        self.latency_quantile = prom.Gauge(
            "flashmm_decision_latency_us",
            "Decision latency quantiles reported by the engine (µs)",
            ["quantile"],
            registry=r,
        )
        self.latency = prom.Histogram(
            "flashmm_decision_latency_seconds",
            "Feed event to requote decision latency",
            buckets=[b / 1e6 for b in _LATENCY_BUCKETS_US],
            registry=r,
        )
        g, c = prom.Gauge, prom.Counter
        m = ["market"]
        self.pnl_total = g("flashmm_pnl_total_usdc", "Total P&L (USDC)", registry=r)
        self.realized = g("flashmm_realized_pnl_usdc", "Realized P&L (USDC)", m, registry=r)
        self.unrealized = g("flashmm_unrealized_pnl_usdc", "Unrealized P&L (USDC)", m, registry=r)
        self.fees = g("flashmm_fees_usdc", "Fees paid, rebates negative (USDC)", m, registry=r)
        self.volume = g("flashmm_volume_usdc", "Traded volume (USDC)", m, registry=r)
        self.drawdown = g("flashmm_drawdown_usdc", "Drawdown from the P&L peak", registry=r)
        self.limit_usage = g(
            "flashmm_position_limit_usage", "Position / risk.max_position_usdc", m, registry=r
        )
        self.orders_sent = c("flashmm_orders_sent", "Orders sent", m, registry=r)
        self.cancels_sent = c("flashmm_cancels_sent", "Cancels sent", m, registry=r)
        self.rejects = c("flashmm_rejects", "Orders rejected by the venue", m, registry=r)
        self.quotes_sent = c("flashmm_requotes", "Requote batches sent to the venue", registry=r)
        self.gas = c("flashmm_requote_gas_used", "Gas used by requote transactions", registry=r)
        self.gas_per_day = g(
            "flashmm_gas_per_day_projected", "Gas per day at the current rate", registry=r
        )
        self.venue_stat = g(
            "flashmm_venue_stat",
            "Venue counters (txs, reverted, dropped, ...)",
            ["stat"],
            registry=r,
        )
        self.feed_age = g(
            "flashmm_feed_age_seconds", "Age of the last market data (feed lag)", m, registry=r
        )
        self.book_synced = g("flashmm_book_synced", "1 when the book is in sync", m, registry=r)
        self.feed_gaps = c("flashmm_feed_gaps", "Feed gaps (resyncs)", registry=r)
        self.events = c("flashmm_events", "Market data events processed", registry=r)
        self.model_state = g(
            "flashmm_model_state",
            "1 for the model breaker's state",
            ["market", "state"],
            registry=r,
        )
        self.model_onnx = g(
            "flashmm_model_active", "1 while the ONNX model answers (0: rules)", m, registry=r
        )
        self.signal_conf = g("flashmm_signal_confidence", "Signal confidence", m, registry=r)
        self.signal_bps = g(
            "flashmm_signal_expected_bps", "Signal expected move (bps)", m, registry=r
        )
        self.journal_pending = g(
            "flashmm_journal_pending_writes", "Journal records not yet committed", registry=r
        )
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- server -----------------------------------------------------------

    def start(self) -> None:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread (port 0 = any free port)."""
        if self._server is not None:
            return
        try:
            server, thread = self._prom.start_http_server(
                self.port, addr=self.host, registry=self.registry
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot serve metrics on {self.host}:{self.port}: {exc}") from exc
        self._server, self._thread = server, thread
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
        self.pnl_total.set(snap.pnl_usdc)
        self.drawdown.set(snap.drawdown_usdc)
        self._count(self.quotes_sent, "", "quotes_sent", snap.quotes_sent)
        self._count(self.feed_gaps, "", "feed_gaps", snap.feed_gaps)
        self._count(self.events, "", "events", snap.events)
        venue = snap.venue
        self._count(self.gas, "", "gas_used", venue.get("gas_used"))
        if venue.get("gas_per_day_projected") is not None:
            self.gas_per_day.set(venue["gas_per_day_projected"])
        for k, val in venue.items():
            if not isinstance(val, bool) and isinstance(val, int | float):
                self.venue_stat.labels(k).set(val)
        if snap.ops is not None and snap.ops.journal is not None:
            self.journal_pending.set(snap.ops.journal["pending_writes"])
        self.latency_quantile.labels("0.5").set(snap.latency.p50_us)
        self.latency_quantile.labels("0.99").set(snap.latency.p99_us)

    def _update_market(self, sym: str, m: MarketView) -> None:
        for value, gauge in (
            (m.pnl_usdc, self.pnl),
            (m.position_lots, self.position_lots),
            (m.position_usdc, self.position_usdc),
            (m.mid, self.mid),
            (m.realized_usdc, self.realized),
            (m.unrealized_usdc, self.unrealized),
            (m.fees_usdc, self.fees),
            (m.volume_usdc, self.volume),
            (m.limit_usage, self.limit_usage),
            (m.signal.confidence, self.signal_conf),
            (m.signal.expected_bps, self.signal_bps),
        ):
            if value is not None:
                gauge.labels(sym).set(value)
        self._count(self.orders_sent, sym, "orders_sent", m.orders_sent)
        self._count(self.cancels_sent, sym, "cancels_sent", m.cancels_sent)
        self._count(self.rejects, sym, "rejects", m.rejects)
        self._count(self.fills, sym, "fills", m.fills)
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
