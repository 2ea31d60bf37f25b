"""A side the venue refuses for a lasting cause is held back, not placed again at every
requote.

FlashBook refuses a placement the owner's free balance cannot cover (OrderRejected,
"insufficient free balance"), or any placement in a paused market, and the transaction
is paid for all the same. The engine placed the refused orders again at the next quote
cycle, for as long as the cause lasted: a gas bill for refusals at the requote rate, with
only a warning a minute to show for it. Now the side is held back (1 s, doubled per
refusal in a row, at most 30 s) while the other side quotes on. Real chain (anvil), real
venue, real engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from chain_fixtures import LocalChain

from flashmm.engine import Engine
from flashmm.events import OrderDone, SideHeld
from flashmm.marketdata import DepthSnapshot
from flashmm.risk import RiskConfig
from flashmm.strategy.avellaneda import AvellanedaStrategy
from flashmm.types import MarketSpec, Side
from flashmm.venues.sei.abi import ASK
from flashmm.venues.sei.book import BookClient
from flashmm.venues.sei.keys import account_from_hex
from flashmm.venues.sei.settings import SeiVenueSettings
from flashmm.venues.sei.venue import SeiVenue

pytest_plugins = ["chain_fixtures"]

MKT = "SEI/USDC"
SEI = 1
SPEC = MarketSpec(MKT, Decimal("0.0001"), Decimal("1"), "seiusdt")
S = 1_000_000_000


class Bot:
    """An engine quoting SEI/USDC through a Sei venue as the "venue" account, its quote
    cycles run every 0.2 s by hand on a static reference book."""

    def __init__(self, chain: LocalChain) -> None:
        settings = SeiVenueSettings(
            rpc_url=chain.rpc_url,
            ws_url=None,
            chain_id=1328,
            book_address=chain.dep.book,
            markets={MKT: SEI},
            log_poll_s=0.1,
        )
        account = account_from_hex(chain.key("venue"))
        self.venue = SeiVenue(settings, specs={MKT: SPEC}, account=account)
        risk = RiskConfig(stale_feed_ms=600_000, kill_switch_enabled=False)
        self.engine = Engine([SPEC], self.venue, AvellanedaStrategy({}), risk=risk)
        self.ms = self.engine.markets[MKT]
        #: engine time of each quote cycle that placed orders of a side
        self.sends: dict[Side, list[int]] = {Side.BUY: [], Side.SELL: []}
        #: placements refused, per side
        self.refused: dict[Side, int] = {Side.BUY: 0, Side.SELL: 0}

    async def run(self, seconds: float) -> None:
        now = time.time_ns()
        snap = DepthSnapshot("seiusdt", now, 1, [(3690, 500), (3689, 500)], [(3710, 500)])
        self.engine.on_market_event(snap, now)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            now = time.time_ns()
            n = len(self.engine.outbox)
            before = set(self.ms.orders)
            self.engine.on_timer(now)
            for side in {o.side for c, o in self.ms.orders.items() if c not in before}:
                self.sends[side].append(now)
            self.engine.pump_venue(time.time_ns())
            for e in list(self.engine.outbox)[n:]:
                if isinstance(e, OrderDone) and e.note.startswith("rejected"):
                    self.refused[e.order.side] += 1
            await asyncio.sleep(0.2)


@pytest.fixture
async def bot(fast_chain: LocalChain, rpc_factory: Any) -> AsyncIterator[Bot]:
    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    b = Bot(chain)
    await b.venue.start()
    try:
        yield b
    finally:
        b.venue.cancel_all(None, 0)
        await b.venue.idle()
        await b.venue.aclose()
        await BookClient(rpc, chain.dep.book).cancel_all(chain.sender(rpc, "venue"), SEI)


async def test_bids_the_account_cannot_fund_are_held_back_while_asks_quote(
    fast_chain: LocalChain, rpc_factory: Any, bot: Bot
) -> None:
    """No free USDC: every bid is refused. Over 6 s of quote cycles (every 0.2 s) the
    bids are placed at most 3 times (refused, held 1 s, 2 s, 4 s), never at every cycle
    as before (30 times); the asks rest on chain all along; the refusals in a row are
    counted and shown."""
    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    book = BookClient(rpc, chain.dep.book)
    me = chain.address("venue")
    bal = await book.balances(me, SEI)
    if bal.quote_free:
        await book.withdraw(chain.sender(rpc, "venue"), SEI, 0, bal.quote_free)
    assert (await book.balances(me, SEI)).quote_free == 0
    try:
        await bot.run(6.0)
        bids = bot.sends[Side.BUY]
        assert bot.refused[Side.BUY] >= 1, "no bid was refused: the account still has funds"
        assert 1 <= len(bids) <= 3, [(t - bids[0]) / S for t in bids]
        assert bot.ms.holds[1][1] == len(bids)  # refusals in a row
        held = [e for e in bot.engine.outbox if isinstance(e, SideHeld)]
        assert [(e.side, e.refusals_in_a_row) for e in held] == [
            ("buy", n) for n in range(1, len(bids) + 1)
        ]
        assert bot.refused[Side.SELL] == 0
        view = bot.engine.snapshot().markets[MKT]
        assert view.blocked == "bids held back: insufficient free balance"
        asks = [o for o in await book.open_orders(me, SEI) if o.side == ASK]
        assert asks, "the asks were pulled with the bids"
    finally:
        await book.deposit(chain.sender(rpc, "venue"), SEI, 0, bal.quote_free)


async def test_a_paused_market_is_not_quoted_until_the_holds_end(
    fast_chain: LocalChain, rpc_factory: Any, bot: Bot
) -> None:
    """The guardian pauses the market: every placement is refused ("market paused or
    delisted"). Both sides are held back (the market's quotes pulled, the reason shown),
    and placed again only as the holds end; once the market reopens, the next placement
    after the hold is accepted and the run of refusals ends."""
    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    book = BookClient(rpc, chain.dep.book)
    admin = chain.sender(rpc, "deployer")
    await book.admin_call(admin, "pause", SEI)
    try:
        await bot.run(4.0)
        for side in (Side.BUY, Side.SELL):
            assert 1 <= len(bot.sends[side]) <= 3, bot.sends
            assert bot.refused[side] >= 1
        view = bot.engine.snapshot().markets[MKT]
        assert view.blocked is not None and "both sides held back: market paused" in view.blocked
    finally:
        await book.admin_call(admin, "unpause", SEI)
    await bot.run(5.0)  # the longest hold so far is 2 s: both sides quote again
    assert bot.ms.holds == {}
    assert bot.engine.snapshot().markets[MKT].blocked is None
    me = chain.address("venue")
    sides = {o.side for o in await book.open_orders(me, SEI)}
    assert sides == {0, 1}
