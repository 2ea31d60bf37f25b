"""SeiVenue under chain and node faults where money is at stake: a transaction that was
sent although its answer was lost, a node behind the others, a transaction that lands
after it was written off. Each test reproduces the fault against anvil, through a
loopback proxy where a node's misbehaviour cannot be caused otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from chain_fixtures import ROLES, LocalChain, LoopbackServer, WsProxy
from pydantic import ValidationError

from flashmm.config import load_config
from flashmm.engine import Engine
from flashmm.events import FillEvent
from flashmm.ops.journal import Journal
from flashmm.ops.service import OpsServices
from flashmm.risk import RiskConfig
from flashmm.strategy.avellaneda import AvellanedaStrategy
from flashmm.types import (
    Fill,
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
from flashmm.venues.sei.abi import ASK, decode_log, op_place, unpack_info
from flashmm.venues.sei.book import BookClient
from flashmm.venues.sei.errors import TxDropped
from flashmm.venues.sei.keys import account_from_hex
from flashmm.venues.sei.settings import SeiVenueSettings
from flashmm.venues.sei.venue import SeiVenue

pytest_plugins = ["chain_fixtures"]
MKT = "SEI/USDC"
SEI = 1
SPEC = MarketSpec(MKT, Decimal("0.0001"), Decimal("1"), "seiusdt")


class FaultProxy(LoopbackServer):
    """JSON-RPC on 127.0.0.1 in front of anvil; ``hook(body)`` may answer a request itself
    (return a web.Response or a JSON-able reply) or return None to forward it."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.hook: Callable[[Any], Any] | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if self.hook is not None:
            reply = await self.hook(body)
            if isinstance(reply, web.StreamResponse):
                return reply
            if reply is not None:
                return web.json_response(reply)
        return web.json_response(await self.forward(body))


@pytest.fixture
async def proxy(chain: LocalChain) -> AsyncIterator[FaultProxy]:
    p = await FaultProxy(chain.rpc_url).start()
    yield p
    await p.stop()


def venue_on(chain: LocalChain, url: str, role: str = "venue", **kw: Any) -> SeiVenue:
    settings = SeiVenueSettings(
        rpc_url=url,
        chain_id=1328,
        book_address=chain.dep.book,
        markets={MKT: SEI},
        **{"ws_url": None, **kw},
    )
    return SeiVenue(settings, specs={MKT: SPEC}, account=account_from_hex(chain.key(role)))


async def collect(
    v: SeiVenue, want: Callable[[list[VenueEvent]], bool], timeout_s: float = 15.0
) -> list[VenueEvent]:
    events: list[VenueEvent] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events += v.poll(time.time_ns())
        if want(events):
            return events
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out; got {events}")


def of(events: list[VenueEvent], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


@pytest.fixture
async def fast_proxy(fast_chain: LocalChain) -> AsyncIterator[FaultProxy]:
    p = await FaultProxy(fast_chain.rpc_url).start()
    yield p
    await p.stop()


@contextlib.asynccontextmanager
async def running(
    chain: LocalChain,
    rpc: Any,
    proxy: FaultProxy | None = None,
    role: str = "venue",
    start: bool = True,
    **kw: Any,
) -> AsyncIterator[SeiVenue]:
    """A venue of ``role`` on ``chain`` (behind ``proxy`` where given), started unless
    ``start`` is false (the test starts it). Always cleaned up: the proxy's hook off, the
    venue's orders cancelled and its queue drained, the venue closed, and ``role``'s orders
    cancelled on chain directly (the module's chains are shared by its tests: an order left
    behind is one a later test's take may meet). The proxy fixture stops the proxy."""
    v = venue_on(chain, chain.rpc_url if proxy is None else proxy.url, role=role, **kw)
    try:
        if start:
            await v.start()
        yield v
    finally:
        if proxy is not None:
            proxy.hook = None
        with contextlib.suppress(Exception):
            v.cancel_all(None, 0)
            await v.idle()
        await v.aclose()
        await BookClient(rpc, chain.dep.book).cancel_all(chain.sender(rpc, role), SEI)


@contextlib.asynccontextmanager
async def automine_off(rpc: Any) -> AsyncIterator[None]:
    """Inside: anvil mines only on evm_mine. After: a block per transaction again."""
    await rpc.call("evm_setAutomine", [False])
    try:
        yield
    finally:
        await rpc.call("evm_setAutomine", [True])


@contextlib.asynccontextmanager
async def an_ask_to_take(
    chain: LocalChain, rpc: Any, slot: int, client_id: int
) -> AsyncIterator[None]:
    """maker2's ask of 20 lots at 3500, the only order on the book, for a test's take to
    meet; cancelled after."""
    await clear_book(chain, rpc)
    other = chain.sender(rpc, "maker2")
    book = BookClient(rpc, chain.dep.book)
    await book.requote(other, SEI, [op_place(slot, client_id, ASK, 3500, 20)])
    try:
        yield
    finally:
        await book.cancel_all(other, SEI)


async def take_through(
    v: SeiVenue, proxy: FaultProxy, hook: Callable[[Any], Any]
) -> tuple[int, list[VenueEvent], list[VenueEvent]]:
    """A take of 3 lots at 3500 with ``hook`` on the proxy: the position before it, the
    events up to its first fill and those polled a second later (a repeat of the take would
    be mined by then). The hook is off again after."""
    before = (await v.positions())[MKT]
    proxy.hook = hook
    v.take(MKT, Side.BUY, 3, 3500, time.time_ns())
    first = await collect(v, lambda e: len(of(e, Fill)) >= 1)
    await v.idle()
    await asyncio.sleep(1.0)  # a second take would be mined by now
    later = v.poll(time.time_ns())
    proxy.hook = None
    return before, first, later


async def _tried(v: SeiVenue) -> None:
    """Until the venue's sender has sent a transaction or a send of it failed."""
    assert v.sender is not None
    deadline = time.monotonic() + 15.0
    while v.sender.stats["sent"] == 0 and v.stats["send_errors"] == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def chain_orders(book: BookClient, owner: str) -> dict[int, int]:
    """client id -> price of ``owner``'s live orders on chain."""
    return {o.client_id: o.price for o in await book.open_orders(owner, SEI)}


async def clear_book(chain: LocalChain, rpc: Any) -> None:
    """Cancel every role's orders on the market: a take of a test meets its own orders only
    (the chain is shared by the module's tests)."""
    book = BookClient(rpc, chain.dep.book)
    for role in ROLES:
        if await chain_orders(book, chain.address(role)):
            await book.cancel_all(chain.sender(rpc, role), SEI)
    for role in ROLES:
        assert await chain_orders(book, chain.address(role)) == {}, role


async def wait_receipt(rpc_url: str, tx_hash: str, session: aiohttp.ClientSession) -> None:
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getTransactionReceipt",
            "params": [tx_hash],
        }
        async with session.post(rpc_url, json=body) as resp:
            if (await resp.json(content_type=None)).get("result") is not None:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{tx_hash} never mined")


