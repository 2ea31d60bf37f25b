"""FlashBook logs as a gap-free stream: eth_subscribe over WebSocket plus eth_getLogs backfill.

On every (re)connection the stream subscribes to ``logs`` (the book's address) and
``newHeads``, then backfills with eth_getLogs from the last block it knows complete, so
nothing emitted while disconnected is missed. Duplicates (subscription vs backfill,
receipt vs stream) are dropped by (transaction hash, log index). Without a WebSocket URL
it polls eth_getLogs. A page of logs counts as complete only up to the head of the node
that answered it (a node behind answers blocks it lacks with no logs).

That head comes with the page: eth_blockNumber and eth_getLogs go in one JSON-RPC batch,
which one node answers. An endpoint that refuses batches gets the two calls one by one
(see :func:`get_logs`): then a page counts complete only ``SEQUENTIAL_LAG_BLOCKS`` behind
the head read first, and each read also re-reads the last ``SEQUENTIAL_REPLAY_BLOCKS``
blocks already counted complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from flashmm.venues.sei.errors import BatchRefused, RpcError
from flashmm.venues.sei.rpc import JsonRpc

log = logging.getLogger(__name__)

LogKey = tuple[str, int]

#: Without batches, eth_blockNumber and eth_getLogs may reach different nodes. The
#: fallback assumes the node answering eth_getLogs is at most this many blocks behind
#: the one that answered eth_blockNumber just before (4 s of Sei's 0.4 s blocks; nodes of
#: one pool stay much closer): a page counts complete only this far behind that head.
SEQUENTIAL_LAG_BLOCKS = 10
#: ... and should a node lag further, every read without batches also re-reads this many
#: blocks already counted complete: a log that node left out arrives late, not never.
SEQUENTIAL_REPLAY_BLOCKS = 50


async def get_logs(rpc: JsonRpc, flt: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """eth_getLogs with the block up to which its answer is complete: (logs, that block).

    Behind a load balancer each call may reach another node, and a node behind answers
    eth_getLogs for blocks it does not have yet with no logs, not an error. Asking its
    head first, in the same request (so of the same node), tells how far the answer is
    complete: only blocks up to that head.

    An endpoint that refuses batches (:class:`BatchRefused`, warned once by the client)
    gets eth_blockNumber first, then eth_getLogs. Had one node answered both, its answer
    would be complete to that head; another node may answer eth_getLogs, so the answer
    counts complete only ``SEQUENTIAL_LAG_BLOCKS`` behind it (the assumption: no node of
    the pool lags further). Logs past that block are returned all the same; the caller
    reads those blocks again later.
    """
    try:
        head, logs = await rpc.batch([("eth_blockNumber", []), ("eth_getLogs", [flt])])
    except BatchRefused:
        pass
    else:
        return list(logs), int(head, 16)
    head = int(await rpc.call("eth_blockNumber"), 16)
    logs = await rpc.call("eth_getLogs", [flt])
    return list(logs), head - SEQUENTIAL_LAG_BLOCKS


def chain_order(raw: dict[str, Any]) -> tuple[int, int]:
    """Sort key of a log: (block number, log index)."""
    return int(raw["blockNumber"], 16), int(raw["logIndex"], 16)


class LogDedup:
    """Remembers the most recent ``capacity`` log keys."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._keys: set[LogKey] = set()
        self._order: deque[LogKey] = deque()
        self.capacity = capacity

    def first_time(self, raw: dict[str, Any]) -> bool:
        key = (
            str(raw.get("transactionHash", "")).lower(),
            int(str(raw.get("logIndex", "0x0")), 16),
        )
        if key in self._keys:
            return False
        self._keys.add(key)
        self._order.append(key)
        if len(self._order) > self.capacity:
            self._keys.discard(self._order.popleft())
        return True


#: a WebSocket without a message this long is checked against the HTTP head (Sei: a head
#: every 0.4 s)
WS_SILENCE_S = 10.0


