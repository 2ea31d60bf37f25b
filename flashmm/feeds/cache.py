"""Recordings converted once into compact numpy arrays, cached by file hash.

Parsing gzip JSON is the slow part of reading a recording. :func:`load_recording`
parses a file once with the same parser as :class:`~flashmm.feeds.replay.ReplayFeed`
and stores the events as two arrays in ``<cache dir>/<sha256>-<symbol>-<scale>-v2.npz``:

- ``events``: one row per market event (:data:`EVENT_DTYPE`): time, kind,
  prices in ticks, sizes in lots, update ids and, for depth messages, the
  slice of ``levels`` holding their bids then asks;
- ``levels``: ``(price_ticks, size_lots)`` rows of every snapshot and diff.

:class:`CachedFeed` is a feed beside ``ReplayFeed``: both are
:class:`~flashmm.feeds.replay.RecordedFeed`, so the chaining per symbol, the
merge by time (equal times in symbol order), alignment, the
``start_ns``/``end_ns`` window and the pacing are one code, and a backtest
over the cache sees the same stream as paper mode. The cache directory is
``$FLASHMM_CACHE_DIR`` or ``~/.cache/flashmm``; files are written atomically,
so parallel sweeps can share it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flashmm.feeds.binance import BinanceParser, Scale
from flashmm.feeds.replay import RecordedFeed, ReplayStats, iter_file
from flashmm.marketdata import BookTicker, DepthDiff, DepthSnapshot, Levels, MarketEvent, Trade

CACHE_VERSION = 2

K_SNAPSHOT, K_DIFF, K_TRADE, K_TICKER = 0, 1, 2, 3

EVENT_DTYPE = np.dtype(
    [
        ("ts_ns", "<i8"),  # local receive time
        ("kind", "u1"),  # K_SNAPSHOT | K_DIFF | K_TRADE | K_TICKER
        ("side", "i1"),  # trade: aggressor (+1 buyer lifted the ask, -1 seller hit the bid)
        ("px_tick", "<i8"),  # trade price; ticker best bid; futures diff pu (-1: spot)
        ("qty_lot", "<i8"),  # trade size; ticker best bid size
        ("px2_tick", "<i8"),  # ticker best ask
        ("qty2_lot", "<i8"),  # ticker best ask size
        ("first_id", "<i8"),  # diff U; snapshot lastUpdateId; ticker u
        ("last_id", "<i8"),  # diff u
        ("exch_ms", "<i8"),  # exchange time (diff E, trade T)
        ("lv_start", "<i8"),  # first row in ``levels`` (bids, then asks)
        ("n_bids", "<i4"),
        ("n_asks", "<i4"),
    ]
)


def default_cache_dir() -> Path:
    env = os.environ.get("FLASHMM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "flashmm"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Recording:
    """One recording file as arrays (see :data:`EVENT_DTYPE`)."""

    path: Path
    symbol: str
    events: np.ndarray
    levels: np.ndarray  # (n, 2) int64
    lines: int
    bad_lines: int
    skipped_symbols: int
    from_cache: bool

    @property
    def first_ts(self) -> int:
        return int(self.events["ts_ns"][0]) if len(self.events) else 0

    @property
    def last_ts(self) -> int:
        return int(self.events["ts_ns"][-1]) if len(self.events) else 0


def convert(path: Path, symbol: str, scale: Scale) -> Recording:
    """Parse a recording (bad lines counted and skipped, as in a replay) into arrays."""
    parser = BinanceParser({symbol: scale})
    stats = ReplayStats()
    rows: list[tuple[int, ...]] = []
    lv_px: list[int] = []
    lv_qty: list[int] = []

    def add_levels(bids: Levels, asks: Levels) -> int:
        """Append a message's levels to the level table; returns where they start."""
        start = len(lv_px)
        for p, q in (*bids, *asks):
            lv_px.append(p)
            lv_qty.append(q)
        return start

    for ev in iter_file(path, parser, symbol, stats):
        if isinstance(ev, DepthDiff):
            start = add_levels(ev.bids, ev.asks)
            rows.append(
                (ev.ts_ns, K_DIFF, 0, ev.prev_id, 0, 0, 0, ev.first_id, ev.last_id, ev.exch_ms,
                 start, len(ev.bids), len(ev.asks))
            )  # fmt: skip
        elif isinstance(ev, Trade):
            side = -1 if ev.buyer_is_maker else 1
            rows.append(
                (ev.ts_ns, K_TRADE, side, ev.price_ticks, ev.size_lots, 0, 0, 0, 0, ev.exch_ms,
                 0, 0, 0)
            )  # fmt: skip
        elif isinstance(ev, BookTicker):
            rows.append(
                (ev.ts_ns, K_TICKER, 0, ev.bid_ticks, ev.bid_lots, ev.ask_ticks, ev.ask_lots,
                 ev.update_id, 0, 0, 0, 0, 0)
            )  # fmt: skip
        elif isinstance(ev, DepthSnapshot):
            start = add_levels(ev.bids, ev.asks)
            rows.append(
                (ev.ts_ns, K_SNAPSHOT, 0, 0, 0, 0, 0, ev.last_update_id, 0, 0, start,
                 len(ev.bids), len(ev.asks))
            )  # fmt: skip
    events = np.array(rows, dtype=EVENT_DTYPE) if rows else np.zeros(0, dtype=EVENT_DTYPE)
    levels = np.empty((len(lv_px), 2), dtype=np.int64)
    if lv_px:
        levels[:, 0] = lv_px
        levels[:, 1] = lv_qty
    return Recording(
        path, symbol, events, levels, stats.lines, stats.bad_lines, stats.skipped_symbols, False
    )


