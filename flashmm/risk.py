"""Risk limits and named breakers.

The position limit is enforced on every order before it is sent: the
worst case (our position plus every live order on that side filling,
including orders whose cancel is still in flight) valued at the highest
price among those orders must stay within ``max_position_usdc``. An order
that would break this is cut to what fits, or dropped.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from flashmm.types import NS_PER_S, MarketSpec, Order, OrderRequest, OrderState, Side

#: one UTC day of the engine's clock: ``now_ns // NS_PER_DAY`` is the day number
NS_PER_DAY = 86_400 * NS_PER_S

# What a tripped breaker does.
PULL = "pull"  # pull quotes while tripped, quote again when it clears
PAUSE = "pause"  # pause quoting until an operator resumes (latched)
HALT = "halt"  # emergency stop: cancel all, flatten, halt until reset (latched)
REDUCE = "reduce_only"  # quote only the side that reduces the position


class RiskConfig(BaseModel):
    """The profile's ``risk`` section: limits and breakers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_position_usdc: float = Field(
        2000.0, gt=0, description="Per-market position limit (reduce only from 95 % of it)"
    )
    max_order_usdc: float = Field(500.0, gt=0, description="Largest single order")
    daily_loss_limit_usdc: float = Field(
        200.0,
        gt=0,
        description="Pause (latched) when the P&L since 00:00 UTC falls this far below 0",
    )
    max_drawdown_usdc: float = Field(
        300.0, gt=0, description="Pause (latched) when the P&L falls this far below its peak"
    )
    stale_feed_ms: int = Field(5000, gt=0, description="Pull quotes after this long without data")
    kill_switch_sigma: float = Field(
        15.0, gt=0, description="Emergency stop on a 1 s move > N σ (and > both floors)"
    )
    kill_switch_min_move_bps: float = Field(
        100.0, ge=0, description="Emergency stop only on a 1 s move > this many bps"
    )
    kill_switch_min_ticks: float = Field(
        20.0, ge=0, description="Emergency stop only on a 1 s move > this many reference ticks"
    )
    kill_switch_enabled: bool = True
    price_band_sigma: float = Field(
        4.0, ge=0, description="Hold a reference mid that jumps > N σ (0: no σ band)"
    )
    price_band_min_bps: float = Field(
        50.0, ge=0, description="The σ band is never narrower than this many bps"
    )
    price_band_pct: float = Field(
        5.0, ge=0, description="Hold a reference mid that jumps > this % (0: no % band)"
    )
    price_band_confirm_s: float = Field(
        1.0, ge=0, le=60, description="A held mid is used once it stays there this long"
    )
    venue_error_limit: int = Field(5, ge=1, description="Venue errors in a minute before pulling")
    venue_latency_ms: float = Field(
        3000.0,
        gt=0,
        description="Pull quotes while the venue's p99 order latency is above this (a "
        "transaction still waiting for its receipt counts at its age so far)",
    )


#: each market's own breakers (named ``kind:symbol``) and what they do
_MARKET_BREAKERS = (
    ("stale_feed", PULL),
    ("position_limit", REDUCE),
    ("crossed_book", PULL),
    ("price_band", PULL),
)

