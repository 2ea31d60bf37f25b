"""Live mode end to end on a local chain: the real bot, real transactions, real fills.

One anvil (0.4 s blocks) with a FlashBook deployment for the module (chain_fixtures).
Each test runs ``flashmm run --config <tmp live profile> --headless --json`` as a
subprocess: feed ``binance_ws`` from a ReplayServer on 127.0.0.1 playing the bundled NEXO
recording at 10x, venue ``sei`` on the chain, journal in a tmp dir, control socket in a
short /tmp dir. A taker in the test process crosses the bot's quotes with ``take()``.

Afterwards everything is checked against the chain (eth_getLogs over the run): every
Fill of the bot is in its summary and its journal, its position equals its base holdings
minus its net deposits, every transaction it sent is mined with contiguous nonces, none
is stuck in the pool, and no order is left open. Each test trades with its own account.
Nothing here asserts speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from chain_fixtures import LocalChain, RpcProxy, WsProxy
from kit.bot import BotProcess, bot_env
from kit.data import NEXO_23 as NEXO

from flashmm.feeds.server import ReplayServer
from flashmm.venues.sei.abi import book_abi
from flashmm.venues.sei.book import BookClient
from flashmm.venues.sei.rpc import JsonRpc

pytest_plugins = ["chain_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
MKT = "SEI/USDC"
LOT_UNITS = 10**18  # SEI/USDC on the local deployment: lot 1 SEI (18 decimals)
ABI = book_abi()
FILL_TOPIC = "0x" + ABI.events["Fill"].topic0.hex()
DEPOSIT_TOPIC = "0x" + ABI.events["Deposit"].topic0.hex()
WITHDRAW_TOPIC = "0x" + ABI.events["Withdraw"].topic0.hex()


def topic_of(address: str) -> str:
    return "0x" + "00" * 12 + address.lower()[2:]


# --- the bot as a subprocess ------------------------------------------------------------


def live_profile(
    tmp: Path,
    sock_dir: Path,
    name: str,
    *,
    feed: ReplayServer,
    sei: dict[str, Any],
    risk: dict[str, Any] | None = None,
) -> Path:
    """configs/local.yaml trading SEI/USDC only, with tmp paths, the given feed and venue."""
    cfg = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())
    cfg["markets"] = [m for m in cfg["markets"] if m["symbol"] == MKT]
    cfg["feed"] = {"kind": "binance_ws", "ws_url": feed.ws_url, "rest_url": feed.rest_url}
    cfg["venue"]["sei"] = {"max_inflight_txs": 2, "receipt_timeout_s": 10, **sei}
    cfg["model"] = {"enabled": False}
    cfg["ui"]["panel"] = False
    cfg["logging"]["file"] = str(tmp / f"{name}.log")
    # 10x replay of a sparse recording; the kill switch is not under test here
    cfg["risk"].update({"stale_feed_ms": 60_000, "kill_switch_enabled": False, **(risk or {})})
    cfg["control"] = {
        "data_dir": str(tmp / "data"),
        "socket_path": str(sock_dir / f"{name}.sock"),
        "journal": True,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def dirs() -> Any:
    tmp = Path(tempfile.mkdtemp(prefix="flashmm-live-"))
    sock = Path(tempfile.mkdtemp(prefix="fml", dir="/tmp"))  # AF_UNIX paths are short
    yield tmp, sock
    if os.environ.get("FLASHMM_KEEP_TEST_FILES"):
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(sock, ignore_errors=True)


@pytest.fixture
async def feed() -> AsyncIterator[ReplayServer]:
    assert NEXO.exists(), f"recording missing: {NEXO}"
    async with ReplayServer([NEXO], speed=10.0, loop=True) as srv:
        yield srv


@pytest.fixture
async def rpc(chain: LocalChain) -> AsyncIterator[JsonRpc]:
    client = JsonRpc(chain.rpc_url)
    yield client
    await client.aclose()


# --- a taker in the test process ----------------------------------------------------------


@dataclass
class Taker:
    """Crosses the best quote (alternating sides, or one side) with take() until stopped."""

    chain: LocalChain
    rpc: JsonRpc
    role: str = "taker"
    side: int | None = None  # 0 buys the best ask, 1 sells to the best bid, None alternates
    period_s: float = 0.6
    max_lots: int = 4
    takes: int = 0
    lots: int = 0
    errors: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event, until_takes: int | None = None) -> None:
        sender = self.chain.sender(self.rpc, self.role)
        book = BookClient(self.rpc, self.chain.dep.book)
        rng = random.Random(7)
        n = 0
        while not stop.is_set():
            side = self.side if self.side is not None else n % 2
            n += 1
            top = await book.depth(1, 1 - side, 1)
            if top:
                lots = min(top[0].size, rng.randint(1, self.max_lots))
                try:
                    await book.take(sender, 1, side, top[0].price, lots)
                    self.takes += 1
                    self.lots += lots
                except Exception as exc:  # a quote that moved away is fine; keep going
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                if until_takes is not None and self.takes >= until_takes:
                    return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.period_s)


# --- what the chain says ------------------------------------------------------------------


async def get_logs(rpc: JsonRpc, chain: LocalChain, topics: list[Any], start: int) -> list[Any]:
    logs = await rpc.call(
        "eth_getLogs",
        [
            {
                "address": chain.dep.book,
                "fromBlock": hex(start),
                "toBlock": "latest",
                "topics": topics,
            }
        ],
    )
    return list(logs)


def fill_id(raw: dict[str, Any]) -> str:
    return f"{raw['transactionHash'].lower()}:{int(raw['logIndex'], 16)}"


async def chain_fills(rpc: JsonRpc, chain: LocalChain, who: str, start: int) -> dict[str, int]:
    """fill id -> signed lots for ``who`` (as maker or taker), from Fill logs since ``start``."""
    out: dict[str, int] = {}
    me = topic_of(who)
    for raw in await get_logs(rpc, chain, [FILL_TOPIC, me], start) + await get_logs(
        rpc, chain, [FILL_TOPIC, None, me], start
    ):
        info = int(raw["data"], 16)
        size = (info >> 96) & ((1 << 64) - 1)
        maker_side = (info >> 160) & 1  # 0 bid: the maker bought
        maker_sign = 1 if maker_side == 0 else -1
        sign = 0
        if raw["topics"][1].lower() == me:
            sign += maker_sign
        if raw["topics"][2].lower() == me:
            sign -= maker_sign
        out[fill_id(raw)] = sign * size
    return out


async def chain_position(rpc: JsonRpc, chain: LocalChain, who: str) -> int:
    """Base holdings minus net deposits, in lots (deposits from Deposit/Withdraw logs)."""
    net = 0
    for topic, sign in ((DEPOSIT_TOPIC, 1), (WITHDRAW_TOPIC, -1)):
        for raw in await get_logs(rpc, chain, [topic, topic_of(who), "0x" + "00" * 31 + "01"], 0):
            net += sign * int(raw["data"][2:66], 16)
    bal = await BookClient(rpc, chain.dep.book).balances(who, 1)
    diff = bal.base_total - net
    assert diff % LOT_UNITS == 0, diff
    return diff // LOT_UNITS


async def sent_txs(rpc: JsonRpc, who: str, start: int) -> list[dict[str, Any]]:
    """Every transaction from ``who`` mined since block ``start``, with its receipt status."""
    head = int(await rpc.call("eth_blockNumber"), 16)
    out = []
    for n in range(start, head + 1):
        block = await rpc.call("eth_getBlockByNumber", [hex(n), True])
        for tx in block["transactions"]:
            if tx["from"].lower() == who.lower():
                r = await rpc.call("eth_getTransactionReceipt", [tx["hash"]])
                out.append({"nonce": int(tx["nonce"], 16), "status": int(r["status"], 16)})
    return out


def journal_fills(path: Path) -> dict[str, int]:
    con = sqlite3.connect(str(path))
    try:
        rows = con.execute("SELECT fill_id, side, size_lots FROM fills").fetchall()
    finally:
        con.close()
    # side: the journal stores the Side enum value (BUY first)
    from flashmm.types import Side

    return {
        str(fid).lower(): (size if Side(side) is Side.BUY else -size) for fid, side, size in rows
    }


async def check_books_match_chain(
    rpc: JsonRpc,
    chain: LocalChain,
    who: str,
    start: int,
    nonce0: int,
    summary: dict[str, Any],
    journal: Path,
    *,
    reverted_ok: int = 0,
    context: Any = None,
) -> dict[str, int]:
    fills = await chain_fills(rpc, chain, who, start)
    # accounting: every on-chain fill counted once, the same position
    assert summary["fills"] == len(fills), (summary["fills"], len(fills))
    pos = await chain_position(rpc, chain, who)
    assert sum(fills.values()) == pos
    assert summary["markets"][MKT]["position"] == pos
    # journal: exactly the chain's fills, same sizes and sides
    assert journal_fills(journal) == fills
    # the venue's own view (what reconciliation reads) agrees
    assert await venue_positions(chain, who) == {MKT: pos}
    # no order left open, nothing stuck, every nonce used once and mined
    book = BookClient(rpc, chain.dep.book)
    assert await book.open_orders(who, 1) == []
    latest = int(await rpc.call("eth_getTransactionCount", [who, "latest"]), 16)
    pending = int(await rpc.call("eth_getTransactionCount", [who, "pending"]), 16)
    assert latest == pending, "transactions stuck in the pool"
    txs = await sent_txs(rpc, who, start)
    assert sorted(t["nonce"] for t in txs) == list(range(nonce0, latest))
    assert sum(1 for t in txs if t["status"] == 0) <= reverted_ok, (txs, context)
    assert summary["orders_left_open"] == 0
    return {"fills": len(fills), "position": pos, "txs": len(txs)}


async def venue_positions(chain: LocalChain, who: str) -> dict[str, int]:
    from flashmm.venues.sei.settings import SeiVenueSettings
    from flashmm.venues.sei.venue import SeiVenue

    v = SeiVenue(
        SeiVenueSettings(
            rpc_url=chain.rpc_url, chain_id=1328, book_address=chain.dep.book, markets={MKT: 1}
        )
    )
    v.address = who
    try:
        return await v.positions()
    finally:
        await v.aclose()


async def wait_until(pred: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def head(rpc: JsonRpc) -> int:
    return int(await rpc.call("eth_blockNumber"), 16)


async def nonce_of(rpc: JsonRpc, who: str) -> int:
    return int(await rpc.call("eth_getTransactionCount", [who, "pending"]), 16)


def write_deployment(chain: LocalChain, tmp: Path, **override: Any) -> Path:
    data = json.loads(chain.dep.to_json())
    data.update(override)
    path = tmp / "deployment.json"
    path.write_text(json.dumps(data))
    return path


# --- 2. a clean live run --------------------------------------------------------------------


async def test_live_run_quotes_on_chain_and_books_every_fill(
    chain: LocalChain, rpc: JsonRpc, feed: ReplayServer, dirs: Any
) -> None:
    tmp, sock = dirs
    who = chain.address("maker")
    dep = write_deployment(chain, tmp)
    # addresses, market ids and the (local-only) dev key all come from the deployment file
    profile = live_profile(
        tmp, sock, "live", feed=feed, sei={"deployment": str(dep), "dev_account": "maker"}
    )
    start, nonce0 = await head(rpc) + 1, await nonce_of(rpc, who)
    bot = BotProcess(profile, duration=30)
    taker = Taker(chain, rpc)
    stop = asyncio.Event()
    try:
        await bot.await_ready()
        book = BookClient(rpc, chain.dep.book)
        await wait_until(lambda: _has_quotes(book, who), 30, "quotes on chain")
        task = asyncio.create_task(taker.run(stop))
        # the taker keeps crossing through the bot's shutdown: a fill in the last blocks
        # before its cancels land must still be booked
        summary = await bot.await_exit()
        stop.set()
        await task
    finally:
        stop.set()
        bot.close()
    assert taker.takes >= 5, taker.errors
    err = bot.stderr()
    warnings = [ln for ln in err.splitlines() if "WARNING" in ln or "ERROR" in ln]
    got = await check_books_match_chain(
        rpc, chain, who, start, nonce0, summary, bot.journal, context=warnings
    )
    assert got["fills"] >= 5
    assert summary["mode"] == "live" and summary["quotes_sent"] > 0
    assert "Traceback" not in err
    assert "nonce" not in err.lower()  # no resync, no nonce error
    assert "reverted" not in err and "dropped" not in err


async def _has_quotes(book: BookClient, who: str) -> bool:
    orders = await book.open_orders(who, 1)
    return {o.side for o in orders} == {0, 1}


# --- 3. faults during a live run ---------------------------------------------------------------


class FaultyRpc(RpcProxy):
    """The fixtures' proxy plus "nonce too low" answers and too-low gas estimates."""

    def __init__(self, upstream: str, hang_s: float = 2.0) -> None:
        super().__init__(upstream, hang_s)
        self.nonce_too_low = 0
        self.low_estimates = 0
        self.low_estimate_gas = 10_000

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if isinstance(body, dict):
            method = body.get("method")
            if method == "eth_sendRawTransaction" and self.nonce_too_low > 0:
                self.nonce_too_low -= 1
                self.faults.log.append("nonce too low")
                return web.json_response(
                    {
                        "jsonrpc": "2.0",
                        "id": body["id"],
                        "error": {"code": -32003, "message": "nonce too low"},
                    }
                )
            if method == "eth_estimateGas" and self.low_estimates > 0:
                self.low_estimates -= 1
                self.faults.log.append("low estimate")
                return web.json_response(
                    {"jsonrpc": "2.0", "id": body["id"], "result": hex(self.low_estimate_gas)}
                )
        return await super()._handle(request)