async def test_a_take_whose_answer_was_lost_is_not_sent_twice(
    chain: LocalChain, proxy: FaultProxy, rpc_factory: Any
) -> None:
    """The node accepted and mined a take, but its answer to eth_sendRawTransaction was
    lost (a 502 from a gateway). The retry of the same bytes then hears "nonce too low":
    that is our own transaction, already mined, not a stale nonce. Signing the take again
    at the next nonce bought twice what the engine asked for."""
    from eth_utils import keccak

    rpc = rpc_factory(chain.rpc_url)
    lost: list[str] = []

    async def hook(body: Any) -> Any:
        send = isinstance(body, dict) and body.get("method") == "eth_sendRawTransaction"
        if send and not lost:
            reply = await proxy.forward(body)
            tx_hash = "0x" + keccak(bytes.fromhex(body["params"][0][2:])).hex()
            assert proxy.session is not None and "error" not in reply, reply
            await wait_receipt(chain.rpc_url, tx_hash, proxy.session)
            lost.append(tx_hash)
            return web.Response(status=502, text="bad gateway")
        return None

    async with (
        an_ask_to_take(chain, rpc, 60, 6001),
        running(chain, rpc, proxy, role="venue_taker") as v,
    ):
        before, _, ev = await take_through(v, proxy, hook)
        assert lost, "the fault was not injected"
        assert of(ev, Fill) == []
        assert (await v.positions())[MKT] == before + 3


class StaleNode:
    """A second node behind the pool: it answers eth_getLogs (and an eth_blockNumber in
    the same batch) as of block ``head``, while single eth_blockNumber calls reach the
    node at the tip."""

    def __init__(self, proxy: FaultProxy, head: int) -> None:
        self.proxy = proxy
        self.head = head
        self.log_calls = 0

    def _logs(self, item: dict[str, Any]) -> dict[str, Any] | None:
        flt = dict(item["params"][0])
        if int(flt.get("fromBlock", "0x0"), 16) > self.head:
            return {"jsonrpc": "2.0", "id": item["id"], "result": []}
        if int(flt.get("toBlock", hex(self.head)), 16) > self.head:
            flt["toBlock"] = hex(self.head)
        return {**item, "params": [flt]}

    async def __call__(self, body: Any) -> Any:
        items = body if isinstance(body, list) else [body]
        if not any(i.get("method") == "eth_getLogs" for i in items):
            return None
        self.log_calls += 1
        out = []
        for item in items:
            if item.get("method") == "eth_blockNumber":
                out.append({"jsonrpc": "2.0", "id": item["id"], "result": hex(self.head)})
                continue
            fwd = self._logs(item) if item.get("method") == "eth_getLogs" else item
            if fwd is not None and "result" in fwd:
                out.append(fwd)
            else:
                out.append(await self.proxy.forward(fwd))
        return out if isinstance(body, list) else out[0]


def without_receipts(stale: StaleNode) -> Callable[[Any], Any]:
    """``stale``'s node, which also answers every receipt with null (none in time)."""

    async def hook(body: Any) -> Any:
        if isinstance(body, dict) and body.get("method") == "eth_getTransactionReceipt":
            return {"jsonrpc": "2.0", "id": body["id"], "result": None}
        return await stale(body)

    return hook


