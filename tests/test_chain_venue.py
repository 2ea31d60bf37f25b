"""SeiVenue against a local chain with 0.4 s blocks: requote -> events, fills, cancel_all, take."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from chain_fixtures import LocalChain

from flashmm.types import (
    Fill,
    Liquidity,
    MarketSpec,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    Side,
    VenueEvent,
)
from flashmm.venues.base import Venue
from flashmm.venues.sei.book import BookClient
from flashmm.venues.sei.keys import account_from_hex
from flashmm.venues.sei.settings import SeiVenueSettings
from flashmm.venues.sei.venue import SeiVenue

pytest_plugins = ["chain_fixtures"]
MKT = "SEI/USDC"
SEI = 1


def settings_for(chain: LocalChain, **kw: Any) -> SeiVenueSettings:
    return SeiVenueSettings(
        rpc_url=chain.rpc_url,
        ws_url=chain.ws_url,
        chain_id=1328,
        book_address=chain.dep.book,
        markets={MKT: SEI},
        **kw,
    )


@pytest.fixture
async def venue(chain: LocalChain) -> AsyncIterator[SeiVenue]:
    spec = MarketSpec(MKT, Decimal("0.0001"), Decimal("1"), "seiusdt")
    v = SeiVenue(
        settings_for(chain), specs={MKT: spec}, account=account_from_hex(chain.key("venue"))
    )
    await v.start()
    yield v
    v.cancel_all(None, 0)
    await v.idle()
    await v.aclose()


async def collect(v: SeiVenue, want: Any, timeout_s: float = 10.0) -> list[VenueEvent]:
    """Poll until ``want(events)`` is true."""
    events: list[VenueEvent] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events += v.poll(time.time_ns())
        if want(events):
            return events
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out; got {events}")


def req(cid: int, side: Side, price: int, size: int) -> OrderRequest:
    return OrderRequest(MKT, cid, side, price, size)


def of(events: list[VenueEvent], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def test_venue_implements_protocol(venue: SeiVenue) -> None:
    assert isinstance(venue, Venue)


async def test_requote_then_fills_from_a_taker(
    chain: LocalChain, venue: SeiVenue, rpc_factory: Any
) -> None:
    venue.requote(MKT, [], [req(1, Side.BUY, 2990, 5), req(2, Side.SELL, 3010, 5)], 0)
    ev = await collect(venue, lambda e: len(of(e, OrderAccepted)) == 2)
    assert sorted(e.client_id for e in of(ev, OrderAccepted)) == [1, 2]
    orders = {o.client_id: o for o in await venue.open_orders()}
    assert (orders[1].side, orders[1].price_ticks, orders[1].size_lots) == (Side.BUY, 2990, 5)
    assert (orders[2].side, orders[2].price_ticks) == (Side.SELL, 3010)

    rpc = rpc_factory(chain.rpc_url)
    taker = chain.sender(rpc, "venue_taker")
    book = BookClient(rpc, chain.dep.book)
    await book.take(taker, SEI, 0, 3010, 3)  # buys 3 from our ask
    await book.take(taker, SEI, 1, 2990, 5)  # sells 5 into our bid
    ev = await collect(venue, lambda e: len(of(e, Fill)) == 2)
    fills = {f.client_id: f for f in of(ev, Fill)}
    assert (fills[2].side, fills[2].price_ticks, fills[2].size_lots) == (Side.SELL, 3010, 3)
    assert (fills[1].side, fills[1].price_ticks, fills[1].size_lots) == (Side.BUY, 2990, 5)
    assert all(f.liquidity is Liquidity.MAKER and f.fee_usdc == 0 for f in fills.values())
    assert [o.client_id for o in await venue.open_orders()] == [2]


async def test_requote_moves_orders_with_replace(venue: SeiVenue) -> None:
    venue.requote(MKT, [], [req(11, Side.BUY, 2980, 2), req(12, Side.SELL, 3020, 2)], 0)
    await collect(venue, lambda e: len(of(e, OrderAccepted)) == 2)
    venue.requote(MKT, [11, 12], [req(13, Side.BUY, 2981, 2), req(14, Side.SELL, 3021, 2)], 0)
    ev = await collect(
        venue, lambda e: len(of(e, OrderAccepted)) == 2 and len(of(e, OrderCancelled)) == 2
    )
    assert sorted(e.client_id for e in of(ev, OrderCancelled)) == [11, 12]
    assert sorted(e.client_id for e in of(ev, OrderAccepted)) == [13, 14]
    await venue.idle()
    assert venue.stats["txs"] == 2  # the move was one transaction of two replace ops
    assert sorted((o.client_id, o.price_ticks) for o in await venue.open_orders()) == [
        (13, 2981),
        (14, 3021),
    ]


async def test_requotes_coalesce_while_a_tx_is_pending(venue: SeiVenue) -> None:
    cid = 100
    prev: list[int] = []
    for step in range(8):
        new = [req(cid, Side.BUY, 2900 + step, 1), req(cid + 1, Side.SELL, 3100 + step, 1)]
        venue.requote(MKT, prev, new, 0)
        prev = [cid, cid + 1]
        cid += 2
        await asyncio.sleep(0.05)
    await venue.idle()
    ev = await collect(
        venue, lambda e: any(getattr(x, "client_id", 0) == 115 for x in of(e, OrderAccepted))
    )
    assert venue.stats["coalesced"] > 0
    assert venue.stats["txs"] < 8
    assert sorted((o.client_id, o.price_ticks) for o in await venue.open_orders()) == [
        (114, 2907),
        (115, 3107),
    ]
    # every client id got exactly one terminal-or-accepted answer
    answered = {
        e.client_id for e in ev if isinstance(e, OrderAccepted | OrderCancelled | OrderRejected)
    }
    assert answered >= set(range(100, 116))


async def test_post_only_cross_is_rejected(venue: SeiVenue) -> None:
    venue.requote(MKT, [], [req(21, Side.SELL, 3200, 1)], 0)
    await collect(venue, lambda e: len(of(e, OrderAccepted)) == 1)
    venue.requote(MKT, [], [req(22, Side.BUY, 3200, 1)], 0)
    ev = await collect(venue, lambda e: len(of(e, OrderRejected)) == 1)
    (rej,) = of(ev, OrderRejected)
    assert rej.client_id == 22 and "cross" in rej.reason


async def test_a_jump_past_our_own_quotes_moves_the_far_side_first(venue: SeiVenue) -> None:
    """The ops of a requote run in order: after a jump up, the new bid would cross our old
    ask if the bids were replaced first (post-only reject). The side moving away goes first."""
    venue.requote(MKT, [], [req(31, Side.BUY, 3300, 1), req(32, Side.SELL, 3310, 1)], 0)
    await collect(venue, lambda e: len(of(e, OrderAccepted)) == 2)
    venue.requote(MKT, [31, 32], [req(33, Side.BUY, 3315, 1), req(34, Side.SELL, 3325, 1)], 0)
    ev = await collect(venue, lambda e: len(of(e, OrderAccepted)) == 2)
    venue.requote(MKT, [33, 34], [req(35, Side.BUY, 3290, 1), req(36, Side.SELL, 3300, 1)], 0)
    ev += await collect(venue, lambda e: len(of(e, OrderAccepted)) == 2)
    await venue.idle()
    ev += venue.poll(time.time_ns())
    assert of(ev, OrderRejected) == []
    assert venue.stats["txs"] == 3  # each jump was one transaction of two replace ops
    assert sorted((o.client_id, o.price_ticks) for o in await venue.open_orders()) == [
        (35, 3290),
        (36, 3300),
    ]


async def test_cancel_all_and_take_flatten(
    chain: LocalChain, venue: SeiVenue, rpc_factory: Any
) -> None:
    venue.requote(MKT, [], [req(31, Side.BUY, 2700, 1), req(32, Side.SELL, 3300, 1)], 0)
    await collect(venue, lambda e: len(of(e, OrderAccepted)) == 2)
    venue.cancel_all(MKT, 0)
    ev = await collect(venue, lambda e: len(of(e, OrderCancelled)) >= 2)
    assert {31, 32} <= {e.client_id for e in of(ev, OrderCancelled)}
    assert await venue.open_orders() == []

    # someone else rests an ask; our take() lifts it: a TAKER fill with client id 0
    rpc = rpc_factory(chain.rpc_url)
    other = chain.sender(rpc, "venue_taker")
    book = BookClient(rpc, chain.dep.book)
    from flashmm.venues.sei.abi import ASK, op_place

    await book.requote(other, SEI, [op_place(40, 4001, ASK, 3400, 4)])
    before = (await venue.positions())[MKT]
    venue.take(MKT, Side.BUY, 3, 3400, 0)
    ev = await collect(venue, lambda e: len(of(e, Fill)) == 1)
    (fill,) = of(ev, Fill)
    assert (fill.client_id, fill.side, fill.price_ticks, fill.size_lots, fill.liquidity) == (
        0,
        Side.BUY,
        3400,
        3,
        Liquidity.TAKER,
    )
    assert (await venue.positions())[MKT] == before + 3
    await book.cancel_all(other, SEI)


async def test_pipelined_requotes_leave_no_orphan_orders(venue: SeiVenue) -> None:
    """Two transactions in flight: late events of the older one must not undo the newer
    one's slot reservations (that orphaned orders, which then made new quotes cross)."""
    cid, prev = 500, list[int]()
    for step in range(12):
        mid = 6000 + (step % 3) - 1
        new = [
            req(cid + i, Side.BUY if i < 3 else Side.SELL, mid - 1 - i if i < 3 else mid - 1 + i, 1)
            for i in range(6)
        ]
        venue.requote(MKT, prev, new, 0)
        prev = [r.client_id for r in new]
        cid += 6
        await asyncio.sleep(0.2)
    await venue.idle()
    ev = await collect(
        venue, lambda e: any(getattr(x, "client_id", 0) == cid - 1 for x in of(e, OrderAccepted))
    )
    assert of(ev, OrderRejected) == []
    assert sorted(o.client_id for o in await venue.open_orders()) == prev


