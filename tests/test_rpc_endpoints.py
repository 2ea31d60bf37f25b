"""JSON-RPC endpoints that fail in ways anvil does not: failover between endpoints, and the
log stream when the WebSocket hangs. Everything on 127.0.0.1: small aiohttp nodes that
answer 502, hang, refuse batches or pass nothing on; a TCP listener that never speaks.
(The failover and the stream against a real chain: tests/test_live_faults.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from flashmm.venues.sei.errors import BatchRefused, RpcTransportError
from flashmm.venues.sei.logs import LogStream
from flashmm.venues.sei.rpc import JsonRpc

CHAIN = 1328


class Node:
    """A JSON-RPC node of chain 1328 at block ``head``; ``mode``: ok, 502, hang or
    nobatch (HTTP 400 for a batch); ``delay`` before each answer."""

    def __init__(self, head: int = 100) -> None:
        self.mode = "ok"
        self.head = head
        self.delay = 0.0
        self.hits: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Node:
        app = web.Application()
        app.router.add_post("/", self._handle)
        # a hanging handler is not waited for at the stop
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _answer(self, req: dict[str, Any]) -> dict[str, Any]:
        result: Any = {"eth_chainId": hex(CHAIN), "eth_blockNumber": hex(self.head)}.get(
            req["method"], []
        )
        return {"jsonrpc": "2.0", "id": req["id"], "result": result}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.text())
        self.hits.append("batch" if isinstance(body, list) else body["method"])
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "502":
            return web.Response(status=502, text="bad gateway")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if isinstance(body, list):
            if self.mode == "nobatch":
                return web.Response(status=400, text="batch not allowed")
            return web.json_response([self._answer(r) for r in body])
        return web.json_response(self._answer(body))


@pytest.fixture
async def nodes() -> AsyncIterator[list[Node]]:
    started = [await Node().start() for _ in range(3)]
    try:
        yield started
    finally:
        for n in started:
            await n.stop()


async def test_many_calls_failing_at_once_switch_once(nodes: list[Node]) -> None:
    """30 calls at once meet a primary answering 502; the first fallback hangs (its
    check times out), the second works: every call is answered, there is one switch."""
    a, b, c = nodes
    a.mode, b.mode = "502", "hang"
    rpc = JsonRpc(a.url, timeout_s=1.0, retries=0, fallbacks=[b.url, c.url], chain_id=CHAIN)
    try:
        got = await asyncio.gather(*(rpc.call("eth_blockNumber") for _ in range(30)))
        assert got == [hex(100)] * 30
        assert (rpc.url, rpc.switches) == (c.url, 1)
        assert c.hits.count("eth_chainId") == 1
    finally:
        await rpc.aclose()


async def test_a_primary_down_at_a_fallback_failure_is_still_tried_again(
    nodes: list[Node],
) -> None:
    """On the fallback, a failed call checked the primary (still down) and marked it bad
    for 10 minutes: try_primary did not look at it even once it answered again."""
    a, b, _ = nodes
    a.mode = "502"
    rpc = JsonRpc(a.url, timeout_s=1.0, retries=0, fallbacks=[b.url], chain_id=CHAIN)
    try:
        await rpc.call("eth_blockNumber")
        assert rpc.url == b.url
        b.mode = "502"
        with pytest.raises(RpcTransportError):
            await rpc.call("eth_blockNumber")
        a.mode = b.mode = "ok"
        assert await rpc.try_primary()
        assert rpc.url == a.url
    finally:
        await rpc.aclose()


async def test_a_fallbacks_batch_refusal_stays_with_the_fallback(nodes: list[Node]) -> None:
    """A batch in flight on a fallback that refuses batches while try_primary goes back
    to the primary: the refusal was recorded after the switch, against the primary, whose
    batches were then refused unsent for 10 minutes. Refusals are kept per endpoint."""
    a, b, _ = nodes
    a.mode = "502"
    rpc = JsonRpc(a.url, timeout_s=2.0, retries=0, fallbacks=[b.url], chain_id=CHAIN)
    try:
        await rpc.call("eth_blockNumber")
        assert rpc.url == b.url
        a.mode, b.mode, b.delay = "ok", "nobatch", 0.5
        batch = asyncio.create_task(rpc.batch([("eth_blockNumber", []), ("eth_chainId", [])]))
        await asyncio.sleep(0.1)
        b.delay = 0.0
        assert await rpc.try_primary()
        with pytest.raises(BatchRefused):
            await batch
        assert rpc.batch_refused is None
        assert await rpc.batch([("eth_blockNumber", [])]) == [hex(100)]
        assert "batch" in a.hits
    finally:
        await rpc.aclose()


@contextlib.asynccontextmanager
async def ws_that_never_answers(handshake: bool) -> AsyncIterator[str]:
    """A WebSocket URL on 127.0.0.1 that completes the handshake and then passes nothing
    on (``handshake``), or a TCP listener that accepts and never speaks."""
    if handshake:

        async def swallow(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse(autoping=True)
            await ws.prepare(request)
            async for _ in ws:  # eth_subscribe swallowed, never answered
                pass
            return ws

        app = web.Application()
        app.router.add_get("/", swallow)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            yield f"ws://127.0.0.1:{port}"
        finally:
            await runner.cleanup()
        return
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("handshake", [True, False], ids=["mute-relay", "no-handshake"])
async def test_the_logs_come_by_http_while_the_websocket_hangs(
    nodes: list[Node], handshake: bool
) -> None:
    """The stream waited for the subscriptions' answers without a timeout (a relay that
    passes nothing on held it for good), and polled HTTP only between connection
    attempts (a handshake that hangs held it 10 s at a time). Now HTTP polling runs
    whenever the socket is not subscribed: the chain's head is read within seconds."""
    node = nodes[0]
    rpc = JsonRpc(node.url, timeout_s=2.0)
    async with ws_that_never_answers(handshake) as ws_url:
        stream = LogStream(
            rpc, "0x" + "11" * 20, lambda raw: None, ws_url=ws_url, from_block=1, poll_s=0.2
        )
        stream.ws_silence_s = 1.0
        stream.start()
        try:
            node.head = 150
            deadline = time.monotonic() + 8.0
            while stream.complete_to != 150:
                assert time.monotonic() < deadline, (stream.complete_to, node.hits[-5:])
                await asyncio.sleep(0.05)
            assert not stream.connected.is_set()
        finally:
            await stream.aclose()
            await rpc.aclose()


async def test_a_fallback_far_behind_the_chain_is_not_used(nodes: list[Node]) -> None:
    """A fallback 50 blocks behind the head the primary answered would serve old nonces,
    balances and logs: it is skipped (with an error naming its lag) for one that is not."""
    a, b, c = nodes
    b.head = 50
    rpc = JsonRpc(a.url, timeout_s=1.0, retries=0, fallbacks=[b.url, c.url], chain_id=CHAIN)
    try:
        assert await rpc.call("eth_blockNumber") == hex(100)
        a.mode = "502"
        assert await rpc.call("eth_blockNumber") == hex(100)
        assert rpc.url == c.url
        assert "eth_blockNumber" in b.hits and b.hits.count("eth_blockNumber") == 1
    finally:
        await rpc.aclose()