async def test_a_node_behind_on_logs_loses_no_fill(
    chain: LocalChain, proxy: FaultProxy, rpc_factory: Any
) -> None:
    """Behind a load balancer, eth_blockNumber and eth_getLogs may reach different nodes.
    A node behind answers eth_getLogs for blocks it does not have yet with no logs; the
    stream took that as "complete to the head", so a fill in those blocks was never
    delivered and the journal's checkpoint moved past it (a restart did not replay it
    either). The stream now trusts a page only up to the head of the node that answered
    it."""
    rpc = rpc_factory(chain.rpc_url)
    book = BookClient(rpc, chain.dep.book)
    async with running(chain, rpc, proxy, log_poll_s=0.1) as v:
        v.requote(MKT, [], [OrderRequest(MKT, 1, Side.SELL, 3600, 5)], time.time_ns())
        await collect(v, lambda e: len(of(e, OrderAccepted)) == 1)
        stale = StaleNode(proxy, int(await rpc.call("eth_blockNumber"), 16))
        proxy.hook = stale
        receipt = await book.take(chain.sender(rpc, "venue_taker"), SEI, 0, 3600, 2)
        fill_block = int(receipt["blockNumber"], 16)
        assert fill_block > stale.head
        # the stream polls the node behind until the chain is well past the fill
        seen = stale.log_calls
        deadline = time.monotonic() + 15.0
        while (
            stale.log_calls < seen + 5
            or int(await rpc.call("eth_blockNumber"), 16) <= fill_block + 1
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        early = v.poll(time.time_ns())
        assert v.processed_block is None or v.processed_block < fill_block
        proxy.hook = None  # the node catches up
        ev = early + await collect(v, lambda e: len(of(e, Fill)) == 1)
        (fill,) = of(ev, Fill)
        assert (fill.client_id, fill.side, fill.size_lots) == (1, Side.SELL, 2)


async def test_a_dropped_receipt_does_not_resync_the_nonce_under_a_send(
    chain: LocalChain, proxy: FaultProxy, rpc_factory: Any
) -> None:
    """A transaction without a receipt in time resyncs the next nonce from the node. That
    resync ran without the nonce lock: while another send was between reserving its nonce
    and counting it, the node's pending count already included that send, which then
    counted itself once more, leaving a nonce gap (a node that queues future nonces holds
    every later transaction back, and they land long after they were written off)."""
    sender = chain.sender(rpc_factory(proxy.url), "spare", receipt_timeout_s=1.0)
    me = sender.address
    counted = asyncio.Event()
    first: list[str] = []

    async def hook(body: Any) -> Any:
        if not isinstance(body, dict):
            return None
        method = body.get("method")
        if method == "eth_getTransactionReceipt" and body["params"][0] in first:
            return {"jsonrpc": "2.0", "id": body["id"], "result": None}
        if method == "eth_getTransactionCount" and first:
            reply = await proxy.forward(body)
            counted.set()
            return reply
        if method == "eth_sendRawTransaction" and first:
            reply = await proxy.forward(body)
            # hold the answer until the resync has asked the node (bounded)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(counted.wait(), 4.0)
            return reply
        return None

    proxy.hook = hook
    try:
        a = await sender.send(me, b"", gas=21_000)
        first.append(a.tx_hash)
        waiting = asyncio.create_task(sender.wait(a))
        b = await sender.send(me, b"", gas=21_000)
        with pytest.raises(TxDropped):
            await waiting
        assert b.nonce == a.nonce + 1
        proxy.hook = None
        node = int(await sender.rpc.call("eth_getTransactionCount", [me, "pending"]), 16)
        async with sender.nonces.lock:
            assert await sender.nonces.current() == node
    finally:
        proxy.hook = None


async def test_an_order_seen_landing_is_not_written_off_when_its_receipt_is_late(
    chain: LocalChain, proxy: FaultProxy, rpc_factory: Any
) -> None:
    """The receipt of a placement stayed null past ``receipt_timeout_s`` (a node behind
    answered it) while the log stream had already seen the order land and reported it
    accepted. The venue then wrote the placement off (OrderRejected) and freed its slot:
    the order rested on chain with nobody tracking it. A transaction whose logs were seen
    has landed; it is not written off."""
    rpc = rpc_factory(chain.rpc_url)
    async with running(
        chain, rpc, proxy, log_poll_s=0.1, receipt_timeout_s=1.0, max_fee_bumps=0
    ) as v:

        async def hook(body: Any) -> Any:
            if isinstance(body, dict) and body.get("method") == "eth_getTransactionReceipt":
                reply = await proxy.forward(body)
                receipt = reply.get("result")
                if receipt is not None:
                    block = int(receipt["blockNumber"], 16)
                    deadline = time.monotonic() + 10.0
                    while time.monotonic() < deadline:
                        s = v.stream
                        if s is not None and s.complete_to is not None and s.complete_to >= block:
                            break
                        await asyncio.sleep(0.05)
                return {"jsonrpc": "2.0", "id": body["id"], "result": None}
            return None

        proxy.hook = hook
        v.requote(MKT, [], [OrderRequest(MKT, 7, Side.SELL, 3700, 1)], time.time_ns())
        assert v.sender is not None
        ev = await collect(v, lambda e: v.sender.stats["dropped"] >= 1 and not v._inflight)
        proxy.hook = None
        await asyncio.sleep(1.0)  # a write-off's cancel would have been sent and mined
        await v.idle()
        ev += v.poll(time.time_ns())
        assert [e.client_id for e in of(ev, OrderAccepted)] == [7]
        assert of(ev, OrderRejected) == []
        assert [o.client_id for o in await v.open_orders()] == [7]
        assert v._markets[MKT].by_client == {7: v._markets[MKT].by_client[7]}


async def test_a_replace_that_lands_after_it_was_written_off_frees_its_slot(
    chain: LocalChain, proxy: FaultProxy, rpc_factory: Any
) -> None:
    """A replace of order 7 by 8 got no receipt in time (and its logs were not seen yet):
    written off, the slot went back to 7. It had landed: OrderReplaced(7 -> 8) came later,
    8 was cancelled as written off, and the slot stayed held by 7, which no event names
    again (one order slot lost for good per such replace)."""
    rpc = rpc_factory(chain.rpc_url)
    async with running(
        chain, rpc, proxy, log_poll_s=0.1, receipt_timeout_s=1.0, max_fee_bumps=0
    ) as v:
        v.requote(MKT, [], [OrderRequest(MKT, 7, Side.SELL, 3700, 1)], time.time_ns())
        await collect(v, lambda e: len(of(e, OrderAccepted)) == 1)
        m = v._markets[MKT]
        slot = m.by_client[7]
        stale = StaleNode(proxy, int(await rpc.call("eth_blockNumber"), 16))
        proxy.hook = without_receipts(stale)
        v.requote(MKT, [7], [OrderRequest(MKT, 8, Side.SELL, 3701, 1)], time.time_ns())
        ev = await collect(v, lambda e: len(of(e, OrderRejected)) == 1)
        assert [r.client_id for r in of(ev, OrderRejected)] == [8]  # written off
        proxy.hook = None  # the logs come: 7 -> 8 landed; 8 is cancelled as written off
        ev += await collect(v, lambda e: 8 in [c.client_id for c in of(e, OrderCancelled)])
        await v.idle()
        ev += v.poll(time.time_ns())
        assert await v.open_orders() == []
        assert slot not in m.slots and m.by_client == {}, (m.slots, m.by_client)


async def test_a_take_whose_outcome_is_unknown_is_not_doubled(
    chain: LocalChain, proxy: FaultProxy, rpc_factory: Any
) -> None:
    """A flatten's take got no receipt in time and its logs were not seen yet (a node
    behind): written off, but it had landed. The engine retries a flatten every few
    seconds while its position is unchanged, and the venue sent each retry: the same size
    again, twice what was asked. A take now waits until the previous one's outcome is
    known: its receipt, or the logs of every block up to its deadline."""
    rpc = rpc_factory(chain.rpc_url)
    async with (
        an_ask_to_take(chain, rpc, 61, 6101),
        running(
            chain,
            rpc,
            proxy,
            role="venue_taker",
            log_poll_s=0.1,
            receipt_timeout_s=1.0,
            max_fee_bumps=0,
        ) as v,
    ):
        before = (await v.positions())[MKT]
        stale = StaleNode(proxy, int(await rpc.call("eth_blockNumber"), 16))
        proxy.hook = without_receipts(stale)
        v.take(MKT, Side.BUY, 3, 3500, time.time_ns())
        assert v.sender is not None
        await collect(v, lambda e: v.sender.stats["dropped"] >= 1 and not v._inflight)
        v.take(MKT, Side.BUY, 3, 3500, time.time_ns())  # the engine's retry: held back
        assert not v._jobs and not v._inflight
        proxy.hook = None  # the node catches up: the first take's fill arrives
        ev = await collect(v, lambda e: len(of(e, Fill)) >= 1)
        deadline = time.monotonic() + 15.0
        while MKT in v._take_pending:  # settled once the logs past its deadline are read
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        ev += v.poll(time.time_ns())
        assert sum(f.size_lots for f in of(ev, Fill)) == 3
        assert (await v.positions())[MKT] == before + 3
        v.take(MKT, Side.BUY, 1, 3500, time.time_ns())  # and takes go out again
        ev = await collect(v, lambda e: len(of(e, Fill)) >= 1)
        assert (await v.positions())[MKT] == before + 4


class Records(logging.Handler):
    """The venue's log records (they go to loguru, not to the root logger)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.target = logging.getLogger("flashmm.venues.sei")

    def __enter__(self) -> Records:
        self.target.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.target.removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings(self, word: str) -> list[str]:
        msgs = [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]
        return [m for m in msgs if word in m]


def sends(body: Any) -> list[str]:
    """The raw transactions of a request (single or batch) to eth_sendRawTransaction."""
    items = body if isinstance(body, list) else [body]
    return [i["params"][0] for i in items if i.get("method") == "eth_sendRawTransaction"]


def recording(raws: list[str]) -> Callable[[Any], Any]:
    """A proxy hook that adds the raw transactions sent through it to ``raws``."""

    async def hook(body: Any) -> Any:
        raws.extend(sends(body))
        return None

    return hook


async def held(rpc: Any, sender_address: str, nonce: int) -> dict[str, Any]:
    """The transaction of ``sender_address`` at ``nonce`` in anvil's pool."""
    pool = await rpc.call("txpool_content")
    for part in ("pending", "queued"):
        for addr, txs in (pool.get(part) or {}).items():
            if addr.lower() == sender_address.lower() and str(nonce) in txs:
                return dict(txs[str(nonce)])
    raise AssertionError(f"no transaction of {sender_address} at nonce {nonce} in the pool")


async def test_a_transaction_of_another_process_at_our_nonce_is_not_fought(
    fast_chain: LocalChain, fast_proxy: FaultProxy, rpc_factory: Any
) -> None:
    """Another process signing with the same key (a second instance of the bot, an
    operator's script) sent a transaction at the nonce the venue holds next, and the chain
    has not mined it yet. The venue's send at that nonce heard "replacement transaction
    underpriced", failed, and kept its nonce: every later send failed the same way for as
    long as that transaction stayed pending (placements reported rejected, cancels and
    takes not sent). The nonce is taken: the venue moves past it (it never outbids the
    transaction there, which someone is waiting on), once, with a warning."""
    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    sent: list[str] = []
    fast_proxy.hook = recording(sent)
    async with (
        running(chain, rpc, fast_proxy, role="venue", log_poll_s=0.1) as v,
        automine_off(rpc),
    ):
        with Records() as records:
            other = chain.sender(rpc, "venue", priority_fee_gwei=2.0)
            theirs = await other.send(other.address, b"", gas=21_000)
            sent.clear()
            v.requote(MKT, [], [OrderRequest(MKT, 1, Side.SELL, 3600, 1)], time.time_ns())
            assert v.sender is not None
            await _tried(v)
            await rpc.call("evm_mine")
            ev = await collect(v, lambda e: bool(of(e, OrderAccepted) or of(e, OrderRejected)))
            await v.idle()
            ev += v.poll(time.time_ns())
        assert of(ev, OrderRejected) == [], of(ev, OrderRejected)
        assert [a.client_id for a in of(ev, OrderAccepted)] == [1]
        receipt = await rpc.call("eth_getTransactionReceipt", [theirs.tx_hash])
        assert receipt is not None and receipt["status"] == "0x1"  # theirs was not replaced
        assert len(sent) == 2, sent  # the refused try and the one at the next nonce
        assert len(records.warnings(f"nonce {theirs.nonce}")) == 1, records.records


async def test_idle_waits_for_a_failed_cancel_all_to_be_sent_again(
    fast_chain: LocalChain, fast_proxy: FaultProxy, rpc_factory: Any
) -> None:
    """A cancel_all whose send failed is sent again after a backoff. idle() ("nothing
    queued or in flight") returned during that backoff, and the close behind it dropped the
    retry: the orders rested on the book after the venue was gone (a shutdown's wait, and
    the cleanup of these tests, which left asks for the next test's take to meet)."""
    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    book = BookClient(rpc, chain.dep.book)
    me = chain.address("venue")
    await clear_book(chain, rpc)
    refused: list[str] = []
    async with running(chain, rpc, fast_proxy, role="venue", log_poll_s=0.1) as v:
        v.requote(MKT, [], [OrderRequest(MKT, 1, Side.SELL, 3600, 1)], time.time_ns())
        await collect(v, lambda e: bool(of(e, OrderAccepted)))

        async def refuse_once(body: Any) -> Any:
            if sends(body) and not refused:
                refused.extend(sends(body))
                return {
                    "jsonrpc": "2.0",
                    "id": body["id"],
                    "error": {"code": -32603, "message": "internal error"},
                }
            return None

        fast_proxy.hook = refuse_once
        v.cancel_all(None, 0)
        await v.idle()
        assert refused, "the fault was not injected"
        assert await chain_orders(book, me) == {}


async def test_a_pending_transaction_of_the_last_run_the_node_does_not_count(
    fast_chain: LocalChain, fast_proxy: FaultProxy, rpc_factory: Any
) -> None:
    """The bot restarted while a requote of its last run was still pending, and the count
    of pending transactions came from a node without it in its pool (a gateway's other
    node): the venue started at that transaction's nonce. Every send heard "replacement
    transaction underpriced" and failed, for as long as the old transaction was pending.
    The node holds a transaction at that nonce: the venue's go after it, and the old one is
    left alone (outbidding it would cancel a requote whose orders may already be counted
    on)."""
    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    proxy = fast_proxy

    async def hook(body: Any) -> Any:
        # a node that counts only mined transactions in "pending"
        if isinstance(body, dict) and body.get("method") == "eth_getTransactionCount":
            return await proxy.forward({**body, "params": [body["params"][0], "latest"]})
        return None

    proxy.hook = hook
    async with (
        running(chain, rpc, proxy, role="venue_taker", start=False, log_poll_s=0.1) as v,
        automine_off(rpc),
    ):
        last_run = chain.sender(rpc, "venue_taker")
        book = BookClient(rpc, chain.dep.book)
        old = await book.send_requote(last_run, SEI, [op_place(9, 50, ASK, 3650, 1)], 300_000)
        await v.start()
        v.requote(MKT, [], [OrderRequest(MKT, 2, Side.SELL, 3600, 1)], time.time_ns())
        assert v.sender is not None
        await _tried(v)
        await rpc.call("evm_mine")
        # blocks again for the venue's cancel of order 50, which idle() waits for
        await rpc.call("evm_setAutomine", [True])
        ev = await collect(v, lambda e: 2 in [a.client_id for a in of(e, OrderAccepted)])
        await v.idle()
        ev += v.poll(time.time_ns())
        assert of(ev, OrderRejected) == [], of(ev, OrderRejected)
        assert (await rpc.call("eth_getTransactionReceipt", [old.tx_hash]))["status"] == "0x1"
        # (the old requote's order 50, which this run did not place, is then cancelled:
        # test_a_requote_of_the_last_run_that_lands_after_the_start_is_taken_off_the_book)
        assert 2 in [o.client_id for o in await v.open_orders()]


class Restarted:
    """The bot of a new run, in-process: a venue, an engine and the ops services that
    recover from the journal and reconcile with the chain before quoting is released."""

    def __init__(
        self, chain: LocalChain, url: str, dirs: tuple[Path, Path], role: str, *more: str
    ) -> None:
        data, sock = dirs
        self.venue = venue_on(chain, url, role=role, log_poll_s=0.1)
        self.engine = Engine([SPEC], self.venue, AvellanedaStrategy({}), risk=RiskConfig())
        sets = [
            f"control.data_dir={data}",
            f"control.socket_path={sock / 'gap.sock'}",
            "name=gap",
            "ui.panel=false",
            *more,
        ]
        self.ops = OpsServices(load_config("configs/paper.yaml", sets), self.engine, self.venue)
        self.task: asyncio.Task[None] | None = None
        self.fills: list[Fill] = []

    async def start(self) -> None:
        await self.ops.start()
        await self.venue.start()
        self.task = asyncio.create_task(self.ops.task(self.engine))
        deadline = time.monotonic() + 15.0
        while not self.ops.ready:
            assert time.monotonic() < deadline, "not ready"
            await asyncio.sleep(0.02)

    def pump(self) -> None:
        """What the engine's loop does with the venue's events."""
        n = len(self.engine.outbox)
        self.engine.pump_venue(time.time_ns())
        self.fills += [e.fill for e in list(self.engine.outbox)[n:] if isinstance(e, FillEvent)]

    async def until(self, what: str, cond: Callable[[], Any], timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.pump()
            if await cond():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        with contextlib.suppress(Exception):
            await self.venue.aclose()
        await self.ops.aclose()


@contextlib.asynccontextmanager
async def restarted(
    chain: LocalChain, rpc: Any, url: str, dirs: tuple[Path, Path]
) -> AsyncIterator[Restarted]:
    """A new run of the bot as "spare" on ``url``, not started yet, with automine off (a
    last run's requote stays pending until evm_mine). After: automine on, the bot stopped
    and the role's orders cancelled on chain."""
    await rpc.call("evm_setAutomine", [False])
    bot = Restarted(chain, url, dirs, "spare")
    try:
        yield bot
    finally:
        await rpc.call("evm_setAutomine", [True])
        await bot.stop()
        await BookClient(rpc, chain.dep.book).cancel_all(chain.sender(rpc, "spare"), SEI)


async def test_a_requote_of_the_last_run_that_lands_after_the_start_is_taken_off_the_book(
    fast_chain: LocalChain, rpc_factory: Any, dirs: tuple[Path, Path]
) -> None:
    """The bot restarted while a requote of its last run was still pending; it landed after
    the new run had reconciled with the chain (which adopts or cancels what is on chain at
    that moment). The venue reported the order it placed as accepted, the engine tracks no
    such order and ignored it: it rested on chain at its stale price, never cancelled by a
    requote and missing from the status. The venue knows the client ids this run placed:
    an order it did not place is cancelled, with one warning naming it."""
    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    book = BookClient(rpc, chain.dep.book)
    me = chain.address("spare")
    async with restarted(chain, rpc, chain.rpc_url, dirs) as bot:
        last_run = chain.sender(rpc, "spare")
        old = await book.send_requote(last_run, SEI, [op_place(7, 70, ASK, 3700, 1)], 300_000)
        with Records() as records:
            await bot.start()
            assert bot.ops.recovery["reconcile"]["orphans"] == []  # nothing on chain yet
            await rpc.call("evm_mine")  # the last run's requote lands now
            assert (await rpc.call("eth_getTransactionReceipt", [old.tx_hash]))["status"] == "0x1"
            await rpc.call("evm_setAutomine", [True])
            await bot.until(
                "the last run's order off the book",
                lambda: _gone(book, me, 70),
            )
            await bot.venue.idle()
            bot.pump()
        assert 70 not in bot.engine.markets[MKT].orders
        warned = records.warnings(f"{MKT} order 70 ")
        assert len(warned) == 1, [r.getMessage() for r in records.records]
        assert bot.engine.acct.positions[MKT].lots == 0


async def test_a_crash_before_the_journal_recorded_a_requote_does_not_reuse_its_client_ids(
    fast_chain: LocalChain, rpc_factory: Any, dirs: tuple[Path, Path]
) -> None:
    """The last run crashed right after it sent a requote and before its journal recorded
    the order: the journal's highest client id is 6, the pending transaction places 7. A new
    run counting on from the journal's 6 placed its own order 7 too, and when the old one
    landed both passed for this run's: the old one rested untracked. The new run starts
    its ids well past the journal's, the old order is cancelled, the new one stays."""
    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    book = BookClient(rpc, chain.dep.book)
    me = chain.address("spare")
    data, _ = dirs
    with Journal(data, name="gap", specs={MKT: SPEC}) as j:
        j.order_event(Order(MKT, 6, Side.SELL, 3690, 1, 0, OrderState.DONE, 1), note="filled")
        j.flush()
    async with restarted(chain, rpc, chain.rpc_url, dirs) as bot:
        last_run = chain.sender(rpc, "spare")
        await book.send_requote(last_run, SEI, [op_place(7, 7, ASK, 3700, 1)], 300_000)
        with Records() as records:
            await bot.start()
            ms = bot.engine.markets[MKT]
            # the engine quotes: one ask at its next client id
            now = time.time_ns()
            req = bot.engine._track(
                ms, OrderRequest(MKT, ms.next_client_id, Side.SELL, 3650, 1), now
            )
            ms.next_client_id += 1
            bot.engine._send(ms, [], [req], now)
            assert bot.venue.sender is not None
            deadline = time.monotonic() + 15.0
            while bot.venue.sender.stats["sent"] == 0:
                assert time.monotonic() < deadline, "the requote was not sent"
                await asyncio.sleep(0.02)
            await rpc.call("evm_mine")  # the last run's requote and this run's land together
            await rpc.call("evm_setAutomine", [True])
            await bot.until("the last run's order off the book", lambda: _gone(book, me, 7))
            await bot.venue.idle()
            bot.pump()
        assert (await chain_orders(book, me)) == {req.client_id: 3650}
        assert ms.orders[req.client_id].state is OrderState.OPEN
        assert list(ms.orders) == [req.client_id]
        warned = records.warnings(f"{MKT} order 7 ")
        assert len(warned) == 1, [r.getMessage() for r in records.records]


async def _gone(book: BookClient, owner: str, client_id: int) -> bool:
    return client_id not in await chain_orders(book, owner)


async def test_a_fill_of_a_last_run_order_before_its_cancel_lands_is_booked_once(
    fast_chain: LocalChain, fast_proxy: FaultProxy, rpc_factory: Any, dirs: tuple[Path, Path]
) -> None:
    """The order a late requote of the last run placed is filled before the venue's cancel
    of it lands: the fill is booked once (the position is the chain's), the cancel finds
    nothing to cancel, and the order is not on chain."""
    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    book = BookClient(rpc, chain.dep.book)
    me = chain.address("spare")
    proxy = fast_proxy
    release = asyncio.Event()
    held_sends: list[str] = []

    async def hold(body: Any) -> Any:
        # the venue's transactions wait here until the taker's take has landed
        if sends(body):
            held_sends.extend(sends(body))
            await release.wait()
        return None

    await clear_book(chain, rpc)  # the take below must meet order 71 and nothing else
    async with restarted(chain, rpc, proxy.url, dirs) as bot:
        try:
            last_run = chain.sender(rpc, "spare")
            old = await book.send_requote(last_run, SEI, [op_place(7, 71, ASK, 3700, 1)], 300_000)
            await bot.start()
            before = (await bot.venue.positions())[MKT]
            proxy.hook = hold
            await rpc.call("evm_mine")  # the last run's requote lands now
            assert (await rpc.call("eth_getTransactionReceipt", [old.tx_hash]))["status"] == "0x1"
            deadline = time.monotonic() + 15.0
            while not held_sends:  # the venue sent its cancel of order 71
                assert time.monotonic() < deadline, "no cancel sent"
                bot.pump()
                await asyncio.sleep(0.02)
            taker = chain.sender(rpc, "taker")
            take = await taker.send(book.address, book.take_calldata(SEI, 0, 3700, 1), gas=600_000)
            await rpc.call("evm_mine")
            receipt = await rpc.call("eth_getTransactionReceipt", [take.tx_hash])
            assert receipt["status"] == "0x1"
            assert filled_orders(receipt) == [(me.lower(), 71)]  # before the venue's cancel
            release.set()
            await rpc.call("evm_setAutomine", [True])
            await rpc.call("evm_mine")
            await bot.until("the fill", lambda: _true(bool(bot.fills)))
            await bot.venue.idle()
            await asyncio.sleep(0.5)  # any repeat of the fill would arrive now
            bot.pump()
            assert [(f.client_id, f.size_lots, f.side) for f in bot.fills] == [(71, 1, Side.SELL)]
            assert bot.engine.acct.positions[MKT].lots == -1
            assert (await bot.venue.positions())[MKT] == before - 1
            assert 71 not in await chain_orders(book, me)
            assert 71 not in bot.engine.markets[MKT].orders
        finally:
            release.set()  # the venue's held transactions go on: it stops after them


async def _true(value: bool) -> bool:
    return value


def filled_orders(receipt: dict[str, Any]) -> list[tuple[str, int]]:
    """(maker, client id) of each Fill log of a receipt."""
    out = []
    for raw in receipt["logs"]:
        ev = decode_log(raw)
        if ev is not None and ev.name == "Fill":
            out.append((str(ev.args["maker"]).lower(), unpack_info(int(ev.args["info"])).client_id))
    return out


REFUSALS: dict[str, Callable[[], Any]] = {
    # one error object for the whole batch (geth with batches turned off, many gateways)
    "error object": lambda: {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "batch requests are not supported"},
    },
    "HTTP 400": lambda: web.Response(status=400, text="batch requests are not allowed"),
    "a list of one error": lambda: [
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32005, "message": "batch not allowed"}}
    ],
}