async def test_fills_carry_the_market_fee_and_rebate(chain: LocalChain, rpc_factory: Any) -> None:
    rpc = rpc_factory(chain.rpc_url)
    admin = chain.sender(rpc, "deployer")
    book = BookClient(rpc, chain.dep.book)
    await book.admin_call(admin, "setFees", SEI, 10, 4, admin.address)
    spec = MarketSpec(MKT, Decimal("0.0001"), Decimal("1"), "seiusdt")
    v = SeiVenue(
        settings_for(chain), specs={MKT: spec}, account=account_from_hex(chain.key("venue"))
    )
    try:
        await v.start()
        v.requote(MKT, [], [req(1, Side.SELL, 3010, 5)], 0)
        await collect(v, lambda e: len(of(e, OrderAccepted)) == 1)
        await book.take(chain.sender(rpc, "venue_taker"), SEI, 0, 3010, 3)
        (fill,) = of(await collect(v, lambda e: len(of(e, Fill)) == 1), Fill)
        # 3 lots at 3010 ticks of 0.0001 USDC: 0.903 USDC, a 4 bps rebate of 361 units
        assert fill.liquidity is Liquidity.MAKER and fill.fee_usdc == -0.000361
        v.cancel_all(None, 0)
        await v.idle()
    finally:
        await book.admin_call(admin, "setFees", SEI, 0, 0, "0x" + "00" * 20)
        await v.aclose()


