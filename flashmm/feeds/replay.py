"""Replay of recorded Binance data (gzip, ``<timestamp> <json>`` lines).

Files of one symbol are chained in order (the book carries over from one
file to the next); files of several symbols are merged by time. With
``align=True`` each symbol's recording is shifted so that all start
together, which lets recordings from different days drive one paper run.
A malformed or truncated line is counted and skipped with a warning that
names the file and the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import heapq
import time
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
from loguru import logger

from flashmm.errors import DataError
from flashmm.feeds.binance import BinanceParser, ParseError, Scale, stream_symbol, ts_to_ns
from flashmm.marketdata import DepthDiff, DepthSnapshot, FeedStatus, MarketEvent

_SYMBOL_PROBE_LINES = 200


@dataclass
class ReplayStats:
    lines: int = 0
    events: int = 0
    bad_lines: int = 0
    skipped_symbols: int = 0
    files: list[str] = field(default_factory=list)


def detect_symbol(path: Path) -> str:
    """The stream symbol of a recording, read from its first stream messages."""
    try:
        with gzip.open(path, "rb") as fh:
            for i, line in enumerate(fh):
                if i >= _SYMBOL_PROBE_LINES:
                    break
                sp = line.find(b" ")
                if sp <= 0:
                    continue
                try:
                    msg = orjson.loads(line[sp + 1 :])
                except orjson.JSONDecodeError:
                    continue
                if isinstance(msg, dict) and isinstance(msg.get("stream"), str):
                    return stream_symbol(msg["stream"])
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read recording ({exc})") from None
    raise DataError(f"{path}: no stream message in the first {_SYMBOL_PROBE_LINES} lines")


def check_files(paths: Sequence[str | Path]) -> list[Path]:
    out = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        out.append(path)
    if not out:
        raise DataError("no data files given")
    return out


def first_timestamp(path: Path) -> int:
    with gzip.open(path, "rb") as fh:
        for line in fh:
            sp = line.find(b" ")
            if sp > 0:
                try:
                    return ts_to_ns(int(line[:sp]))
                except ValueError:
                    continue
    return 0


#: How far into a symbol's first recording a depth snapshot is looked for. Recorders
#: take the REST snapshot right after subscribing: line 1 to 55 in the shared files.
SNAPSHOT_SCAN_LINES = 20_000


def check_starts_with_snapshot(symbol: str, files: Sequence[Path]) -> None:
    """A :class:`~flashmm.errors.DataError` when ``symbol``'s first recording has no
    depth snapshot near its start: its book could never sync, so a run would quote
    nothing and say nothing. A later file continues the book of the one before."""
    first = files[0]
    with contextlib.suppress(EOFError, zlib.error, OSError), gzip.open(first, "rb") as fh:
        for n, line in enumerate(fh):
            if b'"lastUpdateId"' in line:
                return
            if n >= SNAPSHOT_SCAN_LINES:
                break
    raise DataError(
        f"{first.name}: no depth snapshot for {symbol} in its first "
        f"{SNAPSHOT_SCAN_LINES:,} lines, so its book would never sync and nothing would be "
        "quoted (a recording that continues an earlier one needs that file too: "
        "--data EARLIER --data THIS)"
    )


class _BadLines(Protocol):
    bad_lines: int


def read_lines(path: Path, stats: _BadLines) -> Iterator[tuple[int, bytes]]:
    """A recording's lines with their numbers; a truncated or corrupt file counts one
    bad line and ends there. The one gzip reading of the replay and the replay server."""
    lineno = 0
    try:
        with gzip.open(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                yield lineno, line
    except (EOFError, zlib.error, OSError) as exc:
        stats.bad_lines += 1
        logger.warning(
            "{}:{}: file truncated or corrupt, rest skipped: {}", path.name, lineno + 1, exc
        )


def iter_file(
    path: Path, parser: BinanceParser, symbol: str, stats: ReplayStats
) -> Iterator[MarketEvent]:
    """Events of one file, skipping (and counting) bad lines."""
    stats.files.append(str(path))
    for lineno, line in read_lines(path, stats):
        stats.lines += 1
        if not line.strip():
            continue
        try:
            ev = parser.parse_line(line, symbol)
        except ParseError as exc:
            stats.bad_lines += 1
            logger.warning("{}:{}: skipped bad line: {}", path.name, lineno, exc)
            continue
        if ev is None:
            stats.skipped_symbols += 1
            continue
        stats.events += 1
        yield ev


def group_files(
    paths: Sequence[str | Path], scales: Mapping[str, Scale] | None = None
) -> dict[str, list[Path]]:
    """Files per symbol, each list in time order; with ``scales``, a symbol that has
    none is a :class:`~flashmm.errors.DataError`."""
    groups: dict[str, list[Path]] = {}
    for p in check_files(paths):
        groups.setdefault(detect_symbol(p), []).append(p)
    for files in groups.values():
        files.sort(key=first_timestamp)
    if scales is not None and (unknown := sorted(set(groups) - set(scales))):
        known = ", ".join(sorted(scales)) or "none"
        raise DataError(
            f"data for symbol(s) {', '.join(unknown)} but no market has that reference "
            f"(configured references: {known})"
        )
    return groups


def align_offsets(groups: Mapping[str, Sequence[Path]], align: bool) -> dict[str, int]:
    """Per symbol, the shift (ns) that makes every recording start with the latest one."""
    starts = {s: first_timestamp(files[0]) for s, files in groups.items()}
    if not align or len(starts) < 2:
        return dict.fromkeys(starts, 0)
    origin = max(starts.values())
    return {s: origin - t for s, t in starts.items()}


T = TypeVar("T")
_ts = attrgetter("ts_ns")


def merge_by_time(streams: Sequence[Iterator[T]]) -> Iterator[T]:
    """Several symbols' streams (of items with a ``ts_ns``) as one in time order;
    equal times in the order of ``streams`` (symbol order), each stream in its own.
    The one merge of the replay, the numpy cache and the replay server."""
    return streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_ts)


@dataclass
class Pacer:
    """The one pacing of the replay and the replay server: recorded time onto the wall
    clock at ``speed`` (1 = real time) from the first item; unpaced (0) or behind,
    other tasks get a turn every ``every`` items."""

    speed: float
    every: int
    wall0: float = 0.0
    data0: int | None = None
    n: int = 0

    async def wait(self, ts_ns: int) -> None:
        """Return when the item recorded at ``ts_ns`` is due."""
        self.n += 1
        delay = 0.0
        if self.speed > 0:
            if self.data0 is None:
                self.data0, self.wall0 = ts_ns, time.monotonic()
            delay = self.wall0 + (ts_ns - self.data0) / 1e9 / self.speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif self.n % self.every == 0:
            await asyncio.sleep(0)


#: what a window keeps before its start, so the book is right when it opens
_BOOK_DATA = (DepthSnapshot, DepthDiff, FeedStatus)


class RecordedFeed:
    """A recording as a :class:`~flashmm.feeds.base.Feed`: the merge, the window and
    the pacing that :class:`ReplayFeed` (gzip JSON) and
    :class:`~flashmm.feeds.cache.CachedFeed` (numpy arrays) share.

    The files are grouped per symbol (:func:`group_files`) and aligned
    (:func:`align_offsets`); a subclass gives each symbol's events
    (:meth:`_symbol_stream`). :meth:`events` merges them by time
    (:func:`merge_by_time`) and applies the ``start_ns``/``end_ns`` window:
    depth data before the window is kept (the book must be right when it
    opens), everything after ``end_ns`` ends the stream.

    ``scales`` maps the reference symbols to use onto their tick/lot scale;
    files of other symbols are a :class:`~flashmm.errors.DataError`. Iterate
    synchronously with :meth:`events` or asynchronously with ``async for``
    (paper and backtest), where ``speed`` paces the replay (1 = real time,
    0 = as fast as possible).
    """

    sim_clock = True
    stats: ReplayStats

    def __init__(
        self,
        paths: Sequence[str | Path],
        scales: Mapping[str, Scale],
        *,
        speed: float = 0.0,
        align: bool = True,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> None:
        self.groups = group_files(paths, scales)
        self.offsets = align_offsets(self.groups, align)
        self.speed = speed
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.stopped = False

    @property
    def symbols(self) -> list[str]:
        return sorted(self.groups)

    def check_snapshots(self) -> None:
        """Refuse (:class:`~flashmm.errors.DataError`) a market whose first recording
        has no depth snapshot: a run on it would never quote (paper and backtest call
        this; tools that only read events do not need it)."""
        for symbol, files in self.groups.items():
            check_starts_with_snapshot(symbol, files)

    def _symbol_stream(self, symbol: str) -> Iterator[MarketEvent]:
        raise NotImplementedError

    def events(self) -> Iterator[MarketEvent]:
        """All events in time order (no pacing)."""
        lo, hi = self.start_ns, self.end_ns
        for ev in merge_by_time([self._symbol_stream(s) for s in self.symbols]):
            if self.stopped:
                return
            if lo is not None and ev.ts_ns < lo:
                if isinstance(ev, _BOOK_DATA):
                    yield ev
                continue
            if hi is not None and ev.ts_ns > hi:
                return
            yield ev

    def __aiter__(self) -> AsyncIterator[MarketEvent]:
        return self._paced()

    async def _paced(self) -> AsyncIterator[MarketEvent]:
        pacer = Pacer(self.speed, 2048)  # unpaced: let the panel and control tasks run
        for ev in self.events():
            await pacer.wait(ev.ts_ns)
            yield ev

    def stop(self) -> None:
        self.stopped = True

    @property
    def paced(self) -> bool:
        return self.speed > 0

    def request_resync(self, symbol: str) -> bool:
        """A recording cannot send a fresh snapshot; its next one resyncs the book."""
        return False

    async def aclose(self) -> None:
        self.stopped = True

    def summary(self) -> dict[str, Any]:
        return {"bad_lines": self.stats.bad_lines}


class ReplayFeed(RecordedFeed):
    """A :class:`RecordedFeed` over gzip JSON recordings; ``loop`` plays them again."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        scales: Mapping[str, Scale],
        *,
        speed: float = 0.0,
        align: bool = True,
        loop: bool = False,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> None:
        super().__init__(paths, scales, speed=speed, align=align, start_ns=start_ns, end_ns=end_ns)
        self.parser = BinanceParser(scales)
        self.loop = loop
        self.stats = ReplayStats()

    def _symbol_stream(self, symbol: str) -> Iterator[MarketEvent]:
        off = self.offsets[symbol]
        cycle = 0
        last_ts = 0
        while True:
            n = 0
            for path in self.groups[symbol]:
                for ev in iter_file(path, self.parser, symbol, self.stats):
                    if off:
                        ev.ts_ns += off
                    n += 1
                    last_ts = ev.ts_ns
                    yield ev
            if not self.loop or self.stopped or n == 0:
                break
            cycle += 1
            # a new pass starts after the last one ends, from a fresh snapshot
            off = last_ts - first_timestamp(self.groups[symbol][0]) + 1
            yield FeedStatus(symbol, last_ts, "resync", f"replay pass {cycle + 1}")


def make_scales(specs: Iterable[tuple[str, float, float]]) -> dict[str, Scale]:
    """``(reference, tick, lot)`` triples to the parser's scale map."""
    return {ref: Scale.of(tick, lot) for ref, tick, lot in specs}
