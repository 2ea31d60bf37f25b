"""FlashBook against the attacks of the contract review, and its admin levers.

Each attack is replayed on an automining anvil and must fail with a clear revert (or, for
the unbounded-loop attacks, leave takes and depth() working). The 65,536-level attack
sets the side's level counter with ``anvil_setStorageAt`` instead of placing 65,535 real
levels (about 3 billion gas): the contract code under test is the same.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from eth_utils import keccak

from flashmm.venues.sei.abi import (
    ASK,
    BID,
    book_abi,
    decode_log,
    op_cancel,
    op_place,
    unpack_info,
)
from flashmm.venues.sei.book import BookClient, TokenClient, deploy
from flashmm.venues.sei.errors import TxReverted

pytest_plugins = ["chain_fixtures"]

SEI = 1
ETH = 2  # paused / delisted here; this module has its own chain
MAX_TICK = 0xFFFFFFFE
U16 = 0xFFFF


def names(receipt: dict[str, Any]) -> list[str]:
    out = []
    for raw in receipt["logs"]:
        log = decode_log(raw, book_abi())
        if log is not None:
            out.append(log.name)
    return out


def reasons(receipt: dict[str, Any]) -> list[int]:
    out = []
    for raw in receipt["logs"]:
        log = decode_log(raw, book_abi())
        if log is not None and log.name == "OrderRejected":
            out.append(int(log.args["info"]) >> 192)
    return out


@pytest.fixture
def admin(fast_chain: Any, actors: Any, rpc_factory: Any) -> Any:
    rpc = rpc_factory(fast_chain.rpc_url)
    return fast_chain.sender(rpc, "deployer"), BookClient(rpc, fast_chain.dep.book)


async def reverts(actor: Any, fn: str, *args: Any, gas: int = 300_000) -> str:
    """Send ``fn(*args)`` with a fixed gas limit (no estimate) and return its revert reason."""
    sent = await actor.sender.send(actor.book.address, actor.book.calldata(fn, *args), gas=gas)
    with pytest.raises(TxReverted) as info:
        await actor.sender.wait(sent)
    return info.value.reason


# --- H-1: withdraw aliasing ------------------------------------------------------------


async def test_withdraw_with_an_aliasing_market_id_reverts_and_leaves_the_victim_whole(
    actors: Any,
) -> None:
    idx = {r: await a.book.trader_index(a.address) for r, a in actors.items()}
    pairs = [(a, v) for a in idx for v in idx if a != v and idx[a] & idx[v] == idx[a]]
    assert pairs, idx
    attacker, victim = actors[pairs[0][0]], actors[pairs[0][1]]
    before = await victim.book.balances(victim.address, SEI)
    alias = (idx[pairs[0][1]] << 16) | SEI  # old key (trader << 16 | market) of the victim
    reason = await reverts(attacker, "withdraw", alias, before.base_free, before.quote_free)
    assert "UnknownMarket" in reason
    assert await victim.book.balances(victim.address, SEI) == before
    # every entry point checks the market
    for fn, args in (
        ("deposit", (alias, 1, 1)),
        ("requote", (alias, [op_place(0, 1, BID, 10, 1)], 0)),
        ("cancelSlots", (alias, 1)),
        ("cancelAll", (alias,)),
        ("take", (alias, 0, 10, 1, 1, 1, 0)),
        ("warm", (alias, 10, 20)),
    ):
        with pytest.raises(TxReverted, match="UnknownMarket"):
            await attacker.sender.estimate(attacker.book.address, attacker.book.calldata(fn, *args))


async def test_zero_deposit_registers_nobody(
    actors: Any, fast_chain: Any, rpc_factory: Any
) -> None:
    rpc = rpc_factory(fast_chain.rpc_url)
    from flashmm.venues.sei.keys import account_from_hex
    from flashmm.venues.sei.local import dev_private_key
    from flashmm.venues.sei.tx import TxSender

    stranger = TxSender(
        rpc, account_from_hex(dev_private_key(30)), fast_chain.dep.chain_id, abi=book_abi()
    )
    book = BookClient(rpc, fast_chain.dep.book)
    count = int((await book.call("traderCount"))[0])
    with pytest.raises(TxReverted, match="BadAmount"):
        await stranger.estimate(book.address, book.calldata("deposit", SEI, 0, 0))
    assert int((await book.call("traderCount"))[0]) == count


# --- M-1: level counters ---------------------------------------------------------------


async def _market_slot(book: BookClient, market: int) -> tuple[str, int]:
    info = await book.market(market)
    for base in range(32):
        slot = "0x" + keccak(market.to_bytes(32, "big") + base.to_bytes(32, "big")).hex()
        word = int(await book.rpc.call("eth_getStorageAt", [book.address, slot, "latest"]), 16)
        if word & ((1 << 56) - 1) == info.tick_value and (word >> 56) & ((1 << 88) - 1) == (
            info.lot_units
        ):
            return slot, word
    raise AssertionError("market word not found")


async def test_65536th_bid_level_is_rejected_and_the_rest_of_the_requote_goes_through(
    actors: Any,
) -> None:
    maker = actors["maker"]
    rpc = maker.book.rpc
    await maker.book.requote(maker.sender, SEI, [op_place(0, 1, BID, 20, 1)])
    slot, word = await _market_slot(maker.book, SEI)
    asks = word >> 240
    full = (word & ~(U16 << 224)) | (U16 << 224)  # 65,535 bid levels
    await rpc.call("anvil_setStorageAt", [maker.book.address, slot, f"0x{full:064x}"])
    try:
        # a new bid level is rejected on its own (REJECT_LEVEL_CAP); a bid at an existing
        # level adds none and goes in, and so does the rest of the requote
        r = await maker.book.requote(
            maker.sender,
            SEI,
            [
                op_place(1, 2, BID, 21, 1),
                op_place(2, 3, BID, 20, 1),
                op_cancel(0, 1),
                op_place(3, 4, ASK, 60_000, 1),
            ],
        )
        assert names(r) == ["OrderRejected", "OrderPlaced", "OrderCancelled", "OrderPlaced"]
        assert reasons(r) == [7]
        market = await maker.book.market(SEI)
        assert (market.bid_levels, market.ask_levels) == (U16, asks + 1)
    finally:
        now = int(await rpc.call("eth_getStorageAt", [maker.book.address, slot, "latest"]), 16)
        real = (now & ~(U16 << 224)) | (((word >> 224) & U16) << 224)
        await rpc.call("anvil_setStorageAt", [maker.book.address, slot, f"0x{real:064x}"])
    await maker.book.cancel_all(maker.sender, SEI)
    assert (await maker.book.market(SEI)).bid_levels == ((word >> 224) & U16) - 1


# --- M-2: a 1-lot order at the maximum tick --------------------------------------------


async def test_one_lot_at_max_tick_leaves_takes_and_depth_bounded(actors: Any) -> None:
    maker, spoiler, taker = actors["maker"], actors["maker2"], actors["taker"]
    await spoiler.book.requote(spoiler.sender, SEI, [op_place(0, 1, ASK, MAX_TICK, 1)])
    await maker.book.requote(
        maker.sender, SEI, [op_place(1, 11, ASK, 30_000, 2), op_place(2, 12, ASK, 30_001, 2)]
    )
    # a wide-limit take fills the real levels and stops within a modest gas limit
    r = await taker.book.take(taker.sender, SEI, 0, MAX_TICK, 100, gas=400_000)
    assert r["status"] == "0x1"
    assert names(r) == ["Fill", "Fill"]
    assert int(r["gasUsed"], 16) < 400_000
    # depth() answers page by page however far the levels are spread
    page, nxt = await taker.book.depth_page(SEI, ASK, 0, 10)
    assert [lv.price for lv in page] in ([], [MAX_TICK])
    if not page:
        assert nxt != 0  # the scan budget ended the page; the next one goes on from there
    await spoiler.book.cancel_all(spoiler.sender, SEI)
    assert await taker.book.depth(SEI, ASK, 10) == []


# --- levels in a ring: ticks a ring apart share storage --------------------------------

RING = 1_016  # FlashBook.RING_TICKS


async def test_levels_a_ring_apart_keep_their_own_queues_and_price_order(actors: Any) -> None:
    maker, maker2, spare, taker = (actors[r] for r in ("maker", "maker2", "spare", "taker"))
    assert int((await maker.book.call("RING_TICKS"))[0]) == RING
    a = 40_000
    # a + RING holds the ring entry of the residue class, so a's level goes to the overflow
    await maker2.book.requote(maker2.sender, SEI, [op_place(0, 1, ASK, a + RING, 1)])
    await maker.book.requote(maker.sender, SEI, [op_place(0, 2, ASK, a, 1)])
    # the ring entry is freed; a's next order still joins a's queue in the overflow book
    await maker2.book.requote(maker2.sender, SEI, [op_cancel(0, 1)])
    await maker2.book.requote(maker2.sender, SEI, [op_place(1, 4, ASK, a, 1)])
    await maker.book.requote(maker.sender, SEI, [op_place(1, 3, ASK, a + 2 * RING, 1)])
    page, _ = await taker.book.depth_page(SEI, ASK, 0, 10)
    assert [(lv.price, lv.size) for lv in page] == [(a, 2), (a + 2 * RING, 1)]
    # a bid below the overflow level is no cross; one at it is
    r = await spare.book.requote(
        spare.sender, SEI, [op_place(0, 5, BID, a - 1, 1), op_place(1, 6, BID, a, 1)]
    )
    assert names(r) == ["OrderPlaced", "OrderRejected"] and reasons(r) == [1]
    await spare.book.cancel_all(spare.sender, SEI)
    r = await taker.book.take(taker.sender, SEI, 0, a + 3 * RING, 10)
    fills = [unpack(raw) for raw in r["logs"] if _is(raw, "Fill")]
    assert [(f.price, f.client_id) for f in fills] == [(a, 2), (a, 4), (a + 2 * RING, 3)]
    assert await taker.book.depth(SEI, ASK, 10) == []
    # bids a ring apart: a sell walks them from the top
    b = 20_000
    await maker.book.requote(maker.sender, SEI, [op_place(0, 9, BID, b - RING, 1)])
    await maker2.book.requote(maker2.sender, SEI, [op_place(0, 10, BID, b, 1)])
    assert [lv.price for lv in await taker.book.depth(SEI, BID, 10)] == [b, b - RING]
    r = await taker.book.take(taker.sender, SEI, 1, 1, 5)
    assert [unpack(raw).price for raw in r["logs"] if _is(raw, "Fill")] == [b, b - RING]
    assert await taker.book.depth(SEI, BID, 10) == []


async def test_a_stale_best_price_hint_gives_no_false_cross_reject(actors: Any) -> None:
    maker, maker2 = actors["maker"], actors["maker2"]
    near, far = 50_000, 70_000  # 157 bitmap words apart
    await maker.book.requote(
        maker.sender, SEI, [op_place(0, 1, ASK, near, 1), op_place(1, 2, ASK, far, 1)]
    )
    # the hint was left stale here; now the overflow bound (the far ask is more than half a
    # ring behind the near one) moves it to the far ask at once
    await maker.book.requote(maker.sender, SEI, [op_cancel(0, 1)])
    assert (await maker.book.market(SEI)).best_ask_hint <= far
    r = await maker2.book.requote(maker2.sender, SEI, [op_place(0, 3, BID, far - 1, 1)])
    assert names(r) == ["OrderPlaced"]
    assert int(r["gasUsed"], 16) < 120_000  # not the give-up scan of 64 words
    assert (await maker.book.market(SEI)).best_ask_hint == far
    r = await maker2.book.requote(maker2.sender, SEI, [op_place(1, 4, BID, far, 1)])
    assert reasons(r) == [1]
    await maker.book.cancel_all(maker.sender, SEI)
    await maker2.book.cancel_all(maker2.sender, SEI)


def _is(raw: dict[str, Any], name: str) -> bool:
    log = decode_log(raw, book_abi())
    return log is not None and log.name == name


def unpack(raw: dict[str, Any]) -> Any:
    log = decode_log(raw, book_abi())
    assert log is not None
    return unpack_info(int(log.args["info"]))


async def test_take_stops_at_the_callers_order_and_level_limits(actors: Any) -> None:
    maker, taker = actors["maker"], actors["taker"]
    ops = [op_place(i, 100 + i, ASK, 31_000, 1) for i in range(8)]
    ops.append(op_place(8, 200, ASK, 31_001, 5))
    await maker.book.requote(maker.sender, SEI, ops)
    r = await taker.book.take(taker.sender, SEI, 0, 31_001, 50, max_orders=3)
    assert names(r) == ["Fill"] * 3
    r = await taker.book.take(taker.sender, SEI, 0, 31_001, 50, max_levels=1)
    assert names(r) == ["Fill"] * 5  # the rest of the first level only
    await maker.book.cancel_all(maker.sender, SEI)


async def test_minimum_order_size_per_market(actors: Any, admin: Any) -> None:
    sender, book = admin
    maker = actors["maker"]
    with pytest.raises(TxReverted, match="NotAdmin"):
        await maker.sender.estimate(book.address, book.calldata("setMinSize", SEI, 5))
    await book.admin_call(sender, "setMinSize", SEI, 5)
    try:
        assert (await book.market_config(SEI)).min_size == 5
        r = await maker.book.requote(
            maker.sender, SEI, [op_place(0, 1, ASK, 32_000, 1), op_place(1, 2, ASK, 32_000, 5)]
        )
        assert names(r) == ["OrderRejected", "OrderPlaced"] and reasons(r) == [5]
    finally:
        await book.admin_call(sender, "setMinSize", SEI, 1)
    await maker.book.cancel_all(maker.sender, SEI)


# --- M-3: listing ----------------------------------------------------------------------


async def test_listing_needs_token_code_and_refuses_fee_on_transfer(
    fast_chain: Any, admin: Any
) -> None:
    sender, book = admin
    quote = fast_chain.dep.tokens["USDC"]["address"]
    eoa = fast_chain.address("spare")
    with pytest.raises(TxReverted, match="BadToken"):
        await sender.estimate(book.address, book.calldata("createMarket", eoa, quote, 1, 1))
    fee = await deploy(sender, "FeeToken")
    mid = await book.create_market(sender, fee, quote, 1, 10**6)
    cfg = await book.market_config(mid)
    assert (cfg.base_decimals, cfg.quote_decimals, cfg.min_size, cfg.status) == (6, 6, 1, 0)
    await sender.transact(
        fee, TokenClient(book.rpc, fee).abi.fn("approve").encode(book.address, 10**30)
    )
    with pytest.raises(TxReverted, match="FeeOnTransfer"):
        await sender.estimate(book.address, book.calldata("deposit", mid, 10**6, 0))


# --- admin levers ----------------------------------------------------------------------


async def test_guardian_pauses_orders_and_takes_never_cancels_or_withdrawals(
    actors: Any, admin: Any
) -> None:
    sender, book = admin
    maker, taker, guardian = actors["maker"], actors["taker"], actors["spare"]
    await maker.book.requote(maker.sender, ETH, [op_place(0, 1, ASK, 50_000, 2)])
    with pytest.raises(TxReverted, match="NotGuardian"):
        await guardian.sender.estimate(book.address, book.calldata("pause", ETH))
    await book.admin_call(sender, "setGuardian", guardian.address)
    await guardian.book.admin_call(guardian.sender, "pause", ETH)
    assert (await book.market_config(ETH)).status == 1
    r = await maker.book.requote(
        maker.sender, ETH, [op_place(1, 2, ASK, 50_001, 2), op_place(0, 3, ASK, 50_002, 2)]
    )
    assert reasons(r) == [6, 2]  # new order refused; slot 0 still holds the live order
    assert "MarketPaused" in await reverts(taker, "take", ETH, 0, 50_000, 1, 0, 0, 0)
    with pytest.raises(TxReverted, match="NotAdmin"):
        await guardian.sender.estimate(book.address, book.calldata("unpause", ETH))
    r = await maker.book.requote(maker.sender, ETH, [op_cancel(0, 1)])
    assert names(r) == ["OrderCancelled"]
    await maker.book.withdraw(maker.sender, ETH, 1, 1)
    await book.admin_call(sender, "unpause", ETH)
    r = await maker.book.requote(maker.sender, ETH, [op_place(0, 4, ASK, 50_000, 2)])
    assert names(r) == ["OrderPlaced"]
    # delisting: cancel-only for good
    await book.admin_call(sender, "delist", ETH)
    assert "MarketDelisted" in await reverts(taker, "take", ETH, 0, 50_000, 1, 0, 0, 0)
    assert "MarketDelisted" in await reverts(maker, "deposit", ETH, 1, 1)
    assert "MarketDelisted" in await reverts(book_actor(admin), "unpause", ETH)
    await maker.book.cancel_all(maker.sender, ETH)
    assert await maker.book.open_orders(maker.address, ETH) == []
    await maker.book.withdraw(maker.sender, ETH, 1, 1)


def book_actor(admin: Any) -> Any:
    sender, book = admin
    return SimpleNamespace(sender=sender, book=book)


async def test_two_step_admin_transfer(actors: Any, admin: Any) -> None:
    sender, book = admin
    heir = actors["spare"]
    await book.admin_call(sender, "transferAdmin", heir.address)
    assert str((await book.call("admin"))[0]).lower() == sender.address.lower()
    with pytest.raises(TxReverted, match="NotAdmin"):
        await actors["maker"].sender.estimate(book.address, book.calldata("acceptAdmin"))
    await heir.book.admin_call(heir.sender, "acceptAdmin")
    assert str((await book.call("admin"))[0]).lower() == heir.address.lower()
    await heir.book.admin_call(heir.sender, "transferAdmin", sender.address)
    await book.admin_call(sender, "acceptAdmin")
    assert str((await book.call("admin"))[0]).lower() == sender.address.lower()


async def test_deadline_on_requote_and_take(actors: Any) -> None:
    maker, taker = actors["maker"], actors["taker"]
    block = await maker.book.rpc.call("eth_getBlockByNumber", ["latest", False])
    past = int(block["timestamp"], 16) - 1
    reason = await reverts(maker, "requote", SEI, [op_place(0, 1, ASK, 33_000, 1)], past)
    assert reason.startswith("Expired(") and "deadline passed" in reason
    assert "Expired(" in await reverts(taker, "take", SEI, 0, 33_000, 1, 0, 0, past)
    r = await maker.book.requote(
        maker.sender, SEI, [op_place(0, 1, ASK, 33_000, 1)], deadline=past + 3600
    )
    assert names(r) == ["OrderPlaced"]
    await maker.book.cancel_all(maker.sender, SEI)


async def test_cancel_all_cancels_what_is_live_after_fills(actors: Any) -> None:
    maker, taker = actors["maker"], actors["taker"]
    await maker.book.requote(
        maker.sender,
        SEI,
        [op_place(0, 1, ASK, 34_000, 1), op_place(1, 2, ASK, 34_001, 1), op_place(2, 3, BID, 9, 1)],
    )
    await taker.book.take(taker.sender, SEI, 0, 34_000, 1)  # slot 0 filled
    r = await maker.book.cancel_all(maker.sender, SEI)
    assert names(r) == ["OrderCancelled", "OrderCancelled"]
    assert await maker.book.open_orders(maker.address, SEI) == []
    r = await maker.book.cancel_all(maker.sender, SEI)
    assert names(r) == []


async def test_probe_reads_the_nodes_fresh_slot_price(fast_chain: Any, actors: Any) -> None:
    from flashmm.venues.sei.gas import (
        probe_node_sstore_set_gas,
        probe_sstore_set_gas,
        sei_priced,
    )

    maker = actors["maker"]
    usdc = fast_chain.dep.tokens["USDC"]["address"]
    price = await probe_sstore_set_gas(maker.book.rpc, usdc, maker.address, fast_chain.dep.book)
    assert price == 20_000  # anvil prices storage the Ethereum way
    assert await probe_node_sstore_set_gas(maker.book.rpc) == 20_000  # no account needed
    assert sei_priced(100_000, 2, 72_000) == 204_000
    assert sei_priced(100_000, 2, 20_000) == 100_000


async def test_venue_deadline_follows_its_receipt_timeout() -> None:
    import time

    from flashmm.venues.sei.settings import SeiVenueSettings
    from flashmm.venues.sei.venue import SeiVenue

    settings = SeiVenueSettings(
        rpc_url="http://127.0.0.1:9",
        chain_id=1328,
        book_address="0x" + "11" * 20,
        markets={"SEI/USDC": 1},
        receipt_timeout_s=7,
    )
    venue = SeiVenue(settings)
    try:
        now = time.time()
        assert now + 7 <= venue._deadline() <= now + 9
    finally:
        await venue.rpc.aclose()


async def test_optional_taker_fee_and_maker_rebate(actors: Any, admin: Any) -> None:
    sender, book = admin
    maker, taker, recipient = actors["maker"], actors["taker"], actors["spare"]
    assert await book.call("marketFees", SEI) == (0, 0, "0x" + "00" * 20)
    with pytest.raises(TxReverted, match="BadAmount"):  # rebate above the fee
        await sender.estimate(book.address, book.calldata("setFees", SEI, 1, 2, recipient.address))
    await book.admin_call(sender, "setFees", SEI, 10, 4, recipient.address)
    try:
        await maker.book.requote(
            maker.sender, SEI, [op_place(0, 1, ASK, 35_000, 10), op_place(1, 2, BID, 200, 5)]
        )
        m0 = await maker.book.balances(maker.address, SEI)
        t0 = await taker.book.balances(taker.address, SEI)
        r1 = await taker.book.take(taker.sender, SEI, 0, 35_000, 10)  # buys 10 lots
        r2 = await taker.book.take(taker.sender, SEI, 1, 200, 5)  # sells 5 lots
        buy, sell = 35_000 * 10 * 100, 200 * 5 * 100
        fee, rebate = (
            buy * 10 // 10_000 + sell * 10 // 10_000,
            buy * 4 // 10_000 + sell * 4 // 10_000,
        )
        m1 = await maker.book.balances(maker.address, SEI)
        t1 = await taker.book.balances(taker.address, SEI)
        assert t1.quote_free - t0.quote_free == -buy - buy // 1000 + sell - sell // 1000
        assert m1.quote_free - m0.quote_free == buy + rebate
        assert m1.quote_locked - m0.quote_locked == -sell
        assert names(r1) == ["Fill", "TakerFees"] and names(r2) == ["Fill", "TakerFees"]
        assert int((await book.call("feesAccrued", SEI))[0]) == fee - rebate
        token = TokenClient(book.rpc, (await book.market(SEI)).quote)
        before = await token.balance_of(recipient.address)
        with pytest.raises(TxReverted, match="NotAdmin"):
            await taker.sender.estimate(book.address, book.calldata("claimFees", SEI))
        await recipient.book.admin_call(recipient.sender, "claimFees", SEI)
        assert await token.balance_of(recipient.address) - before == fee - rebate
        assert int((await book.call("feesAccrued", SEI))[0]) == 0
    finally:
        await book.admin_call(sender, "setFees", SEI, 0, 0, "0x" + "00" * 20)
    await maker.book.cancel_all(maker.sender, SEI)