async def test_fills_follow_a_fee_change_live(chain: LocalChain, rpc_factory: Any) -> None:
    rpc = rpc_factory(chain.rpc_url)
    admin = chain.sender(rpc, "deployer")
    book = BookClient(rpc, chain.dep.book)
    taker = chain.sender(rpc, "venue_taker")
    spec = MarketSpec(MKT, Decimal("0.0001"), Decimal("1"), "seiusdt")
    v = SeiVenue(
        settings_for(chain), specs={MKT: spec}, account=account_from_hex(chain.key("venue"))
    )
    try:
        await v.start()  # fees off at start
        v.requote(MKT, [], [req(1, Side.SELL, 3010, 9)], 0)
        await collect(v, lambda e: len(of(e, OrderAccepted)) == 1)
        await book.take(taker, SEI, 0, 3010, 3)
        await book.admin_call(admin, "setFees", SEI, 10, 4, admin.address)
        await book.take(taker, SEI, 0, 3010, 3)
        await book.admin_call(admin, "setFees", SEI, 30, 0, admin.address)
        await book.take(taker, SEI, 0, 3010, 3)
        ev = await collect(v, lambda e: len(of(e, Fill)) == 3)
        # 3 lots at 3010 ticks of 0.0001 USDC (0.903 USDC): no rebate, 4 bps, none again
        assert [f.fee_usdc for f in of(ev, Fill)] == [0, -0.000361, 0]
        # the projection prices fresh slots at venue.sei.sstore_set_gas, not anvil's 20,000
        st = v.status(60.0)
        assert st["sstore_set_gas"] == 72_000 and st["node_sstore_set_gas"] == 20_000
        assert v.sei_gas_used() >= v.stats["gas_used"]
    finally:
        await book.admin_call(admin, "setFees", SEI, 0, 0, "0x" + "00" * 20)
        await v.aclose()
