"""Parser numeric checks and USD-M futures sequencing on the real futures recordings;
the one diff rule shared by the book and the live feed."""

from __future__ import annotations

from pathlib import Path

import pytest
from kit.data import FUT_BTC, FUT_ETH, needs

from flashmm.book import APPLY, DROP, GAP, BookBuilder, SequenceGap, Verdict, diff_verdict
from flashmm.feeds.binance import BinanceParser, ParseError, Scale
from flashmm.feeds.replay import ReplayFeed, make_scales
from flashmm.feeds.ws import BinanceWSFeed
from flashmm.marketdata import BookTicker, DepthDiff, DepthSnapshot, Trade

ROOT = Path(__file__).resolve().parents[1]

P = BinanceParser({"nexousdt": Scale.of(0.001, 0.01)})


def trade(p: object, q: object = "1.00") -> dict[str, object]:
    return {"stream": "nexousdt@trade", "data": {"e": "trade", "p": p, "q": q, "m": False}}


@pytest.mark.parametrize(
    "msg",
    [
        trade("1e400"),
        trade(1e300),
        trade("NaN"),
        trade("nan"),
        trade("inf"),
        trade("-Infinity"),
        trade("-1.2"),
        trade("0"),
        trade("abc"),
        trade(None),
        trade(True),
        trade("1.2", "-1"),
        trade("1.2", "1e400"),
        {"stream": "nexousdt@trade", "data": {"e": "trade", "p": "1.2", "q": "1", "m": "no"}},
        {"stream": "nexousdt@trade", "data": "text"},
        {"stream": "nexousdt@depth@100ms", "data": {"e": "depthUpdate", "U": 5, "u": 4,
                                                     "b": [], "a": []}},
        {"stream": "nexousdt@depth@100ms", "data": {"e": "depthUpdate", "U": 1.5, "u": 4,
                                                     "b": [], "a": []}},
        {"stream": "nexousdt@depth@100ms", "data": {"e": "depthUpdate", "U": -1, "u": 4,
                                                     "b": [], "a": []}},
        {"stream": "nexousdt@depth@100ms", "data": {"e": "depthUpdate", "U": 1, "u": 4,
                                                     "b": [["1.2"]], "a": []}},
        {"stream": "nexousdt@depth@100ms", "data": {"e": "depthUpdate", "U": 1, "u": 4,
                                                     "b": "x", "a": []}},
        {"stream": "nexousdt@bookTicker", "data": {"u": 1, "b": "1.2", "B": "nan",
                                                    "a": "1.3", "A": "1"}},
    ],
)  # fmt: skip
def test_bad_numbers_are_parse_errors(msg: dict[str, object]) -> None:
    with pytest.raises(ParseError):
        P.parse(msg, 1)


def test_bad_snapshot_and_json_numbers() -> None:
    with pytest.raises(ParseError):
        P.parse({"lastUpdateId": "x", "bids": [], "asks": []}, 1, "nexousdt")
    with pytest.raises(ParseError):
        P.parse({"lastUpdateId": 3, "bids": [["1e400", "1"]], "asks": []}, 1, "nexousdt")
    with pytest.raises(ParseError):
        P.parse_json(b'{"stream": "nexousdt@trade", "data": {"e": "trade", "p": 1e400}}', 1)


def test_good_messages_still_parse() -> None:
    ev = P.parse(trade("1.234", "2.5"), 1)
    assert isinstance(ev, Trade) and ev.price_ticks == 1234 and ev.size_lots == 250
    d = P.parse(
        {"stream": "nexousdt@depth@100ms", "data": {"e": "depthUpdate", "U": 3, "u": 4,
         "b": [["1.2", "0.00"]], "a": [], "pu": 2}}, 1
    )  # fmt: skip
    assert isinstance(d, DepthDiff) and d.bids == [(1200, 0)] and d.prev_id == 2


def replay_book(path: Path, sym: str, tick: float, lot: float) -> BookBuilder:
    feed = ReplayFeed([path], make_scales([(sym, tick, lot)]), align=False)
    b = BookBuilder(sym)
    for ev in feed.events():
        if isinstance(ev, DepthSnapshot):
            b.on_snapshot(ev)
        elif isinstance(ev, DepthDiff):
            assert ev.prev_id >= 0
            b.on_diff(ev)
        elif isinstance(ev, BookTicker):
            b.on_ticker(ev)
    assert feed.stats.bad_lines == 0
    return b


@needs(FUT_BTC, FUT_ETH)
@pytest.mark.parametrize(
    ("path", "sym", "tick", "lot", "min_checks"),
    [(FUT_BTC, "btcusdt", 0.1, 0.001, 600), (FUT_ETH, "ethusdt", 0.01, 0.001, 500)],
)
def test_futures_book_matches_every_book_ticker(
    path: Path, sym: str, tick: float, lot: float, min_checks: int
) -> None:
    b = replay_book(path, sym, tick, lot)
    assert b.gaps == 0 and b.synced
    assert b.diffs_applied > 6000
    assert b.checks >= min_checks and b.mismatches == 0
    assert b.book.valid