class LogStream:
    """Delivers each log of ``address`` once to ``on_log``, oldest first within a batch."""

    def __init__(
        self,
        rpc: JsonRpc,
        address: str,
        on_log: Callable[[dict[str, Any]], None],
        *,
        ws_url: str | None = None,
        from_block: int | None = None,
        poll_s: float = 0.5,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        max_range: int = 2_000,
        ws_silence_s: float | None = None,
    ) -> None:
        self.rpc = rpc
        #: a WebSocket quiet this long is checked against the HTTP head (see _run_ws)
        self.ws_silence_s = WS_SILENCE_S if ws_silence_s is None else ws_silence_s
        self.address = address.lower()
        self.on_log = on_log
        self.ws_url = ws_url
        self.poll_s = poll_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_range = max_range
        # Every log up to and including this block has been delivered.
        self.complete_to: int | None = None if from_block is None else from_block - 1
        # the first block this stream delivers: a re-read never goes below it
        self._floor = 0 if self.complete_to is None else self.complete_to + 1
        self.dedup = LogDedup()
        self.connections = 0
        self.backfilled = 0
        self.connected = asyncio.Event()
        self._backfill_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="flashmm-sei-logs")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def deliver(self, raw: dict[str, Any]) -> None:
        """Hand over one log (from the stream, a backfill or a receipt) unless seen before."""
        if raw.get("removed") or str(raw.get("address", "")).lower() != self.address:
            return
        if self.dedup.first_time(raw):
            try:
                self.on_log(raw)
            except Exception:  # a consumer bug must not kill the stream
                log.exception("log consumer failed")

    async def backfill(self, reread: int = 0) -> None:
        """Fetch logs from the last complete block to the head (one at a time: the HTTP
        poller, the socket's catch-up and positions() may all ask); ``reread`` more
        blocks below it (dedup drops what was delivered)."""
        async with self._backfill_lock:
            await self._backfill(reread)

    async def _backfill(self, reread: int = 0) -> None:
        head = int(await self.rpc.call("eth_blockNumber"), 16)
        if self.complete_to is None:
            self.complete_to = head
            self._floor = head + 1
            return
        start = max(self._floor, self.complete_to + 1 - reread)
        if self.rpc.batch_refused is not None:
            # pages without batches are complete only as far as get_logs' lag assumption
            # holds: read the last blocks counted complete again (dedup drops what was seen)
            start = max(self._floor, start - SEQUENTIAL_REPLAY_BLOCKS)
        while start <= head:
            end = min(head, start + self.max_range - 1)
            logs, node_head = await get_logs(
                self.rpc, {"address": self.address, "fromBlock": hex(start), "toBlock": hex(end)}
            )
            for raw in sorted(logs, key=chain_order):
                self.backfilled += 1
                self.deliver(raw)
            # complete only as far as the node that answered has blocks
            done = min(end, node_head)
            if done <= self.complete_to:
                log.debug("logs of blocks %d..%d: the node is at %d; later", start, end, node_head)
                return
            self.complete_to = done
            if done < end:  # the rest of this page next time
                return
            start = done + 1

    async def _run(self) -> None:
        if not self.ws_url:
            return await self._reconnecting()
        poller = asyncio.create_task(self._poll_while_down(), name="flashmm-sei-logs-http")
        try:
            await self._reconnecting()
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    async def _reconnecting(self) -> None:
        delay = self.backoff_s
        while True:
            try:
                if self.ws_url:
                    await self._run_ws()
                else:
                    await self._run_poll()
                delay = self.backoff_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect on anything: network, node, protocol
                self.connected.clear()
                log.warning(
                    "log stream interrupted (%s: %s); reconnecting in %.1fs",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(self.max_backoff_s, delay * 2)

    async def _poll_while_down(self) -> None:
        """While the WebSocket is not subscribed (connecting, a handshake or a
        subscription that hangs, waiting to reconnect), backfill over HTTP every
        ``poll_s``: a fill of someone's take on our quotes is not held back until the
        socket works again. A failure is logged once per outage."""
        failing = False
        while True:
            await asyncio.sleep(self.poll_s)
            if self.connected.is_set():
                continue
            try:
                await self.backfill()
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("logs over HTTP while the WebSocket is down failed: %s", exc)
                failing = True

    async def _run_poll(self) -> None:
        self.connected.set()
        while True:
            await self.backfill()
            await asyncio.sleep(self.poll_s)

    async def _run_ws(self) -> None:
        import websockets

        assert self.ws_url is not None
        async with websockets.connect(self.ws_url, max_size=2**24, open_timeout=10) as ws:
            self.connections += 1
            for i, params in ((1, ["logs", {"address": self.address}]), (2, ["newHeads"])):
                sub = {"jsonrpc": "2.0", "id": i, "method": "eth_subscribe", "params": params}
                await ws.send(json.dumps(sub))
            subs: dict[str, str] = {}
            pending: list[dict[str, Any]] = []
            while len(subs) < 2:
                # a subscription never answered (a relay that passes nothing on) must not
                # hold the stream: reconnect (the logs come by HTTP meanwhile)
                msg = json.loads(await asyncio.wait_for(ws.recv(), self.ws_silence_s))
                if "id" in msg and msg.get("id") in (1, 2):
                    if "error" in msg:
                        raise RpcError(
                            "eth_subscribe",
                            int(msg["error"].get("code", 0)),
                            str(msg["error"].get("message")),
                        )
                    subs[msg["result"]] = "logs" if msg["id"] == 1 else "heads"
                else:
                    pending.append(msg)
            # Subscribed: anything emitted from now on arrives on the socket; fill the gap.
            await self.backfill()
            self.connected.set()
            for msg in pending:
                self._on_ws_message(msg, subs)
            while True:
                try:
                    text = await asyncio.wait_for(ws.recv(), self.ws_silence_s)
                except TimeoutError:
                    # no head and no log for a while: an idle chain, or a socket that
                    # died without closing; the HTTP head tells which
                    before = self.complete_to
                    try:
                        await self.backfill()
                    except Exception as exc:  # HTTP trouble: not the socket's fault
                        log.info("log backfill of a quiet WebSocket failed: %s", exc)
                        continue
                    if before is not None and (self.complete_to or 0) > before + 1:
                        raise TimeoutError(
                            f"no WebSocket message for {self.ws_silence_s:g} s while the "
                            f"chain moved to block {self.complete_to}"
                        ) from None
                    continue
                self._on_ws_message(json.loads(text), subs)

    def _on_ws_message(self, msg: dict[str, Any], subs: dict[str, str]) -> None:
        params = msg.get("params")
        if not isinstance(params, dict):
            return
        kind = subs.get(str(params.get("subscription")))
        result = params.get("result")
        if kind == "logs" and isinstance(result, dict):
            self.deliver(result)
        elif kind == "heads" and isinstance(result, dict):
            number = int(result["number"], 16)
            # Logs of a block may trail its header by a moment: claim completeness
            # one block behind the head; the next backfill overlaps, dedup absorbs it.
            if self.complete_to is None or number - 1 > self.complete_to:
                self.complete_to = number - 1
