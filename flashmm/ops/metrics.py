"""Optional Prometheus endpoint (off by default, bound to 127.0.0.1).

Nothing here runs on the hot path: the engine (or a slow timer task) calls
:meth:`Metrics.update` with the same snapshot dict the ``status`` command
returns, and :meth:`Metrics.observe_decision_latency_us` with a batch of
latencies it collected. Needs ``prometheus-client`` (imported only when used).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from loguru import logger

from flashmm.errors import RuntimeFailure

__all__ = ["OK_BREAKER_STATES", "Metrics"]

#: Breaker states that count as "not tripped" (case-insensitive).
OK_BREAKER_STATES = frozenset({"ok", "closed", "armed", "normal", "clear", "idle", "reset"})

#: Bot states exported as ``flashmm_state{state=...} 1``.
_BOT_STATES = ("starting", "running", "paused", "halted", "stopping", "stopped")

_LATENCY_BUCKETS_US = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000)


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


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
        self._fills_seen: dict[str, int] = {}
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

    def update(self, snapshot: Mapping[str, Any]) -> None:
        """Set every gauge from a status snapshot; unknown or missing keys are skipped.

        Expected shape: ``{"state", "uptime_s", "markets": {sym: {"mid",
        "position_lots", "position_usdc", "pnl_usdc", "fills", "quotes":
        [{"side": "buy"|"sell"|1|-1, ...}]}}, "breakers": {name: {"state"}},
        "latency": {"p50_us", "p99_us"}}``. ``fills`` is the market's
        cumulative fill count; the counter grows by the difference.
        """
        with self._lock:
            self._update(snapshot)

    def _update(self, snap: Mapping[str, Any]) -> None:
        up = _num(snap.get("uptime_s"))
        if up is not None:
            self.uptime.set(up)
        state = snap.get("state")
        if isinstance(state, str):
            for s in {*_BOT_STATES, state.lower()}:
                self.state.labels(s).set(1 if s == state.lower() else 0)
        markets = snap.get("markets")
        if isinstance(markets, Mapping):
            for sym, m in markets.items():
                if isinstance(m, Mapping):
                    self._update_market(str(sym), m)
        breakers = snap.get("breakers")
        if isinstance(breakers, Mapping):
            for name, b in breakers.items():
                bstate = b.get("state") if isinstance(b, Mapping) else b
                tripped = str(bstate).lower() not in OK_BREAKER_STATES
                self.breaker.labels(str(name)).set(1 if tripped else 0)
        for key, gauge in (("pnl_usdc", self.pnl_total), ("drawdown_usdc", self.drawdown)):
            v = _num(snap.get(key))
            if v is not None:
                gauge.set(v)
        self._count(self.quotes_sent, "", "quotes_sent", snap.get("quotes_sent"))
        self._count(self.feed_gaps, "", "feed_gaps", snap.get("feed_gaps"))
        self._count(self.events, "", "events", snap.get("events"))
        venue = snap.get("venue")
        if isinstance(venue, Mapping):
            self._count(self.gas, "", "gas_used", venue.get("gas_used"))
            v = _num(venue.get("gas_per_day_projected"))
            if v is not None:
                self.gas_per_day.set(v)
            for k, val in venue.items():
                if k != "name" and not isinstance(val, bool) and isinstance(val, int | float):
                    self.venue_stat.labels(str(k)).set(float(val))
        journal = snap.get("journal")
        if isinstance(journal, Mapping):
            v = _num(journal.get("pending_writes"))
            if v is not None:
                self.journal_pending.set(v)
        latency = snap.get("latency")
        if isinstance(latency, Mapping):
            for key, q in (("p50_us", "0.5"), ("p99_us", "0.99")):
                v = _num(latency.get(key))
                if v is not None:
                    self.latency_quantile.labels(q).set(v)

    def _update_market(self, sym: str, m: Mapping[str, Any]) -> None:
        for key, gauge in (
            ("pnl_usdc", self.pnl),
            ("position_lots", self.position_lots),
            ("position_usdc", self.position_usdc),
            ("mid", self.mid),
        ):
            v = _num(m.get(key))
            if v is not None:
                gauge.labels(sym).set(v)
        for key, gauge in (
            ("realized_usdc", self.realized),
            ("unrealized_usdc", self.unrealized),
            ("fees_usdc", self.fees),
            ("volume_usdc", self.volume),
            ("limit_usage", self.limit_usage),
        ):
            v = _num(m.get(key))
            if v is not None:
                gauge.labels(sym).set(v)
        for key, counter in (
            ("orders_sent", self.orders_sent),
            ("cancels_sent", self.cancels_sent),
            ("rejects", self.rejects),
        ):
            self._count(counter, sym, key, m.get(key))
        age = _num(m.get("data_age_ms"))
        if age is not None:
            self.feed_age.labels(sym).set(age / 1e3)
        if "synced" in m:
            self.book_synced.labels(sym).set(1 if m.get("synced") else 0)
        sig = m.get("signal")
        if isinstance(sig, Mapping):
            for key, gauge in (("confidence", self.signal_conf), ("expected_bps", self.signal_bps)):
                v = _num(sig.get(key))
                if v is not None:
                    gauge.labels(sym).set(v)
        st = m.get("signal_status")
        if isinstance(st, Mapping) and "state" in st:
            state = str(st["state"]).lower()
            for s in {"closed", "open", "half_open", "disabled", state}:
                self.model_state.labels(sym, s).set(1 if s == state else 0)
            self.model_onnx.labels(sym).set(1 if st.get("source") == "onnx" else 0)
        quotes = m.get("quotes")
        if isinstance(quotes, list | tuple):
            counts = {"buy": 0, "sell": 0}
            for q in quotes:
                side = q.get("side") if isinstance(q, Mapping) else None
                s = str(side).lower()
                if s in {"buy", "bid", "1", "side.buy"}:
                    counts["buy"] += 1
                elif s in {"sell", "ask", "-1", "side.sell"}:
                    counts["sell"] += 1
            for side, n in counts.items():
                self.quotes.labels(sym, side).set(n)
        fills = _num(m.get("fills"))
        if fills is not None:
            total = int(fills)
            delta = total - self._fills_seen.get(sym, 0)
            if delta > 0:
                self.fills.labels(sym).inc(delta)
            self._fills_seen[sym] = total

    def _count(self, counter: Any, label: str, key: str, value: Any) -> None:
        """Grow ``counter`` by how much the cumulative ``value`` grew since last time."""
        v = _num(value)
        if v is None:
            return
        last = self._seen.get((label, key), 0.0)
        if v > last:
            (counter.labels(label) if label else counter).inc(v - last)
        self._seen[(label, key)] = v
