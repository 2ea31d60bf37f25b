"""SeiVenue: the FlashBook contract on Sei EVM as a FlashMM venue.

Ticks and lots are the contract's ticks and lots (same numbers as the MarketSpec's
tick_size/lot_size; see :class:`SeiVenueSettings`).

The hot-path methods (requote, cancel_all, take, poll) never block: requote() queues a
batch per market, and a sender task turns it into one ``requote`` transaction. While a
batch waits (at most ``max_inflight_txs`` transactions are in flight), newer requotes of
the same market merge into it: a cancel of a not-yet-sent placement just drops it.
Cancels and placements of the same side are paired into in-place ``replace`` ops (one
storage slot per order instead of two). Outcomes are decoded from the contract's logs,
read from receipts and from a gap-free log stream, and come back from poll().
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flashmm.types import (
    Fill,
    Liquidity,
    MarketSpec,
    Order,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    OrderState,
    Side,
    VenueEvent,
)
from flashmm.venues.base import VenueDefaults, VenueError
from flashmm.venues.sei.abi import (
    ASK,
    BID,
    LASTING_REJECTS,
    N_SLOTS,
    REJECT_REASONS,
    book_abi,
    decode_log,
    op_cancel,
    op_place,
    op_replace,
    unpack_info,
)
from flashmm.venues.sei.book import BookClient, MarketInfo, TokenClient
from flashmm.venues.sei.errors import TxDropped, TxReverted
from flashmm.venues.sei.gas import probe_node_sstore_set_gas, trace_fresh_slots
from flashmm.venues.sei.logs import LogStream, chain_order, get_logs
from flashmm.venues.sei.rpc import JsonRpc
from flashmm.venues.sei.settings import SeiVenueSettings
from flashmm.venues.sei.tx import SentTx, TxSender

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

log = logging.getLogger(__name__)

# Gas floors for transactions whose cost depends on a book that can change between the
# estimate and execution (a take estimated against an empty level would run out of gas).
GAS_FLOOR = {"take": 160_000, "cancelSlots": 60_000}
#: after a take's deadline, how long until the head that bounds its block is read (block
#: times lag the wall clock a little), and the longest wait for the logs up to that head
TAKE_SETTLE_S = 2.0
TAKE_SETTLE_MAX_S = 120.0
# A take touches at most this many maker orders (about 9k gas each), so it fits its floor
# however finely the book is split into small orders.
TAKE_MAX_ORDERS = 10
# Cancels that did not go through are sent again (with backoff) up to this many times.
MAX_CANCEL_RETRIES = 20
# venue_latency: answer times of the last seconds only; probe the node when idle
LATENCY_WINDOW_S = 5.0
LATENCY_MIN_SAMPLES = 3
PROBE_EVERY_S = 1.0
#: while a fallback RPC endpoint answers, the first one is checked again this often
PRIMARY_RETRY_S = 30.0
#: blocks read again by the last log read at close
FINAL_REREAD_BLOCKS = 20


def _round_div(a: int, b: int) -> int:
    """``a / b`` rounded to the nearest integer (exact for big token amounts)."""
    q, r = divmod(a, b)
    return q + 1 if 2 * r >= b else q


def _route_logs_to_loguru() -> None:
    """Send this package's stdlib log records to loguru (the bot's log sinks), so a warning
    from the chain client lands in the log file instead of on top of the panel."""
    pkg = logging.getLogger("flashmm.venues.sei")
    if any(isinstance(h, _LoguruHandler) for h in pkg.handlers):
        return
    pkg.addHandler(_LoguruHandler())
    pkg.propagate = False
    if pkg.level == logging.NOTSET:
        pkg.setLevel(logging.INFO)


class _LoguruHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        from loguru import logger

        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info).log(level, record.getMessage())


def _side_code(side: Side) -> int:
    return BID if side is Side.BUY else ASK


def _side_of(code: int) -> Side:
    return Side.BUY if code == BID else Side.SELL


@dataclass
class _Batch:
    cancels: list[int] = field(default_factory=list)
    places: list[OrderRequest] = field(default_factory=list)
    raw_cancels: list[tuple[int, int]] = field(default_factory=list)  # slot, client id
    retries: int = 0


@dataclass
class _Market:
    symbol: str
    mid: int
    # slot -> (client id, side code): live on chain or reserved by a sent transaction
    slots: dict[int, tuple[int, int]] = field(default_factory=dict)
    by_client: dict[int, int] = field(default_factory=dict)
    # client id -> price ticks of the orders we placed or adopted (pruned in _build_ops)
    prices: dict[int, int] = field(default_factory=dict)
    used_mask: int = 0
    queued: _Batch | None = None
    # the client ids this process placed: every one from the lowest to the highest it
    # sent (the engine's ids only grow, and a new run starts past the last run's)
    sent_lo: int | None = None
    sent_hi: int = 0
    # the client ids of the orders on chain at start (they may be adopted)
    listed: set[int] = field(default_factory=set)

    def free_slot(self) -> int | None:
        return next((s for s in range(N_SLOTS) if s not in self.slots), None)

    def claim(self, slot: int, client_id: int, side: int) -> None:
        old = self.slots.get(slot)
        if old is not None and self.by_client.get(old[0]) == slot:
            del self.by_client[old[0]]
        self.slots[slot] = (client_id, side)
        self.by_client[client_id] = slot
        self.used_mask |= 1 << slot

    def confirm(self, slot: int, client_id: int, side: int) -> None:
        """An order landed in ``slot``. A later transaction in flight may already have
        reserved the slot for its successor: that newer reservation stands."""
        if slot not in self.slots:
            self.claim(slot, client_id, side)

    def release(self, slot: int, client_id: int) -> None:
        if self.slots.get(slot, (None, 0))[0] == client_id:
            del self.slots[slot]
        if self.by_client.get(client_id) == slot:
            del self.by_client[client_id]

    def sent(self, client_id: int) -> None:
        """This process sends a placement of ``client_id``."""
        if self.sent_lo is None or client_id < self.sent_lo:
            self.sent_lo = client_id
        self.sent_hi = max(self.sent_hi, client_id)

    def ours(self, client_id: int) -> bool:
        """Whether an order of our account with ``client_id`` is one this process placed
        or found on chain at start; else it is a transaction of an earlier run (or of
        another process with our key) that landed late."""
        if client_id in self.listed:
            return True
        return self.sent_lo is not None and self.sent_lo <= client_id <= self.sent_hi


@dataclass
class _Job:
    kind: str  # "requote" | "cancel_all" | "take"
    market: str
    args: tuple[Any, ...] = ()
    attempt: int = 0
    #: a take's deadline (unix seconds): it cannot land in a block after it
    deadline: int = 0


@dataclass
class _Undo:
    """What to do if a requote transaction does not go through."""

    market: str
    replaced: list[tuple[int, int, int, int]] = field(default_factory=list)  # slot, old, new, side
    placed: list[tuple[int, int]] = field(default_factory=list)  # slot, client id
    cancels: list[int] = field(default_factory=list)
    raw_cancels: list[tuple[int, int]] = field(default_factory=list)
    retries: int = 0


#: the counters that feed the engine's venue_errors breaker
_ERROR_KEYS = ("send_errors", "reverted", "dropped")


class SeiVenue(VenueDefaults):
    """FlashBook on a Sei EVM chain (or a local anvil) behind the Venue protocol."""

    name = "sei"
    replays_fills = True

    def __init__(
        self,
        settings: SeiVenueSettings,
        *,
        specs: dict[str, MarketSpec] | None = None,
        account: LocalAccount | None = None,
    ) -> None:
        self.specs = specs or {}
        # a deployment file fills what the profile does not say (addresses, market ids)
        self.settings = settings = settings.resolved(self.specs.keys() if self.specs else None)
        self._account = account
        self.rpc = JsonRpc(
            settings.rpc,
            timeout_s=settings.rpc_timeout_s,
            fallbacks=settings.rpc_fallback_urls,
            chain_id=settings.chain,
        )
        self.book = BookClient(self.rpc, settings.book)
        self.sender: TxSender | None = None
        self.address = ""
        self._markets = {sym: _Market(sym, mid) for sym, mid in settings.market_ids.items()}
        self._by_id = {mid: sym for sym, mid in settings.market_ids.items()}
        # neutral base holdings per market (token units): a position is holdings minus this
        self._inventory: dict[str, int] = {}
        self._deposits: dict[str, int] = {}
        self._deposits_scanned_to: int | None = None
        self._lot_units: dict[str, int] = {}
        # symbol -> (tickValue, 10**quoteDecimals), read at start
        self._units: dict[str, tuple[int, int]] = {}
        # symbol -> fee history [((block, log index), taker fee bps, maker rebate bps)], oldest
        # first: the fees read at start (position (-1, -1)), then every FeesSet log seen, so a
        # fill is charged the fees in force where it sits in the chain
        self._fees: dict[str, list[tuple[tuple[int, int], int, int]]] = {}
        # Sei-priced gas on a chain that charges Ethereum's fresh-slot price (a local anvil):
        # fresh slots counted from debug_traceTransaction on a sample of receipts
        self._fresh = {"traced": 0, "slots": 0}
        self._trace_task: asyncio.Task[None] | None = None
        self._trace_ok = True
        #: the fresh-slot price the node charges (probed at start; None: unknown)
        self.node_sstore_set_gas: int | None = None
        # placements reported rejected (their transaction failed or was not confirmed)
        self._written_off: set[tuple[str, int]] = set()
        # markets with a take whose outcome is not known yet (queued, in flight, or sent
        # without a receipt until the logs past its deadline are read): a second take
        # there could buy or sell twice what the engine asked for
        self._take_pending: set[str] = set()
        self._events: list[VenueEvent] = []
        self._jobs: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._inflight = 0
        # retries of failed cancels waiting for their backoff: idle() waits for them too
        self._retries_due = 0
        self._inflight_sem: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sender_task: asyncio.Task[None] | None = None
        self.stream: LogStream | None = None
        self._gas_seen: dict[tuple[str, int], int] = {}
        self.stats: dict[str, int] = dict.fromkeys(
            ("txs", "reverted", "dropped", "gas_used", "coalesced", "send_errors"), 0
        )
        # (monotonic s, ms) of recent receipts and probes: what receipt_p99_ms() judges
        self._lat_samples: deque[tuple[float, float]] = deque(maxlen=200)
        #: transactions waiting for their receipt -> when they were sent (monotonic s)
        self._awaiting: dict[int, float] = {}
        self._probe_task: asyncio.Task[None] | None = None
        # crash recovery: replay our fills from this block on start (None: no replay)
        self._replay_from: int | None = None
        self._replay_set = False
        #: every log up to this block has been handed out by poll() (the journal's checkpoint)
        self.processed_block: int | None = None
        #: what the start-up replay found: blocks scanned and fills booked
        self.replay_stats: dict[str, int] = {}
        # (block, market, signed lots) of our fills handed to poll(), newest last
        self._fill_ledger: deque[tuple[int, str, int]] = deque(maxlen=100_000)
        self._block_ts: dict[int, int] = {}
        # hashes of our recent transactions whose logs were seen: they landed, whatever
        # their receipt says (a receipt can stay null on a node behind the stream's)
        self._landed: set[str] = set()
        self._landed_order: deque[str] = deque()

    def receipt_p99_ms(self) -> float | None:
        """p99 of the node's recent answer times, in ms (None with too few samples).

        The samples are the submit → receipt times of our transactions, the age so far
        of each one still waiting for its receipt, and, while none is sent (e.g. quotes
        pulled because the node is slow), timed probes: a cheap call every
        ``PROBE_EVERY_S``. Only the last ``LATENCY_WINDOW_S`` count, so the
        ``venue_latency`` breaker clears by itself a few seconds after the node is fast
        again, and one slow transaction long ago does not hold quoting.
        """
        now = time.monotonic()
        cutoff = now - LATENCY_WINDOW_S
        lat = [ms for t, ms in self._lat_samples if t >= cutoff]
        # a transaction still without its receipt is at least as slow as its age: one stuck
        # in the pool (a base fee spike, a node that lost it) shows while it is stuck, not
        # only once its receipt or its write-off comes (the idle probes stay fast)
        lat += [(now - sent_at) * 1e3 for sent_at in self._awaiting.values()]
        lat.sort()
        if len(lat) < LATENCY_MIN_SAMPLES:
            return None
        return lat[min(len(lat) - 1, int(0.99 * len(lat)))]

    def error_count(self) -> int | None:
        return sum(self.stats[k] for k in _ERROR_KEYS)

    def _reprice(self) -> int:
        """Gas to add per fresh slot: ``venue.sei.sstore_set_gas`` minus what the node
        charges (0 when they agree, e.g. on Sei with the setting right)."""
        node = self.node_sstore_set_gas
        return 0 if node is None else self.settings.sstore_set_gas - node

    def sei_gas_used(self) -> int:
        """Gas so far with fresh slots priced at ``venue.sei.sstore_set_gas``: the receipts'
        gas plus (sstore_set_gas - the node's price) per fresh slot, the fresh slots per
        transaction measured on a sample of receipts (a local anvil charges 20,000)."""
        gas = self.stats["gas_used"]
        if not self._reprice() or not self._fresh["traced"]:
            return gas
        per_tx = self._fresh["slots"] / self._fresh["traced"]
        return round(gas + self._reprice() * per_tx * self.stats["txs"])

    def status(self, up_s: float) -> dict[str, Any]:
        """Name and counters, with the gas so far projected per day of ``up_s``; fresh
        storage slots are priced at ``venue.sei.sstore_set_gas`` (Sei's chain parameter)."""
        out: dict[str, Any] = {"name": self.name, **self.stats}
        if self.sender is not None:  # the signer's own counters (metrics: flashmm_venue_stat)
            for key in ("nonce_resyncs", "nonce_taken", "rebroadcasts", "fee_bumps"):
                out[f"tx_{key}"] = self.sender.stats[key]
        # which endpoint answers (0: rpc_url, 1..: rpc_fallback_urls; URLs may hold keys)
        out["rpc_endpoint"] = self.rpc.in_use
        out["rpc_switches"] = self.rpc.switches
        out["sstore_set_gas"] = self.settings.sstore_set_gas
        out["node_sstore_set_gas"] = self.node_sstore_set_gas
        if self._fresh["traced"]:
            out["fresh_slots_per_tx"] = round(self._fresh["slots"] / self._fresh["traced"], 3)
        gas = self.sei_gas_used()
        if up_s > 0:
            per_day = gas / up_s * 86_400
            out["gas_per_day_projected"] = round(per_day)
            out["sei_per_day_at_50_gwei"] = round(per_day * 50e-9, 3)
        return out

    async def _probe_loop(self) -> None:
        """Time a cheap call (eth_blockNumber) whenever no transaction gave a sample
        lately; a call that fails counts as at least the RPC timeout."""
        next_primary = time.monotonic() + PRIMARY_RETRY_S
        while True:
            await asyncio.sleep(PROBE_EVERY_S)
            if self.rpc.on_fallback and time.monotonic() >= next_primary:
                next_primary = time.monotonic() + PRIMARY_RETRY_S
                await self.rpc.try_primary()
            last = self._lat_samples[-1][0] if self._lat_samples else 0.0
            if time.monotonic() - last < PROBE_EVERY_S:
                continue
            t0 = time.monotonic()
            try:
                await self.rpc.call("eth_blockNumber")
                ms = (time.monotonic() - t0) * 1e3
            except Exception:  # no answer is not a fast answer
                ms = max((time.monotonic() - t0) * 1e3, self.settings.rpc_timeout_s * 1e3)
            self._lat_samples.append((time.monotonic(), ms))

    # ------------------------------------------------------------------ lifecycle
    def replay_summary(self) -> dict[str, int]:
        return dict(self.replay_stats)

    def recover_from(self, block: int | None) -> None:
        """Before :meth:`start`: replay our fills from ``block`` (the last block the journal
        holds completely, plus one) to the head, so fills mined just before a crash or
        while the bot was down are booked, with their chain price and block time. None
        replays from the book's deployment block (a journal without a checkpoint); fills
        already journaled are dropped by their id."""
        self._replay_from = block
        self._replay_set = True

    async def start(self) -> None:
        from flashmm.venues.sei.keys import account_from_hex, load_account

        _route_logs_to_loguru()
        account = self._account
        if account is None and self.settings.dev_account is not None:
            account = account_from_hex(self.settings.dev_private_key())
        if account is None:
            account = load_account(self.settings.keystore)
        self.address = account.address
        self.sender = TxSender(
            self.rpc,
            account,
            self.settings.chain,
            max_fee_gwei=self.settings.max_fee_gwei,
            priority_fee_gwei=self.settings.priority_fee_gwei,
            gas_margin=self.settings.gas_margin,
            receipt_timeout_s=self.settings.receipt_timeout_s,
            fee_bump_after_s=self.settings.fee_bump_after_s,
            max_fee_bumps=self.settings.max_fee_bumps,
            abi=book_abi(),
        )
        await self.sender.check_chain()
        try:
            self.node_sstore_set_gas = await probe_node_sstore_set_gas(self.rpc)
        except Exception as exc:  # a node that cannot run a creation in eth_call: no repricing
            log.info("sei venue: fresh-slot price not probed (%s)", exc)
        else:
            if self.node_sstore_set_gas != self.settings.sstore_set_gas:
                log.info(
                    "sei venue: the node charges %d gas per fresh storage slot,"
                    " venue.sei.sstore_set_gas is %d: gas projections use the setting",
                    self.node_sstore_set_gas,
                    self.settings.sstore_set_gas,
                )
        code = await self.rpc.call("eth_getCode", [self.settings.book, "latest"])
        if code in (None, "0x", ""):
            dep = self.settings.deployment
            hint = f" (is the chain of {dep} running?)" if dep else ""
            raise VenueError(
                f"no contract at {self.settings.book} on chain {self.settings.chain}{hint}"
            )
        for m in self._markets.values():
            info = await self.book.market(m.mid)
            if info.lot_units == 0:
                raise VenueError(
                    f"{m.symbol}: market {m.mid} does not exist on {self.settings.book}"
                )
            self._lot_units[m.symbol] = info.lot_units
            await self._load_inventory(m.symbol, info.base)
            spec = self.specs.get(m.symbol)
            if spec is not None:
                await self._check_units(m.symbol, spec, info)
            cfg = await self.book.market_config(m.mid)
            self._units[m.symbol] = (info.tick_value, 10**cfg.quote_decimals)
            fee_bps, rebate_bps, _ = await self.book.call("marketFees", m.mid)
            self._fees[m.symbol] = [((-1, -1), int(fee_bps), int(rebate_bps))]
            if cfg.status != 0:
                log.warning(
                    "sei venue: %s (market %d) is %s: orders will be rejected, cancels work",
                    m.symbol,
                    m.mid,
                    cfg.status_name,
                )
        # the head before the open orders: an order that lands after it is in the stream
        # (from head + 1), one that landed before it is in the open orders read next, or
        # in both; never in neither (invisible: a cancel of it would find no slot)
        head = int(await self.rpc.call("eth_blockNumber"), 16)
        for m in self._markets.values():
            for o in await self.book.open_orders(self.address, m.mid):
                m.claim(o.slot, o.client_id, o.side)
                m.prices[o.client_id] = o.price
                m.listed.add(o.client_id)
        await self.sender.nonces.sync()
        self.stream = LogStream(
            self.rpc,
            self.settings.book,
            self._on_log,
            ws_url=self.settings.ws_url,
            from_block=head + 1,
            poll_s=self.settings.log_poll_s,
            max_range=self.settings.log_range,
        )
        if self._replay_set:
            start = self._replay_from
            if start is None:
                start = await self._deposits_from_block()
            await self._replay_fills(max(0, start), head)
        self.stream.start()
        self._inflight_sem = asyncio.Semaphore(self.settings.max_inflight_txs)
        self._sender_task = asyncio.create_task(self._send_loop(), name="flashmm-sei-sender")
        self._probe_task = asyncio.create_task(self._probe_loop(), name="flashmm-sei-probe")

    async def _replay_fills(self, start: int, head: int) -> None:
        """Book our Fill logs of blocks ``start..head`` (paged eth_getLogs, oldest first).

        Only fills: orders and slots come from the chain's current state (open_orders),
        not from old placement logs. Each replayed log is marked seen, so the live stream
        and receipts never deliver it a second time."""
        assert self.stream is not None
        abi = book_abi()
        await self._load_fee_history(start, head)
        topic = "0x" + abi.events["Fill"].topic0.hex()
        me = "0x" + "00" * 12 + self.address.lower()[2:]
        found = 0
        async for _, logs in self._book_logs(start, head, [topic, me], [topic, None, me]):
            for raw in sorted(logs, key=chain_order):
                if raw.get("removed") or not self.stream.dedup.first_time(raw):
                    continue
                ts = await self._log_time_ns(raw)
                n = len(self._events)
                self._on_log(raw, ts_ns=ts, replay=True)
                found += len(self._events) - n
        self.replay_stats = {"from_block": start, "to_block": head, "fills": found}
        if found:
            log.info("sei venue: %d fill(s) recovered from blocks %d..%d", found, start, head)

    async def _book_logs(
        self, start: int, head: int, *filters: list[Any]
    ) -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
        """The book's logs of blocks ``start..head`` in pages of ``log_range`` blocks: (last
        block of the page, its logs matching any of the topic ``filters``)."""
        while start <= head:
            end = min(head, start + self.settings.log_range - 1)
            page = {"address": self.settings.book, "fromBlock": hex(start), "toBlock": hex(end)}
            logs: list[dict[str, Any]] = []
            for topics in filters:
                logs += await self._page_logs({**page, "topics": topics}, end)
            yield end, logs
            start = end + 1

    async def _page_logs(self, flt: dict[str, Any], end: int) -> list[dict[str, Any]]:
        """One eth_getLogs page, from a node that has block ``end``: a node behind answers
        the blocks it lacks with no logs (a fill or deposit missed for good), so its answer
        is asked again until the node has caught up."""
        deadline = time.monotonic() + max(10.0, self.settings.receipt_timeout_s)
        while True:
            logs, node_head = await get_logs(self.rpc, flt)
            if node_head >= end:
                return logs
            if time.monotonic() > deadline:
                raise VenueError(
                    f"the node answering eth_getLogs is at block {node_head}, behind block "
                    f"{end} another node reported; its logs would be incomplete"
                )
            await asyncio.sleep(0.2)

    async def _load_fee_history(self, start: int, head: int) -> None:
        """The fees in force from block ``start`` on, for replayed fills: read at block
        ``start - 1`` (the current ones if the node keeps no state that old), then every
        FeesSet log of blocks ``start..head``."""
        for m in self._markets.values():
            try:
                fee, rebate, _ = await self.book.call(
                    "marketFees", m.mid, block=hex(max(0, start - 1))
                )
            except Exception as exc:
                log.info("sei venue: fees before block %d unknown (%s); using today's", start, exc)
                continue
            self._fees[m.symbol][0] = ((-1, -1), int(fee), int(rebate))
        topic = "0x" + book_abi().events["FeesSet"].topic0.hex()
        async for _, logs in self._book_logs(start, head, [topic]):
            for raw in logs:
                if not raw.get("removed"):
                    self._on_log(raw, replay=True)

    async def _log_time_ns(self, raw: dict[str, Any]) -> int:
        """The block time of a log, in ns (the log's ``blockTimestamp`` or its block)."""
        ts = raw.get("blockTimestamp")
        if ts is not None:
            return int(str(ts), 16) * 1_000_000_000
        n = int(raw["blockNumber"], 16)
        if n not in self._block_ts:
            block = await self.rpc.call("eth_getBlockByNumber", [hex(n), False])
            self._block_ts[n] = int(block["timestamp"], 16) * 1_000_000_000
        return self._block_ts[n]

    async def _check_units(self, symbol: str, spec: MarketSpec, info: MarketInfo) -> None:
        bdec = await TokenClient(self.rpc, info.base).decimals()
        qdec = await TokenClient(self.rpc, info.quote).decimals()
        want_lot = spec.lot_size * (Decimal(10) ** bdec)
        want_tick = spec.tick_size * spec.lot_size * (Decimal(10) ** qdec)
        if want_lot != info.lot_units or want_tick != info.tick_value:
            raise VenueError(
                f"{symbol}: on-chain market has lotUnits {info.lot_units}, "
                f"tickValue {info.tick_value}; "
                f"the MarketSpec (tick {spec.tick_size}, lot {spec.lot_size}) needs "
                f"{want_lot} and {want_tick}"
            )

    async def aclose(self) -> None:
        """Stop. Logs up to the head are read first: their events stay queued for a last
        poll(), so a fill in the last blocks before shutdown is not lost."""
        if self._sender_task is not None and self.stream is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._final_logs(), 8.0)
        own = (self._probe_task, self._trace_task, self._sender_task, *self._tasks)
        tasks = [t for t in own if t is not None]
        self._probe_task = self._trace_task = self._sender_task = None
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.stream is not None:
            await self.stream.aclose()
        await self.rpc.aclose()

    async def _final_logs(self) -> None:
        with contextlib.suppress(VenueError):
            await self.idle(3.0)
        assert self.stream is not None
        # the WebSocket's heads count a block complete before its logs may have come:
        # the last blocks are read again over HTTP, as the stream closes after this
        await self.stream.backfill(reread=FINAL_REREAD_BLOCKS)

    # ------------------------------------------------------------------ hot path
    def _market(self, market: str) -> _Market:
        try:
            return self._markets[market]
        except KeyError:
            raise VenueError(f"market {market!r} is not configured for the Sei venue") from None

    def requote(self, market: str, cancels: Any, places: Any, now_ns: int) -> None:
        m = self._market(market)
        batch = m.queued
        if batch is None:
            batch = m.queued = _Batch()
            self._jobs.append(_Job("requote", market))
        else:
            self.stats["coalesced"] += 1
        for cid in cancels:
            if any(p.client_id == cid for p in batch.places):  # not sent yet: drop it
                batch.places = [p for p in batch.places if p.client_id != cid]
                self._events.append(OrderCancelled(market, cid, now_ns))
            else:
                batch.cancels.append(cid)
        batch.places.extend(places)
        self._wake.set()

    def cancel_all(self, market: str | None, now_ns: int) -> None:
        for m in self._markets.values() if market is None else [self._market(market)]:
            if m.queued is not None:
                for p in m.queued.places:
                    self._events.append(OrderCancelled(m.symbol, p.client_id, now_ns))
                m.queued = None
            self._jobs.append(_Job("cancel_all", m.symbol))
        self._wake.set()

    def take(
        self, market: str, side: Side, size_lots: int, limit_price_ticks: int, now_ns: int
    ) -> None:
        """Send a take, unless this market's previous take may still land: its fills are
        not counted yet, so the engine's retry (the same size again) could double it."""
        self._market(market)
        if market in self._take_pending:
            log.warning(
                "sei venue: %s take not sent: the previous take's outcome is not known yet",
                market,
            )
            return
        self._take_pending.add(market)
        self._jobs.append(_Job("take", market, (side, size_lots, limit_price_ticks)))
        self._wake.set()

    def _take_settled(self, job: _Job, known: bool) -> None:
        """A take's outcome: ``known`` (a receipt, a revert, or surely not sent) frees the
        market for the next take; otherwise it stays held until the logs of every block
        that could hold it are read (:meth:`_settle_unknown_take`)."""
        if job.kind != "take":
            return
        if known:
            self._take_pending.discard(job.market)
            return
        task = asyncio.create_task(self._settle_unknown_take(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle_unknown_take(self, job: _Job) -> None:
        """Past the take's deadline no later block can hold it: once the log stream is
        complete to a head read after that time, any fill of it has been handed out."""
        try:
            deadline = job.deadline or math.ceil(time.time() + self.settings.receipt_timeout_s)
            await asyncio.sleep(max(0.0, deadline - time.time()) + TAKE_SETTLE_S)
            head = None
            give_up = time.monotonic() + TAKE_SETTLE_MAX_S
            while time.monotonic() < give_up:
                try:
                    if head is None:
                        head = int(await self.rpc.call("eth_blockNumber"), 16)
                    stream = self.stream
                    if stream is None or (stream.complete_to or -1) >= head:
                        return
                except Exception as exc:
                    log.info("sei venue: settling a %s take: %s", job.market, exc)
                await asyncio.sleep(0.2)
            log.warning(
                "sei venue: %s take outcome still unknown after %.0f s; takes allowed again",
                job.market,
                TAKE_SETTLE_MAX_S,
            )
        finally:
            self._take_pending.discard(job.market)

    def poll(self, now_ns: int) -> list[VenueEvent]:
        # every log up to complete_to was decoded into _events: handed out now
        done = self.stream.complete_to if self.stream is not None else None
        if done is not None and (self.processed_block is None or done > self.processed_block):
            self.processed_block = done
        out, self._events = self._events, []
        return out

    # ------------------------------------------------------------------ reconciliation
    async def open_orders(self) -> list[Order]:
        out: list[Order] = []
        for m in self._markets.values():
            for o in await self.book.open_orders(self.address, m.mid):
                side = _side_of(o.side)
                out.append(
                    Order(m.symbol, o.client_id, side, o.price, o.size, o.size, OrderState.OPEN)
                )
        return out

    async def positions(self) -> dict[str, int]:
        """Base holdings (free + locked) minus the neutral inventory, in lots per market.

        The neutral inventory is ``inventory_base`` when configured, else the account's net
        deposits (Deposit minus Withdraw logs), so depositing or withdrawing does not move
        a position; trading does.
        """
        head = int(await self.rpc.call("eth_blockNumber"), 16)
        await self._scan_deposits(head)
        out: dict[str, int] = {}
        for m in self._markets.values():
            lot_units = self._lot_units.get(m.symbol) or (await self.book.market(m.mid)).lot_units
            bal = await self.book.balances(self.address, m.mid, block=hex(head))
            out[m.symbol] = _round_div(bal.base_total - self._neutral(m.symbol), lot_units)
        stream = self.stream
        if stream is not None and self._sender_task is not None:
            # The chain's positions at block ``head``; our fills of later blocks may
            # already be waiting in poll(): count them too, so the answer matches every
            # event handed out so far (a fill mined during the start-up reconciliation
            # is not a mismatch). First make sure every log up to ``head`` was decoded.
            if stream.complete_to is None or stream.complete_to < head:
                await stream.backfill()
            for block, symbol, lots in self._fill_ledger:
                if block > head and symbol in out:
                    out[symbol] += lots
        return out

    def _neutral(self, symbol: str) -> int:
        return self._inventory.get(symbol, self._deposits.get(symbol, 0))

    async def _load_inventory(self, symbol: str, base_token: str) -> None:
        inv = self.settings.inventory_base
        if inv is None or symbol not in inv:
            return
        decimals = await TokenClient(self.rpc, base_token).decimals()
        self._inventory[symbol] = int(Decimal(inv[symbol]) * (Decimal(10) ** decimals))

    async def _deposits_from_block(self) -> int:
        """Where the scan of our Deposit/Withdraw logs starts: the deployment's block, else
        the book's creation block (binary search on eth_getCode; needs historical state)."""
        dep = self.settings.load_deployment()
        if dep.get("block") is not None:
            return int(dep["block"])
        head = int(await self.rpc.call("eth_blockNumber"), 16)
        lo, hi = 0, head
        try:
            while lo < hi:
                mid = (lo + hi) // 2
                code = await self.rpc.call("eth_getCode", [self.settings.book, hex(mid)])
                if code in (None, "0x", ""):
                    lo = mid + 1
                else:
                    hi = mid
        except VenueError as exc:
            raise VenueError(
                "cannot find the block the book was deployed in to sum our deposits "
                f"({exc}); set venue.sei.inventory_base or use a deployment file"
            ) from exc
        return lo

    async def _scan_deposits(self, head: int) -> None:
        """Sum our net deposits per market from Deposit/Withdraw logs up to block ``head``
        (incrementally)."""
        todo = [m for m in self._markets.values() if m.symbol not in self._inventory]
        if not todo or not self.address:
            return
        abi = book_abi()
        topics = {
            abi.events["Deposit"].topic0: 1,
            abi.events["Withdraw"].topic0: -1,
        }
        by_mid = {m.mid: m.symbol for m in todo}
        owner = "0x" + "00" * 12 + self.address.lower()[2:]
        start = (
            await self._deposits_from_block()
            if self._deposits_scanned_to is None
            else self._deposits_scanned_to + 1
        )
        async for end, logs in self._book_logs(
            start, head, [["0x" + t.hex() for t in topics], owner]
        ):
            for raw in logs:
                if raw.get("removed"):
                    continue
                sign = topics.get(bytes.fromhex(raw["topics"][0][2:]))
                symbol = by_mid.get(int(raw["topics"][2], 16))
                if sign is None or symbol is None:
                    continue
                base_amount = int(raw["data"][2:66], 16)
                self._deposits[symbol] = self._deposits.get(symbol, 0) + sign * base_amount
            self._deposits_scanned_to = end

    async def idle(self, timeout_s: float = 30.0) -> None:
        """Wait until nothing is queued, in flight or due for a retry (tests, shutdown): a
        cancel that failed and waits out its backoff is still to be sent."""
        deadline = time.monotonic() + timeout_s
        while (
            self._jobs
            or self._inflight
            or self._retries_due
            or any(m.queued for m in self._markets.values())
        ):
            if time.monotonic() > deadline:
                raise VenueError("Sei venue still busy")
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ sender task
    async def _send_loop(self) -> None:
        assert self._inflight_sem is not None
        while True:
            if not self._jobs:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._inflight_sem.acquire()
            if not self._jobs:
                self._inflight_sem.release()
                continue
            job = self._jobs.popleft()
            self._inflight += 1
            try:
                sent, undo, shape = await self._send_job(job)
            except Exception as exc:
                sent = None
                self.stats["send_errors"] += 1
                log.warning("sei venue: %s for %s not sent: %s", job.kind, job.market, exc)
                self._retry_job(job)
                # the node may have taken it although its answer was lost
                self._take_settled(job, known=False)
            else:
                if sent is None:
                    self._take_settled(job, known=True)
            if sent is None:
                self._inflight -= 1
                self._inflight_sem.release()
                continue
            task = asyncio.create_task(self._await_receipt(sent, undo, shape, job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_job(self, job: _Job) -> tuple[SentTx | None, _Undo | None, tuple[str, int]]:
        m = self._market(job.market)
        assert self.sender is not None
        if job.kind == "requote":
            batch, m.queued = m.queued, None
            if batch is None:
                return None, None, ("", 0)
            ops, undo = self._build_ops(m, batch)
            if not ops:
                return None, None, ("", 0)
            data = self.book.calldata("requote", m.mid, ops, self._deadline())
            shape = ("requote", len(ops))
            try:
                gas = await self._gas(data, shape)
                sent = await self.sender.send(self.book.address, data, gas=gas)
            except Exception as exc:
                self._undo(undo, f"not sent: {exc}")
                raise
            return sent, undo, shape
        if job.kind == "cancel_all":
            mask = m.used_mask
            for s in m.slots:
                mask |= 1 << s
            if mask == 0:
                return None, None, ("", 0)
            data = self.book.calldata("cancelSlots", m.mid, mask)
            shape = ("cancelSlots", mask.bit_count())
        else:
            side, size, limit = job.args
            job.deadline = self._deadline()
            data = self.book.take_calldata(
                m.mid,
                _side_code(side),
                limit,
                size,
                max_orders=TAKE_MAX_ORDERS,
                deadline=job.deadline,
            )
            shape = ("take", 0)
        gas = await self._gas(data, shape)
        return await self.sender.send(self.book.address, data, gas=gas), None, shape

    def _deadline(self) -> int:
        """Unix second after which the book refuses a transaction: a requote or take that
        has no receipt within ``receipt_timeout_s`` is written off, and must not land later
        as a stale quote."""
        return math.ceil(time.time() + self.settings.receipt_timeout_s)

    async def _gas(self, data: bytes, shape: tuple[str, int]) -> int:
        """Estimate + margin, but never below what this shape of transaction used before.

        An estimate runs against the latest block, which may not yet include our own
        transactions in flight; the learned floor covers that.
        """
        assert self.sender is not None
        est = await self.sender.estimate(self.book.address, data)
        seen = self._gas_seen.get(shape, 0)
        gas = max(est, int(seen * (1 + self.settings.gas_margin)), GAS_FLOOR.get(shape[0], 0))
        if shape[0] == "requote":
            # the transactions before this one may change what each op writes
            gas += self.settings.gas_headroom_per_op * shape[1]
        return gas

    def _build_ops(self, m: _Market, batch: _Batch) -> tuple[list[int], _Undo]:
        undo = _Undo(m.symbol, retries=batch.retries)
        by_side: dict[int, list[tuple[int, int]]] = {BID: [], ASK: []}
        side_ops: dict[int, list[int]] = {BID: [], ASK: []}
        for cid in batch.cancels:
            slot = m.by_client.get(cid)
            if slot is None:
                continue  # already gone (filled, cancelled, rejected)
            by_side[m.slots[slot][1]].append((slot, cid))
        asks_first = self._asks_first(m, batch, by_side)
        now = time.time_ns()
        for req in batch.places:
            side = _side_code(req.side)
            m.prices[req.client_id] = req.price_ticks
            if by_side[side]:
                slot, old = by_side[side].pop(0)
                side_ops[side].append(
                    op_replace(slot, old, req.client_id, side, req.price_ticks, req.size_lots)
                )
                m.claim(slot, req.client_id, side)
                m.sent(req.client_id)
                undo.replaced.append((slot, old, req.client_id, side))
                continue
            slot_or_none = m.free_slot()
            if slot_or_none is None:
                self._events.append(
                    OrderRejected(m.symbol, req.client_id, now, "no free order slot")
                )
                continue
            side_ops[side].append(
                op_place(slot_or_none, req.client_id, side, req.price_ticks, req.size_lots)
            )
            m.claim(slot_or_none, req.client_id, side)
            m.sent(req.client_id)
            undo.placed.append((slot_or_none, req.client_id))
        for side, pairs in by_side.items():
            for slot, cid in pairs:
                side_ops[side].append(op_cancel(slot, cid))
                undo.cancels.append(cid)
        ops = side_ops[ASK] + side_ops[BID] if asks_first else side_ops[BID] + side_ops[ASK]
        for slot, cid in batch.raw_cancels:
            ops.append(op_cancel(slot, cid))
            undo.raw_cancels.append((slot, cid))
        if len(m.prices) > 4 * len(m.by_client) + 64:
            m.prices = {c: p for c, p in m.prices.items() if c in m.by_client}
        return ops, undo

    @staticmethod
    def _asks_first(m: _Market, batch: _Batch, by_side: dict[int, list[tuple[int, int]]]) -> bool:
        """Which side's ops run first in a requote. The ops run in order, so an old ask
        this batch replaces is still on the book while the bids are placed: after a jump
        up, a new bid at or above it would be rejected as a post-only cross (and the
        reverse after a jump down). The side moving away from the other goes first."""
        new_bids = [r.price_ticks for r in batch.places if r.side is Side.BUY]
        old_asks = [m.prices[c] for _, c in by_side[ASK] if c in m.prices]
        return bool(new_bids and old_asks and max(new_bids) >= min(old_asks))

    def _undo(self, undo: _Undo | None, reason: str) -> None:
        """A requote did not execute (or we cannot tell): its placements are reported
        rejected, its cancels are sent again.

        Cancels are retried with backoff until they go through (a cancel of an order that
        is gone is a no-op on chain, so a retry is always safe): the engine waits for them.
        A placement reported rejected that lands after all (a dropped or unconfirmed
        transaction mined later) is cancelled as soon as its event arrives.
        """
        if undo is None:
            return
        m = self._markets[undo.market]
        now = time.time_ns()
        cancels = list(undo.cancels)
        for slot, old, new, side in undo.replaced:
            m.release(slot, new)
            m.claim(slot, old, side)
            cancels.append(old)
            self._written_off.add((m.symbol, new))
            self._events.append(OrderRejected(m.symbol, new, now, reason))
        for slot, cid in undo.placed:
            m.release(slot, cid)
            self._written_off.add((m.symbol, cid))
            self._events.append(OrderRejected(m.symbol, cid, now, reason))
        if cancels or undo.raw_cancels:
            self._retry_cancels(m, cancels, undo.retries + 1, raw=undo.raw_cancels)

    def _retry_cancels(
        self,
        m: _Market,
        cancels: list[int],
        attempt: int,
        *,
        raw: list[tuple[int, int]] | None = None,
        delay: float | None = None,
    ) -> None:
        if attempt > MAX_CANCEL_RETRIES:
            log.error(
                "sei venue: giving up cancelling %s order(s) %s after %d attempts",
                m.symbol,
                cancels + [c for _, c in raw or ()],
                attempt - 1,
            )
            return
        if delay is None:
            delay = min(5.0, 0.1 * 2 ** (attempt - 1))
        raw = list(raw or ())

        def push() -> None:
            self._retries_due -= 1
            live = [c for c in cancels if c in m.by_client]
            if not (live or raw) or self._sender_task is None:
                return
            if m.queued is None:
                m.queued = _Batch(retries=attempt)
                self._jobs.append(_Job("requote", m.symbol))
            else:
                m.queued.retries = max(m.queued.retries, attempt)
            m.queued.cancels.extend(c for c in live if c not in m.queued.cancels)
            m.queued.raw_cancels.extend(raw)
            self._wake.set()

        self._retries_due += 1
        asyncio.get_running_loop().call_later(delay, push)

    def _retry_job(self, job: _Job) -> None:
        """Send a failed ``cancel_all`` again (with backoff): the engine waits for it. A
        failed take is not repeated here (the engine re-sends its flatten)."""
        if job.kind != "cancel_all" or job.attempt >= MAX_CANCEL_RETRIES:
            return
        again = _Job(job.kind, job.market, job.args, job.attempt + 1)

        def push() -> None:
            self._retries_due -= 1
            if self._sender_task is not None:
                self._jobs.append(again)
                self._wake.set()

        self._retries_due += 1
        asyncio.get_running_loop().call_later(min(5.0, 0.1 * 2**job.attempt), push)

    async def _await_receipt(
        self, sent: SentTx, undo: _Undo | None, shape: tuple[str, int], job: _Job
    ) -> None:
        assert self.sender is not None and self._inflight_sem is not None
        self._awaiting[id(sent)] = sent.sent_at
        try:
            receipt = await self.sender.wait(sent)
            self._awaiting.pop(id(sent), None)
            ms = (time.monotonic() - sent.sent_at) * 1e3
            self._lat_samples.append((time.monotonic(), ms))
            self.stats["txs"] += 1
            used = int(receipt["gasUsed"], 16)
            self.stats["gas_used"] += used
            self._gas_seen[shape] = max(self._gas_seen.get(shape, 0), used)
            for raw in receipt.get("logs") or []:
                if self.stream is not None:
                    self.stream.deliver(raw)
                else:
                    self._on_log(raw)
            self._sample_fresh_slots(str(receipt.get("transactionHash") or sent.tx_hash))
            self._take_settled(job, known=True)
        except TxReverted as exc:
            self.stats["reverted"] += 1
            self.stats["txs"] += 1
            log.warning("sei venue: %s", exc)
            self._undo(undo, f"transaction reverted: {exc.reason}")
            self._retry_job(job)
            self._take_settled(job, known=True)
        except Exception as exc:
            # any version of it (a fee bump signs the same call again at its nonce)
            landed = any(h.lower() in self._landed for h in sent.hashes)
            self._take_settled(job, known=landed)
            if landed:
                # its logs were seen (and handled): it landed; writing it off would report
                # live orders rejected and leave them on chain untracked
                log.warning(
                    "sei venue: no receipt for %s (%s), but its logs were seen: it landed",
                    sent.tx_hash,
                    exc,
                )
                self.stats["txs"] += 1
            elif isinstance(exc, TxDropped):
                self.stats["dropped"] += 1
                log.warning("sei venue: %s", exc)
                self._undo(undo, "transaction dropped")
                self._retry_job(job)
            else:
                log.warning("sei venue: waiting for %s failed: %s", sent.tx_hash, exc)
                self._undo(undo, f"receipt unavailable: {exc}")
                self._retry_job(job)
        finally:
            self._awaiting.pop(id(sent), None)
            self._inflight -= 1
            self._inflight_sem.release()

    def _sample_fresh_slots(self, tx_hash: str) -> None:
        """Off Sei, count the fresh slots of one receipt at a time (debug_traceTransaction,
        prestate diff) in the background, for :meth:`sei_gas_used`."""
        if not self._reprice() or not self._trace_ok:
            return
        if self._trace_task is not None and not self._trace_task.done():
            return

        async def trace() -> None:
            try:
                fresh, _ = await trace_fresh_slots(self.rpc, tx_hash)
            except Exception as exc:  # the node has no tracer: project with receipts alone
                self._trace_ok = False
                log.info("sei venue: no debug_traceTransaction (%s); gas not repriced", exc)
                return
            self._fresh["slots"] += fresh
            self._fresh["traced"] += 1

        self._trace_task = asyncio.create_task(trace(), name="flashmm-sei-fresh-slots")

    # ------------------------------------------------------------------ events
    def _accepted(self, m: _Market, slot: int, client_id: int, now: int) -> None:
        key = (m.symbol, client_id)
        if key in self._written_off:
            # reported rejected, then mined after all: nobody tracks it, take it off the book
            self._written_off.discard(key)
            log.warning(
                "sei venue: %s order %d landed after it was reported rejected; cancelling",
                m.symbol,
                client_id,
            )
        elif not m.ours(client_id):
            # placed by a transaction this process did not send (a requote of the last
            # run still pending at the restart, mined after the start-up reconciliation):
            # the engine does not track it, nothing would ever cancel it
            log.warning(
                "sei venue: %s order %d was not placed by this run (a transaction sent"
                " before the restart landed late); cancelling",
                m.symbol,
                client_id,
            )
        else:
            self._events.append(OrderAccepted(m.symbol, client_id, now))
            return
        # by slot and client id: a no-op on chain if it is filled first (its fills are
        # reported as any other); sent again only if its transaction fails
        self._retry_cancels(m, [], 1, raw=[(slot, client_id)], delay=0.0)

    def fees_at(self, symbol: str, pos: tuple[int, int]) -> tuple[int, int]:
        """(taker fee bps, maker rebate bps) in force at chain position (block, log index)."""
        hist = self._fees.get(symbol)
        if not hist:
            return 0, 0
        i = bisect.bisect_left(hist, (pos,)) - 1
        _, fee, rebate = hist[max(i, 0)]
        return fee, rebate

    def _fees_set(self, symbol: str, pos: tuple[int, int], fee: int, rebate: int) -> None:
        hist = self._fees.setdefault(symbol, [((-1, -1), 0, 0)])
        entry = (pos, fee, rebate)
        if entry not in hist:
            bisect.insort(hist, entry)
            log.info("sei venue: %s fees %d bps taker, %d bps rebate", symbol, fee, rebate)

    def _on_log(
        self, raw: dict[str, Any], *, ts_ns: int | None = None, replay: bool = False
    ) -> None:
        ev = decode_log(raw)
        tx_hash = str(raw.get("transactionHash") or "").lower()
        if tx_hash and not replay and tx_hash not in self._landed:
            self._landed.add(tx_hash)
            self._landed_order.append(tx_hash)
            if len(self._landed_order) > 10_000:
                self._landed.discard(self._landed_order.popleft())
        if ev is not None and ev.name == "FeesSet":
            symbol = self._by_id.get(int(ev.args["market"]))
            if symbol is not None:
                pos = (int(str(raw.get("blockNumber") or "0x0"), 16), ev.log_index)
                self._fees_set(
                    symbol, pos, int(ev.args["takerFeeBps"]), int(ev.args["makerRebateBps"])
                )
            return
        if ev is None or "info" not in ev.args:
            return
        me = self.address.lower()
        info = unpack_info(int(ev.args["info"]))
        symbol = self._by_id.get(info.market)
        if symbol is None:
            return
        m = self._markets[symbol]
        now = time.time_ns()
        fill_id = f"{ev.tx_hash}:{ev.log_index}"
        if ev.name == "Fill":
            # the chain's time of the fill: the block's, when the log carries it
            fill_ts = ts_ns
            if fill_ts is None and raw.get("blockTimestamp") is not None:
                fill_ts = int(str(raw["blockTimestamp"]), 16) * 1_000_000_000
            if fill_ts is None:
                fill_ts = now
            block = int(str(raw.get("blockNumber") or "0x0"), 16)
            maker = str(ev.args["maker"]).lower() == me
            taker = str(ev.args["taker"]).lower() == me
            bought = info.size if info.side == BID else -info.size  # by the maker
            lots = (bought if maker else 0) - (bought if taker else 0)
            if lots:
                self._fill_ledger.append((block, symbol, lots))
            fee_bps, rebate_bps = self.fees_at(symbol, (block, ev.log_index))
            tick_value, quote_one = self._units.get(symbol, (0, 1))
            quote_units = info.price * info.size * tick_value
            if maker:
                if info.extra == 0 and not replay:
                    m.release(info.slot, info.client_id)
                self._events.append(
                    Fill(
                        symbol,
                        info.client_id,
                        _side_of(info.side),
                        info.price,
                        info.size,
                        # the maker's rebate, rounded down per fill as the book credits it
                        -(quote_units * rebate_bps // 10_000) / quote_one,
                        Liquidity.MAKER,
                        fill_ts,
                        fill_id,
                    )
                )
            if taker:
                self._events.append(
                    Fill(
                        symbol,
                        0,
                        _side_of(info.side).opposite,
                        info.price,
                        info.size,
                        # the taker fee's share of this fill (the book rounds the take's total)
                        quote_units * fee_bps / 10_000 / quote_one,
                        Liquidity.TAKER,
                        fill_ts,
                        fill_id,
                    )
                )
            return
        if replay or str(ev.args.get("owner", "")).lower() != me:
            return
        if ev.name == "OrderPlaced":
            m.confirm(info.slot, info.client_id, info.side)
            self._accepted(m, info.slot, info.client_id, now)
        elif ev.name == "OrderReplaced":
            self._events.append(OrderCancelled(symbol, info.extra, now))
            # the old order is gone on chain: a replace written off (and undone: the slot
            # given back to the old order) that landed after all left the slot held by it
            # for good, as no later event names the old order again
            m.release(info.slot, info.extra)
            m.confirm(info.slot, info.client_id, info.side)
            self._accepted(m, info.slot, info.client_id, now)
        elif ev.name == "OrderCancelled":
            m.release(info.slot, info.client_id)
            self._events.append(OrderCancelled(symbol, info.client_id, now))
        elif ev.name == "OrderRejected":
            m.release(info.slot, info.client_id)
            reason = REJECT_REASONS.get(info.extra, f"rejected ({info.extra})")
            if not m.ours(info.client_id) and (symbol, info.client_id) not in self._written_off:
                # a placement of an earlier run's late transaction: not the engine's reject
                log.info(
                    "sei venue: %s order %d of an earlier run %s", symbol, info.client_id, reason
                )
                return
            self._events.append(
                OrderRejected(
                    symbol, info.client_id, now, reason, lasting=info.extra in LASTING_REJECTS
                )
            )
