"""FlashBook contract behaviour, driven through the Python client on an automining anvil.

Each test trades in its own price band so the tests do not see each other's orders.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from flashmm.venues.sei.abi import (
    ASK,
    BID,
    book_abi,
    decode_log,
    op_cancel,
    op_place,
    op_replace,
    unpack_info,
)
from flashmm.venues.sei.errors import TxReverted

pytest_plugins = ["chain_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
SEI = 1  # market id of SEI/USDC in the local deployment
TICK_VALUE = 100  # quote units per tick per lot (tick 0.0001 USDC x lot 1 SEI, 6 decimals)
LOT_UNITS = 10**18


def events(receipt: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for raw in receipt["logs"]:
        log = decode_log(raw, book_abi())
        if log is not None:
            args = dict(log.args)
            if "info" in args:
                args["order"] = unpack_info(args["info"])
            out.append((log.name, args))
    return out


def names(receipt: dict[str, Any]) -> list[str]:
    return [n for n, _ in events(receipt)]


async def test_partial_fill_settles_maker_and_taker(actors: Any) -> None:
    maker, taker = actors["maker"], actors["taker"]
    before_m = await maker.book.balances(maker.address, SEI)
    before_t = await taker.book.balances(taker.address, SEI)
    r = await maker.book.requote(maker.sender, SEI, [op_place(0, 101, ASK, 1000, 5)])
    assert names(r) == ["OrderPlaced"]
    locked = await maker.book.balances(maker.address, SEI)
    assert locked.base_locked == before_m.base_locked + 5 * LOT_UNITS
    assert locked.base_free == before_m.base_free - 5 * LOT_UNITS

    r = await taker.book.take(taker.sender, SEI, 0, 1000, 3)
    ((name, fill),) = events(r)
    assert name == "Fill"
    assert fill["maker"] == maker.address.lower() or fill["maker"].lower() == maker.address.lower()
    o = fill["order"]
    assert (o.client_id, o.price, o.size, o.side, o.extra) == (101, 1000, 3, ASK, 2)

    after_m = await maker.book.balances(maker.address, SEI)
    after_t = await taker.book.balances(taker.address, SEI)
    assert after_m.quote_free == before_m.quote_free + 3 * 1000 * TICK_VALUE
    assert after_m.base_locked == before_m.base_locked + 2 * LOT_UNITS
    assert after_t.base_free == before_t.base_free + 3 * LOT_UNITS
    assert after_t.quote_free == before_t.quote_free - 3 * 1000 * TICK_VALUE
    (left,) = [o for o in await maker.book.open_orders(maker.address, SEI) if o.client_id == 101]
    assert left.size == 2
    await maker.book.cancel_all(maker.sender, SEI)


async def test_price_time_priority_across_makers(actors: Any) -> None:
    m1, m2, taker = actors["maker"], actors["maker2"], actors["taker"]
    await m1.book.requote(m1.sender, SEI, [op_place(1, 201, ASK, 2001, 4)])
    await m2.book.requote(m2.sender, SEI, [op_place(1, 202, ASK, 2000, 4)])
    await m2.book.requote(m2.sender, SEI, [op_place(2, 203, ASK, 2001, 4)])
    depth = await taker.book.depth(SEI, ASK, 5)
    assert [(d.price, d.size, d.orders) for d in depth[:2]] == [(2000, 4, 1), (2001, 8, 2)]
    r = await taker.book.take(taker.sender, SEI, 0, 2001, 6)
    fills = [a["order"] for n, a in events(r) if n == "Fill"]
    # best price first, then the earlier order at the same price
    assert [(f.client_id, f.price, f.size) for f in fills] == [(202, 2000, 4), (201, 2001, 2)]
    depth = await taker.book.depth(SEI, ASK, 5)
    assert (depth[0].price, depth[0].size, depth[0].orders) == (2001, 6, 2)
    await m1.book.cancel_all(m1.sender, SEI)
    await m2.book.cancel_all(m2.sender, SEI)


async def test_cancel_releases_locked_quote(actors: Any) -> None:
    maker = actors["maker"]
    before = await maker.book.balances(maker.address, SEI)
    await maker.book.requote(maker.sender, SEI, [op_place(3, 301, BID, 500, 7)])
    mid = await maker.book.balances(maker.address, SEI)
    assert mid.quote_locked - before.quote_locked == 500 * 7 * TICK_VALUE
    r = await maker.book.requote(maker.sender, SEI, [op_cancel(3, 301)])
    assert names(r) == ["OrderCancelled"]
    after = await maker.book.balances(maker.address, SEI)
    assert after == before


async def test_post_only_cross_rejected_individually(actors: Any) -> None:
    m1, m2 = actors["maker"], actors["maker2"]
    await m1.book.requote(m1.sender, SEI, [op_place(4, 401, ASK, 3000, 1)])
    r = await m2.book.requote(
        m2.sender, SEI, [op_place(4, 402, BID, 3000, 1), op_place(5, 403, BID, 2999, 1)]
    )
    ev = events(r)
    assert [n for n, _ in ev] == ["OrderRejected", "OrderPlaced"]
    rej = ev[0][1]["order"]
    assert (rej.client_id, rej.extra) == (402, 1)  # REJECT_CROSS
    assert ev[1][1]["order"].client_id == 403
    # and a sell into the bid is rejected too
    r = await m1.book.requote(m1.sender, SEI, [op_place(5, 404, ASK, 2999, 1)])
    assert [(n, a["order"].extra) for n, a in events(r)] == [("OrderRejected", 1)]
    await m1.book.cancel_all(m1.sender, SEI)
    await m2.book.cancel_all(m2.sender, SEI)


async def test_replace_moves_and_keeps_priority_when_shrinking(actors: Any) -> None:
    m1, m2, taker = actors["maker"], actors["maker2"], actors["taker"]
    await m1.book.requote(m1.sender, SEI, [op_place(6, 601, BID, 4000, 5)])
    await m2.book.requote(m2.sender, SEI, [op_place(6, 602, BID, 4000, 5)])
    # shrink at the same price: stays first in the queue, new client id
    r = await m1.book.requote(m1.sender, SEI, [op_replace(6, 601, 611, BID, 4000, 3)])
    ((name, a),) = events(r)
    assert name == "OrderReplaced" and a["order"].client_id == 611 and a["order"].extra == 601
    r = await taker.book.take(taker.sender, SEI, 1, 4000, 1)
    assert [a["order"].client_id for n, a in events(r) if n == "Fill"] == [611]
    # move to a new price: the old level empties, the new one holds the order
    r = await m1.book.requote(m1.sender, SEI, [op_replace(6, 611, 612, BID, 3990, 4)])
    assert names(r) == ["OrderReplaced"]
    orders = {o.client_id: o for o in await m1.book.open_orders(m1.address, SEI)}
    assert (orders[612].price, orders[612].size, orders[612].slot) == (3990, 4, 6)
    assert 611 not in orders
    # replacing an id that is no longer in the slot (already replaced) is refused
    r = await m1.book.requote(m1.sender, SEI, [op_replace(6, 611, 613, BID, 3980, 1)])
    assert [(n, a["order"].extra) for n, a in events(r)] == [("OrderRejected", 2)]
    # replacing into a slot whose order is gone places a fresh order
    await m1.book.requote(m1.sender, SEI, [op_cancel(6, 612)])
    r = await m1.book.requote(m1.sender, SEI, [op_replace(6, 612, 614, BID, 3980, 1)])
    assert names(r) == ["OrderPlaced"]
    await m1.book.cancel_all(m1.sender, SEI)
    await m2.book.cancel_all(m2.sender, SEI)


async def test_cancel_of_unknown_or_stale_id_is_a_noop(actors: Any) -> None:
    maker = actors["maker"]
    r = await maker.book.requote(maker.sender, SEI, [op_cancel(200, 999_999)])
    assert r["status"] == "0x1" and names(r) == []
    # an id that was never placed, in the same tx as a placement into that slot later
    r = await maker.book.requote(
        maker.sender, SEI, [op_cancel(7, 701), op_place(7, 701, ASK, 5000, 1), op_cancel(7, 700)]
    )
    assert names(r) == ["OrderPlaced"]
    r = await maker.book.requote(maker.sender, SEI, [op_place(7, 702, ASK, 5001, 1)])
    assert [(n, a["order"].extra) for n, a in events(r)] == [("OrderRejected", 2)]  # slot busy
    await maker.book.cancel_all(maker.sender, SEI)


async def test_insufficient_funds_rejected_not_reverted(actors: Any) -> None:
    maker = actors["maker"]
    bal = await maker.book.balances(maker.address, SEI)
    too_many = bal.base_free // LOT_UNITS + 1
    r = await maker.book.requote(
        maker.sender, SEI, [op_place(8, 801, ASK, 6000, too_many), op_place(9, 802, ASK, 6001, 1)]
    )
    assert [(n, a["order"].extra) for n, a in events(r)] == [
        ("OrderRejected", 3),
        ("OrderPlaced", 0),
    ]
    await maker.book.cancel_all(maker.sender, SEI)


async def test_withdraw_only_free_funds(actors: Any) -> None:
    maker = actors["maker"]
    await maker.book.requote(maker.sender, SEI, [op_place(10, 1001, BID, 100, 10)])
    bal = await maker.book.balances(maker.address, SEI)
    await maker.book.withdraw(maker.sender, SEI, 0, 1_000)
    with pytest.raises(TxReverted, match="InsufficientBalance"):
        await maker.book.withdraw(maker.sender, SEI, 0, bal.quote_free)  # 1,000 already gone
    after = await maker.book.balances(maker.address, SEI)
    assert after.quote_free == bal.quote_free - 1_000
    assert after.quote_locked == bal.quote_locked
    await maker.book.cancel_all(maker.sender, SEI)


async def test_nobody_touches_another_owners_orders_or_funds(actors: Any) -> None:
    owner, other = actors["maker"], actors["maker2"]
    await owner.book.requote(owner.sender, SEI, [op_place(11, 1101, ASK, 7000, 2)])
    before = await owner.book.balances(owner.address, SEI)
    r = await other.book.requote(
        other.sender, SEI, [op_cancel(11, 1101), op_replace(11, 1101, 1102, ASK, 7100, 1)]
    )
    # the other trader's ops act on its own slot 11 only
    assert names(r) == ["OrderPlaced"]
    await other.book.cancel_all(other.sender, SEI)
    orders = await owner.book.open_orders(owner.address, SEI)
    assert [(o.client_id, o.price, o.size) for o in orders] == [(1101, 7000, 2)]
    other_bal = await other.book.balances(other.address, SEI)
    with pytest.raises(TxReverted, match="InsufficientBalance"):
        await other.book.withdraw(other.sender, SEI, other_bal.base_free + 1, 0)
    assert await owner.book.balances(owner.address, SEI) == before
    await owner.book.cancel_all(owner.sender, SEI)


async def test_take_respects_limit_and_self_trade_cancels_resting(actors: Any) -> None:
    maker, taker = actors["maker"], actors["taker"]
    await maker.book.requote(
        maker.sender, SEI, [op_place(12, 1201, BID, 8000, 2), op_place(13, 1202, BID, 7990, 2)]
    )
    # limit 7995: only the 8000 bid is hit even though 10 lots were asked for
    r = await taker.book.take(taker.sender, SEI, 1, 7995, 10)
    assert [(a["order"].price, a["order"].size) for n, a in events(r) if n == "Fill"] == [(8000, 2)]
    # the maker selling into its own bid cancels it instead of trading
    r = await maker.book.take(maker.sender, SEI, 1, 7990, 1)
    assert names(r) == ["OrderCancelled"]
    assert await maker.book.open_orders(maker.address, SEI) == []


async def test_take_with_nothing_to_take_is_harmless(actors: Any) -> None:
    taker = actors["taker"]
    r = await taker.book.take(taker.sender, SEI, 0, 10, 5)  # no ask at or below tick 10
    assert r["status"] == "0x1" and names(r) == []


@pytest.mark.slow
def test_committed_artifacts_match_sources() -> None:
    proc = subprocess.run(
        ["node", "contracts/compile.js", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
