"""FlashBook against a Python reference model of the book.

Hypothesis drives random requotes (place, replace, cancel), takes and cancelAlls by three
makers and two takers on an automining anvil. After every transaction the events of the
receipt (placements, rejections with their reason, replacements, cancels and every fill:
maker, taker, price, lots, maker remainder) must be exactly the model's, and so must every
trader's free and locked balances and every maker's open orders. Prices fall in a narrow
band and, now and then, one or two rings (RING_TICKS) away from it, so levels of different
ticks meet in one ring entry and the overflow book is exercised too. Each example starts and
ends with an empty book (cancelAll by every maker); examples, their length and shrinking
(off) are bounded, so the test is bounded in time (about 15 s).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

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
from flashmm.venues.sei.book import BookClient
from flashmm.venues.sei.rpc import JsonRpc

pytest_plugins = ["chain_fixtures"]

SEI = 1
TV = 100  # tickValue of SEI/USDC in the local deployment
LU = 10**18  # lotUnits
MAKERS = ("maker", "maker2", "spare")
TAKERS = ("taker", "venue_taker")
SLOTS = 4
LOW, HIGH = 2_030, 2_042  # price band of this test, across a bitmap word boundary (2,032)
RING = 1_016  # FlashBook.RING_TICKS: ticks this far apart share ring storage
HUGE = 10**12  # lots no account can fund


@dataclass
class Order:
    cid: int
    side: int
    price: int
    size: int


@dataclass
class Model:
    """The book as the contract should hold it: FIFO levels, free balances, live orders."""

    addr: dict[str, str]
    free: dict[str, list[int]]  # role -> [base, quote]
    orders: dict[tuple[str, int], Order] = field(default_factory=dict)
    levels: dict[tuple[int, int], list[tuple[str, int]]] = field(default_factory=dict)
    taker_fee_bps: int = 0
    maker_rebate_bps: int = 0
    fees_accrued: int = 0

    # --- helpers ------------------------------------------------------------------------
    def _lock(self, who: str, o: Order, sign: int) -> None:
        if o.side == BID:
            self.free[who][1] -= sign * o.price * o.size * TV
        else:
            self.free[who][0] -= sign * o.size * LU

    def _unlink(self, who: str, slot: int) -> Order:
        o = self.orders.pop((who, slot))
        level = self.levels[(o.side, o.price)]
        level.remove((who, slot))
        if not level:
            del self.levels[(o.side, o.price)]
        self._lock(who, o, -1)
        return o

    def _link(self, who: str, slot: int, o: Order) -> None:
        self.orders[(who, slot)] = o
        self.levels.setdefault((o.side, o.price), []).append((who, slot))
        self._lock(who, o, 1)

    def _reason(self, who: str, o: Order) -> int:
        if o.price == 0 or o.size == 0:
            return 4
        if o.side == BID and self.free[who][1] < o.price * o.size * TV:
            return 3
        if o.side == ASK and self.free[who][0] < o.size * LU:
            return 3
        opposite = [p for (s, p) in self.levels if s != o.side]
        if o.side == BID and any(p <= o.price for p in opposite):
            return 1
        if o.side == ASK and any(p >= o.price for p in opposite):
            return 1
        return 0

    def _ev(self, name: str, who: str, slot: int, o: Order, extra: int = 0) -> tuple[Any, ...]:
        return (name, self.addr[who], "", o.cid, o.price, o.size, o.side, slot, extra)

    def _insert(self, who: str, slot: int, o: Order, out: list[tuple[Any, ...]]) -> None:
        reason = self._reason(who, o)
        if reason:
            out.append(self._ev("OrderRejected", who, slot, o, reason))
        else:
            self._link(who, slot, o)
            out.append(self._ev("OrderPlaced", who, slot, o))

    # --- operations ---------------------------------------------------------------------
    def requote(self, who: str, ops: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for op in ops:
            kind, slot = op[0], op[1]
            cur = self.orders.get((who, slot))
            if kind == "cancel":
                if cur is not None and cur.cid == op[2]:
                    self._unlink(who, slot)
                    out.append(self._ev("OrderCancelled", who, slot, cur))
                continue
            new = Order(*op[-4:])
            if kind == "place":
                if cur is not None:
                    out.append(self._ev("OrderRejected", who, slot, new, 2))
                else:
                    self._insert(who, slot, new, out)
                continue
            old_id = op[2]
            if cur is None:
                self._insert(who, slot, new, out)
            elif cur.cid != old_id:
                out.append(self._ev("OrderRejected", who, slot, new, 2))
            elif (new.side, new.price) == (cur.side, cur.price) and 0 < new.size <= cur.size:
                self._lock(who, cur, -1)
                cur.cid, cur.size = new.cid, new.size  # keeps its place in the queue
                self._lock(who, cur, 1)
                out.append(self._ev("OrderReplaced", who, slot, cur, old_id))
            else:
                self._unlink(who, slot)
                reason = self._reason(who, new)
                if reason:
                    out.append(self._ev("OrderCancelled", who, slot, cur))
                    out.append(self._ev("OrderRejected", who, slot, new, reason))
                else:
                    self._link(who, slot, new)
                    out.append(self._ev("OrderReplaced", who, slot, new, old_id))
        return out

    def take(
        self, who: str, side: int, limit: int, size: int, max_orders: int
    ) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        maker_side = 1 - side
        prices = sorted((p for (s, p) in self.levels if s == maker_side), reverse=maker_side == BID)
        left, levels_left, paid, rebates = size, 32, 0, 0
        for p in prices:
            if left == 0 or levels_left == 0 or max_orders == 0:
                break
            if (side == 0 and p > limit) or (side == 1 and p < limit):
                break
            got, touched, broke = 0, 0, False
            queue = self.levels[(maker_side, p)]
            while queue and got < left and touched < max_orders:
                touched += 1
                maker, slot = queue[0]
                o = self.orders[(maker, slot)]
                q = min(left - got, o.size)
                unit = p * TV + -(-p * TV * self.taker_fee_bps // 10_000)  # fee rounded up
                # the fee owed for the take's fills so far is charged at the end: keep it
                owed = paid * self.taker_fee_bps // 10_000
                cap = (self.free[who][1] - owed) // unit if side == 0 else self.free[who][0] // LU
                if q > cap:
                    q, broke = cap, True
                    if q == 0:
                        break
                if side == 0:
                    self.free[maker][1] += q * p * TV
                    self.free[who][1] -= q * p * TV
                    self.free[who][0] += q * LU
                else:
                    self.free[maker][0] += q * LU
                    self.free[who][0] -= q * LU
                    self.free[who][1] += q * p * TV
                rebate = q * p * TV * self.maker_rebate_bps // 10_000
                self.free[maker][1] += rebate
                rebates += rebate
                paid += q * p * TV
                o.size -= q
                got += q
                out.append(
                    ("Fill", self.addr[maker], self.addr[who], o.cid, p, q, o.side, slot, o.size)
                )
                if o.size == 0:
                    queue.pop(0)
                    del self.orders[(maker, slot)]
                if broke:
                    break
            if not queue:
                del self.levels[(maker_side, p)]
            left -= got
            max_orders -= touched
            levels_left -= 1
            if broke:
                break
        if self.taker_fee_bps:
            fee = paid * self.taker_fee_bps // 10_000
            self.free[who][1] -= fee
            self.fees_accrued += fee - rebates
        return out

    def cancel_all(self, who: str) -> list[tuple[Any, ...]]:
        out = []
        for slot in sorted(s for (w, s) in self.orders if w == who):
            o = self._unlink(who, slot)
            out.append(self._ev("OrderCancelled", who, slot, o))
        return out

    def locked(self, who: str) -> tuple[int, int]:
        base = quote = 0
        for (w, _), o in self.orders.items():
            if w == who:
                if o.side == BID:
                    quote += o.price * o.size * TV
                else:
                    base += o.size * LU
        return base, quote


def receipt_events(receipt: dict[str, Any]) -> list[tuple[Any, ...]]:
    out = []
    for raw in receipt["logs"]:
        log = decode_log(raw, book_abi())
        if log is None or "info" not in log.args:
            continue
        i = unpack_info(int(log.args["info"]))
        if log.name == "Fill":
            who, taker = str(log.args["maker"]), str(log.args["taker"])
        else:
            who, taker = str(log.args["owner"]), ""
        out.append(
            (
                log.name,
                who.lower(),
                taker.lower(),
                i.client_id,
                i.price,
                i.size,
                i.side,
                i.slot,
                i.extra,
            )
        )
    return out


class Runner:
    def __init__(self, chain: Any, rpc: JsonRpc) -> None:
        self.rpc = rpc
        self.book = BookClient(rpc, chain.dep.book)
        self.admin = chain.sender(rpc, "deployer")
        self.senders = {r: chain.sender(rpc, r) for r in MAKERS + TAKERS}
        self.addr = {r: s.address.lower() for r, s in self.senders.items()}
        self.cid = 0

    async def balances(self) -> dict[str, tuple[int, int, int, int]]:
        roles = list(self.senders)
        fn = self.book.abi.fn("balances")
        calls = [
            (
                "eth_call",
                [
                    {"to": self.book.address, "data": "0x" + fn.encode(self.addr[r], SEI).hex()},
                    "latest",
                ],
            )
            for r in roles
        ]
        replies = await self.rpc.batch(calls)
        return {
            r: tuple(int(x) for x in fn.decode_output(bytes.fromhex(rep[2:])))  # type: ignore[misc]
            for r, rep in zip(roles, replies, strict=True)
        }

    async def check(self, model: Model, receipt: dict[str, Any], want: list[Any]) -> None:
        assert receipt["status"] == "0x1"
        assert receipt_events(receipt) == want
        bal = await self.balances()
        for r in self.senders:
            base_l, quote_l = model.locked(r)
            assert bal[r] == (model.free[r][0], model.free[r][1], base_l, quote_l), r
        for r in MAKERS:
            got = sorted(
                (o.slot, o.client_id, o.side, o.price, o.size)
                for o in await self.book.open_orders(self.addr[r], SEI)
            )
            exp = sorted(
                (s, o.cid, o.side, o.price, o.size) for (w, s), o in model.orders.items() if w == r
            )
            assert got == exp, r
        assert int((await self.book.call("feesAccrued", SEI))[0]) == model.fees_accrued

    async def run(self, data: Any) -> None:
        for r in MAKERS:  # an empty book to start from
            await self.book.cancel_all(self.senders[r], SEI)
        bal = await self.balances()
        model = Model(self.addr, {r: [b[0], b[1]] for r, b in bal.items()})
        for r in self.senders:
            assert bal[r][2:] == (0, 0)
        # fees off, or a taker fee with a smaller or equal maker rebate
        fee, rebate = data.draw(st.sampled_from([(0, 0), (0, 0), (10, 4), (30, 30)]))
        recipient = self.admin.address if fee else "0x" + "00" * 20
        await self.book.admin_call(self.admin, "setFees", SEI, fee, rebate, recipient)
        model.taker_fee_bps, model.maker_rebate_bps = fee, rebate
        model.fees_accrued = int((await self.book.call("feesAccrued", SEI))[0])
        steps = data.draw(st.integers(4, 24), label="steps")
        for _ in range(steps):
            kind = data.draw(st.sampled_from(["requote", "requote", "take", "take", "cancel_all"]))
            if kind == "requote":
                who = data.draw(st.sampled_from(MAKERS))
                ops, want_ops = [], []
                for _ in range(data.draw(st.integers(1, 4))):
                    slot = data.draw(st.integers(0, SLOTS - 1))
                    cur = model.orders.get((who, slot))
                    kinds = ["replace", "replace", "cancel", "place"]
                    op_kind = data.draw(st.sampled_from(kinds if cur else kinds[::-1]))
                    self.cid += 1
                    side = data.draw(st.sampled_from([BID, ASK]))
                    # bids low and asks high mostly, so the book has both sides to take
                    mid = (LOW + HIGH) // 2
                    band = (LOW, mid + 2) if side == BID else (mid - 2, HIGH)
                    price = data.draw(st.integers(*band))
                    # now and then a tick a ring away (bids below, asks above): it shares the
                    # ring entry of a band tick, so one of the two levels is in the overflow book;
                    # or a ring ahead (bids above, asks below): a level far ahead of the ring,
                    # counted apart in the overflow book (or a cross)
                    rings = data.draw(st.sampled_from([0, 0, 0, 0, 1, 2, -1]))
                    price += rings * RING if side == ASK else -min(rings, 1) * RING
                    size = data.draw(st.sampled_from([1, 2, 3, 5, 1, 2, 3, HUGE]))
                    same = cur is not None and data.draw(st.integers(0, 3)) > 0
                    old = cur.cid if cur is not None and same else self.cid - 1
                    if op_kind == "cancel":
                        ops.append(op_cancel(slot, old))
                        want_ops.append(("cancel", slot, old))
                    elif op_kind == "place":
                        ops.append(op_place(slot, self.cid, side, price, size))
                        want_ops.append(("place", slot, self.cid, side, price, size))
                    else:
                        ops.append(op_replace(slot, old, self.cid, side, price, size))
                        want_ops.append(("replace", slot, old, self.cid, side, price, size))
                receipt = await self.book.requote(self.senders[who], SEI, ops, gas=2_000_000)
                want = model.requote(who, want_ops)
            elif kind == "take":
                who = data.draw(st.sampled_from(TAKERS))
                side = data.draw(st.sampled_from([0, 1]))
                wide = HIGH + 2 * RING + 1 if side == 0 else LOW - RING - 1
                limit = data.draw(st.sampled_from([wide, wide, (LOW + HIGH) // 2]))
                size = data.draw(st.integers(1, 12))
                max_orders = data.draw(st.sampled_from([1, 2, 64]))
                receipt = await self.book.take(
                    self.senders[who],
                    SEI,
                    side,
                    limit,
                    size,
                    gas=2_000_000,
                    max_orders=max_orders,
                )
                want = model.take(who, side, limit, size, max_orders)
            else:
                who = data.draw(st.sampled_from(MAKERS))
                receipt = await self.book.cancel_all(self.senders[who], SEI)
                want = model.cancel_all(who)
            await self.check(model, receipt, want)
        for r in MAKERS:
            receipt = await self.book.cancel_all(self.senders[r], SEI)
            await self.check(model, receipt, model.cancel_all(r))


@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: a failure stays bounded in time
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_book_matches_the_reference_model(fast_chain: Any, data: Any) -> None:
    async def go() -> None:
        rpc = JsonRpc(fast_chain.rpc_url)
        try:
            await Runner(fast_chain, rpc).run(data)
        finally:
            await rpc.aclose()

    asyncio.run(go())
