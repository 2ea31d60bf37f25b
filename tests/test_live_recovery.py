"""Fills across crashes: kill -9 the live bot again and again while a taker trades.

The real bot (``flashmm run --headless``, a tmp profile from ``configs/local.yaml``) runs
against anvil and a loopback Binance feed. It is killed with SIGKILL at random moments
and right after it sent a requote; a taker keeps crossing its resting quotes the whole
time, so fills are mined just before each crash and while the bot is down. Each restart
must come back quoting by itself (no position mismatch, no ``resume``), and at the end
every Fill log of the bot on chain is in its journal exactly once, with the chain's
price, and the journal's position is the chain's.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from chain_fixtures import LocalChain, RpcProxy
from kit.bot import BotProcess
from test_live_e2e import (
    FILL_TOPIC,
    MKT,
    NEXO,
    Taker,
    _has_quotes,
    chain_position,
    dirs,
    feed,
    get_logs,
    live_profile,
    nonce_of,
    rpc,
    topic_of,
    wait_until,
    write_deployment,
)

from flashmm.feeds.server import ReplayServer
from flashmm.types import Side
from flashmm.venues.sei.abi import unpack_info
from flashmm.venues.sei.book import BookClient
from flashmm.venues.sei.rpc import JsonRpc

pytest_plugins = ["chain_fixtures"]
pytestmark = pytest.mark.slow
__all__ = ["dirs", "feed", "rpc"]  # fixtures shared with the end-to-end tests


async def chain_fill_prices(
    rpc: JsonRpc, chain: LocalChain, who: str
) -> dict[str, tuple[int, int]]:
    """fill id -> (signed lots, price ticks) of ``who``'s fills (maker or taker) on chain."""
    me = topic_of(who)
    out: dict[str, tuple[int, int]] = {}
    for raw in await get_logs(rpc, chain, [FILL_TOPIC, me], 0) + await get_logs(
        rpc, chain, [FILL_TOPIC, None, me], 0
    ):
        info = unpack_info(int(raw["data"][2:66], 16))
        maker_sign = 1 if info.side == 0 else -1
        sign = (maker_sign if raw["topics"][1].lower() == me else 0) - (
            maker_sign if raw["topics"][2].lower() == me else 0
        )
        fid = f"{raw['transactionHash'].lower()}:{int(raw['logIndex'], 16)}"
        out[fid] = (sign * info.size, info.price)
    return out


async def chain_fill_times(rpc: JsonRpc, chain: LocalChain, who: str) -> dict[str, int]:
    """fill id -> block time (ns) of ``who``'s fills on chain."""
    me = topic_of(who)
    out: dict[str, int] = {}
    blocks: dict[str, int] = {}
    for raw in await get_logs(rpc, chain, [FILL_TOPIC, me], 0) + await get_logs(
        rpc, chain, [FILL_TOPIC, None, me], 0
    ):
        n = raw["blockNumber"]
        if n not in blocks:
            block = await rpc.call("eth_getBlockByNumber", [n, False])
            blocks[n] = int(block["timestamp"], 16) * 1_000_000_000
        out[f"{raw['transactionHash'].lower()}:{int(raw['logIndex'], 16)}"] = blocks[n]
    return out


def journal_fill_prices(path: Path) -> tuple[dict[str, tuple[int, int]], int, dict[str, int]]:
    con = sqlite3.connect(str(path))
    try:
        rows = con.execute(
            "SELECT fill_id, side, size_lots, price_ticks, ts_ns FROM fills"
        ).fetchall()
    finally:
        con.close()
    out = {
        str(fid).lower(): (size if Side(side) is Side.BUY else -size, int(px))
        for fid, side, size, px, _ in rows
    }
    return out, len(rows), {str(r[0]).lower(): int(r[4]) for r in rows}