class NoBatches:
    """A gateway that refuses JSON-RPC batches; behind it, optionally, eth_getLogs reaches a
    node ``lag`` blocks behind the one answering eth_blockNumber."""

    def __init__(self, proxy: FaultProxy, refusal: Callable[[], Any], lag: int = 0) -> None:
        self.proxy = proxy
        self.refusal = refusal
        self.lag = lag
        self.refused = 0
        self.log_calls = 0

    async def __call__(self, body: Any) -> Any:
        if isinstance(body, list):
            self.refused += 1
            return self.refusal()
        if body.get("method") != "eth_getLogs":
            return None
        self.log_calls += 1
        tip = await self.proxy.forward({"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber"})
        behind = int(tip["result"], 16) - self.lag
        flt = dict(body["params"][0])
        if int(flt.get("fromBlock", "0x0"), 16) > behind:
            return {"jsonrpc": "2.0", "id": body["id"], "result": []}
        if int(flt.get("toBlock", hex(behind)), 16) > behind:
            flt["toBlock"] = hex(behind)
        return await self.proxy.forward({**body, "params": [flt]})


@pytest.mark.parametrize(("refusal", "lag"), [(r, 0) for r in REFUSALS] + [("error object", 3)])
async def test_a_gateway_that_refuses_batches_loses_no_fill(
    chain: LocalChain, proxy: FaultProxy, rpc_factory: Any, refusal: str, lag: int
) -> None:
    """The log stream asks eth_blockNumber and eth_getLogs in one JSON-RPC batch (so one
    node answers both and a page counts complete only to that node's head). A gateway that
    refuses batches made every page fail: the stream stalled for good, retrying with a
    warning every few seconds, and the fills of other traders' takes on our quotes were
    never delivered. The venue now notices the refusal once (one warning), then asks the
    two calls one by one and counts a page complete only a margin behind the head it read
    first, so a node a few blocks behind on eth_getLogs does not make it skip a fill."""
    gateway = NoBatches(proxy, REFUSALS[refusal], lag)
    proxy.hook = gateway
    rpc = rpc_factory(chain.rpc_url)
    book = BookClient(rpc, chain.dep.book)
    taker = chain.sender(rpc, "venue_taker")
    async with running(chain, rpc, proxy, start=False, log_poll_s=0.1) as v:
        with Records() as records:
            await v.start()
            before = (await v.positions())[MKT]
            v.requote(MKT, [], [OrderRequest(MKT, 3, Side.SELL, 3600, 5)], time.time_ns())
            ev = await collect(v, lambda e: len(of(e, OrderAccepted)) == 1)
            for size in (1, 2):
                await book.take(taker, SEI, 0, 3600, size)
            ev += await collect(v, lambda e: sum(f.size_lots for f in of(e, Fill)) >= 3)
            await v.idle()
            ev += v.poll(time.time_ns())
            after = (await v.positions())[MKT]
            ev += v.poll(time.time_ns())
        fills = of(ev, Fill)
        assert sorted(f.size_lots for f in fills) == [1, 2], fills
        assert {(f.client_id, f.side) for f in fills} == {(3, Side.SELL)}
        assert after == before - 3
        assert gateway.refused >= 1 and gateway.log_calls >= 1
        assert len(records.warnings("batch")) == 1, [r.getMessage() for r in records.records]


