"""SeiVenue recovery on a local chain: fills mined while the bot was down are replayed from
the journal's block with their chain price and block time, and ``positions()`` always
matches the fills handed out by ``poll()`` (a fill mined during start-up is no mismatch).
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

from chain_fixtures import LocalChain

from flashmm.types import Fill, MarketSpec, OrderAccepted, OrderRequest, Side, VenueEvent
from flashmm.venues.sei.book import BookClient
from flashmm.venues.sei.keys import account_from_hex
from flashmm.venues.sei.settings import SeiVenueSettings
from flashmm.venues.sei.venue import SeiVenue

pytest_plugins = ["chain_fixtures"]

MKT = "SEI/USDC"
SPEC = MarketSpec(MKT, Decimal("0.0001"), Decimal("1"), "seiusdt")


def make_venue(chain: LocalChain) -> SeiVenue:
    settings = SeiVenueSettings(
        rpc_url=chain.rpc_url,
        ws_url=chain.ws_url,
        chain_id=1328,
        book_address=chain.dep.book,
        markets={MKT: 1},
    )
    return SeiVenue(settings, specs={MKT: SPEC}, account=account_from_hex(chain.key("venue")))


async def until(v: SeiVenue, want: Any, timeout_s: float = 15.0) -> list[VenueEvent]:
    events: list[VenueEvent] = []
    deadline = time.monotonic() + timeout_s
    while not want(events):
        assert time.monotonic() < deadline, events
        events += v.poll(time.time_ns())
        await asyncio.sleep(0.05)
    return events


def lots(fills: list[Fill]) -> int:
    return sum(f.size_lots * int(f.side) for f in fills)


async def test_fills_while_down_are_replayed_once_with_chain_price_and_time(
    chain: LocalChain, rpc_factory: Any
) -> None:
    rpc = rpc_factory(chain.rpc_url)
    taker = chain.sender(rpc, "venue_taker")
    book = BookClient(rpc, chain.dep.book)
    # a first run quotes, then stops without cancelling (as after kill -9)
    v1 = make_venue(chain)
    await v1.start()
    v1.requote(
        MKT,
        [],
        [OrderRequest(MKT, 1, Side.BUY, 2990, 5), OrderRequest(MKT, 2, Side.SELL, 3010, 5)],
        0,
    )
    await until(v1, lambda e: sum(isinstance(x, OrderAccepted) for x in e) == 2)
    checkpoint = v1.processed_block
    assert checkpoint is not None
    await v1.aclose()
    # while it is down, a taker fills both resting orders
    await book.take(taker, 1, 0, 3010, 3)
    await book.take(taker, 1, 1, 2990, 5)
    # the next run replays from the checkpoint before anything else
    v2 = make_venue(chain)
    v2.recover_from(checkpoint - 1)
    await v2.start()
    try:
        replayed = [e for e in v2.poll(time.time_ns()) if isinstance(e, Fill)]
        assert sorted((f.client_id, f.side, f.price_ticks, f.size_lots) for f in replayed) == [
            (1, Side.BUY, 2990, 5),
            (2, Side.SELL, 3010, 3),
        ]
        for f in replayed:
            tx, _ = f.fill_id.split(":")
            r = await rpc.call("eth_getTransactionReceipt", [tx])
            block = await rpc.call("eth_getBlockByNumber", [r["blockNumber"], False])
            assert f.ts_ns == int(block["timestamp"], 16) * 1_000_000_000
        assert v2.replay_stats["fills"] == 2
        # a fill mined right now (during a start-up reconciliation, say): the position
        # the venue reports counts exactly the fills poll() has handed out
        await book.take(taker, 1, 0, 3010, 2)
        pos = await v2.positions()
        now = [e for e in v2.poll(time.time_ns()) if isinstance(e, Fill)]
        assert [(f.client_id, f.size_lots) for f in now] == [(2, 2)]
        assert pos[MKT] == lots(replayed + now) == 0
    finally:
        v2.cancel_all(None, 0)
        await v2.idle()
        await v2.aclose()
    # a journal without a checkpoint replays the account's whole history, each fill once
    v3 = make_venue(chain)
    v3.recover_from(None)
    await v3.start()
    try:
        fills = [e for e in v3.poll(time.time_ns()) if isinstance(e, Fill)]
        assert len(fills) == 3 and len({f.fill_id for f in fills}) == 3
        assert (await v3.positions())[MKT] == lots(fills)
    finally:
        await v3.aclose()


async def test_replayed_fills_carry_the_fees_in_force_when_they_were_mined(
    chain: LocalChain, rpc_factory: Any
) -> None:
    rpc = rpc_factory(chain.rpc_url)
    taker = chain.sender(rpc, "venue_taker")
    admin = chain.sender(rpc, "deployer")
    book = BookClient(rpc, chain.dep.book)
    v1 = make_venue(chain)
    await v1.start()
    v1.requote(MKT, [], [OrderRequest(MKT, 11, Side.SELL, 3010, 9)], 0)
    await until(v1, lambda e: any(isinstance(x, OrderAccepted) for x in e))
    checkpoint = v1.processed_block
    assert checkpoint is not None
    await v1.aclose()
    # while the bot is down: a fill without fees, a fee change, a fill with them
    await book.take(taker, 1, 0, 3010, 3)
    await book.admin_call(admin, "setFees", 1, 10, 4, admin.address)
    try:
        await book.take(taker, 1, 0, 3010, 3)
        v2 = make_venue(chain)
        v2.recover_from(checkpoint + 1)
        await v2.start()
        try:
            replayed = [e for e in v2.poll(time.time_ns()) if isinstance(e, Fill)]
            # 3 lots at 3010 ticks of 0.0001 USDC: no rebate, then 4 bps of 0.903 USDC
            assert [f.fee_usdc for f in replayed] == [0, -0.000361]
        finally:
            v2.cancel_all(None, 0)
            await v2.idle()
            await v2.aclose()
    finally:
        await book.admin_call(admin, "setFees", 1, 0, 0, "0x" + "00" * 20)