@pytest.mark.slow
async def test_live_run_recovers_from_rpc_and_ws_faults(
    chain: LocalChain, rpc: JsonRpc, feed: ReplayServer, dirs: Any
) -> None:
    tmp, sock = dirs
    who = chain.address("maker2")
    proxy = FaultyRpc(chain.rpc_url, hang_s=2.0)
    await proxy.start()
    ws = await WsProxy(chain.ws_url).start()
    dep = write_deployment(chain, tmp)
    profile = live_profile(
        tmp,
        sock,
        "faults",
        feed=feed,
        sei={
            "deployment": str(dep),
            "dev_account": "maker2",
            "rpc_url": proxy.url,  # explicit values win over the deployment's
            "ws_url": ws.url,
            "rpc_timeout_s": 1.0,
            "receipt_timeout_s": 8,
        },
    )
    start, nonce0 = await head(rpc) + 1, await nonce_of(rpc, who)
    # the bot's first transaction (a fresh account's first placement) gets a gas limit
    # from a far too low estimate: it is mined and reverts (out of gas)
    proxy.low_estimates = 1
    bot = BotProcess(profile, duration=42)
    taker = Taker(chain, rpc, period_s=0.5)
    stop = asyncio.Event()
    f = proxy.faults
    try:
        await bot.await_ready()
        book = BookClient(rpc, chain.dep.book)
        await wait_until(lambda: _has_quotes(book, who), 30, "quotes on chain")
        task = asyncio.create_task(taker.run(stop))
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("http 5xx", lambda: setattr(f, "http_500", 3)),
            ("timeouts", lambda: setattr(f, "timeouts", 2)),
            ("ws cut", ws.cut),
            ("null receipts", lambda: setattr(f, "null_receipts", 6)),
            ("nonce too low", lambda: setattr(proxy, "nonce_too_low", 1)),
            ("dropped send", lambda: setattr(f, "drop_sends", 1)),
            ("ws cut", ws.cut),
            ("timeouts on sends", lambda: _timeouts_on_sends(f)),
        ]
        for _, inject in steps:
            r = inject()
            if asyncio.iscoroutine(r):
                await r
            await asyncio.sleep(2.5)
        await asyncio.sleep(4)
        stop.set()
        await task
        summary = await bot.await_exit()
    finally:
        stop.set()
        bot.close()
        await ws.stop()
        await proxy.stop()
    log = f.log
    for what in ("500", "timeout", "null receipt", "nonce too low", "dropped send"):
        assert any(what in x for x in log), (what, log)
    assert "low estimate" in log
    assert ws.connections >= 3  # reconnected after each cut
    assert taker.takes >= 8, taker.errors
    got = await check_books_match_chain(
        rpc, chain, who, start, nonce0, summary, bot.journal, reverted_ok=1
    )
    assert got["fills"] >= 5
    txs = await sent_txs(rpc, who, start)
    assert sum(1 for t in txs if t["status"] == 0) == 1  # the out-of-gas one, nothing else
    err = bot.stderr()
    assert "out of gas" in err
    assert "Traceback" not in err


