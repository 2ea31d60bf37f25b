"""Minimal async JSON-RPC client over aiohttp (HTTP), with batching and retries.

With fallback endpoints, a call that cannot reach the endpoint in use (connection
refused, timeout, HTTP 5xx, after its retries) is sent again to the next endpoint, once
that endpoint has answered ``eth_chainId`` with the configured chain (one that serves
another chain, is skipped for ``WRONG_CHAIN_S``; one that does not answer, for
``NO_ANSWER_S``); one warning per
switch. :meth:`JsonRpc.try_primary` goes back to the first endpoint once it answers and
is not behind the one in use.

Some endpoints (gateways, nodes with batches turned off) refuse JSON-RPC batches: they
answer the whole batch with one error object, an HTTP 4xx, or a list without our ids.
:meth:`JsonRpc.batch` then raises :class:`BatchRefused` and logs one warning; for the next
``BATCH_RETRY_S`` it refuses at once without asking, then tries a batch again (a refusal
may have been a passing limit). Callers fall back to single calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, NoReturn

import aiohttp

from flashmm.venues.sei.errors import BatchRefused, RpcError, RpcHttpError, RpcTransportError

log = logging.getLogger(__name__)

# Methods that are safe to repeat after a transport failure. eth_sendRawTransaction is
# also safe to repeat with the same signed bytes: the node answers "already known".
_IDEMPOTENT_PREFIXES = ("eth_", "net_", "web3_", "debug_", "anvil_", "evm_")
#: after a batch was refused, batches are not tried again for this long
BATCH_RETRY_S = 600.0
# HTTP statuses of a batch that are a passing condition, not a refusal of batches
_PASSING_HTTP = (408, 429)
#: a fallback endpoint that serves another chain (a profile mistake) is not tried for
WRONG_CHAIN_S = 600.0
#: ... and a fallback that did not answer its check (it may be back soon: it may be the
#: only one)
NO_ANSWER_S = 30.0
#: the check of an endpoint before switching to it, and of the first one before going back
CHECK_TIMEOUT_S = 3.0
#: a fallback more than this many blocks behind the highest head seen is not used
FALLBACK_LAG_BLOCKS = 10
#: the first endpoint counts as caught up when at most this many blocks behind
PRIMARY_LAG_BLOCKS = 2


class JsonRpc:
    """JSON-RPC 2.0 over HTTP. One aiohttp session, created lazily in the running loop."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 0.2,
        fallbacks: Sequence[str] = (),
        chain_id: int | None = None,
    ) -> None:
        #: the endpoints, first the primary; ``url`` is the one in use
        self.urls = list(dict.fromkeys([url, *fallbacks]))
        self._in_use = 0
        #: the chain every endpoint must serve (checked before a switch; None: not checked)
        self.chain_id = chain_id
        self._bad_until: dict[int, float] = {}
        self._switch_lock = asyncio.Lock()
        #: switches to another endpoint (failovers and returns to the first)
        self.switches = 0
        #: the highest block any endpoint answered eth_blockNumber with (a fallback far
        #: behind it is not switched to)
        self.head_seen = 0
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self.calls = 0
        self.transport_errors = 0
        #: endpoint index -> (why it refused the last batch, when): batches work there
        #: when absent (or never tried)
        self._refused: dict[int, tuple[str, float]] = {}

    @property
    def url(self) -> str:
        """The endpoint in use."""
        return self.urls[self._in_use]

    @property
    def in_use(self) -> int:
        """The index in :attr:`urls` of the endpoint in use (0: the first)."""
        return self._in_use

    @property
    def on_fallback(self) -> bool:
        return self._in_use != 0

    @property
    def batch_refused(self) -> str | None:
        """Why the endpoint in use refused the last batch (None: batches work there, or
        were never tried)."""
        got = self._refused.get(self._in_use)
        return None if got is None else got[0]

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"Content-Type": "application/json"},
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> JsonRpc:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _post(self, payload: Any, what: str, retries: int) -> Any:
        return (await self._post_at(payload, what, retries))[0]

    async def _post_at(self, payload: Any, what: str, retries: int) -> tuple[Any, int]:
        """POST to the endpoint in use; on a transport failure, to the next endpoints that
        pass their check (each at most once for this call). The reply and the index of
        the endpoint that gave it (an HTTP refusal carries it as ``endpoint``)."""
        tried = {self._in_use}
        while True:
            at = self._in_use
            try:
                return await self._post_to(self.urls[at], payload, what, retries), at
            except RpcTransportError as exc:
                if (
                    isinstance(exc, RpcHttpError)
                    and 400 <= exc.status < 500
                    and exc.status not in _PASSING_HTTP
                ):
                    exc.endpoint = at
                    raise  # the endpoint answered: a refusal of this request (a batch ...)
                if len(self.urls) == 1 or not await self._fail_over(at, exc, tried):
                    raise
                tried.add(self._in_use)

    async def _fail_over(self, failed: int, exc: Exception, tried: set[int]) -> bool:
        """Switch from endpoint ``failed`` to the next one that passes its check and was
        not tried for this call; False when there is none."""
        async with self._switch_lock:
            if self._in_use != failed and self._in_use not in tried:
                return True  # another call switched meanwhile: go there
            n = len(self.urls)
            for step in range(1, n):
                cand = (failed + step) % n
                if cand in tried or self._bad_until.get(cand, 0.0) > time.monotonic():
                    continue
                why = await self._check(cand)
                if why is not None:
                    if cand:  # the first endpoint is checked again by try_primary
                        skip = WRONG_CHAIN_S if why.startswith("it serves") else NO_ANSWER_S
                        # (a node behind, or silent, may be fine again soon)
                        self._bad_until[cand] = time.monotonic() + skip
                    log.error("rpc endpoint %s skipped: %s", self.urls[cand], why)
                    continue
                log.warning(
                    "rpc endpoint %s failed (%s); switching to %s",
                    self.urls[failed],
                    exc,
                    self.urls[cand],
                )
                self._use(cand)
                return True
            return False

    async def _check(
        self, index: int, head: int | None = None, lag: int = FALLBACK_LAG_BLOCKS
    ) -> str | None:
        """Why endpoint ``index`` must not be used (no answer, another chain, more than
        ``lag`` blocks behind ``head``, by default the highest head seen), or None."""
        try:
            got = int(await self._ask(self.urls[index], "eth_chainId"), 16)
        except Exception as exc:
            return f"no answer to eth_chainId ({type(exc).__name__}: {exc})"
        if self.chain_id is not None and got != self.chain_id:
            return f"it serves chain id {got}, not {self.chain_id}"
        head = self.head_seen if head is None else head
        if head:
            # a node far behind would serve old nonces, balances and logs
            try:
                at = int(await self._ask(self.urls[index], "eth_blockNumber"), 16)
            except Exception as exc:
                return f"no answer to eth_blockNumber ({type(exc).__name__}: {exc})"
            if at < head - lag:
                return f"it is at block {at}, {head - at} behind the chain's head"
        return None

    async def _ask(self, url: str, method: str) -> Any:
        """One call to ``url``, no retry, a short timeout (endpoint checks)."""
        payload = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": []}
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            reply = await self._post_to(url, payload, method, 0)
        return _result(method, reply)

    def _use(self, index: int) -> None:
        self._in_use = index
        self.switches += 1

    async def try_primary(self) -> bool:
        """Back to the first endpoint if it answers, serves the chain and is at most
        ``PRIMARY_LAG_BLOCKS`` behind the endpoint in use (True: switched back)."""
        if not self.on_fallback:
            return False
        async with self._switch_lock:
            if not self.on_fallback:
                return False
            try:
                current = int(await self._ask(self.url, "eth_blockNumber"), 16)
            except Exception:
                return False
            # at most PRIMARY_LAG_BLOCKS behind the endpoint in use, and no further behind
            # the highest head seen than a fallback may be
            head = max(current, self.head_seen - FALLBACK_LAG_BLOCKS + PRIMARY_LAG_BLOCKS)
            if await self._check(0, head, PRIMARY_LAG_BLOCKS) is not None:
                return False
            log.warning("rpc endpoint %s answers again; switching back to it", self.urls[0])
            self._use(0)
            return True

    async def _post_to(self, url: str, payload: Any, what: str, retries: int) -> Any:
        attempts = retries + 1
        for attempt in range(attempts):
            self.calls += 1
            try:
                async with self._sess().post(url, data=json.dumps(payload)) as resp:
                    if resp.status >= 500:
                        raise RpcHttpError(resp.status, f"{what}: HTTP {resp.status} from {url}")
                    text = await resp.text()
                    if resp.status >= 400:
                        raise RpcHttpError(resp.status, f"{what}: HTTP {resp.status}: {text[:200]}")
                    try:
                        return json.loads(text)
                    except json.JSONDecodeError as exc:
                        raise RpcTransportError(f"{what}: invalid JSON from node") from exc
            except (aiohttp.ClientError, TimeoutError, RpcTransportError) as exc:
                self.transport_errors += 1
                if attempt + 1 >= attempts:
                    if isinstance(exc, RpcTransportError):
                        raise
                    raise RpcTransportError(f"{what}: {type(exc).__name__}: {exc}") from exc
                log.debug("rpc %s failed (%s), retry %d", what, exc, attempt + 1)
                await asyncio.sleep(self.backoff_s * (2**attempt))
        raise AssertionError("unreachable")

    async def call(self, method: str, params: list[Any] | None = None) -> Any:
        """Call ``method``; raise :class:`RpcError` for an error answer."""
        payload = {
            "jsonrpc": "2.0",
            "id": next(self._ids),
            "method": method,
            "params": params or [],
        }
        retries = self.retries if method.startswith(_IDEMPOTENT_PREFIXES) else 0
        result = _result(method, await self._post(payload, method, retries))
        if method == "eth_blockNumber":
            self._saw_head(result)
        return result

    def _saw_head(self, value: Any) -> None:
        with contextlib.suppress(TypeError, ValueError):
            self.head_seen = max(self.head_seen, int(value, 16))

    async def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Several calls in one HTTP request; results in order. Raises the first error, or
        :class:`BatchRefused` if the endpoint does not take batches."""
        if not calls:
            return []
        at = self._in_use
        refused = self._refused.get(at)
        if refused is not None and time.monotonic() - refused[1] < BATCH_RETRY_S:
            raise BatchRefused(refused[0])
        first = next(self._ids)
        self._ids = itertools.count(first + len(calls))
        payload = [
            {"jsonrpc": "2.0", "id": first + i, "method": m, "params": p}
            for i, (m, p) in enumerate(calls)
        ]
        try:
            reply, at = await self._post_at(payload, "batch", self.retries)
        except RpcHttpError as exc:
            if exc.status >= 500 or exc.status in _PASSING_HTTP:
                raise
            self._refuse(exc.endpoint if exc.endpoint is not None else at, str(exc))
        ids = {first + i for i in range(len(calls))}
        if not isinstance(reply, list):
            # one error object (or anything else) for the whole batch
            self._refuse(at, f"answered with {str(reply)[:200]}")
        by_id = {item.get("id"): item for item in reply if isinstance(item, dict)}
        if not ids & by_id.keys():
            self._refuse(at, f"answered with {str(reply)[:200]}")
        if self._refused.pop(at, None) is not None:
            log.info("%s takes JSON-RPC batches again", self.urls[at])
        out = [_result(calls[i][0], by_id.get(first + i, {})) for i in range(len(calls))]
        for (method, _), result in zip(calls, out, strict=True):
            if method == "eth_blockNumber":
                self._saw_head(result)
        return out

    def _refuse(self, at: int, reason: str) -> NoReturn:
        """Endpoint ``at`` refused a batch: remember it (one warning), raise BatchRefused."""
        if at not in self._refused:
            log.warning(
                "%s refuses JSON-RPC batches (%s): calls that should reach one node"
                " together are sent one by one",
                self.urls[at],
                reason,
            )
        self._refused[at] = (reason, time.monotonic())
        raise BatchRefused(reason)


def _result(method: str, reply: Any) -> Any:
    if not isinstance(reply, dict):
        raise RpcTransportError(f"{method}: unexpected reply {str(reply)[:200]}")
    if "error" in reply and reply["error"] is not None:
        err = reply["error"]
        raise RpcError(
            method, int(err.get("code", 0)), str(err.get("message", "")), err.get("data")
        )
    if "result" not in reply:
        raise RpcTransportError(f"{method}: reply without result")
    return reply["result"]
