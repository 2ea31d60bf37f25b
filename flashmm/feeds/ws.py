"""Live Binance market data over one combined WebSocket stream.

:class:`BinanceWSFeed` subscribes to ``<sym>@depth@100ms``, ``<sym>@trade``
and ``<sym>@bookTicker`` for every configured symbol on a single connection
(``<ws_url>/stream?streams=...``) and yields :mod:`flashmm.marketdata`
events with ``ts_ns`` = local receive time.

Order-book sync, per symbol:

- After every (re)connect the feed fetches a REST depth snapshot
  (``<rest_url>/api/v3/depth``; with ``futures=True``, USD-M futures,
  ``<rest_url>/fapi/v1/depth`` with the limit raised to the next one that
  endpoint accepts) once the stream is open. While a snapshot is
  being fetched the symbol's diffs are *held back* by the feed; when it
  arrives the feed yields the snapshot, then the held diffs, so a consumer's
  :class:`~flashmm.book.BookBuilder` always sees "snapshot, then the diffs
  that follow it", whatever state it was in.
- A snapshot older than the held diffs (by the same rule: spot
  ``lastUpdateId + 1 < U`` of the first newer diff; futures, the first
  diff with ``u >= lastUpdateId`` starts after it) is refused and fetched
  again.
- The feed checks the sequence itself with the book's rule
  (:func:`flashmm.book.diff_verdict`: ``U == previous u + 1`` on spot; USD-M
  futures diffs, which carry ``pu``: the first after a snapshot spans
  ``lastUpdateId``, then ``pu == previous u``). On a gap it yields
  ``FeedStatus("gap")``, holds diffs and fetches a fresh snapshot. Every
  snapshot after the first of a symbol is preceded by ``FeedStatus("resync")``
  (detail: ``gap``, ``reconnect``, ``requested`` ...). The engine can ask for
  one with :meth:`BinanceWSFeed.request_resync`.

Connection: reconnects with capped exponential backoff and jitter, yields
``FeedStatus("disconnected")`` / ``FeedStatus("connected")`` for every
symbol. A connection silent for ``idle_timeout`` seconds is dropped and
reopened. Bad messages (bad JSON, a non-finite, negative or non-numeric
number, anything that fails to parse) are counted in ``bad_messages`` and
skipped with a warning; one bad message never drops the connection.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from loguru import logger

from flashmm.book import Verdict, diff_verdict, gap_detail
from flashmm.errors import RuntimeFailure, UserInputError
from flashmm.feeds.binance import BinanceParser, ParseError, Scale
from flashmm.feeds.endpoints import DEFAULT_REST_URL, DEFAULT_WS_URL
from flashmm.marketdata import DepthDiff, DepthSnapshot, FeedStatus, MarketEvent, Trade

DEFAULT_STREAMS: tuple[str, ...] = ("depth@100ms", "trade", "bookTicker")
SPOT_DEPTH_PATH = "/api/v3/depth"
FUTURES_DEPTH_PATH = "/fapi/v1/depth"
#: the depth limits the USD-M futures REST endpoint accepts
FUTURES_DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)

RawSink = Callable[[MarketEvent, str], None]
"""``sink(event, raw_json)``: called for every market event the feed passes on, in
that order, with the raw text it came from (a snapshot: the REST body). A
recorder writes these to get a file that replays without gaps."""

_END = object()
_BAD_LOG_FIRST = 10
_BAD_LOG_EVERY = 1000
_SNAPSHOT_WARN_EVERY = 20  # a failing snapshot: warn on the first and every 20th in a row


@dataclass
class WSFeedStats:
    """Counters of a :class:`BinanceWSFeed` (read them, do not write)."""

    messages: int = 0  # WebSocket messages received
    bad_messages: int = 0  # unparseable / malformed, skipped
    events: int = 0  # events handed to the consumer
    connects: int = 0  # successful connections
    reconnects: int = 0  # successful connections after the first
    connect_failures: int = 0  # attempts that failed before the stream opened
    disconnects: int = 0
    gaps: int = 0  # sequence gaps the feed detected
    resyncs: int = 0  # snapshots fetched after the first one of a symbol
    snapshots: int = 0  # snapshots accepted
    snapshot_errors: int = 0  # failed REST snapshot requests
    snapshots_delayed: int = 0  # requests held back by snapshot_min_interval
    stale_snapshots: int = 0  # snapshots refused as older than the stream
    connected: bool = False
    last_msg_ns: int = 0  # local time of the last message (0 = none yet)
    last_exch_lag_ms: float | None = None  # receive time - exchange time (E / T)
    last_update_id: dict[str, int] = field(default_factory=dict)

    def last_message_age_s(self, now_ns: int | None = None) -> float:
        """Seconds since the last message; ``inf`` before the first one."""
        if not self.last_msg_ns:
            return float("inf")
        now = time.time_ns() if now_ns is None else now_ns
        return max(0.0, (now - self.last_msg_ns) / 1e9)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        age = self.last_message_age_s()
        d["last_message_age_s"] = None if age == float("inf") else round(age, 3)
        del d["last_msg_ns"]
        return d


@dataclass
class _SymState:
    name: str
    last_u: int = 0  # u of the last diff passed on (0 = unknown)
    resyncing: bool = True
    reason: str = "connect"
    held: deque[tuple[DepthDiff, str]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    snapshots: int = 0
    fresh: bool = True  # no diff passed on since the last snapshot (futures rule)
    last_fetch: float = -1e9  # monotonic time of the last snapshot received
    fetch_gen: int = -1  # connection generation of that snapshot
    failures: int = 0  # snapshot requests failed in a row
    last_error: str = ""


def backoff_delay(
    attempt: int, initial: float, maximum: float, jitter: float, rng: random.Random
) -> float:
    """Delay before retry number ``attempt`` (1-based): ``initial * 2**(attempt-1)``,
    capped at ``maximum``, then reduced by a random fraction up to ``jitter``."""
    base = min(maximum, initial * (2.0 ** max(0, attempt - 1)))
    return base * (1.0 - jitter * rng.random())


class BinanceWSFeed:
    """Async iterator of market events for several symbols over one combined stream.

    ``scales`` maps lower-case stream symbols (``nexousdt``) to their
    :class:`~flashmm.feeds.binance.Scale`. Use ``async for ev in feed`` and
    :meth:`aclose` (or ``async with feed``). ``max_retries`` (consecutive
    failed connection attempts) makes iteration raise
    :class:`~flashmm.errors.RuntimeFailure` when exceeded; ``None`` retries
    forever.
    """

    sim_clock = False
    paced = True

    def __init__(
        self,
        scales: Mapping[str, Scale],
        ws_url: str = DEFAULT_WS_URL,
        rest_url: str = DEFAULT_REST_URL,
        depth_limit: int = 1000,
        *,
        streams: Sequence[str] = DEFAULT_STREAMS,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        backoff_jitter: float = 0.3,
        max_retries: int | None = None,
        idle_timeout: float | None = 30.0,
        open_timeout: float = 10.0,
        rest_timeout: float = 10.0,
        stale_snapshot_delay: float = 0.25,
        snapshot_min_interval: float = 1.0,
        max_held: int = 50_000,
        max_queue: int = 20_000,
        raw_sink: RawSink | None = None,
        rng: random.Random | None = None,
        futures: bool = False,
    ) -> None:
        if not scales:
            raise ValueError("BinanceWSFeed needs at least one symbol")
        #: USD-M futures: snapshots from /fapi/v1/depth (the sequencing rule follows the diffs)
        self.futures = futures
        if futures:
            depth_limit = next((n for n in FUTURES_DEPTH_LIMITS if n >= depth_limit), 1000)
        self.scales = {s.lower(): sc for s, sc in scales.items()}
        self.symbols = sorted(self.scales)
        self.ws_url = ws_url.rstrip("/")
        self.rest_url = rest_url.rstrip("/")
        self.depth_limit = depth_limit
        self.streams = tuple(streams)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.backoff_jitter = backoff_jitter
        self.max_retries = max_retries
        self.idle_timeout = idle_timeout
        self.open_timeout = open_timeout
        self.rest_timeout = rest_timeout
        self.stale_snapshot_delay = stale_snapshot_delay
        self.snapshot_min_interval = snapshot_min_interval
        self.max_held = max_held
        self.max_queue = max_queue
        self.raw_sink = raw_sink
        self.rng = rng or random.Random()
        self.parser = BinanceParser(self.scales)
        self.stats = WSFeedStats()
        self._syms = {s: _SymState(s) for s in self.symbols}
        self._q: asyncio.Queue[Any] = asyncio.Queue()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self._session: Any = None  # aiohttp.ClientSession, created lazily
        self._gen = 0  # connection generation: snapshots of an old one are ignored
        self._closed = False

    # --- public API -----------------------------------------------------------

    @property
    def stream_url(self) -> str:
        names = "/".join(f"{s}@{k}" for s in self.symbols for k in self.streams)
        return f"{self.ws_url}/stream?streams={names}"

    @property
    def last_exch_lag_ms(self) -> float | None:
        return self.stats.last_exch_lag_ms

    @property
    def last_message_age_ms(self) -> float:
        return self.stats.last_message_age_s() * 1000.0

    @property
    def closed(self) -> bool:
        return self._closed

    def synced(self, symbol: str) -> bool:
        """True once a snapshot for ``symbol`` was passed on and no resync is pending."""
        st = self._syms[symbol.lower()]
        return st.snapshots > 0 and not st.resyncing

    def start(self) -> None:
        """Start connecting (done by the first ``__anext__`` if not called)."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ws-feed")

    def request_resync(self, symbol: str, reason: str = "requested") -> bool:
        """Fetch a fresh snapshot for ``symbol``. Returns False when one is already
        on its way (or the feed is not connected: the next connect fetches one)."""
        st = self._syms.get(symbol.lower())
        if st is None:
            raise KeyError(f"not a symbol of this feed: {symbol}")
        if self._closed or not self.stats.connected or st.resyncing:
            return False
        self._start_resync(st, reason)
        return True

    def stop(self) -> None:
        """Nothing to do at once: :meth:`aclose` ends the stream."""

    def summary(self) -> dict[str, Any]:
        return {}

    async def aclose(self) -> None:
        """Stop: cancel the connection and snapshot tasks, close the HTTP session.

        Safe to call twice and from another task; a consumer waiting in
        ``async for`` then stops.
        """
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._task, *(st.task for st in self._syms.values())) if t]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for st in self._syms.values():
            st.task = None
            st.held.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.stats.connected = False
        while not self._q.empty():
            self._q.get_nowait()
        self._q.put_nowait(_END)
        self._drained.set()

    def __aiter__(self) -> BinanceWSFeed:
        return self

    async def __anext__(self) -> MarketEvent:
        self.start()
        item = await self._q.get()
        if not self._drained.is_set() and self._q.qsize() <= self.max_queue // 2:
            self._drained.set()
        if item is _END:
            self._q.put_nowait(_END)  # later calls stop too
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._q.put_nowait(_END)
            raise item
        ev: MarketEvent = item
        return ev

    async def __aenter__(self) -> BinanceWSFeed:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- connection loop ------------------------------------------------------

    async def _run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidURI, WebSocketException

        attempt = 0
        while not self._closed:
            if attempt:
                delay = backoff_delay(
                    attempt, self.backoff_initial, self.backoff_max, self.backoff_jitter, self.rng
                )
                logger.info("ws feed: reconnecting in {:.2f}s (attempt {})", delay, attempt)
                await asyncio.sleep(delay)
            opened = False
            reason = "closed"
            try:
                async with connect(
                    self.stream_url,
                    open_timeout=self.open_timeout,
                    close_timeout=2.0,
                    max_size=2**24,
                    ping_interval=20.0,
                    ping_timeout=20.0,
                ) as ws:
                    opened = True
                    self._on_open()
                    got_message = False
                    while True:
                        async with asyncio.timeout(self.idle_timeout or None):
                            raw = await ws.recv()
                        if not got_message:
                            got_message = True
                            attempt = 0  # the connection works: next backoff starts over
                        self._on_message(raw)
                        if self._q.qsize() >= self.max_queue:
                            self._drained.clear()
                            await self._drained.wait()
            except asyncio.CancelledError:
                if opened:
                    self._on_close("feed closed", emit=False)
                raise
            except TimeoutError:
                reason = f"no message for {self.idle_timeout}s" if opened else "open timed out"
            except InvalidURI as exc:  # retrying cannot help
                self._q.put_nowait(UserInputError(f"feed.ws_url: {exc}"))
                return
            except (OSError, WebSocketException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except _SinkFailed:
                return
            except Exception as exc:  # never let the loop die on a bug in one message
                logger.exception("ws feed: unexpected error")
                reason = f"{type(exc).__name__}: {exc}"
            if opened:
                logger.warning("ws feed: disconnected ({})", reason)
                self._on_close(reason)
            else:
                self.stats.connect_failures += 1
                logger.warning("ws feed: cannot connect to {} ({})", self.ws_url, reason)
            attempt += 1
            if self.max_retries is not None and attempt > self.max_retries:
                self._q.put_nowait(
                    RuntimeFailure(
                        f"market-data feed {self.ws_url}: gave up after "
                        f"{self.max_retries} retries ({reason})"
                    )
                )
                return

    def _on_open(self) -> None:
        self._gen += 1
        st_ = self.stats
        st_.connects += 1
        if st_.connects > 1:
            st_.reconnects += 1
        st_.connected = True
        now = time.time_ns()
        logger.info("ws feed: connected to {} ({} symbols)", self.ws_url, len(self.symbols))
        for st in self._syms.values():
            self._emit(FeedStatus(st.name, now, "connected", self.ws_url))
            self._start_resync(st, "connect" if st.snapshots == 0 else "reconnect")

    def _on_close(self, reason: str, emit: bool = True) -> None:
        self._gen += 1
        self.stats.connected = False
        self.stats.disconnects += 1
        now = time.time_ns()
        for st in self._syms.values():
            if st.task is not None:
                st.task.cancel()
                st.task = None
            st.held.clear()
            st.resyncing = True
            if emit:
                self._emit(FeedStatus(st.name, now, "disconnected", reason))

    # --- messages -------------------------------------------------------------

    def _emit(self, ev: MarketEvent, raw: str | None = None) -> None:
        if raw is not None and self.raw_sink is not None:
            try:
                self.raw_sink(ev, raw)
            except Exception as exc:
                logger.error("ws feed: raw sink failed: {}", exc)
                self._q.put_nowait(exc)
                raise _SinkFailed from exc
        self.stats.events += 1
        self._q.put_nowait(ev)

    def _bad(self, why: str, raw: str | bytes) -> None:
        n = self.stats.bad_messages = self.stats.bad_messages + 1
        if n <= _BAD_LOG_FIRST or n % _BAD_LOG_EVERY == 0:
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            logger.warning("ws feed: skipped bad message #{} ({}): {!r}", n, why, text[:200])

    def _on_message(self, raw: str | bytes) -> None:
        """One WebSocket message. A message that cannot be handled is counted as
        bad and skipped: it never drops the connection."""
        try:
            self._handle_message(raw)
        except _SinkFailed:
            raise
        except Exception as exc:
            self._bad(f"{type(exc).__name__}: {exc}", raw)

    def _handle_message(self, raw: str | bytes) -> None:
        ts = time.time_ns()
        st_ = self.stats
        st_.messages += 1
        st_.last_msg_ns = ts
        try:
            msg = orjson.loads(raw)
            if not isinstance(msg, dict):
                raise ParseError("message is not a JSON object")
            ev = self.parser.parse(msg, ts)
        except (orjson.JSONDecodeError, ParseError) as exc:
            self._bad(str(exc), raw)
            return
        if ev is None:
            if "stream" in msg or "lastUpdateId" in msg:
                return  # a symbol or message type we do not use
            if "result" in msg and "id" in msg:
                return  # a reply to a control request
            self._bad("not a combined-stream message", raw)
            return
        text = raw if isinstance(raw, str) else raw.decode()
        if isinstance(ev, DepthDiff | Trade) and ev.exch_ms:
            st_.last_exch_lag_ms = ts / 1e6 - ev.exch_ms
        if isinstance(ev, DepthDiff):
            self._on_diff(self._syms[ev.symbol], ev, text)
        else:
            self._emit(ev, text)

    def _on_diff(self, st: _SymState, d: DepthDiff, raw: str) -> None:
        if st.resyncing:
            if len(st.held) >= self.max_held:
                st.held.popleft()  # the snapshot will be newer than these anyway
            st.held.append((d, raw))
            return
        verdict = diff_verdict(d, st.last_u, st.fresh)
        if verdict is Verdict.GAP:
            self._gap(st, d, raw, gap_detail(d, st.last_u, st.fresh))
            return
        if verdict is Verdict.APPLY:
            st.fresh = False
            st.last_u = d.last_id
            self.stats.last_update_id[st.name] = d.last_id
        self._emit(d, raw)  # a dropped diff too: the consumer's builder drops it the same way

    def _gap(self, st: _SymState, d: DepthDiff, raw: str, detail: str) -> None:
        """A diff that does not follow the last one: report it, hold it, re-sync."""
        self.stats.gaps += 1
        logger.warning("ws feed: {} sequence gap: {}", st.name, detail)
        self._emit(FeedStatus(st.name, d.ts_ns, "gap", detail))
        self._start_resync(st, "gap")
        st.held.append((d, raw))

    # --- snapshots ------------------------------------------------------------

    def _start_resync(self, st: _SymState, reason: str) -> None:
        st.resyncing = True
        st.reason = reason
        if st.task is not None and not st.task.done():
            return
        st.task = asyncio.get_running_loop().create_task(
            self._snapshot_loop(st, self._gen), name=f"ws-snapshot-{st.name}"
        )

    async def _snapshot_loop(self, st: _SymState, gen: int) -> None:
        attempt = 0
        while not self._closed and gen == self._gen:
            # one REST snapshot per symbol per snapshot_min_interval, however many gaps
            # within a connection (a failed request backs off on its own; a new
            # connection's first snapshot is bounded by the reconnect backoff instead)
            wait = st.last_fetch + self.snapshot_min_interval - time.monotonic()
            if wait > 0 and st.fetch_gen == gen:
                self.stats.snapshots_delayed += 1
                await asyncio.sleep(wait)
                if self._closed or gen != self._gen:
                    return
            try:
                snap, body = await self._fetch_snapshot(st.name)
                st.last_fetch, st.fetch_gen = time.monotonic(), gen
            except Exception as exc:
                attempt += 1
                self.stats.snapshot_errors += 1
                retry_after = getattr(exc, "retry_after", None)
                delay = retry_after or backoff_delay(
                    attempt, self.backoff_initial, self.backoff_max, self.backoff_jitter, self.rng
                )
                # the same error again (e.g. a symbol the server does not serve): once as a
                # warning, then quietly, with a reminder every _SNAPSHOT_WARN_EVERY attempts
                text = str(exc)
                st.failures += 1
                repeat = text == st.last_error
                st.last_error = text
                level = "DEBUG" if repeat and st.failures % _SNAPSHOT_WARN_EVERY else "WARNING"
                hint = (
                    ": the server does not serve this symbol, its markets will not quote"
                    if "-1121" in text
                    else ""
                )
                logger.log(
                    level,
                    "ws feed: {} snapshot failed ({}{}), retry in {:.2f}s{}",
                    st.name,
                    exc,
                    hint,
                    delay,
                    f" ({st.failures} in a row)" if st.failures > 1 else "",
                )
                await asyncio.sleep(delay)
                continue
            if st.failures:
                logger.info("ws feed: {} snapshot ok after {} failure(s)", st.name, st.failures)
                st.failures, st.last_error = 0, ""
            if gen != self._gen or self._closed:
                return
            try:
                if self._accept_snapshot(st, snap, body):
                    return
            except _SinkFailed:
                return
            await asyncio.sleep(self.stale_snapshot_delay)

    async def _fetch_snapshot(self, symbol: str) -> tuple[DepthSnapshot, str]:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.rest_timeout)
            )
        url = self.rest_url + (FUTURES_DEPTH_PATH if self.futures else SPOT_DEPTH_PATH)
        params = {"symbol": symbol.upper(), "limit": str(self.depth_limit)}
        async with self._session.get(url, params=params) as resp:
            body = await resp.read()
            if resp.status != 200:
                err = _HTTPError(f"HTTP {resp.status}: {body[:200]!r}")
                ra = resp.headers.get("Retry-After")
                if ra and ra.isdigit():
                    err.retry_after = min(float(ra), self.backoff_max)
                raise err
        ts = time.time_ns()
        msg = orjson.loads(body)
        if not isinstance(msg, dict) or "lastUpdateId" not in msg:
            raise ParseError("REST depth reply has no lastUpdateId")
        snap = self.parser.parse(msg, ts, symbol)
        if not isinstance(snap, DepthSnapshot):
            raise ParseError("REST depth reply is not a snapshot")
        return snap, body.decode()

    def _accept_snapshot(self, st: _SymState, snap: DepthSnapshot, body: str) -> bool:
        lid = snap.last_update_id
        # the first held diff the snapshot does not already cover must follow it
        newer = next(
            (d for d, _ in st.held if diff_verdict(d, lid, True) is not Verdict.DROP), None
        )
        if newer is not None and diff_verdict(newer, lid, True) is Verdict.GAP:
            self.stats.stale_snapshots += 1
            logger.info(
                "ws feed: {} snapshot {} older than the stream ({}), fetching again",
                st.name,
                lid,
                newer.first_id,
            )
            return False
        if st.snapshots:
            self.stats.resyncs += 1
            self._emit(FeedStatus(st.name, snap.ts_ns, "resync", st.reason))
        st.snapshots += 1
        self.stats.snapshots += 1
        self._emit(snap, body)
        st.last_u = lid
        st.fresh = True
        self.stats.last_update_id[st.name] = lid
        st.resyncing = False
        if st.task is asyncio.current_task():
            st.task = None  # a gap among the held diffs must be able to start a new fetch
        held = list(st.held)
        st.held.clear()
        for d, raw in held:
            self._on_diff(st, d, raw)  # may start another resync: the rest is held again
        return True


class _HTTPError(Exception):
    retry_after: float | None = None


class _SinkFailed(Exception):
    """The raw sink raised: the error was handed to the consumer, stop."""