def _timeouts_on_sends(f: Any) -> None:
    f.timeout_methods = ("eth_sendRawTransaction",)
    f.timeouts = 1


# --- 4. emergency stop on chain ---------------------------------------------------------------


async def test_emergency_stop_cancels_and_flattens_on_chain(
    chain: LocalChain, rpc: JsonRpc, feed: ReplayServer, dirs: Any
) -> None:
    tmp, sock = dirs
    who = chain.address("venue")
    # the explicit form (no deployment file), key from FLASHMM_PRIVATE_KEY
    profile = live_profile(
        tmp,
        sock,
        "estop",
        feed=feed,
        sei={
            "rpc_url": chain.rpc_url,
            "ws_url": chain.ws_url,
            "chain_id": 1328,
            "book_address": chain.dep.book,
            "markets": {MKT: 1},
        },
    )
    start, nonce0 = await head(rpc) + 1, await nonce_of(rpc, who)
    bot = BotProcess(profile, duration=60, env=bot_env(FLASHMM_PRIVATE_KEY=chain.key("venue")))
    book = BookClient(rpc, chain.dep.book)
    stop = asyncio.Event()
    try:
        await bot.await_ready()
        await wait_until(lambda: _has_quotes(book, who), 30, "quotes on chain")
        # sell into the bot's bids until it is long
        taker = Taker(chain, rpc, side=1, period_s=0.3)
        await taker.run(stop, until_takes=3)
        await wait_until(lambda: _pos_nonzero(rpc, chain, who), 10, "a position")
        # other liquidity to flatten against: a deep bid below the bot's quotes
        spare = chain.sender(rpc, "spare")
        lowest = min(o.price for o in await book.open_orders(who, 1) if o.side == 0)
        from flashmm.venues.sei.abi import op_place

        await book.requote(spare, 1, [op_place(0, 1, 0, lowest - 30, 500)])
        r = await bot.acommand("emergency_stop", {"reason": "test"})
        assert r["ok"], r
        await wait_until(
            lambda: _flat_and_no_orders(rpc, chain, book, who), 30, "flat with no orders"
        )
        st = (await bot.acommand("status"))["result"]
        assert st["state"] == "halted"
        await asyncio.sleep(2)  # stays halted: no new quotes
        assert await book.open_orders(who, 1) == []
        bot.proc.send_signal(signal.SIGTERM)
        summary = await bot.await_exit()
    finally:
        stop.set()
        bot.close()
    got = await check_books_match_chain(rpc, chain, who, start, nonce0, summary, bot.journal)
    assert got["position"] == 0
    assert summary["state"] == "halted"
    fills = await chain_fills(rpc, chain, who, start)
    taker_fills = await get_logs(rpc, chain, [FILL_TOPIC, None, topic_of(who)], start)
    assert taker_fills, "the flatten was not a take()"
    assert len(fills) >= 4


async def _pos_nonzero(rpc: JsonRpc, chain: LocalChain, who: str) -> bool:
    return await chain_position(rpc, chain, who) != 0


async def _flat_and_no_orders(rpc: JsonRpc, chain: LocalChain, book: BookClient, who: str) -> bool:
    return await chain_position(rpc, chain, who) == 0 and not await book.open_orders(who, 1)
