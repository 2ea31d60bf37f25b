"""The simulator's fill models and the one reference book it shares with the engine."""

from __future__ import annotations

import pytest
from kit.data import NEXO_23 as NEXO_20MIN
from test_sim_venue import MKT, REF, Tape, standard

from flashmm.book import BookBuilder
from flashmm.config import load_config
from flashmm.engine import Engine
from flashmm.events import FillEvent
from flashmm.feeds.replay import ReplayFeed
from flashmm.runner import engine_from, scales_for, signal_factory
from flashmm.types import Side
from flashmm.venues.sim import SimSettings, SimVenue

# --- printed_size on hand-made tapes ------------------------------------------------


def test_printed_size_trade_through_fills_only_the_printed_lots() -> None:
    tp = standard(fill_model="printed_size")
    tp.place(1, 1, Side.BUY, 1000, 10)
    tp.place(1, 2, Side.SELL, 1003, 7)
    tp.trade(2, 999, 4, sell=True)  # a sell of 4 below our bid: 4 of our 10
    tp.trade(2, 1004, 1, sell=False)  # a buy of 1 above our ask: 1 of our 7
    tp.poll(2)
    got = sorted((f.client_id, f.size_lots, f.price_ticks) for f in tp.fills())
    assert got == [(1, 4, 1000), (2, 1, 1003)]
    tp.trade(3, 998, 50, sell=True)  # more than is left: the rest of the bid
    tp.poll(3)
    assert sum(f.size_lots for f in tp.fills() if f.client_id == 1) == 10


def test_whole_order_is_the_default_and_fills_the_whole_order() -> None:
    assert SimSettings().fill_model == "whole_order"
    tp = standard()
    tp.place(1, 1, Side.BUY, 1000, 10)
    tp.trade(2, 999, 4, sell=True)
    tp.poll(2)
    assert [(f.client_id, f.size_lots) for f in tp.fills()] == [(1, 10)]


def test_printed_size_budget_goes_best_price_first_then_queue_order() -> None:
    tp = standard(fill_model="printed_size")
    tp.place(1, 1, Side.BUY, 1000, 10)
    tp.place(1, 2, Side.BUY, 1000, 10)  # behind order 1 at the same price
    tp.place(1, 3, Side.BUY, 999, 10)
    tp.trade(2, 998, 15, sell=True)  # 15 lots: 10 to order 1, 5 to order 2, none to 3
    tp.poll(2)
    assert [(f.client_id, f.size_lots) for f in tp.fills()] == [(1, 10), (2, 5)]


def test_printed_size_at_our_price_keeps_the_queue_model() -> None:
    tp = standard(fill_model="printed_size")
    tp.place(1, 1, Side.BUY, 1000, 10)
    tp.poll(1)
    assert tp.venue.queue_ahead(MKT, 1) == 50
    tp.trade(2, 1000, 53, sell=True)  # 50 ahead, then 3 for us
    tp.poll(2)
    assert [(f.client_id, f.size_lots) for f in tp.fills()] == [(1, 3)]


def test_printed_size_book_crossing_our_price_still_fills_whole() -> None:
    tp = standard(fill_model="printed_size")
    tp.place(1, 1, Side.BUY, 1000, 10)
    tp.diff(2, asks=[(1002, 0), (1001, 0), (1000, 25)])  # best ask 1000 <= our bid
    tp.poll(2)
    assert [(f.client_id, f.size_lots) for f in tp.fills()] == [(1, 10)]


# --- one reference book per stream ---------------------------------------------------


class OwnBookSim(SimVenue):
    """The simulator as it was: a second copy of the reference book, applied by itself."""

    def share_book(self, symbol: str, builder: BookBuilder) -> None:
        return None


def drive(venue: SimVenue) -> tuple[Engine, list[tuple[object, ...]]]:
    cfg = load_config("configs/backtest.yaml", ["model.enabled=false"])
    engine = engine_from(cfg, venue, signal_factory=signal_factory(cfg, sim_clock=True))
    feed = ReplayFeed([NEXO_20MIN], scales_for(cfg.specs()))
    fills: list[tuple[object, ...]] = []
    for ev in feed.events():
        engine.step(ev, ev.ts_ns)
        while engine.outbox:
            out = engine.outbox.popleft()
            if isinstance(out, FillEvent):
                f = out.fill
                fills.append((f.client_id, f.side, f.price_ticks, f.size_lots, f.ts_ns))
    return engine, fills


def sim_for(fill_model: str, cls: type[SimVenue] = SimVenue) -> SimVenue:
    cfg = load_config("configs/backtest.yaml", [f"venue.sim.fill_model={fill_model}"])
    return cls({s.symbol: s for s in cfg.specs()}, SimSettings.model_validate(cfg.venue.sim))


@pytest.mark.parametrize("fill_model", ["whole_order", "printed_size"])
def test_shared_book_gives_the_fills_of_a_private_copy(fill_model: str) -> None:
    shared = sim_for(fill_model)
    eng, fills = drive(shared)
    # the simulator reads the engine's book: one BookBuilder, applied once per diff
    assert shared.book(MKT) is eng.markets[MKT].builder.book
    assert eng.markets[MKT].builder.diffs_applied > 0
    private = sim_for(fill_model, OwnBookSim)
    eng2, fills2 = drive(private)
    assert private.book(MKT) is not eng2.markets[MKT].builder.book
    assert len(fills) > 5
    assert fills == fills2
    assert eng.acct.total_pnl(eng.mids()) == eng2.acct.total_pnl(eng2.mids())


def test_printed_size_fills_fewer_lots_on_recorded_data() -> None:
    _, whole = drive(sim_for("whole_order"))
    _, printed = drive(sim_for("printed_size"))
    lots_whole = sum(int(str(f[3])) for f in whole)
    lots_printed = sum(int(str(f[3])) for f in printed)
    assert 0 < lots_printed < lots_whole


def test_shared_book_is_not_written_by_the_simulator() -> None:
    tp = Tape()
    builder = BookBuilder(REF)
    tp.venue.share_book(REF, builder)
    tp.snap(0, [(1000, 50)], [(1002, 40)])  # handed to the venue only: the owner applies it
    tp.diff(1, bids=[(1001, 5)])
    assert not builder.synced and builder.diffs_applied == 0 and not builder.buffer
    assert tp.venue.book(MKT) is builder.book and not builder.book.bids
