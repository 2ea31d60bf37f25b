"""Shared fixtures for the chain tests: anvil chains, senders and fault-injecting proxies.

Load with ``pytest_plugins = ["chain_fixtures"]`` in a test module. Everything listens on
127.0.0.1. anvil must be installed (``npm ci``); a missing anvil fails the tests loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp
import pytest
from aiohttp import web

from flashmm.venues.sei.abi import book_abi
from flashmm.venues.sei.book import BookClient
from flashmm.venues.sei.keys import account_from_hex
from flashmm.venues.sei.local import Anvil, Deployment, setup_local_chain
from flashmm.venues.sei.rpc import JsonRpc
from flashmm.venues.sei.tx import TxSender

ROLES = ("maker", "taker", "maker2", "venue", "venue_taker", "spare")


@dataclass
class LocalChain:
    anvil: Anvil
    dep: Deployment

    @property
    def rpc_url(self) -> str:
        return self.anvil.rpc_url

    @property
    def ws_url(self) -> str:
        return self.anvil.ws_url

    def key(self, role: str) -> str:
        return self.dep.accounts[role]["private_key"]

    def address(self, role: str) -> str:
        return self.dep.accounts[role]["address"]

    def sender(self, rpc: JsonRpc, role: str, **kw: Any) -> TxSender:
        return TxSender(
            rpc, account_from_hex(self.key(role)), self.dep.chain_id, abi=book_abi(), **kw
        )


def _start_chain(block_time: float | None) -> Iterator[LocalChain]:
    anvil = Anvil(block_time=block_time).start()
    try:
        dep = asyncio.run(setup_local_chain(anvil.rpc_url, anvil.ws_url, roles=ROLES))
        yield LocalChain(anvil, dep)
    finally:
        anvil.stop()


@pytest.fixture(scope="module")
def chain() -> Iterator[LocalChain]:
    """A fresh anvil with Sei's block time (0.4 s) and a funded FlashBook deployment."""
    yield from _start_chain(0.4)


@pytest.fixture(scope="module")
def fast_chain() -> Iterator[LocalChain]:
    """A fresh automining anvil (a block per transaction) for contract-logic tests."""
    yield from _start_chain(None)


@pytest.fixture
async def rpc_factory() -> AsyncIterator[Any]:
    clients: list[JsonRpc] = []

    def make(url: str, **kw: Any) -> JsonRpc:
        clients.append(JsonRpc(url, **kw))
        return clients[-1]

    yield make
    for c in clients:
        await c.aclose()


@dataclass
class Actor:
    """One funded account: its sender and a book client on the same RPC connection."""

    role: str
    sender: TxSender
    book: BookClient

    @property
    def address(self) -> str:
        return self.sender.address


@pytest.fixture
async def actors(fast_chain: LocalChain, rpc_factory: Any) -> dict[str, Actor]:
    rpc = rpc_factory(fast_chain.rpc_url)
    return {
        role: Actor(role, fast_chain.sender(rpc, role), BookClient(rpc, fast_chain.dep.book))
        for role in ROLES
    }


# --- proxies on the loopback ---------------------------------------------------------


class LoopbackServer:
    """An aiohttp server on 127.0.0.1 (a free port) in front of ``upstream``: ``METHOD``
    requests to ``/`` go to ``_handle``; ``session`` is a client session of its own."""

    METHOD = "POST"
    SCHEME = "http"

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"{self.SCHEME}://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_route(self.METHOD, "/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.session = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def forward(self, body: Any) -> Any:
        """A JSON-RPC request sent on to ``upstream``: its answer."""
        assert self.session is not None
        async with self.session.post(self.upstream, json=body) as resp:
            return await resp.json(content_type=None)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError


# --- fault-injecting JSON-RPC proxy --------------------------------------------------


@dataclass
class Faults:
    """Counters of faults still to inject; each injection decrements its counter."""

    http_500: int = 0
    timeouts: int = 0
    timeout_methods: tuple[str, ...] = ()
    null_receipts: int = 0
    drop_sends: int = 0
    log: list[str] = field(default_factory=list)


class RpcProxy(LoopbackServer):
    """An aiohttp server on 127.0.0.1 that forwards JSON-RPC to ``upstream`` and injects faults."""

    def __init__(self, upstream: str, hang_s: float = 2.0) -> None:
        super().__init__(upstream)
        self.hang_s = hang_s
        self.faults = Faults()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        f = self.faults
        methods = (
            [b.get("method") for b in body] if isinstance(body, list) else [body.get("method")]
        )
        if f.http_500 > 0:
            f.http_500 -= 1
            f.log.append(f"500 {methods}")
            return web.Response(status=502, text="bad gateway")
        if f.timeouts > 0 and (not f.timeout_methods or set(methods) & set(f.timeout_methods)):
            f.timeouts -= 1
            f.log.append(f"timeout {methods}")
            await asyncio.sleep(self.hang_s)
            return web.Response(status=504)
        if not isinstance(body, list):
            method = body.get("method")
            if method == "eth_sendRawTransaction" and f.drop_sends > 0:
                f.drop_sends -= 1
                f.log.append("dropped send")
                from eth_utils import keccak

                raw = bytes.fromhex(body["params"][0][2:])
                return web.json_response(
                    {"jsonrpc": "2.0", "id": body["id"], "result": "0x" + keccak(raw).hex()}
                )
            if method == "eth_getTransactionReceipt" and f.null_receipts > 0:
                reply = await self.forward(body)
                if reply.get("result") is not None:
                    f.null_receipts -= 1
                    f.log.append("null receipt")
                    reply["result"] = None
                return web.json_response(reply)
        return web.json_response(await self.forward(body))


@pytest.fixture
async def rpc_proxy(chain: LocalChain) -> AsyncIterator[RpcProxy]:
    proxy = await RpcProxy(chain.rpc_url).start()
    yield proxy
    await proxy.stop()


# --- WebSocket proxy that can cut every connection ---------------------------------


class WsProxy(LoopbackServer):
    """A WebSocket relay on 127.0.0.1 in front of anvil; ``cut()`` drops all connections,
    ``refuse`` answers new ones 503, ``mute`` keeps them open and passes nothing down."""

    METHOD = "GET"
    SCHEME = "ws"

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self._conns: set[web.WebSocketResponse] = set()
        self.refuse = False
        self.mute = False
        self.connections = 0

    async def cut(self) -> None:
        for ws in list(self._conns):
            await ws.close()

    async def stop(self) -> None:
        await self.cut()
        await super().stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.refuse:
            return web.Response(status=503)
        assert self.session is not None
        down = web.WebSocketResponse()
        await down.prepare(request)
        self._conns.add(down)
        self.connections += 1
        try:
            async with self.session.ws_connect(self.upstream) as up:

                async def pump_up() -> None:
                    async for msg in down:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            await up.send_str(msg.data)

                task = asyncio.create_task(pump_up())
                try:
                    async for msg in up:
                        if msg.type == aiohttp.WSMsgType.TEXT and not down.closed and not self.mute:
                            await down.send_str(msg.data)
                        if down.closed:
                            break
                finally:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
        finally:
            self._conns.discard(down)
            if not down.closed:
                await down.close()
        return down


@pytest.fixture
async def ws_proxy(chain: LocalChain) -> AsyncIterator[WsProxy]:
    proxy = await WsProxy(chain.ws_url).start()
    yield proxy
    await proxy.stop()
