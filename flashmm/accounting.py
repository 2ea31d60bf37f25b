"""Positions, average cost, realized/unrealized P&L and fees, per market and total (USDC)."""

from __future__ import annotations

from collections.abc import Iterable

from flashmm.types import Fill, Liquidity, MarketSpec, Position


def apply_fill(pos: Position, fill: Fill, spec: MarketSpec | None = None) -> None:
    """Book ``fill`` into ``pos`` at average cost: the one P&L rule (engine and journal).

    Realized P&L (without fees) is booked when a fill reduces the position; a fill
    through zero opens the rest at its price; fees go to ``fees_usdc``. Without
    ``spec`` one tick times one lot counts as 1 USDC.
    """
    unit_usdc = spec.unit_usdc if spec is not None else 1.0
    signed = fill.size_lots * int(fill.side)
    old = pos.lots
    new = old + signed
    if old == 0 or (old > 0) == (signed > 0):
        # opening or adding: new average cost
        pos.avg_price_ticks = (
            pos.avg_price_ticks * abs(old) + fill.price_ticks * fill.size_lots
        ) / abs(new)
    else:
        closed = min(abs(signed), abs(old))
        direction = 1 if old > 0 else -1
        pos.realized_usdc += (
            (fill.price_ticks - pos.avg_price_ticks) * closed * direction * unit_usdc
        )
        if abs(signed) > abs(old):  # flipped through zero
            pos.avg_price_ticks = float(fill.price_ticks)
        elif new == 0:
            pos.avg_price_ticks = 0.0
    pos.lots = new
    pos.fees_usdc += fill.fee_usdc
    pos.volume_usdc += fill.price_ticks * fill.size_lots * unit_usdc
    pos.fills += 1


def unrealized_usdc(pos: Position, mid_ticks: float, spec: MarketSpec) -> float:
    """What ``pos`` would gain (USDC) closed at ``mid_ticks`` (0 when flat or no mid)."""
    if pos.lots == 0 or mid_ticks <= 0:
        return 0.0
    return (mid_ticks - pos.avg_price_ticks) * pos.lots * spec.unit_usdc


class Accounting:
    """Books every fill, whatever venue it came from."""

    def __init__(self, specs: Iterable[MarketSpec], max_position_usdc: float) -> None:
        self.specs = {s.symbol: s for s in specs}
        self.positions = {s: Position(s) for s in self.specs}
        self.max_position_usdc = max_position_usdc
        self.limit_breaches = 0
        self.maker_fills = 0
        self.taker_fills = 0
        self.peak_equity = 0.0
        self.max_drawdown = 0.0
        self.max_abs_inventory_usdc = 0.0
        self.fill_ids: set[str] = set()

    def on_fill(self, fill: Fill) -> Position | None:
        """Apply a fill; returns its market's position. A fill id seen before is not
        booked again (a venue replaying after a restart or reconnect): None."""
        if fill.fill_id:
            if fill.fill_id in self.fill_ids:
                return None
            self.fill_ids.add(fill.fill_id)
        pos = self.positions[fill.market]
        spec = self.specs[fill.market]
        old = pos.lots
        apply_fill(pos, fill, spec)
        new = pos.lots
        if fill.liquidity is Liquidity.MAKER:
            self.maker_fills += 1
        else:
            self.taker_fills += 1
        over = abs(new) * fill.price_ticks * spec.unit_usdc > self.max_position_usdc * (1 + 1e-9)
        if over and abs(new) > abs(old):
            self.limit_breaches += 1
        return pos

    def unrealized(self, market: str, mid_ticks: float) -> float:
        return unrealized_usdc(self.positions[market], mid_ticks, self.specs[market])

    def inventory_usdc(self, market: str, mid_ticks: float) -> float:
        return self.positions[market].lots * mid_ticks * self.specs[market].unit_usdc

    def market_pnl(self, market: str, mid_ticks: float) -> float:
        pos = self.positions[market]
        return pos.realized_usdc + self.unrealized(market, mid_ticks) - pos.fees_usdc

    def total_pnl(self, mids: dict[str, float]) -> float:
        return sum(self.market_pnl(m, mids.get(m, 0.0)) for m in self.positions)

    def mark(self, mids: dict[str, float]) -> tuple[float, float]:
        """Update equity peak, drawdown and max inventory; returns (pnl, drawdown)."""
        pnl = self.total_pnl(mids)
        self.peak_equity = max(self.peak_equity, pnl)
        dd = self.peak_equity - pnl
        self.max_drawdown = max(self.max_drawdown, dd)
        for m in self.positions:
            inv = abs(self.inventory_usdc(m, mids.get(m, 0.0)))
            self.max_abs_inventory_usdc = max(self.max_abs_inventory_usdc, inv)
        return pnl, dd

    @property
    def fees(self) -> float:
        return sum(p.fees_usdc for p in self.positions.values())

    @property
    def volume(self) -> float:
        return sum(p.volume_usdc for p in self.positions.values())

    @property
    def fills(self) -> int:
        return sum(p.fills for p in self.positions.values())

    def restore(self, position: Position) -> None:
        """Load a position recovered from the journal."""
        self.positions[position.market] = position