GWEI = 10**9


#: the base fee the test chain mines at outside a spike
CALM_BASE_FEE = GWEI // 1000


class SpikeMiner:
    """Mines a block every 0.4 s (automine off), at a base fee held at ``spike`` wei while
    ``spike`` is set (a fee spike that lasts), else at ``CALM_BASE_FEE``; ``blocks``
    counts the blocks it mined."""

    def __init__(self, rpc: Any) -> None:
        self.rpc = rpc
        self.spike: int | None = None
        self.blocks = 0
        self.running = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SpikeMiner:
        await self.rpc.call("evm_setAutomine", [False])
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # back to a low base fee for the next tests
        await self.rpc.call("anvil_setNextBlockBaseFeePerGas", [hex(CALM_BASE_FEE)])
        await self.rpc.call("evm_setAutomine", [True])
        await self.rpc.call("evm_mine")

    async def _run(self) -> None:
        while True:
            await self.running.wait()
            base = CALM_BASE_FEE if self.spike is None else self.spike
            await self.rpc.call("anvil_setNextBlockBaseFeePerGas", [hex(base)])
            await self.rpc.call("evm_mine")
            self.blocks += 1
            await asyncio.sleep(0.4)

    async def until(self, what: str, cond: Callable[[], Any], blocks: int) -> None:
        """Wait for ``cond()`` while at most ``blocks`` more blocks are mined."""
        last = self.blocks + blocks
        deadline = time.monotonic() + 120.0  # only against a hung chain
        while not await cond():
            if self.blocks > last or time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {blocks} blocks")
            await asyncio.sleep(0.05)