async def test_kill_9_loses_no_fill(
    chain: LocalChain, rpc: JsonRpc, feed: ReplayServer, dirs: Any
) -> None:
    tmp, sock = dirs
    who = chain.address("maker")
    dep = write_deployment(chain, tmp)
    profile = live_profile(
        tmp, sock, "crash", feed=feed, sei={"deployment": str(dep), "dev_account": "maker"}
    )
    rng = random.Random(17)
    taker = Taker(chain, rpc, period_s=0.3)
    stop = asyncio.Event()
    trading = asyncio.create_task(taker.run(stop))
    bot: BotProcess | None = None
    try:
        for round_ in range(5):
            bot = BotProcess(profile, duration=300)
            status = await bot.await_ready()
            # back by itself: no position mismatch, no resume needed
            assert status["state"] == "running", (round_, status["state"], status["recovery"])
            if round_ % 2 == 0:
                await asyncio.sleep(rng.uniform(0.5, 3.0))
            else:
                # right after a requote went out: the pending nonce moves
                n0 = await nonce_of(rpc, who)
                for _ in range(200):
                    if await nonce_of(rpc, who) > n0:
                        break
                    await asyncio.sleep(0.02)
            bot.kill9()
            await asyncio.sleep(rng.uniform(1.0, 2.5))  # the taker fills resting quotes
        stop.set()
        await trading
        bot = BotProcess(profile, duration=300)
        status = await bot.await_ready()
        assert status["state"] == "running", status["recovery"]
        await bot.acommand("stop")
        summary = await bot.await_exit()
    finally:
        stop.set()
        if bot is not None:
            bot.close()
    on_chain = await chain_fill_prices(rpc, chain, who)
    journaled, rows, times = journal_fill_prices(bot.journal)
    assert taker.takes >= 5, taker.errors
    assert len(on_chain) >= 5
    # every chain fill exactly once, same size, side and price; nothing invented
    assert rows == len(journaled)
    assert journaled == on_chain
    assert times == await chain_fill_times(rpc, chain, who)  # the block's time, not a guess
    pos = await chain_position(rpc, chain, who)
    assert sum(lots for lots, _ in on_chain.values()) == pos
    assert summary["markets"][MKT]["position"] == pos


# --- a slow node: venue_latency trips, then clears by itself ---------------------------------


class SlowRpc(RpcProxy):
    """The fixtures' proxy, answering every request ``delay_s`` late while set."""

    delay_s = 0.0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return await super()._handle(request)


async def _breaker(bot: BotProcess, name: str) -> str:
    r = await bot.acommand("status")
    return str(r["result"]["breakers"].get(name, {}).get("state", "?"))


async def test_venue_latency_clears_when_the_node_is_fast_again(
    chain: LocalChain, rpc: JsonRpc, feed: ReplayServer, dirs: Any
) -> None:
    tmp, sock = dirs
    who = chain.address("maker2")
    proxy = SlowRpc(chain.rpc_url)
    await proxy.start()
    dep = write_deployment(chain, tmp)
    profile = live_profile(
        tmp,
        sock,
        "slow",
        feed=feed,
        sei={"deployment": str(dep), "dev_account": "maker2", "rpc_url": proxy.url},
        risk={"venue_latency_ms": 1000},
    )
    bot = BotProcess(profile, duration=300)
    book = BookClient(rpc, chain.dep.book)
    try:
        await bot.await_ready()
        await wait_until(lambda: _has_quotes(book, who), 30, "quotes on chain")
        proxy.delay_s = 1.5  # the node answers slowly: quotes are pulled
        await wait_until(lambda: _is(bot, "venue_latency", "tripped"), 60, "venue_latency tripped")
        proxy.delay_s = 0.0  # fast again: probes clear the breaker, quoting resumes
        fast = time.monotonic()
        await wait_until(lambda: _is(bot, "venue_latency", "ok"), 30, "venue_latency clear")
        cleared_s = time.monotonic() - fast
        await wait_until(lambda: _has_quotes(book, who), 30, "quotes back on chain")
        resumed_s = time.monotonic() - fast
        await bot.acommand("stop")
        await bot.await_exit()
    finally:
        bot.close()
        await proxy.stop()
    print(f"venue_latency cleared {cleared_s:.1f} s, quotes back {resumed_s:.1f} s after")
    assert await book.open_orders(who, 1) == []


async def _is(bot: BotProcess, name: str, state: str) -> bool:
    return await _breaker(bot, name) == state


# --- shutdown never waits for the feed -------------------------------------------------------


async def test_sigterm_with_the_feed_down_cancels_and_exits(
    chain: LocalChain, rpc: JsonRpc, dirs: Any
) -> None:
    tmp, sock = dirs
    who = chain.address("spare")
    srv = ReplayServer([NEXO], speed=10.0, loop=True)
    await srv.start()
    dep = write_deployment(chain, tmp)
    profile = live_profile(
        tmp, sock, "down", feed=srv, sei={"deployment": str(dep), "dev_account": "spare"}
    )
    bot = BotProcess(profile, duration=300)
    book = BookClient(rpc, chain.dep.book)
    try:
        await bot.await_ready()
        await wait_until(lambda: _has_quotes(book, who), 30, "quotes on chain")
        await srv.stop()  # the feed is gone: no event will wake the drive loop
        await asyncio.sleep(1.0)
        bot.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = await asyncio.to_thread(bot.proc.wait, 60)
        took = time.monotonic() - t0
    finally:
        bot.close()
    assert code == 0, bot.stderr()[-3000:]
    print(f"SIGTERM with the feed down: exit 0 after {took:.1f} s")
    assert await book.open_orders(who, 1) == []