def load_recording(
    path: str | Path,
    symbol: str,
    scale: Scale,
    cache_dir: str | Path | None = None,
    *,
    use_cache: bool = True,
) -> Recording:
    """A recording as arrays: from the cache when this file (by sha256) was converted before."""
    path = Path(path)
    if not use_cache:
        return convert(path, symbol, scale)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = file_sha256(path)
    target = (
        root / f"{digest}-{symbol}-{scale.inv_tick:.10g}x{scale.inv_lot:.10g}-v{CACHE_VERSION}.npz"
    )
    if target.is_file():
        try:
            with np.load(target, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return Recording(
                    path,
                    symbol,
                    z["events"],
                    z["levels"],
                    int(meta["lines"]),
                    int(meta["bad_lines"]),
                    int(meta["skipped_symbols"]),
                    True,
                )
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache entry: convert again and overwrite it
    rec = convert(path, symbol, scale)
    meta = {
        "source": path.name,
        "sha256": digest,
        "symbol": symbol,
        "lines": rec.lines,
        "bad_lines": rec.bad_lines,
        "skipped_symbols": rec.skipped_symbols,
        "created": time.time(),
        "version": CACHE_VERSION,
    }
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=".npz")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, events=rec.events, levels=rec.levels, meta=np.array(json.dumps(meta)))
        os.replace(tmp, target)
    except OSError:
        pass  # a read-only cache only costs speed
    return rec


def _file_events(rec: Recording, offset: int) -> Iterator[MarketEvent]:
    """The marketdata events of one cached recording, shifted by ``offset`` ns."""
    ev = rec.events
    if not len(ev):
        return
    sym = rec.symbol
    lv = list(zip(rec.levels[:, 0].tolist(), rec.levels[:, 1].tolist(), strict=True))
    cols = [ev[name].tolist() for name in EVENT_DTYPE.names or ()]
    for ts, kind, side, px, qty, px2, qty2, fid, lid, ems, s0, nb, na in zip(*cols, strict=True):
        ts += offset
        if kind == K_DIFF:
            s1 = s0 + nb
            yield DepthDiff(sym, ts, fid, lid, lv[s0:s1], lv[s1 : s1 + na], ems, px)
        elif kind == K_TRADE:
            yield Trade(sym, ts, px, qty, side < 0, ems)
        elif kind == K_TICKER:
            yield BookTicker(sym, ts, fid, px, qty, px2, qty2)
        else:
            s1 = s0 + nb
            yield DepthSnapshot(sym, ts, fid, lv[s0:s1], lv[s1 : s1 + na])


class CachedFeed(RecordedFeed):
    """A :class:`~flashmm.feeds.replay.RecordedFeed` over cached arrays (no looping)."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        scales: Mapping[str, Scale],
        *,
        speed: float = 0.0,
        align: bool = True,
        start_ns: int | None = None,
        end_ns: int | None = None,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
    ) -> None:
        super().__init__(paths, scales, speed=speed, align=align, start_ns=start_ns, end_ns=end_ns)
        t0 = time.perf_counter()
        c0 = time.process_time()
        self.recordings = {
            sym: [load_recording(p, sym, scales[sym], cache_dir, use_cache=use_cache) for p in ps]
            for sym, ps in self.groups.items()
        }
        self.load_s = time.perf_counter() - t0
        self.load_cpu_s = time.process_time() - c0
        recs_all = [r for rs in self.recordings.values() for r in rs]
        self.stats = ReplayStats(
            lines=sum(r.lines for r in recs_all),
            events=sum(len(r.events) for r in recs_all),
            bad_lines=sum(r.bad_lines for r in recs_all),
            skipped_symbols=sum(r.skipped_symbols for r in recs_all),
            files=[str(r.path) for r in recs_all],
        )
        self.from_cache = all(r.from_cache for r in recs_all)

    def _symbol_stream(self, symbol: str) -> Iterator[MarketEvent]:
        off = self.offsets[symbol]
        for rec in self.recordings[symbol]:
            yield from _file_events(rec, off)

    def span(self) -> tuple[int, int]:
        """First and last event time over all files (after alignment)."""
        lo = min(rs[0].first_ts + self.offsets[s] for s, rs in self.recordings.items() if rs)
        hi = max(rs[-1].last_ts + self.offsets[s] for s, rs in self.recordings.items() if rs)
        return lo, hi

    def count_in_window(self) -> int:
        """Events whose time is inside ``[start_ns, end_ns]`` (what a backtest will trade on)."""
        lo = self.start_ns if self.start_ns is not None else -(1 << 62)
        hi = self.end_ns if self.end_ns is not None else 1 << 62
        n = 0
        for s, rs in self.recordings.items():
            off = self.offsets[s]
            for r in rs:
                ts = r.events["ts_ns"] + off
                n += int(np.count_nonzero((ts >= lo) & (ts <= hi)))
        return n

    def __len__(self) -> int:
        return int(self.stats.events)


__all__ = [
    "CACHE_VERSION",
    "EVENT_DTYPE",
    "CachedFeed",
    "Recording",
    "convert",
    "default_cache_dir",
    "file_sha256",
    "load_recording",
]