async def _sent(v: SeiVenue, n: int) -> None:
    """Until the venue's sender has sent ``n`` transactions in all."""
    assert v.sender is not None
    deadline = time.monotonic() + 15.0
    while v.sender.stats["sent"] < n:
        assert time.monotonic() < deadline, "not sent"
        assert v.stats["send_errors"] == 0
        await asyncio.sleep(0.02)


async def test_a_requote_stuck_below_a_base_fee_spike_is_replaced_and_the_cancels_land(
    fast_chain: LocalChain, rpc_factory: Any
) -> None:
    """A requote was in the pool when the base fee jumped from a fraction of a gwei to 50
    gwei (more than twice what its maxFeePerGas allowed) and stayed there. Nothing of ours
    was mined for ``receipt_timeout_s`` (20 s): the requote, and behind it at the next
    nonce the cancel_all that pulls the quotes, while the old quote rested on the book
    (anvil even drops such a transaction from its pool and our rebroadcast was refused
    for its fee). No breaker saw it: no error until the drop, the latency probes answered
    fast. The stuck requote is now replaced at its nonce with the same call at fees above
    the spike (one warning naming the nonce), lands, and the cancel_all behind it too."""
    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    # a receipt timeout no slow machine reaches: the requote must land, not be written off
    async with running(chain, rpc, log_poll_s=0.1, receipt_timeout_s=60.0) as v:
        assert v.sender is not None
        v.requote(MKT, [], [OrderRequest(MKT, 1, Side.SELL, 3600, 1)], time.time_ns())
        ev = await collect(v, lambda e: len(of(e, OrderAccepted)) == 1)
        with Records() as records:
            async with SpikeMiner(rpc) as miner:
                v.requote(MKT, [1], [OrderRequest(MKT, 2, Side.SELL, 3601, 1)], time.time_ns())
                await _sent(v, 2)
                nonce = v.sender.nonces._next
                assert nonce is not None
                stuck = await held(rpc, v.address, nonce - 1)
                assert int(stuck["maxFeePerGas"], 16) < 50 * GWEI
                miner.spike = 50 * GWEI
                miner.running.set()
                v.cancel_all(None, time.time_ns())  # the engine pulls its quotes

                async def off_the_book() -> bool:
                    ev.extend(v.poll(time.time_ns()))
                    return not v._inflight and not v._jobs and await v.open_orders() == []

                await miner.until("the requote and the cancel_all landed", off_the_book, 100)
                ev += v.poll(time.time_ns())
        assert [e.client_id for e in of(ev, OrderAccepted)] == [1, 2]
        assert sorted(e.client_id for e in of(ev, OrderCancelled)) == [1, 2]
        assert of(ev, OrderRejected) == []
        assert v.sender.stats["dropped"] == 0 and v.stats["reverted"] == 0
        # the stuck requote was replaced; the cancel_all behind it, signed at the same low
        # fees, may have been sent before the requote's bump and then needed its own
        requote_bumps = records.warnings(f"nonce {nonce - 1} of")
        assert 1 <= len(requote_bumps) <= v.settings.max_fee_bumps
        bumps = records.warnings("not mined after")  # one warning per bump, any nonce
        assert len(bumps) == v.sender.stats["fee_bumps"], [r.getMessage() for r in records.records]
        assert len(bumps) <= 2 * v.settings.max_fee_bumps
        # in status and the metrics (flashmm_venue_stat{stat="tx_fee_bumps"}), to alert on
        assert v.status(60.0)["tx_fee_bumps"] == v.sender.stats["fee_bumps"]
        assert not records.warnings("another transaction")


