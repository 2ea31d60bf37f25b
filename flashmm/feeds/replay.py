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
import gzip
import heapq
import time
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from flashmm.errors import DataError
from flashmm.feeds.binance import BinanceParser, ParseError, Scale, stream_symbol
from flashmm.marketdata import FeedStatus, MarketEvent

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
    import orjson

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
    from flashmm.feeds.binance import ts_to_ns

    with gzip.open(path, "rb") as fh:
        for line in fh:
            sp = line.find(b" ")
            if sp > 0:
                try:
                    return ts_to_ns(int(line[:sp]))
                except ValueError:
                    continue
    return 0


def iter_file(
    path: Path, parser: BinanceParser, symbol: str, stats: ReplayStats
) -> Iterator[MarketEvent]:
    """Events of one file, skipping (and counting) bad lines."""
    name = path.name
    stats.files.append(str(path))
    lineno = 0
    try:
        with gzip.open(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                stats.lines += 1
                if not line.strip():
                    continue
                try:
                    ev = parser.parse_line(line, symbol)
                except ParseError as exc:
                    stats.bad_lines += 1
                    logger.warning("{}:{}: skipped bad line: {}", name, lineno, exc)
                    continue
                if ev is None:
                    stats.skipped_symbols += 1
                    continue
                stats.events += 1
                yield ev
    except (EOFError, zlib.error, OSError) as exc:
        stats.bad_lines += 1
        logger.warning("{}:{}: file truncated or corrupt, rest skipped: {}", name, lineno + 1, exc)


def group_files(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """Files per symbol, each list in time order."""
    groups: dict[str, list[Path]] = {}
    for p in paths:
        groups.setdefault(detect_symbol(p), []).append(p)
    for files in groups.values():
        files.sort(key=first_timestamp)
    return groups


class ReplayFeed:
    """Merged, optionally time-aligned, replay of recordings.

    ``scales`` maps the reference symbols to use onto their tick/lot scale;
    files of other symbols are rejected. Iterate synchronously with
    :meth:`events` (backtest) or asynchronously with ``async for`` (paper),
    where ``speed`` paces the replay (1 = real time, 0 = as fast as possible).
    """

    sim_clock = True

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
        files = check_files(paths)
        self.parser = BinanceParser(scales)
        self.groups = group_files(files)
        unknown = sorted(set(self.groups) - set(scales))
        if unknown:
            known = ", ".join(sorted(scales)) or "none"
            raise DataError(
                f"data for symbol(s) {', '.join(unknown)} but no market has that reference "
                f"(configured references: {known})"
            )
        self.speed = speed
        self.align = align
        self.loop = loop
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.stats = ReplayStats()
        self._offsets = self._compute_offsets()
        self.stopped = False

    @property
    def symbols(self) -> list[str]:
        return sorted(self.groups)

    def _compute_offsets(self) -> dict[str, int]:
        starts = {s: first_timestamp(files[0]) for s, files in self.groups.items()}
        if not self.align or len(starts) < 2:
            return dict.fromkeys(starts, 0)
        origin = max(starts.values())
        return {s: origin - t for s, t in starts.items()}

    def _symbol_stream(self, symbol: str) -> Iterator[tuple[int, int, MarketEvent]]:
        off = self._offsets[symbol]
        seq = 0
        cycle = 0
        last_ts = 0
        while True:
            for path in self.groups[symbol]:
                for ev in iter_file(path, self.parser, symbol, self.stats):
                    if off:
                        ev.ts_ns += off
                    seq += 1
                    last_ts = ev.ts_ns
                    yield last_ts, seq, ev
            if not self.loop or self.stopped or seq == 0:
                break
            cycle += 1
            # a new pass starts after the last one ends, from a fresh snapshot
            off = last_ts - first_timestamp(self.groups[symbol][0]) + 1
            seq += 1
            yield last_ts, seq, FeedStatus(symbol, last_ts, "resync", f"replay pass {cycle + 1}")

    def events(self) -> Iterator[MarketEvent]:
        """All events in time order (no pacing)."""
        streams: Iterable[Iterator[tuple[int, int, MarketEvent]]] = [
            self._symbol_stream(s) for s in self.symbols
        ]
        lo, hi = self.start_ns, self.end_ns
        for ts, _, ev in heapq.merge(*streams, key=_ts_key):
            if self.stopped:
                return
            if lo is not None and ts < lo:
                # keep the book right: depth data is applied even before the window
                if isinstance(ev, FeedStatus) or type(ev).__name__ in (
                    "DepthSnapshot",
                    "DepthDiff",
                ):
                    yield ev
                continue
            if hi is not None and ts > hi:
                return
            yield ev

    def __aiter__(self) -> AsyncIterator[MarketEvent]:
        return self._paced()

    async def _paced(self) -> AsyncIterator[MarketEvent]:
        speed = self.speed
        wall0 = time.monotonic()
        data0: int | None = None
        n = 0
        for ev in self.events():
            if speed > 0:
                if data0 is None:
                    data0 = ev.ts_ns
                due = wall0 + (ev.ts_ns - data0) / 1e9 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                n += 1
                if n % 2048 == 0:
                    await asyncio.sleep(0)  # let the panel and control tasks run
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


def make_scales(specs: Iterable[tuple[str, float, float]]) -> dict[str, Scale]:
    """``(reference, tick, lot)`` triples to the parser's scale map."""
    return {ref: Scale.of(tick, lot) for ref, tick, lot in specs}


def _ts_key(item: tuple[int, int, MarketEvent]) -> int:
    return item[0]
