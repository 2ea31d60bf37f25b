"""A side the account cannot fund is held back, not placed again at every requote.

FlashBook refuses a placement the owner's free balance cannot cover (OrderRejected,
"insufficient free balance"), and the transaction is paid for all the same. The engine
placed the refused bids again at the next quote cycle, for as long as the funds were
missing: a gas bill for refusals at the requote rate, with only a warning a minute to
show for it. Now the side is held back (1 s, doubled per refusal in a row, at most
30 s) while the other side quotes on. Real chain (anvil), real venue, real engine.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

from chain_fixtures import LocalChain

from flashmm.engine import Engine
from flashmm.events import OrderDone
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


async def test_bids_the_account_cannot_fund_are_held_back_while_asks_quote(
    fast_chain: LocalChain, rpc_factory: Any
) -> None:
    """No free USDC: every bid is refused. Over 6 s of quote cycles (every 0.2 s) the
    bids are placed at most 3 times (refused, held 1 s, 2 s, 4 s), never at every cycle
    as before; the asks rest on chain all along; the refusals in a row are counted."""
    chain = fast_chain
    rpc = rpc_factory(chain.rpc_url)
    book = BookClient(rpc, chain.dep.book)
    me = chain.address("venue")
    bal = await book.balances(me, SEI)
    if bal.quote_free:
        await book.withdraw(chain.sender(rpc, "venue"), SEI, 0, bal.quote_free)
    assert (await book.balances(me, SEI)).quote_free == 0
    settings = SeiVenueSettings(
        rpc_url=chain.rpc_url,
        ws_url=None,
        chain_id=1328,
        book_address=chain.dep.book,
        markets={MKT: SEI},
        log_poll_s=0.1,
    )
    venue = SeiVenue(settings, specs={MKT: SPEC}, account=account_from_hex(chain.key("venue")))
    risk = RiskConfig(stale_feed_ms=600_000, kill_switch_enabled=False)
    engine = Engine([SPEC], venue, AvellanedaStrategy({}), risk=risk)
    await venue.start()
    try:
        t0 = time.time_ns()
        snap = DepthSnapshot("seiusdt", t0, 1, [(3690, 500), (3689, 500)], [(3710, 500)])
        engine.on_market_event(snap, t0)
        bid_sends: list[int] = []
        refused_bids = 0
        end = time.monotonic() + 6.0
        while time.monotonic() < end:
            now = time.time_ns()
            n = len(engine.outbox)
            sent = {cid for cid in engine.markets[MKT].orders}
            engine.on_timer(now)
            new = [
                o
                for cid, o in engine.markets[MKT].orders.items()
                if cid not in sent and o.side is Side.BUY
            ]
            if new:
                bid_sends.append(now)
            engine.pump_venue(time.time_ns())
            refused_bids += sum(
                1
                for e in list(engine.outbox)[n:]
                if isinstance(e, OrderDone)
                and e.order.side is Side.BUY
                and "insufficient free balance" in e.note
            )
            await asyncio.sleep(0.2)
        ms = engine.markets[MKT]
        assert refused_bids >= 1, "no bid was refused: the account still has funds"
        assert 1 <= len(bid_sends) <= 3, [(t - t0) / S for t in bid_sends]
        assert ms.funds_hold[1][1] == len(bid_sends)  # refusals in a row
        view = engine.snapshot().markets[MKT]
        assert view.blocked == "bids held back: insufficient free balance"
        asks = [o for o in await book.open_orders(me, SEI) if o.side == ASK]
        assert asks, "the asks were pulled with the bids"
    finally:
        venue.cancel_all(None, 0)
        await venue.idle()
        await venue.aclose()
        await book.cancel_all(chain.sender(rpc, "venue"), SEI)