async def test_a_take_stuck_below_a_base_fee_spike_is_replaced_and_fills_once(
    fast_chain: LocalChain, rpc_factory: Any
) -> None:
    """A take stuck in the pool by a base fee spike is replaced at its nonce with higher
    fees: the old and the new bytes are one take, so it fills once (one fill, the position
    moved by its size once) and the market is free for the next take."""
    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    async with (
        an_ask_to_take(chain, rpc, 62, 6201),
        running(chain, rpc, role="venue_taker", log_poll_s=0.1, receipt_timeout_s=60.0) as v,
    ):
        assert v.sender is not None
        before = (await v.positions())[MKT]
        ev: list[VenueEvent] = []
        async with SpikeMiner(rpc) as miner:
            v.take(MKT, Side.BUY, 3, 3500, time.time_ns())
            await _sent(v, 1)
            miner.spike = 50 * GWEI
            miner.running.set()

            async def settled() -> bool:
                ev.extend(v.poll(time.time_ns()))
                return MKT not in v._take_pending and bool(of(ev, Fill))

            await miner.until("the take landed", settled, 100)
            await asyncio.sleep(0.5)
            ev += v.poll(time.time_ns())
        assert v.sender.stats["fee_bumps"] >= 1
        assert [f.size_lots for f in of(ev, Fill)] == [3]
        assert (await v.positions())[MKT] == before + 3


def _fees_of(raw_hex: str) -> tuple[int, int, int]:
    """(nonce, maxFeePerGas, maxPriorityFeePerGas) of a signed type-2 transaction."""
    import rlp  # type: ignore[import-untyped]

    raw = bytes.fromhex(raw_hex[2:])
    assert raw[0] == 2
    fields = rlp.decode(raw[1:])
    nonce, tip, max_fee = (int.from_bytes(f, "big") for f in fields[1:4])
    return nonce, max_fee, tip


