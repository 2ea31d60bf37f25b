"""Risk limits and named breakers.

The position limit is enforced on every order before it is sent: the
worst case (our position plus every live order on that side filling,
including orders whose cancel is still in flight) valued at the highest
price among those orders must stay within ``max_position_usdc``. An order
that would break this is cut to what fits, or dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from flashmm.config import RiskConfig
from flashmm.types import NS_PER_S, MarketSpec, Order, OrderRequest, OrderState, Side

# What a tripped breaker does.
PULL = "pull"  # pull quotes while tripped, quote again when it clears
PAUSE = "pause"  # pause quoting until an operator resumes (latched)
HALT = "halt"  # emergency stop: cancel all, flatten, halt until reset (latched)
REDUCE = "reduce_only"  # quote only the side that reduces the position


@dataclass(slots=True)
class Breaker:
    name: str
    action: str
    latched: bool = False
    tripped: bool = False
    reason: str = ""
    since_ns: int = 0
    trips: int = 0
    changes: int = 0

    def trip(self, reason: str, now_ns: int) -> bool:
        """Trip; True when this is a new trip (state changed)."""
        if self.tripped:
            self.reason = reason
            return False
        self.tripped, self.reason, self.since_ns = True, reason, now_ns
        self.trips += 1
        self.changes += 1
        return True

    def clear(self, now_ns: int, *, force: bool = False) -> bool:
        """Clear; latched breakers clear only with ``force``. True when the state changed."""
        if not self.tripped or (self.latched and not force):
            return False
        self.tripped, self.reason, self.since_ns = False, "", now_ns
        self.changes += 1
        return True

    def status(self) -> dict[str, object]:
        return {
            "state": "tripped" if self.tripped else "ok",
            "action": self.action,
            "reason": self.reason,
            "since_ns": self.since_ns,
            "trips": self.trips,
            "latched": self.latched,
        }


class RiskManager:
    """Limits for all markets, and the breakers that pull, pause or halt quoting."""

    def __init__(self, cfg: RiskConfig, specs: Iterable[MarketSpec]) -> None:
        self.cfg = cfg
        self.specs = {s.symbol: s for s in specs}
        self.breakers: dict[str, Breaker] = {
            "daily_loss": Breaker("daily_loss", PAUSE, latched=True),
            "max_drawdown": Breaker("max_drawdown", PAUSE, latched=True),
            "kill_switch": Breaker("kill_switch", HALT, latched=True),
            "venue_errors": Breaker("venue_errors", PULL),
            "venue_latency": Breaker("venue_latency", PULL),
        }
        for sym in self.specs:
            self.breakers[f"stale_feed:{sym}"] = Breaker(f"stale_feed:{sym}", PULL)
            self.breakers[f"position_limit:{sym}"] = Breaker(f"position_limit:{sym}", REDUCE)
        self._venue_errors: deque[int] = deque()
        self.orders_cut = 0
        self.orders_dropped = 0

    # --- order checks -------------------------------------------------------

    def check_orders(
        self,
        spec: MarketSpec,
        places: list[OrderRequest],
        position_lots: int,
        live_orders: Iterable[Order],
    ) -> list[OrderRequest]:
        """Cut or drop new orders so that no fill sequence can breach the position limit."""
        limit = self.cfg.max_position_usdc
        unit = float(spec.tick_size) * float(spec.lot_size)
        max_order = self.cfg.max_order_usdc
        buy_exp, sell_exp = position_lots, -position_lots
        buy_px = sell_px = 0
        for o in live_orders:
            if o.state is OrderState.DONE or o.remaining_lots <= 0:
                continue
            if o.side is Side.BUY:
                buy_exp += o.remaining_lots
                buy_px = max(buy_px, o.price_ticks)
            else:
                sell_exp += o.remaining_lots
                sell_px = max(sell_px, o.price_ticks)
        out: list[OrderRequest] = []
        for req in places:
            px = req.price_ticks
            if px <= 0 or req.size_lots <= 0:
                self.orders_dropped += 1
                continue
            size = min(req.size_lots, int(max_order / (px * unit) + 1e-9))
            if req.side is Side.BUY:
                val_px = max(buy_px, px)
                room = int(limit / (val_px * unit) + 1e-9) - buy_exp
            else:
                val_px = max(sell_px, px)
                room = int(limit / (val_px * unit) + 1e-9) - sell_exp
            size = min(size, room)
            if size <= 0:
                self.orders_dropped += 1
                continue
            if size < req.size_lots:
                self.orders_cut += 1
                req = OrderRequest(req.market, req.client_id, req.side, px, size, req.post_only)
            if req.side is Side.BUY:
                buy_exp += size
                buy_px = val_px
            else:
                sell_exp += size
                sell_px = val_px
            out.append(req)
        return out

    def max_position_lots(self, spec: MarketSpec, mid_ticks: float) -> int:
        if mid_ticks <= 0:
            return 0
        return int(
            self.cfg.max_position_usdc / (mid_ticks * float(spec.tick_size) * float(spec.lot_size))
        )

    # --- breakers -----------------------------------------------------------

    def update_position(
        self, spec: MarketSpec, position_lots: int, mid_ticks: float, now_ns: int
    ) -> None:
        b = self.breakers[f"position_limit:{spec.symbol}"]
        notional = abs(position_lots) * mid_ticks * float(spec.tick_size) * float(spec.lot_size)
        if notional >= 0.95 * self.cfg.max_position_usdc:
            b.trip(f"position {notional:.0f} USDC of {self.cfg.max_position_usdc:.0f}", now_ns)
        else:
            b.clear(now_ns)

    def update_pnl(self, pnl_usdc: float, drawdown_usdc: float, now_ns: int) -> list[Breaker]:
        changed = []
        b = self.breakers["daily_loss"]
        if pnl_usdc <= -self.cfg.daily_loss_limit_usdc and b.trip(
            f"P&L {pnl_usdc:.2f} USDC below -{self.cfg.daily_loss_limit_usdc:.0f}", now_ns
        ):
            changed.append(b)
        b = self.breakers["max_drawdown"]
        if drawdown_usdc >= self.cfg.max_drawdown_usdc and b.trip(
            f"drawdown {drawdown_usdc:.2f} USDC over {self.cfg.max_drawdown_usdc:.0f}", now_ns
        ):
            changed.append(b)
        return changed

    def update_feed(self, symbol: str, last_data_ns: int, now_ns: int) -> bool:
        """Stale-feed check; True when the breaker changed state."""
        b = self.breakers[f"stale_feed:{symbol}"]
        age_ms = (now_ns - last_data_ns) / 1e6 if last_data_ns else float("inf")
        if age_ms > self.cfg.stale_feed_ms:
            what = f"no data for {age_ms:.0f} ms" if last_data_ns else "no data yet"
            return b.trip(what, now_ns)
        return b.clear(now_ns)

    def venue_error(self, now_ns: int) -> bool:
        q = self._venue_errors
        q.append(now_ns)
        while q and q[0] < now_ns - 60 * NS_PER_S:
            q.popleft()
        if len(q) >= self.cfg.venue_error_limit:
            return self.breakers["venue_errors"].trip(f"{len(q)} venue errors in 60 s", now_ns)
        return False

    def venue_ok(self, now_ns: int) -> bool:
        q = self._venue_errors
        while q and q[0] < now_ns - 60 * NS_PER_S:
            q.popleft()
        if len(q) < self.cfg.venue_error_limit:
            return self.breakers["venue_errors"].clear(now_ns)
        return False

    def venue_latency(self, p99_ms: float, now_ns: int) -> bool:
        """Latency check; True when the breaker changed state."""
        b = self.breakers["venue_latency"]
        limit = self.cfg.venue_latency_ms
        if p99_ms > limit:
            return b.trip(f"order latency p99 {p99_ms:.0f} ms over {limit:.0f} ms", now_ns)
        return b.clear(now_ns)

    def venue_errors_clear_ns(self) -> int | None:
        """When the venue-error breaker may clear (the oldest error leaves the window)."""
        if not self.breakers["venue_errors"].tripped or not self._venue_errors:
            return None
        return self._venue_errors[0] + 60 * NS_PER_S + 1

    def blocks_market(self, symbol: str) -> str | None:
        """Why quoting this market is not allowed now, or None."""
        for b in self.breakers.values():
            if not b.tripped or b.action == REDUCE:
                continue
            if ":" in b.name and not b.name.endswith(":" + symbol):
                continue
            return f"{b.name}: {b.reason}"
        return None

    def version(self) -> int:
        """Changes whenever any breaker trips or clears."""
        return sum(b.changes for b in self.breakers.values())

    def halted(self) -> bool:
        return any(b.tripped and b.action == HALT for b in self.breakers.values())

    def paused_by(self) -> Breaker | None:
        for b in self.breakers.values():
            if b.tripped and b.latched:
                return b
        return None

    def reset(self, now_ns: int) -> None:
        for b in self.breakers.values():
            b.clear(now_ns, force=True)

    def status(self) -> dict[str, dict[str, object]]:
        return {name: b.status() for name, b in self.breakers.items()}


class KillSwitch:
    """Trips when the mid moves more than ``k`` σ within one second.

    σ is the standard deviation of 1-second mid moves (EWMA over the last few
    minutes), learned for ``warmup_s`` of market time before the switch is
    armed, and floored at one tick and at ``floor_bps`` so that a single-tick
    move on a thin book never trips it.
    """

    __slots__ = ("_armed_ns", "_hist", "_n", "_var", "floor_bps", "k", "warmup_ns")

    def __init__(self, k: float, warmup_s: float = 60.0, floor_bps: float = 1.0) -> None:
        self.k = k
        self.warmup_ns = int(warmup_s * NS_PER_S)
        self.floor_bps = floor_bps
        self._hist: deque[tuple[int, float]] = deque()
        self._var = 0.0
        self._n = 0
        self._armed_ns = 0

    def update(self, mid: float, now_ns: int, tick_bps: float) -> float | None:
        """Feed a mid; returns the move in σ when the switch trips, else None."""
        h = self._hist
        if not self._armed_ns:
            self._armed_ns = now_ns + self.warmup_ns
        h.append((now_ns, mid))
        while len(h) > 1 and h[1][0] <= now_ns - NS_PER_S:
            _, m0 = h.popleft()
            move = (mid / m0 - 1.0) * 1e4 if m0 > 0 else 0.0
            # learn σ of 1 s moves from the moves that leave the window
            self._n += 1
            a = 2.0 / (min(self._n, 2000) + 1)
            self._var += a * (move * move - self._var)
        if now_ns < self._armed_ns or not h:
            return None
        m_old = h[0][1]
        move = abs(mid / m_old - 1.0) * 1e4 if m_old > 0 else 0.0
        sigma = max(self._var**0.5, tick_bps, self.floor_bps)
        if move > self.k * sigma:
            return move / sigma
        return None