#: bumped by every breaker trip or clear in the process (:meth:`RiskManager.version`)
_CHANGES = [0]


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
    #: how this latched breaker is cleared, when not by ``reset --confirm``
    clear_hint: str = ""

    def trip(self, reason: str, now_ns: int) -> bool:
        """Trip; True when this is a new trip (state changed)."""
        if self.tripped:
            self.reason = reason
            return False
        self.tripped, self.reason, self.since_ns = True, reason, now_ns
        self.trips += 1
        self.changes += 1
        _CHANGES[0] += 1
        return True

    def clear(self, now_ns: int, *, force: bool = False) -> bool:
        """Clear; latched breakers clear only with ``force``. True when the state changed."""
        if not self.tripped or (self.latched and not force):
            return False
        self.tripped, self.reason, self.since_ns = False, "", now_ns
        self.changes += 1
        _CHANGES[0] += 1
        return True

    @property
    def clears(self) -> str:
        """How this breaker clears."""
        if self.latched and self.clear_hint:
            return f"latched: {self.clear_hint}"
        if self.latched:
            return "latched: 'flashmm reset --confirm' clears it, then 'flashmm resume'"
        return "by itself when its cause is gone"

    def status(self) -> dict[str, object]:
        return {
            "state": "tripped" if self.tripped else "ok",
            "action": self.action,
            "reason": self.reason,
            "since_ns": self.since_ns,
            "trips": self.trips,
            "latched": self.latched,
            "clears": self.clears,
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
            for kind, action in _MARKET_BREAKERS:
                self.breakers[f"{kind}:{sym}"] = Breaker(f"{kind}:{sym}", action)
        self._venue_errors: deque[int] = deque()
        #: the UTC day (``now_ns // NS_PER_DAY`` of the engine's clock) of the last P&L mark
        self.day: int | None = None
        #: the P&L at the start of ``day`` (the ``daily_loss`` breaker counts from here)
        self.day_start_pnl = 0.0
        self._last_pnl: float | None = None
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
        unit = spec.unit_usdc
        max_order = self.cfg.max_order_usdc
        # per side: the lots that could still fill (the position counts on its side, negated
        # on the other) and the highest price among those orders
        exposure = {Side.BUY: position_lots, Side.SELL: -position_lots}
        top_px = {Side.BUY: 0, Side.SELL: 0}
        for o in live_orders:
            if o.state is OrderState.DONE or o.remaining_lots <= 0:
                continue
            exposure[o.side] += o.remaining_lots
            top_px[o.side] = max(top_px[o.side], o.price_ticks)
        out: list[OrderRequest] = []
        for req in places:
            px = req.price_ticks
            if px <= 0 or req.size_lots <= 0:
                self.orders_dropped += 1
                continue
            size = min(req.size_lots, int(max_order / (px * unit) + 1e-9))
            val_px = max(top_px[req.side], px)
            size = min(size, int(limit / (val_px * unit) + 1e-9) - exposure[req.side])
            if size <= 0:
                self.orders_dropped += 1
                continue
            if size < req.size_lots:
                self.orders_cut += 1
                req = OrderRequest(req.market, req.client_id, req.side, px, size, req.post_only)
            exposure[req.side] += size
            top_px[req.side] = val_px
            out.append(req)
        return out

    def max_position_lots(self, spec: MarketSpec, mid_ticks: float) -> int:
        if mid_ticks <= 0:
            return 0
        return int(self.cfg.max_position_usdc / (mid_ticks * spec.unit_usdc))

    # --- breakers -----------------------------------------------------------

    def update_position(
        self, spec: MarketSpec, position_lots: int, mid_ticks: float, now_ns: int
    ) -> bool:
        """The market's ``position_limit`` breaker: tripped while the position is worth
        95 % of ``max_position_usdc`` or more at ``mid_ticks``. True when it changed."""
        notional = abs(position_lots) * mid_ticks * spec.unit_usdc
        tripped = notional >= 0.95 * self.cfg.max_position_usdc
        return self.set_position_limit(spec.symbol, tripped, notional, now_ns)

    def set_position_limit(
        self, symbol: str, tripped: bool, notional_usdc: float, now_ns: int
    ) -> bool:
        """Trip or clear the market's ``position_limit`` breaker as decided (here, or by
        the compiled backtest loop on the same sums); True when it changed."""
        b = self.breakers[f"position_limit:{symbol}"]
        if tripped:
            what = f"position {notional_usdc:.0f} USDC of {self.cfg.max_position_usdc:.0f}"
            return b.trip(f"{what}: reduce only", now_ns)
        return b.clear(now_ns)

    def blocked_side(self, symbol: str, position_lots: int) -> int:
        """The side not quoted now (+1 buy, -1 sell, 0 none): while the market's
        ``position_limit`` breaker is tripped (reduce only), the side that would grow
        |position| (buys when long, sells when short); the other side quotes."""
        if not self.breakers[f"position_limit:{symbol}"].tripped:
            return 0
        return (position_lots > 0) - (position_lots < 0)

    def start_day(self, day: int, pnl_usdc: float) -> None:
        """The P&L at the start of UTC day ``day`` (``now_ns // NS_PER_DAY``), when
        it is not 0 on this run's clock: a restart hands over the P&L its journal
        had at 00:00 UTC today, so the loss before the restart still counts."""
        self.day, self.day_start_pnl = day, pnl_usdc

    def day_pnl(self) -> float:
        """The P&L of the current UTC day at the last mark (what ``daily_loss`` limits)."""
        return (self._last_pnl or 0.0) - self.day_start_pnl

    def update_pnl(self, pnl_usdc: float, drawdown_usdc: float, now_ns: int) -> list[Breaker]:
        """A P&L mark: ``daily_loss`` trips when the P&L since 00:00 UTC of the
        engine's clock is ``daily_loss_limit_usdc`` or more below 0 (latched: a new
        day does not clear it), ``max_drawdown`` on the fall from the peak."""
        day = now_ns // NS_PER_DAY
        if self.day is None:
            self.day = day
        elif day != self.day:
            # a new UTC day starts from the P&L at the boundary: the last mark's (a
            # mark is skipped when nothing changed, so that P&L still held at 00:00);
            # a run whose first mark is already past it starts from that mark
            self.day = day
            self.day_start_pnl = pnl_usdc if self._last_pnl is None else self._last_pnl
        self._last_pnl = pnl_usdc
        changed = []
        b = self.breakers["daily_loss"]
        limit = self.cfg.daily_loss_limit_usdc
        today = pnl_usdc - self.day_start_pnl
        if today <= -limit and b.trip(
            f"P&L since 00:00 UTC {today:.2f} USDC below -{limit:g}", now_ns
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

    def _recent_venue_errors(self, now_ns: int) -> int:
        """Venue errors within the last 60 s (older ones are forgotten)."""
        q = self._venue_errors
        while q and q[0] < now_ns - 60 * NS_PER_S:
            q.popleft()
        return len(q)

    def venue_error(self, now_ns: int) -> bool:
        self._venue_errors.append(now_ns)
        n = self._recent_venue_errors(now_ns)
        if n >= self.cfg.venue_error_limit:
            return self.breakers["venue_errors"].trip(f"{n} venue errors in 60 s", now_ns)
        return False

    def venue_ok(self, now_ns: int) -> bool:
        if self._recent_venue_errors(now_ns) < self.cfg.venue_error_limit:
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
        """Changes whenever any breaker trips or clears (a count over every breaker of
        the process, so it never repeats; only its changes mean anything)."""
        return _CHANGES[0]

    def paused_by(self) -> Breaker | None:
        return next((b for b in self.breakers.values() if b.tripped and b.latched), None)

    def reset(self, now_ns: int) -> float | None:
        """Clear every breaker (the operator's ``reset --confirm``). A tripped
        ``daily_loss`` is re-armed from the P&L of the last mark: the rest of today's
        loss counts from there (else the next mark, still past the limit, trips it
        again and a reset could never resume a bot before 00:00 UTC). Returns that
        new start of the day's P&L, or None when ``daily_loss`` was not tripped."""
        rebased = None
        if self.breakers["daily_loss"].tripped and self._last_pnl is not None:
            self.day_start_pnl = rebased = self._last_pnl
        for b in self.breakers.values():
            b.clear(now_ns, force=True)
        return rebased

    def status(self) -> dict[str, dict[str, object]]:
        return {name: b.status() for name, b in self.breakers.items()}


class KillSwitch:
    """Trips when the reference mid moves too far within one second.

    Everything is in the reference market's own terms (bps, σ, ticks; never
    an absolute price). A 1-second move trips the switch only when it is
    larger than all of:

    - ``k`` σ, where σ is the standard deviation of 1-second mid moves in
      bps, sampled once per second of market time (not once per book
      update: on a fast book overlapping samples all share one move) and
      averaged over the last ten minutes (EWMA over 600 samples), learned for
      ``warmup_s`` of market time before the switch is armed;
    - ``min_move_bps``: fat tails make k σ moves routine on a quiet
      market (ETH/USDT sits near 1-2 bps σ and moves 5-10 bps in a second
      every few minutes), so a flash-crash floor in bps of the mid;
    - ``min_ticks`` reference ticks.

    σ is floored at the reference market's own tick in bps of the mid
    (learned: the greatest common divisor of every best bid and ask seen,
    so a NEXO/USDT tick of 0.001 driving a 0.0001-tick market counts as ten
    of our ticks), at our own tick and at ``floor_bps``; once we trade, σ is
    at least the volatility of our own market: the per-second variance of the
    moves between our consecutive fill prices (:meth:`on_own_trade`, EWMA
    over the last 200 fills).

    A re-sync or reconnect (:meth:`gap`) forgets only the last second of
    mids (the prices no longer join up); σ, the learned tick and the armed
    state are kept, so a resync never blinds the switch.
    """

    __slots__ = (
        "_armed_ns",
        "_hist",
        "_n",
        "_own",
        "_own_n",
        "_own_var",
        "_sample_ns",
        "_var",
        "floor_bps",
        "k",
        "last_limit_bps",
        "last_move_bps",
        "last_sigma",
        "last_sigma_bps",
        "max_move_bps",
        "max_sigma",
        "min_move_bps",
        "min_ticks",
        "ref_tick",
        "warmup_ns",
    )

    def __init__(
        self,
        k: float,
        warmup_s: float = 60.0,
        floor_bps: float = 1.0,
        *,
        min_move_bps: float = 0.0,
        min_ticks: float = 0.0,
    ) -> None:
        self.k = k
        self.warmup_ns = int(warmup_s * NS_PER_S)
        self.floor_bps = floor_bps
        self.min_move_bps = min_move_bps
        self.min_ticks = min_ticks
        self._hist: deque[tuple[int, float]] = deque()
        self._var = 0.0
        self._n = 0
        self._sample_ns = 0
        self._armed_ns = 0
        #: the reference market's tick in price units (0 until a book is seen)
        self.ref_tick = 0
        #: the σ floor-included of the last update (bps), the last and largest move in σ
        self.last_sigma_bps = 0.0
        self.last_sigma = 0.0
        self.max_sigma = 0.0
        #: the last 1 s move and its trip limit, the largest 1 s move (bps, once armed)
        self.last_move_bps = 0.0
        self.last_limit_bps = 0.0
        self.max_move_bps = 0.0
        self._own: tuple[float, int] | None = None
        self._own_var = 0.0
        self._own_n = 0

    @classmethod
    def from_config(cls, cfg: RiskConfig) -> KillSwitch:
        return cls(
            cfg.kill_switch_sigma,
            min_move_bps=cfg.kill_switch_min_move_bps,
            min_ticks=cfg.kill_switch_min_ticks,
        )

    def on_own_trade(self, price: float, now_ns: int) -> None:
        """One of our fills (any price unit): learns our own market's volatility."""
        if price <= 0:
            return
        last = self._own
        self._own = (price, now_ns)
        if last is None:
            return
        p0, t0 = last
        dt_s = max((now_ns - t0) / NS_PER_S, 1.0)
        move = (price / p0 - 1.0) * 1e4
        self._own_n += 1
        a = 2.0 / (min(self._own_n, 200) + 1)
        self._own_var += a * (move * move / dt_s - self._own_var)

    def update_book(self, best_bid: int, best_ask: int, now_ns: int) -> float | None:
        """Feed the top of the reference book (price units, our ticks): learns the
        reference tick, then :meth:`update` with the mid. The move in σ when it trips."""
        g = math.gcd(self.ref_tick, best_bid, best_ask)
        if g > 0:
            self.ref_tick = g
        mid = (best_bid + best_ask) * 0.5
        if mid <= 0:
            return None
        return self.update(mid, now_ns, max(g, 1) / mid * 1e4)

    def gap(self) -> None:
        """The price history no longer joins up (re-sync, reconnect, new replay pass)."""
        self._hist.clear()

    def sigma_bps(self, tick_bps: float = 0.0) -> float:
        """σ of 1-second moves in bps with its floors."""
        return float(max(self._var**0.5, self._own_var**0.5, tick_bps, self.floor_bps))

    def limit_bps(self, tick_bps: float = 0.0) -> float:
        """The 1-second move (bps) beyond which the switch trips."""
        return max(self.k * self.sigma_bps(tick_bps), self.min_move_bps, self.min_ticks * tick_bps)

    @property
    def armed(self) -> bool:
        return bool(self._armed_ns) and bool(self._hist) and self._hist[-1][0] >= self._armed_ns

    def update(self, mid: float, now_ns: int, tick_bps: float) -> float | None:
        """Feed a mid and the reference tick in bps; returns the move in σ when the
        switch trips, else None."""
        h = self._hist
        if not self._armed_ns:
            self._armed_ns = now_ns + self.warmup_ns
        # learn σ from one 1 s move per second of market time, each ending at the
        # mid before this one: a move is tested before it is learned
        last = h[-1][1] if h else mid
        h.append((now_ns, mid))
        while len(h) > 1 and h[1][0] <= now_ns - NS_PER_S:
            t0, m0 = h.popleft()
            if t0 < self._sample_ns:
                continue
            self._sample_ns = t0 + NS_PER_S
            move = (last / m0 - 1.0) * 1e4 if m0 > 0 else 0.0
            self._n += 1
            a = 2.0 / (min(self._n, 600) + 1)
            self._var += a * (move * move - self._var)
        sigma = self.sigma_bps(tick_bps)
        limit = self.limit_bps(tick_bps)
        self.last_sigma_bps = sigma
        self.last_limit_bps = limit
        m_old = h[0][1]
        move = abs(mid / m_old - 1.0) * 1e4 if m_old > 0 else 0.0
        z = move / sigma
        self.last_sigma = z
        self.last_move_bps = move
        if now_ns < self._armed_ns:
            return None
        self.max_sigma = max(self.max_sigma, z)
        self.max_move_bps = max(self.max_move_bps, move)
        return z if move > limit else None

    def status(self) -> dict[str, object]:
        return {
            "sigma_bps": round(self.last_sigma_bps, 4),
            "own_sigma_bps": round(self._own_var**0.5, 4),
            "reference_tick": self.ref_tick,
            "last_move_sigma": round(self.last_sigma, 3),
            "max_move_sigma": round(self.max_sigma, 3),
            "max_move_bps": round(self.max_move_bps, 3),
            "trip_sigma": self.k,
            "trip_bps": round(self.last_limit_bps, 3),
            "armed": self.armed,
        }


class PriceBand:
    """Holds a reference mid that jumps too far until the market confirms it.

    A mid further than the band from the last good mid (or from the mid of
    our own venue's book, when the venue reports one) is *held*: not quoted
    on, not fed to signals, volatility or the kill switch. It becomes the
    new good mid once every mid for ``confirm_s`` of market time has stayed
    within the band of it (a real move); a mid back within the band of the
    last good one ends the hold at once (a bad tick, counted in
    ``rejected``). The band is ``sigma_k`` σ of 1-second moves (the kill
    switch's σ, floored at the reference tick), never narrower than
    ``min_bps`` (a normal jump on a quiet, fine-tick book is many σ), capped
    at ``max_pct`` % when that is set. The last good mid is kept across re-syncs and reconnects.
    """

    __slots__ = (
        "confirm_ns",
        "confirmed",
        "good",
        "held",
        "last_outcome",
        "max_pct",
        "min_bps",
        "pending",
        "pending_ns",
        "rejected",
        "sigma_k",
    )

    def __init__(
        self, sigma_k: float, max_pct: float, confirm_s: float, min_bps: float = 0.0
    ) -> None:
        self.sigma_k = sigma_k
        self.min_bps = min_bps
        self.max_pct = max_pct
        self.confirm_ns = int(confirm_s * NS_PER_S)
        self.good = 0.0
        self.pending = 0.0
        self.pending_ns = 0
        self.held = 0
        self.rejected = 0
        self.confirmed = 0
        self.last_outcome = ""

    @classmethod
    def from_config(cls, cfg: RiskConfig) -> PriceBand:
        return cls(
            cfg.price_band_sigma,
            cfg.price_band_pct,
            cfg.price_band_confirm_s,
            cfg.price_band_min_bps,
        )

    def limit_bps(self, sigma_bps: float) -> float:
        lim = max(self.sigma_k * sigma_bps, self.min_bps) if self.sigma_k > 0 else float("inf")
        if self.max_pct > 0:
            lim = min(lim, self.max_pct * 100.0)
        return lim

    def check(
        self, mid: float, now_ns: int, sigma_bps: float, venue_mid: float | None = None
    ) -> str | None:
        """None when ``mid`` is good (it becomes the last good mid); else why it is held."""
        lim = self.limit_bps(sigma_bps)
        vmid = venue_mid or 0.0
        ref = self.good
        if ref <= 0 < vmid:
            ref = vmid
        if ref <= 0:
            self.good = mid
            return None
        jump = abs(mid / ref - 1.0) * 1e4
        if vmid > 0:
            jump = max(jump, abs(mid / vmid - 1.0) * 1e4)
        if jump <= lim:
            if self.pending:
                self.pending = 0.0
                self.rejected += 1
                self.last_outcome = "back within the band: the jump was not confirmed"
            self.good = mid
            return None
        p = self.pending
        if p > 0 and abs(mid / p - 1.0) * 1e4 <= lim:
            if now_ns - self.pending_ns >= self.confirm_ns:
                self.pending = 0.0
                self.confirmed += 1
                self.last_outcome = (
                    f"confirmed: the mid held {jump:.0f} bps away for "
                    f"{(now_ns - self.pending_ns) / 1e9:.1f} s"
                )
                self.good = mid
                return None
        else:
            self.pending, self.pending_ns = mid, now_ns
            self.held += 1
        return (
            f"reference mid {jump:.0f} bps from the last good price (band {lim:.0f} bps): "
            f"held until it stays there for {self.confirm_ns / 1e9:g} s"
        )

    def status(self) -> dict[str, object]:
        return {
            "good_mid": self.good,
            "holding": self.pending > 0,
            "held": self.held,
            "rejected": self.rejected,
            "confirmed": self.confirmed,
        }