def test_futures_rule_first_diff_spans_snapshot_then_pu_chains() -> None:
    b = BookBuilder("x")
    b.on_diff(DepthDiff("x", 1, 90, 95, [(10, 1)], [], 0, 89))  # before the snapshot
    b.on_diff(DepthDiff("x", 2, 96, 102, [(11, 1)], [], 0, 95))
    b.on_snapshot(DepthSnapshot("x", 3, 100, [(9, 5)], [(20, 5)]))
    # u=95 < 100 dropped; 96..102 spans 100: applied (futures: U <= lastUpdateId <= u)
    assert b.diffs_dropped == 1 and b.diffs_applied == 1 and b.book.best_bid == 11
    assert b.on_diff(DepthDiff("x", 4, 110, 120, [(12, 1)], [], 0, 102))  # pu == previous u
    with pytest.raises(SequenceGap):
        b.on_diff(DepthDiff("x", 5, 130, 140, [(13, 1)], [], 0, 125))  # pu != 120
    assert not b.synced and b.gaps == 1
    # a snapshot the held diff does not span (130..140 vs 128) is a gap too
    with pytest.raises(SequenceGap):
        b.on_snapshot(DepthSnapshot("x", 6, 128, [(9, 5)], [(20, 5)]))
    b.on_snapshot(DepthSnapshot("x", 7, 135, [(9, 5)], [(20, 5)]))
    assert b.synced and b.last_id == 140 and b.book.best_bid == 13


def fut(first: int, last: int, pu: int, bid: int = 10) -> DepthDiff:
    return DepthDiff("btcusdt", last, first, last, [(bid, 1)], [], 0, pu)


def spot(first: int, last: int, bid: int = 10) -> DepthDiff:
    return DepthDiff("btcusdt", last, first, last, [(bid, 1)], [], 0)


@pytest.mark.parametrize(
    ("d", "last", "fresh", "verdict"),
    [
        # spot: u <= last is already in the book; U > last + 1 skipped an update
        (spot(90, 100), 100, True, DROP),
        (spot(95, 105), 100, True, APPLY),
        (spot(101, 105), 100, False, APPLY),
        (spot(102, 105), 100, False, GAP),
        (spot(101, 105), 105, False, DROP),  # a repeated diff
        # futures right after the snapshot: u < last dropped, the first spans last
        (fut(90, 99, 89), 100, True, DROP),
        (fut(95, 100, 94), 100, True, APPLY),
        (fut(101, 105, 100), 100, True, GAP),
        # futures after that: pu chains, anything else is a gap (a repeat too)
        (fut(106, 110, 105), 105, False, APPLY),
        (fut(106, 110, 104), 105, False, GAP),
        (fut(101, 105, 100), 105, False, GAP),  # the last diff again
    ],
)
def test_one_diff_rule_for_spot_and_futures(
    d: DepthDiff, last: int, fresh: bool, verdict: Verdict
) -> None:
    assert diff_verdict(d, last, fresh) is verdict


async def test_book_and_live_feed_agree_on_a_repeated_diff() -> None:
    """Binance's futures rule: after the first diff, ``pu`` must equal the previous ``u``,
    else re-initialise from a snapshot. A repeated, already-applied futures diff is
    therefore a gap for the book and the live feed alike; a repeated spot diff is
    dropped by both (the feed passes it on, the book ignores it)."""
    for make, repeat_is_gap in ((lambda f, u, pu: fut(f, u, pu), True), (spot_of, False)):
        chain = [make(98, 102, 97), make(103, 105, 102), make(106, 110, 105)]
        repeat = make(106, 110, 105)
        b = BookBuilder("btcusdt")
        b.on_snapshot(DepthSnapshot("btcusdt", 1, 100, [(9, 5)], [(20, 5)]))
        for d in chain:
            assert b.on_diff(d)
        if repeat_is_gap:
            with pytest.raises(SequenceGap):
                b.on_diff(repeat)
        else:
            assert not b.on_diff(repeat) and b.diffs_dropped == 1
        # the live feed, between a snapshot and the next gap (no connection needed)
        feed = BinanceWSFeed({"btcusdt": Scale.of(0.1, 0.001)}, rest_url="http://127.0.0.1:9")
        st = feed._syms["btcusdt"]
        st.resyncing, st.last_u, st.fresh, st.snapshots = False, 100, True, 1
        for d in [*chain, repeat]:
            feed._on_diff(st, d, "{}")
        passed = [feed._q.get_nowait() for _ in range(feed._q.qsize())]
        await feed.aclose()
        assert feed.stats.gaps == (1 if repeat_is_gap else 0)
        kinds = [getattr(e, "kind", "diff") for e in passed]
        assert kinds == ["diff"] * 3 + (["gap"] if repeat_is_gap else ["diff"])


def spot_of(first: int, last: int, pu: int) -> DepthDiff:
    return spot(first, last)