async def test_a_fee_bump_stops_at_the_cap_and_says_so_once(
    fast_chain: LocalChain, fast_proxy: FaultProxy, rpc_factory: Any
) -> None:
    """The base fee jumps above ``max_fee_gwei``: a stuck requote is bumped no higher than
    the cap, and once the cap leaves no room for a replacement one error says so; no
    transaction is ever signed above the cap. When the spike is over, the requote lands."""
    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    raws: list[str] = []
    fast_proxy.hook = recording(raws)
    cap = 5.0
    async with running(
        chain,
        rpc,
        fast_proxy,
        log_poll_s=0.1,
        receipt_timeout_s=60.0,
        max_fee_gwei=cap,
        fee_bump_after_s=1.0,
    ) as v:
        assert v.sender is not None
        with Records() as records:
            async with SpikeMiner(rpc) as miner:
                v.requote(MKT, [], [OrderRequest(MKT, 4, Side.SELL, 3600, 1)], time.time_ns())
                await _sent(v, 1)
                miner.spike = 50 * GWEI
                miner.running.set()

                async def at_cap() -> bool:
                    return bool([r for r in records.records if r.levelno >= logging.ERROR])

                await miner.until("the error at the cap", at_cap, 200)
                miner.spike = None  # the spike is over: the base fee falls back
                ev = await collect(v, lambda e: len(of(e, OrderAccepted)) == 1, 60.0)
            await asyncio.sleep(1.0)  # any further bump or error would be logged by now
        errors = [r.getMessage() for r in records.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "max_fee_gwei" in errors[0], errors
        assert 1 <= v.sender.stats["fee_bumps"] <= v.settings.max_fee_bumps
        fees = [_fees_of(r) for r in raws]
        assert fees and all(max_fee <= cap * GWEI for _, max_fee, _ in fees), fees
        assert max(max_fee for _, max_fee, _ in fees) == cap * GWEI  # bumped up to the cap
        assert of(ev, OrderRejected) == []


async def test_a_stuck_transaction_counts_in_the_venue_latency_while_it_is_stuck(
    fast_chain: LocalChain, rpc_factory: Any
) -> None:
    """A transaction stuck in the pool (a requote under a base fee spike, fee bumps off)
    gave no latency sample until its receipt or its write-off: the idle probes answered
    fast, so the venue_latency breaker stayed closed while nothing of ours could land.
    Its age so far now counts as a sample: the p99 passes 3 s while it is stuck."""
    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    async with running(chain, rpc, log_poll_s=0.1, receipt_timeout_s=60.0, max_fee_bumps=0) as v:
        async with SpikeMiner(rpc) as miner:
            v.requote(MKT, [], [OrderRequest(MKT, 5, Side.SELL, 3600, 1)], time.time_ns())
            await _sent(v, 1)
            miner.spike = 50 * GWEI
            miner.running.set()

            async def slow() -> bool:
                p99 = v.receipt_p99_ms()
                return p99 is not None and p99 >= 3000.0

            await miner.until("the stuck requote in the venue latency", slow, 100)
            assert v.stats["txs"] == 0  # no receipt yet: it is the stuck one that counts
            miner.spike = None  # the spike is over: it lands
            ev = await collect(v, lambda e: len(of(e, OrderAccepted)) == 1, 60.0)
        assert [e.client_id for e in of(ev, OrderAccepted)] == [5]
        # its receipt wait ends too (the logs may report it landed a poll earlier)
        deadline = time.monotonic() + 60.0  # only against a hung chain
        while v._awaiting:
            assert time.monotonic() < deadline, v._awaiting
            await asyncio.sleep(0.05)


async def test_sei_wording_for_our_own_bytes_counts_as_sent(
    chain: LocalChain, proxy: FaultProxy, rpc_factory: Any
) -> None:
    """Under Sei the Tendermint mempool answers a repeat of the same bytes (a transport
    retry of a send whose answer was slow) with "tx already exists in cache", not geth's
    "already known": the send counted as failed and the take was retried, though the
    node had it. The repeat is played here by answering the first send so after the
    node took it."""
    rpc = rpc_factory(chain.rpc_url)
    answered: list[int] = []

    async def hook(body: Any) -> Any:
        send = isinstance(body, dict) and body.get("method") == "eth_sendRawTransaction"
        if send and not answered:
            await proxy.forward(body)  # the node takes it ...
            answered.append(1)  # ... and the answer is Sei's for a repeat
            error = {"code": -32000, "message": "tx already exists in cache"}
            return {"jsonrpc": "2.0", "id": body.get("id"), "error": error}
        return None

    async with (
        an_ask_to_take(chain, rpc, 63, 6301),
        running(chain, rpc, proxy, role="venue_taker") as v,
    ):
        before, ev, later = await take_through(v, proxy, hook)
        ev += later
        assert answered, "the fault was not injected"
        assert v.stats["send_errors"] == 0
        assert [f.size_lots for f in of(ev, Fill)] == [3]
        assert (await v.positions())[MKT] == before + 3


async def test_an_endpoint_that_stops_answering_fails_over_and_comes_back(
    chain: LocalChain, proxy: FaultProxy, rpc_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One RPC endpoint was all the venue had: when it stopped answering (a gateway's
    502 while its node is down), no cancel, requote or fill got through until it came
    back. With fallbacks the venue moves to the next endpoint that serves the chain (one
    that answers eth_chainId with another chain is skipped), keeps trading there, and
    goes back to the first once it answers again and has caught up."""
    import flashmm.venues.sei.venue as venue_mod

    monkeypatch.setattr(venue_mod, "PRIMARY_RETRY_S", 0.5)
    rpc = rpc_factory(chain.rpc_url)
    other_chain = await FaultProxy(chain.rpc_url).start()

    async def chain_1(body: Any) -> Any:
        if isinstance(body, dict) and body.get("method") == "eth_chainId":
            return {"jsonrpc": "2.0", "id": body["id"], "result": "0x1"}
        return None

    other_chain.hook = chain_1
    down = False

    async def gateway(body: Any) -> Any:
        return web.Response(status=502, text="bad gateway") if down else None

    proxy.hook = gateway
    fallbacks = [other_chain.url, chain.rpc_url]
    try:
        async with running(chain, rpc, proxy, log_poll_s=0.1, rpc_fallback_urls=fallbacks) as v:
            proxy.hook = gateway  # (running() clears it at the end only)
            v.requote(MKT, [], [OrderRequest(MKT, 1, Side.SELL, 3600, 1)], time.time_ns())
            await collect(v, lambda e: [a.client_id for a in of(e, OrderAccepted)] == [1])
            assert v.status(1.0)["rpc_endpoint"] == 0
            with Records() as records:
                down = True
                v.requote(MKT, [], [OrderRequest(MKT, 2, Side.SELL, 3601, 1)], time.time_ns())
                await collect(v, lambda e: [a.client_id for a in of(e, OrderAccepted)] == [2])
            assert v.rpc.url == chain.rpc_url
            status = v.status(1.0)
            assert (status["rpc_endpoint"], status["rpc_switches"]) == (2, 1)
            assert len(records.warnings(f"switching to {chain.rpc_url}")) == 1
            assert len(records.warnings("serves chain id 1, not 1328")) == 1
            down = False
            deadline = time.monotonic() + 15.0
            while v.rpc.url != proxy.url:
                assert time.monotonic() < deadline, "not back on the first endpoint"
                await asyncio.sleep(0.1)
            v.requote(MKT, [], [OrderRequest(MKT, 3, Side.SELL, 3602, 1)], time.time_ns())
            await collect(v, lambda e: [a.client_id for a in of(e, OrderAccepted)] == [3])
            status = v.status(1.0)
            assert (status["rpc_endpoint"], status["rpc_switches"]) == (0, 2)
            assert {o.client_id for o in await v.open_orders()} == {1, 2, 3}
    finally:
        await other_chain.stop()


def test_fallback_endpoints_are_checked_like_the_first() -> None:
    """A fallback must be an http(s) URL, and on 127.0.0.1 with a dev account."""
    with pytest.raises(ValidationError, match="is not an http"):
        SeiVenueSettings(
            rpc_url="http://127.0.0.1:8545",
            chain_id=1328,
            book_address="0x" + "11" * 20,
            markets={MKT: SEI},
            rpc_fallback_urls=["ws://127.0.0.1:8546"],
        )


@pytest.mark.parametrize("fault", ["refused", "mute"])
async def test_a_fill_comes_while_the_websocket_is_down_or_mute(
    chain: LocalChain, rpc_factory: Any, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """The log stream read the chain only through the WebSocket: while it was refused
    (the stream retried every 5 s at most, reading nothing in between) or open but silent
    (a relay that stopped passing messages on, and no close ever came), a take of someone
    else on our quote was not booked until the socket worked again. Now the logs come by
    HTTP while the socket reconnects, and a socket quiet while the chain moves on is
    read over HTTP and replaced."""
    import flashmm.venues.sei.logs as logs_mod

    monkeypatch.setattr(logs_mod, "WS_SILENCE_S", 1.0)
    rpc = rpc_factory(chain.rpc_url)
    await clear_book(chain, rpc)  # the take below meets our ask and nothing else
    ws = await WsProxy(chain.ws_url).start()
    try:
        async with running(chain, rpc, role="venue", ws_url=ws.url) as v:
            v.requote(MKT, [], [OrderRequest(MKT, 1, Side.SELL, 3600, 1)], time.time_ns())
            await collect(v, lambda e: bool(of(e, OrderAccepted)))
            if fault == "refused":
                ws.refuse = True
                await ws.cut()
            else:
                ws.mute = True
            taker = chain.sender(rpc, "taker")
            book = BookClient(rpc, chain.dep.book)
            await book.take(taker, SEI, 0, 3600, 1)
            ev = await collect(v, lambda e: bool(of(e, Fill)), 20.0)
            assert [(f.client_id, f.size_lots) for f in of(ev, Fill)] == [(1, 1)]
    finally:
        await ws.stop()


async def test_without_a_journal_a_live_run_starts_its_client_ids_past_the_last_runs(
    fast_chain: LocalChain, rpc_factory: Any, dirs: tuple[Path, Path]
) -> None:
    """Without a journal a live run started its client ids at 1 again: the order of a
    requote of the last run still pending (its id 7) passed for this run's own once this
    run had sent id 7, and rested on chain untracked. Now ids start at the wall clock's
    second times 2^20, past any id an earlier run used: the late order is cancelled."""
    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    book = BookClient(rpc, chain.dep.book)
    me = chain.address("spare")
    base = (time.time_ns() // 1_000_000_000) << 20
    await rpc.call("evm_setAutomine", [False])
    bot = Restarted(chain, chain.rpc_url, dirs, "spare", "control.journal=false")
    try:
        last_run = chain.sender(rpc, "spare")
        await book.send_requote(last_run, SEI, [op_place(7, 7, ASK, 3700, 1)], 300_000)
        await bot.start()
        assert bot.ops.journal is None
        ms = bot.engine.markets[MKT]
        assert base < ms.next_client_id < 1 << 53
        await rpc.call("evm_mine")  # the last run's requote lands now
        await rpc.call("evm_setAutomine", [True])
        await bot.until("the last run's order off the book", lambda: _gone(book, me, 7))
    finally:
        await rpc.call("evm_setAutomine", [True])
        await bot.stop()
        await book.cancel_all(chain.sender(rpc, "spare"), SEI)


async def test_the_last_log_read_at_close_reads_the_last_blocks_again(
    fast_chain: LocalChain, rpc_factory: Any
) -> None:
    """Over a WebSocket the heads count a block complete (one behind the head) before its
    logs may have come; the read at close went on from there, so a fill whose log had not
    come yet was left for the next start's replay (a run's summary showed a position the
    chain did not have). The read at close takes the last blocks again."""
    from flashmm.venues.sei.logs import LogStream

    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    book = BookClient(rpc, chain.dep.book)
    head = int(await rpc.call("eth_blockNumber"), 16)
    seen: list[dict[str, Any]] = []
    stream = LogStream(rpc, chain.dep.book, seen.append, from_block=head + 1)
    try:
        await book.requote(chain.sender(rpc, "spare"), SEI, [op_place(9, 99, ASK, 3900, 1)])
        stream.complete_to = int(await rpc.call("eth_blockNumber"), 16)  # a head's claim
        await stream.backfill()
        assert seen == []
        await stream.backfill(reread=20)
        assert [ev.name for r in seen if (ev := decode_log(r)) is not None] == ["OrderPlaced"]
    finally:
        await book.cancel_all(chain.sender(rpc, "spare"), SEI)
