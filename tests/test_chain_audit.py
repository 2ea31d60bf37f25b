"""FlashBook against the findings of the second contract review.

Each finding is replayed on an automining anvil: the test fails on the contract as it
was reviewed and passes on the fixed one. Every test keeps to its own price band (or its
own market) so the tests do not see each other's orders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from flashmm.venues.sei.abi import (
    ASK,
    BID,
    OP_PLACE,
    book_abi,
    decode_log,
    op_cancel,
    op_place,
    op_replace,
    unpack_info,
)
from flashmm.venues.sei.book import BookClient, TokenClient, deploy_token
from flashmm.venues.sei.errors import TxReverted

pytest_plugins = ["chain_fixtures"]

SEI = 1
TV = 100  # tickValue of SEI/USDC in the local deployment
U120 = (1 << 120) - 1
NO_FEES = (0, 0, "0x" + "00" * 20)


def events(receipt: dict[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for raw in receipt["logs"]:
        log = decode_log(raw, book_abi())
        if log is not None:
            info = log.args.get("info")
            out.append((log.name, unpack_info(int(info)) if info is not None else log.args))
    return out


def names(receipt: dict[str, Any]) -> list[str]:
    return [n for n, _ in events(receipt)]


def reasons(receipt: dict[str, Any]) -> list[int]:
    return [i.extra for n, i in events(receipt) if n == "OrderRejected"]


def three_and_three(first_id: int) -> Callable[..., list[int]]:
    """``quotes(mid, first=False)``: the ops of a quote of three bids and three asks of 10
    lots, a tick apart from one tick either side of ``mid``; placed in slots 0 to 5 the
    first time, then each order replaces the last one of its slot; every order has a new
    client id above ``first_id``."""
    ids = {i: first_id + i for i in range(6)}

    def quotes(m: int, first: bool = False) -> list[int]:
        ops = []
        for i in range(6):
            side, price = (BID, m - 1 - i) if i < 3 else (ASK, m + 1 + (i - 3))
            new = ids[i] + 6
            ops.append(
                op_place(i, new, side, price, 10)
                if first
                else op_replace(i, ids[i], new, side, price, 10)
            )
            ids[i] = new
        return ops

    return quotes


@pytest.fixture
def admin(fast_chain: Any, actors: Any, rpc_factory: Any) -> Any:
    rpc = rpc_factory(fast_chain.rpc_url)
    return fast_chain.sender(rpc, "deployer"), BookClient(rpc, fast_chain.dep.book)


# --- 3: a buy across levels with a taker fee that runs out of quote -------------------


async def test_fee_paying_buy_across_levels_fills_what_it_can_afford(
    actors: Any, admin: Any
) -> None:
    sender, book = admin
    maker, taker = actors["maker"], actors["venue_taker"]
    await book.admin_call(sender, "setFees", SEI, 10, 4, sender.address)
    try:
        await maker.book.requote(
            maker.sender, SEI, [op_place(0, 1, ASK, 36_000, 1), op_place(1, 2, ASK, 36_001, 5)]
        )
        # Exactly one lot at 36,000 plus two lots at 36,001 with each lot's fee rounded up:
        # what the reviewed contract let the taker buy before it found the fee of the first
        # lot unpaid (Panic 0x11 on the final fee).
        unit1 = 36_000 * TV
        unit2 = 36_001 * TV
        budget = unit1 + 2 * (unit2 + -(-unit2 * 10 // 10_000))
        bal = await taker.book.balances(taker.address, SEI)
        await taker.book.withdraw(taker.sender, SEI, 0, bal.quote_free - budget)
        accrued = int((await book.call("feesAccrued", SEI))[0])
        r = await taker.book.take(taker.sender, SEI, 0, 36_001, 6, gas=400_000)
        assert r["status"] == "0x1"
        fills = [(i.price, i.size) for n, i in events(r) if n == "Fill"]
        assert fills == [(36_000, 1), (36_001, 1)]  # a third lot would need 10,811,000
        paid = unit1 + unit2
        fee = paid * 10 // 10_000
        after = await taker.book.balances(taker.address, SEI)
        assert after.quote_free == budget - paid - fee >= 0
        rebate = unit1 * 4 // 10_000 + unit2 * 4 // 10_000
        assert int((await book.call("feesAccrued", SEI))[0]) == accrued + fee - rebate
    finally:
        await book.admin_call(sender, "setFees", SEI, *NO_FEES)
        await maker.book.cancel_all(maker.sender, SEI)


# --- 6: op kinds and reserved bits ----------------------------------------------------


async def test_unknown_op_kind_and_reserved_bits_are_rejected_as_bad_orders(
    actors: Any,
) -> None:
    maker = actors["maker2"]
    await maker.book.requote(maker.sender, SEI, [op_place(0, 10, ASK, 37_000, 1)])
    kind3 = op_replace(0, 10, 11, ASK, 37_005, 1) & ~(0xFF << 176) | (3 << 176)
    side2 = op_place(1, 12, BID, 10, 1) | (2 << 160)  # side field 2: neither bid nor ask
    high = op_place(2, 13, ASK, 37_006, 1) | (1 << 250)
    ok = op_place(3, 14, ASK, 37_007, 1)
    assert (ok >> 176) & 0xFF == OP_PLACE
    r = await maker.book.requote(maker.sender, SEI, [kind3, side2, high, ok])
    assert names(r) == ["OrderRejected"] * 3 + ["OrderPlaced"]
    assert reasons(r) == [4, 4, 4]
    # the kind-3 op did not replace the order in slot 0
    live = sorted(
        (o.slot, o.client_id, o.price) for o in await maker.book.open_orders(maker.address, SEI)
    )
    assert live == [(0, 10, 37_000), (3, 14, 37_007)]
    await maker.book.cancel_all(maker.sender, SEI)


async def test_a_rejected_replace_cancels_the_old_order_whatever_the_reason(
    actors: Any,
) -> None:
    """A replace whose new order is rejected has cancelled the old one: so it was for a
    cross, missing funds or a bad price, but a replace rejected for a reserved bit kept the
    old order live (and one at the old price and size would even have been read as an
    in-place amend). Only a replace that names another client id than the slot's order
    leaves that order alone (slot busy)."""
    maker = actors["maker2"]
    await maker.book.requote(
        maker.sender, SEI, [op_place(i, 20 + i, ASK, 38_000 + i, 1) for i in range(4)]
    )
    amend = op_replace(0, 20, 30, ASK, 38_000, 1) | (1 << 250)  # same price and size
    side = op_replace(1, 21, 31, ASK, 38_005, 1) | (2 << 160)
    zero = op_replace(2, 22, 32, ASK, 0, 1)  # price 0: rejected as before
    other = op_replace(3, 99, 33, ASK, 38_010, 1)  # names another client id
    r = await maker.book.requote(maker.sender, SEI, [amend, side, zero, other])
    assert names(r) == ["OrderCancelled", "OrderRejected"] * 3 + ["OrderRejected"]
    assert reasons(r) == [4, 4, 4, 2]
    live = [(o.slot, o.client_id) for o in await maker.book.open_orders(maker.address, SEI)]
    assert live == [(3, 23)]
    bal = await maker.book.balances(maker.address, SEI)
    assert bal.base_locked == (await maker.book.market(SEI)).lot_units
    await maker.book.cancel_all(maker.sender, SEI)


# --- 5: packed balances ---------------------------------------------------------------


async def test_a_deposit_past_the_packed_balance_width_is_refused(
    fast_chain: Any, actors: Any, admin: Any
) -> None:
    sender, book = admin
    owner, other = actors["spare"], actors["maker2"]
    base = await deploy_token(sender, "Huge", "HUGE", 18)
    quote = await deploy_token(sender, "Usd", "USD", 6)
    lot = 1 << 80
    market = await book.create_market(sender, base, quote, 1, lot)
    token = TokenClient(book.rpc, base)
    for who in (owner, other):
        await token.mint(sender, who.address, 4 * U120)
        await token.approve(who.sender, book.address, 2**256 - 1)
    # one ask holds all of it: the account's free base is then 0, its locked base ~2**120
    lots = U120 // lot
    whole = lots * lot  # 2**120 - 2**80: room for 2**80 - 1 more base units in the market
    await owner.book.deposit(owner.sender, market, whole, 0)
    r = await owner.book.requote(owner.sender, market, [op_place(0, 1, ASK, 5, lots)])
    assert names(r) == ["OrderPlaced"]
    # a second deposit of the same would make free + locked 2**121: a cancel would then
    # write past the 120-bit base field (the reviewed contract took the deposit)
    with pytest.raises(TxReverted, match="BadAmount"):
        await owner.sender.estimate(book.address, book.calldata("deposit", market, whole, 0))
    # so is another owner's deposit past the market's room (a fill could then credit the
    # owner past the width); what is left fits
    with pytest.raises(TxReverted, match="BadAmount"):
        await other.sender.estimate(book.address, book.calldata("deposit", market, lot, 0))
    await other.book.deposit(other.sender, market, lot - 1, 0)
    await owner.book.cancel_all(owner.sender, market)
    bal = await owner.book.balances(owner.address, market)
    assert (bal.base_free, bal.base_locked) == (whole, 0)
    # withdrawals make room again
    await owner.book.withdraw(owner.sender, market, 1 << 100, 0)
    await other.book.deposit(other.sender, market, 1 << 100, 0)
    with pytest.raises(TxReverted, match="BadAmount"):
        await other.sender.estimate(book.address, book.calldata("deposit", market, 1, 0))


async def test_listing_refuses_tokens_with_more_than_18_decimals(
    fast_chain: Any, admin: Any, rpc_factory: Any
) -> None:
    """A market's holdings are packed in 120 bits of base and 128 of quote units: at the 36
    decimals listing allowed, 2**120 - 1 base units are about 1.3 tokens, so one depositor
    could fill the market and lock everyone else out of deposits. Listing now takes at
    most 18 decimals (over 10**18 whole tokens of room), and `chain deploy` refuses such a
    --quote-token in one line before it deploys anything."""
    from flashmm.cli.chain import _check_quote_token
    from flashmm.errors import UserInputError

    sender, book = admin
    assert int((await book.call("MAX_DECIMALS"))[0]) == 18
    fine = await deploy_token(sender, "Fine", "FINE", 18)
    usd = await deploy_token(sender, "Usd", "USD", 6)
    for d in (19, 36):
        wide = await deploy_token(sender, f"Wide{d}", f"W{d}", d)
        for base, quote in ((wide, usd), (fine, wide)):
            with pytest.raises(TxReverted, match="BadToken"):
                await sender.estimate(
                    book.address, book.calldata("createMarket", base, quote, 1, 1)
                )
        with pytest.raises(UserInputError) as err:
            await _check_quote_token(rpc_factory(fast_chain.rpc_url), wide)
        assert str(err.value) == f"--quote-token: {wide} has {d} decimals (at most 18)"
    market = await book.create_market(sender, fine, usd, 1, 1)
    cfg = await book.market_config(market)
    assert (cfg.base_decimals, cfg.quote_decimals) == (18, 6)


# --- 1 and 2: ring aliases, scan give-ups and ring squatting --------------------------

RING = 1_016  # FlashBook.RING_TICKS


async def _hint(book: BookClient) -> int:
    return int((await book.market(SEI)).best_ask_hint)


async def test_far_levels_cannot_freeze_a_side_through_ring_aliases(actors: Any) -> None:
    """The review's attack: 40 one-lot asks a ring above the book take the ring entries of
    the ticks just below the best ask, one more sits in the overflow book, and a placed and
    cancelled ask leaves the hint stale below them. The reviewed contract then gave up every
    scan without moving the hint: bids under the best ask were rejected as crosses and takes
    filled nothing, for good. Far levels now go to the overflow book, so none is an alias."""
    maker, victim, attacker, taker = (actors[r] for r in ("maker2", "maker", "spare", "taker"))
    best = 150_000
    await maker.book.requote(maker.sender, SEI, [op_place(0, 1, ASK, best, 5)])
    far = [op_place(i, 100 + i, ASK, best - 100 + i + RING, 1) for i in range(40)]
    far.append(op_place(40, 140, ASK, best - 100 + 2 * RING, 1))
    await attacker.book.requote(attacker.sender, SEI, far)
    await attacker.book.requote(attacker.sender, SEI, [op_place(41, 141, ASK, best - 200, 1)])
    await attacker.book.requote(attacker.sender, SEI, [op_cancel(41, 141)])
    # the cancelled ask left the hint stale below the aliases; now it is put back
    assert best - 127 < await _hint(maker.book) <= best
    try:
        for k in range(2):
            r = await victim.book.requote(
                victim.sender, SEI, [op_place(k, 200 + k, BID, best - 1, 1)]
            )
            assert names(r) == ["OrderPlaced"], reasons(r)
            assert int(r["gasUsed"], 16) < 150_000
        r = await taker.book.take(taker.sender, SEI, 0, best, 2, gas=1_000_000)
        assert [(i.price, i.size) for n, i in events(r) if n == "Fill"] == [(best, 2)]
    finally:
        for who in (maker, victim, attacker):
            await who.book.cancel_all(who.sender, SEI)


async def test_a_scan_that_gives_up_keeps_its_progress(actors: Any) -> None:
    """A stale hint over a sparse overflow book, with an empty bid side: asks near the best
    ask, one of them in the overflow book, a live ask ten rings below them, then an ask
    placed and cancelled seventy rings below leaves the hint there (the ring bound skips the
    ring's asks; the overflow book's empty words up to the live far ask are walked). A scan
    that runs out of reads rejects the order with REJECT_SCAN (not as a cross) and keeps
    what it proved in the hint, so later calls get through; the contract of the second
    review gave up at the same place every time."""
    maker, victim, attacker, taker = (actors[r] for r in ("maker2", "maker", "spare", "taker"))
    assert (await maker.book.market(SEI)).bid_levels == 0
    best = 160_000
    await maker.book.requote(maker.sender, SEI, [op_place(0, 1, ASK, best, 5)])
    near = [op_place(i, 100 + i, ASK, best + 1 + i, 1) for i in range(40)]
    near.append(op_place(40, 140, ASK, best + 1 + RING, 1))  # an overflow level
    await attacker.book.requote(attacker.sender, SEI, near)
    keep, drop = best - 10 * RING, best - 70 * RING
    r = await attacker.book.requote(
        attacker.sender,
        SEI,
        [op_place(41, 141, ASK, keep, 1), op_place(42, 142, ASK, drop, 1), op_cancel(42, 142)],
    )
    assert names(r) == ["OrderPlaced", "OrderPlaced", "OrderCancelled"]
    assert await _hint(maker.book) <= drop + 1
    try:
        seen: list[int] = []
        hints = [await _hint(maker.book)]
        for k in range(12):
            r = await victim.book.requote(
                victim.sender, SEI, [op_place(k, 200 + k, BID, keep - 1, 1)], gas=2_000_000
            )
            assert int(r["gasUsed"], 16) < 400_000
            seen += reasons(r) or [0]
            hints.append(await _hint(maker.book))
            if names(r) == ["OrderPlaced"]:
                break
        assert seen[-1] == 0 and set(seen[:-1]) <= {8}, seen  # never a false cross
        assert len(seen) > 1 and hints == sorted(hints) and len(set(hints)) == len(hints)
        await attacker.book.requote(attacker.sender, SEI, [op_cancel(41, 141)])
        r = await taker.book.take(taker.sender, SEI, 0, best, 2, gas=2_000_000)
        assert [(i.price, i.size) for n, i in events(r) if n == "Fill"] == [(best, 2)]
    finally:
        for who in (maker, victim, attacker):
            await who.book.cancel_all(who.sender, SEI)


async def test_squatted_ring_entries_cost_a_trend_no_fresh_slot(actors: Any) -> None:
    """Ring squatting: one-lot levels a ring away from every tick a 3+3 quote will visit in
    a 40-tick trend. On the reviewed contract they held those ticks' ring entries, so each
    new quote level went to fresh overflow slots; now they are too far behind the best to
    take a ring entry, and the trend (over warmed ticks) writes no fresh slot and stays
    under 150,000 gas a requote."""
    from flashmm.venues.sei.gas import gas_report

    victim, attacker = actors["maker"], actors["spare"]
    mid, steps = 250_000, 40
    await victim.book.warm(victim.sender, SEI, mid - 8, mid + steps + 8)
    quotes = three_and_three(1_000)

    await victim.book.requote(victim.sender, SEI, quotes(mid, first=True))
    squat = [
        op_place(i, 500 + i, BID, t - RING, 1) for i, t in enumerate(range(mid - 3, mid + steps))
    ]
    squat += [
        op_place(100 + i, 700 + i, ASK, t + RING, 1)
        for i, t in enumerate(range(mid + 1, mid + steps + 4))
    ]
    await attacker.book.requote(attacker.sender, SEI, squat, gas=12_000_000)
    try:
        reports = []
        for k in range(1, steps + 1):
            r = await victim.book.requote(victim.sender, SEI, quotes(mid + k))
            assert names(r) == ["OrderReplaced"] * 6
            reports.append(await gas_report(victim.book.rpc, r["transactionHash"], r))
        fresh = [g.fresh_slots for g in reports]
        sei = [g.sei_gas for g in reports]
        assert sum(fresh) == 0, (fresh, max(sei))
        assert max(sei) <= 150_000, sei
    finally:
        for who in (victim, attacker):
            await who.book.cancel_all(who.sender, SEI)


async def test_a_stale_hint_costs_honest_levels_no_fresh_slot(actors: Any) -> None:
    """A stale best-price hint against the distance rule: with no bids (nothing tightens
    the ask hint), a one-lot ask placed and cancelled 50,000 ticks below the book left the
    hint there. On the contract of the rule's first version every new ask level more than
    half a ring above that hint went to fresh overflow slots, for good (3 fresh slots and
    298,750 Sei gas on the first requote of a maker's 3 asks stepping up a tick, then one
    fresh slot every few requotes); the rule then learnt to scan from the hint and keep
    what it proved. Now the far ask goes to the overflow book and its cancel puts the hint
    back where it was, and the steps write no fresh slot."""
    from flashmm.venues.sei.gas import gas_report

    maker, attacker = actors["maker"], actors["spare"]
    mid, steps = 350_000, 10
    await maker.book.warm(maker.sender, SEI, mid - 8, mid + steps + 8)
    ids = [1, 2, 3]
    await maker.book.requote(
        maker.sender, SEI, [op_place(i, ids[i], ASK, mid + i, 10) for i in range(3)]
    )
    r = await attacker.book.requote(
        attacker.sender, SEI, [op_place(0, 77, ASK, mid - 50_000, 1), op_cancel(0, 77)]
    )
    assert names(r) == ["OrderPlaced", "OrderCancelled"]
    assert mid - 127 < await _hint(maker.book) <= mid  # no stale hint: the ring bound's word
    try:
        reports = []
        for k in range(1, steps + 1):
            ops = []
            for i in range(3):
                ops.append(op_replace(i, ids[i], ids[i] + 10, ASK, mid + k + i, 10))
                ids[i] += 10
            r = await maker.book.requote(maker.sender, SEI, ops)
            assert names(r) == ["OrderReplaced"] * 3
            reports.append(await gas_report(maker.book.rpc, r["transactionHash"], r))
        fresh = [g.fresh_slots for g in reports]
        sei = [g.sei_gas for g in reports]
        assert sum(fresh) == 0, (fresh, sei)
        assert max(sei) <= 150_000, sei
        assert mid - 127 < await _hint(maker.book) <= mid + steps
    finally:
        for who in (maker, attacker):
            await who.book.cancel_all(who.sender, SEI)


@pytest.mark.parametrize("keep_overflow", [False, True], ids=["ring-only", "with-overflow"])
async def test_an_ask_dropped_many_rings_below_costs_the_bot_no_fresh_slot(
    actors: Any, keep_overflow: bool
) -> None:
    """The slow scan form the third review left: with no bids on the book, a stranger holding
    40 one-lot ring asks just above the best places an ask 100 rings lower and cancels it.
    On that contract the hint stayed there and every scan from it walked the stranger's
    asks as ring aliases lap by lap, about 27 a call: a bot quoting 3+3 afterwards had its
    bids rejected with reason 8 for well over a hundred requotes, and a new ask level whose
    distance scan gave up went to fresh overflow slots. Now an ask more than a bitmap word
    ahead of the side's ring goes to the overflow book, counted apart from the side's other
    overflow levels, and its cancel puts the hint back to the ring bound (and the overflow
    bound of the level the stranger keeps in the overflow book, with-overflow)."""
    from flashmm.venues.sei.gas import gas_report

    bot, attacker = actors["maker"], actors["spare"]
    mid, steps = 600_000, 12
    await bot.book.warm(bot.sender, SEI, mid - steps - 8, mid + 8)
    assert (await bot.book.market(SEI)).bid_levels == 0
    near = [op_place(i, 300 + i, ASK, mid + 4 + i, 1) for i in range(40)]
    if keep_overflow:
        near.append(op_place(40, 340, ASK, mid + 44 + RING, 1))  # more than half a ring behind
    await attacker.book.requote(attacker.sender, SEI, near)
    drop = mid - 100 * RING - 200
    r = await attacker.book.requote(
        attacker.sender, SEI, [op_place(41, 341, ASK, drop, 1), op_cancel(41, 341)]
    )
    assert names(r) == ["OrderPlaced", "OrderCancelled"]
    assert mid + 4 - 127 < await _hint(bot.book) <= mid + 4  # the ring bound's word
    quotes = three_and_three(2_000)

    try:
        rejected: list[int] = []
        reports = []
        for k in range(steps + 1):
            r = await bot.book.requote(
                bot.sender, SEI, quotes(mid - k, first=k == 0), gas=2_000_000
            )
            got = reasons(r)
            assert set(got) <= {8}, got  # never a false cross
            if got:
                rejected.append(k)
            if not got:
                assert len(names(r)) == 6 and set(names(r)) <= {"OrderPlaced", "OrderReplaced"}
            reports.append(await gas_report(bot.book.rpc, r["transactionHash"], r))
        # the bot's asks never paid a fresh slot, not even while its bids waited
        assert sum(g.fresh_slots for g in reports[1:]) == 0
        assert rejected == []
        sei = [g.sei_gas for g in reports[1:]]
        assert max(sei) <= 150_000, sei
        assert await _hint(bot.book) == mid - steps + 1
    finally:
        for who in (bot, attacker):
            await who.book.cancel_all(who.sender, SEI)


async def test_every_reject_reason_has_a_name_in_the_python_decoder(actors: Any) -> None:
    from flashmm.contracts import load_artifact
    from flashmm.venues.sei.abi import REJECT_REASONS

    book = actors["maker"].book
    consts = [
        e["name"]
        for e in load_artifact("FlashBook")["abi"]
        if e.get("type") == "function" and e["name"].startswith("REJECT_")
    ]
    codes = {int((await book.call(name))[0]) for name in consts}
    assert codes == set(REJECT_REASONS) == set(range(1, 9))
