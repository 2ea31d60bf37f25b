"""Binance parser, replay feed and the L2 book against the recordings."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from conftest import read_lines, write_gz
from kit.data import ETH, ETH_SLICE, NEXO_23, NEXO_24, needs
from loguru import logger

from flashmm.book import BookBuilder, SequenceGap, SyncState
from flashmm.errors import DataError
from flashmm.feeds.binance import BinanceParser, ParseError, Scale, ts_to_ns
from flashmm.feeds.replay import ReplayFeed, make_scales
from flashmm.marketdata import BookTicker, DepthDiff, DepthSnapshot, FeedStatus, Trade

NEXO = Scale.of(0.001, 0.01)
SCALES = make_scales([("nexousdt", 0.001, 0.01), ("ethusdt", 0.01, 0.0001)])


@pytest.mark.parametrize(
    ("raw", "ns"),
    [
        (1721749182850494, 1721749182850494000),  # µs
        (1723161254024619568, 1723161254024619568),  # ns
        (1721749182850, 1721749182850000000),  # ms
        (1721749182, 1721749182000000000),  # s
    ],
)
def test_timestamp_unit_is_detected(raw: int, ns: int) -> None:
    assert ts_to_ns(raw) == ns


def test_parse_each_message_kind() -> None:
    p = BinanceParser({"nexousdt": NEXO})
    snap = p.parse_line(
        b'1721749182850494 {"lastUpdateId": 7, "bids": [["1.214", "63.38"]], "asks": [["1.216", "1.5"]]}',
        "nexousdt",
    )
    assert snap == DepthSnapshot("nexousdt", 1721749182850494000, 7, [(1214, 6338)], [(1216, 150)])
    diff = p.parse_line(
        b'1 {"stream":"nexousdt@depth@100ms","data":{"e":"depthUpdate","E":5,"U":8,"u":9,"b":[["1.213","0.00000000"]],"a":[]}}'
    )
    assert (
        isinstance(diff, DepthDiff)
        and diff.bids == [(1213, 0)]
        and (diff.first_id, diff.last_id) == (8, 9)
    )
    tr = p.parse_line(
        b'1 {"stream":"nexousdt@trade","data":{"e":"trade","T":5,"p":"1.216","q":"10.82","m":false}}'
    )
    assert (
        isinstance(tr, Trade)
        and tr.price_ticks == 1216
        and tr.size_lots == 1082
        and tr.aggressor_sign == 1
    )
    bt = p.parse_line(
        b'1 {"stream":"nexousdt@bookTicker","data":{"u":9,"b":"1.214","B":"63.38","a":"1.216","A":"62.53"}}'
    )
    assert bt == BookTicker("nexousdt", 1_000_000_000, 9, 1214, 6338, 1216, 6253)
    other = p.parse_line(
        b'1 {"stream":"btcusdt@trade","data":{"e":"trade","T":5,"p":"1","q":"1","m":false}}'
    )
    assert other is None


@pytest.mark.parametrize(
    "line",
    [
        b"garbage",
        b"123 {not json",
        b"abc {}",
        b'1 {"stream":"nexousdt@trade","data":{"e":"trade","p":"x","q":"1","m":true}}',
        b'1 {"stream":"nexousdt@depth@100ms","data":{"e":"depthUpdate","U":1}}',
        b"1 [1, 2]",
    ],
)
def test_malformed_lines_raise_parse_error(line: bytes) -> None:
    with pytest.raises(ParseError):
        BinanceParser({"nexousdt": NEXO}).parse_line(line, "nexousdt")


def _replay_book(files: list[Path], symbol: str, scales: dict[str, Scale]) -> BookBuilder:
    bb = BookBuilder(symbol)
    for ev in ReplayFeed(files, scales).events():
        if isinstance(ev, DepthSnapshot):
            bb.on_snapshot(ev)
        elif isinstance(ev, DepthDiff):
            bb.on_diff(ev)
        elif isinstance(ev, BookTicker):
            bb.on_ticker(ev)
    return bb


@pytest.mark.slow
@needs(NEXO_24)
def test_book_matches_every_comparable_book_ticker_on_nexo_day() -> None:
    bb = _replay_book(
        [NEXO_24, NEXO_23], "nexousdt", SCALES
    )  # order on the command line does not matter
    assert bb.checks == 12198
    assert bb.mismatches == 0
    assert bb.gaps == 0


@needs(ETH)
def test_book_matches_every_comparable_book_ticker_on_eth() -> None:
    bb = _replay_book([ETH], "ethusdt", SCALES)
    assert bb.checks == 577
    assert bb.mismatches == 0
    assert bb.book.valid


def _diff(first: int, last: int, bids: list[tuple[int, int]] | None = None) -> DepthDiff:
    return DepthDiff("x", last, first, last, bids or [], [])


def test_diffs_before_the_snapshot_are_buffered_and_filtered() -> None:
    bb = BookBuilder("x")
    assert not bb.on_diff(_diff(95, 99, [(10, 1)]))  # entirely before the snapshot: dropped later
    assert not bb.on_diff(_diff(100, 102, [(11, 2)]))  # straddles lastUpdateId + 1
    assert not bb.on_diff(_diff(103, 104, [(12, 3)]))
    assert bb.state is SyncState.WAITING_SNAPSHOT
    bb.on_snapshot(DepthSnapshot("x", 0, 100, [(9, 5)], [(20, 5)]))
    assert bb.synced and bb.last_id == 104
    assert bb.book.best_bid == 12 and 10 not in bb.book.bids
    assert bb.diffs_dropped == 1


def test_a_gap_is_reported_not_applied_and_resync_recovers() -> None:
    bb = BookBuilder("x")
    bb.on_snapshot(DepthSnapshot("x", 0, 100, [(9, 5)], [(20, 5)]))
    bb.on_diff(_diff(101, 101, [(10, 1)]))
    with pytest.raises(SequenceGap) as info:
        bb.on_diff(_diff(103, 104, [(15, 1)]))  # 102 missing
    assert info.value.expected == 102
    assert not bb.synced and bb.gaps == 1
    assert 15 not in bb.book.bids  # never silently applied
    assert not bb.on_diff(_diff(105, 105, [(16, 1)]))  # buffered until the next snapshot
    bb.on_snapshot(DepthSnapshot("x", 0, 104, [(15, 1)], [(20, 5)]))
    assert bb.synced and bb.book.best_bid == 16


def test_injected_gap_in_a_recording_is_detected(tmp_path: Path) -> None:
    lines = read_lines(NEXO_23)[:300]
    # drop the 50th depth diff after the snapshot
    depth = [i for i, line in enumerate(lines) if b"depthUpdate" in line]
    del lines[depth[50]]
    f = write_gz(tmp_path / "gap.dat.gz", lines)
    bb = BookBuilder("nexousdt")
    gaps = 0
    for ev in ReplayFeed([f], SCALES).events():
        if isinstance(ev, DepthSnapshot):
            bb.on_snapshot(ev)
        elif isinstance(ev, DepthDiff):
            try:
                bb.on_diff(ev)
            except SequenceGap:
                gaps += 1
    assert gaps == 1
    assert not bb.synced


def test_bad_and_truncated_lines_are_counted_and_skipped(tmp_path: Path, nexo_head: Path) -> None:
    lines = read_lines(nexo_head)
    lines.insert(10, b"this is not a message")
    lines.insert(20, b'1721749183854663 {"stream":"nexousdt@depth@100ms","data":')
    f = write_gz(tmp_path / "bad.dat.gz", lines)
    # a second file cut in the middle of its gzip stream
    whole = gzip.compress(b"\n".join(lines[300:]) + b"\n")
    cut = tmp_path / "cut.dat.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    try:
        feed = ReplayFeed([f], SCALES)
        n = sum(1 for _ in feed.events())
        feed2 = ReplayFeed([cut], SCALES)
        n2 = sum(1 for _ in feed2.events())
    finally:
        logger.remove(sink)
    assert feed.stats.bad_lines == 2
    assert n == len(lines) - 2
    assert any("bad.dat.gz:11:" in m for m in messages)
    assert any("bad.dat.gz:21:" in m for m in messages)
    assert feed2.stats.bad_lines >= 1 and n2 > 0
    assert any("cut.dat.gz" in m and "truncated" in m for m in messages)


def test_replay_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data file not found"):
        ReplayFeed([tmp_path / "missing.gz"], SCALES)
    with pytest.raises(DataError, match="btcusdt"):
        f = write_gz(tmp_path / "btc.gz", [b'1 {"stream":"btcusdt@trade","data":{}}'])
        ReplayFeed([f], SCALES)


def test_several_symbols_are_merged_in_time_and_aligned(nexo_head: Path, tmp_path: Path) -> None:
    eth_lines = read_lines(ETH_SLICE)[:300]
    eth = write_gz(tmp_path / "eth.gz", eth_lines)
    evs = list(ReplayFeed([nexo_head, eth], SCALES, align=True).events())
    ts = [e.ts_ns for e in evs]
    assert ts == sorted(ts)
    syms = {e.symbol for e in evs}
    assert syms == {"nexousdt", "ethusdt"}
    first = {s: min(e.ts_ns for e in evs if e.symbol == s) for s in syms}
    assert first["nexousdt"] == first["ethusdt"]


def test_loop_restarts_from_a_fresh_snapshot(nexo_head: Path) -> None:
    feed = ReplayFeed([nexo_head], SCALES, loop=True)
    snaps = 0
    last = 0
    for i, ev in enumerate(feed.events()):
        assert ev.ts_ns >= last
        last = ev.ts_ns
        snaps += isinstance(ev, DepthSnapshot)
        if i > 1000:
            break
    assert snaps >= 2


def test_on_event_routes_depth_tickers_and_feed_news() -> None:
    b = BookBuilder("x")
    assert b.on_event(DepthSnapshot("x", 1, 100, [(9, 5)], [(20, 5)])) and b.synced
    assert b.on_event(DepthDiff("x", 2, 101, 101, [(10, 1)], [])) and b.book.best_bid == 10
    assert not b.on_event(BookTicker("x", 3, 101, 10, 1, 20, 5)) and b.checks == 1
    assert not b.on_event(Trade("x", 4, 10, 1, False))
    assert not b.on_event(FeedStatus("x", 5, "connected", "")) and b.synced
    assert not b.on_event(FeedStatus("x", 6, "resync", "gap")) and not b.synced


def test_spec_prints_whole_ticks_and_lots_exactly() -> None:
    from decimal import Decimal

    from flashmm.types import MarketSpec

    spec = MarketSpec("SEI/USDC", Decimal("0.0001"), Decimal("0.01"), "nexousdt")
    assert spec.size(6162) == 61.62 and repr(spec.size(6162)) == "61.62"
    assert spec.price(3) == 0.0003 and spec.price(12345) == 1.2345
    assert spec.price(2.5) == 2.5 * 0.0001  # an average price keeps its fraction
