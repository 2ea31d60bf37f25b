"""Transactions: nonces, fees, signing (EIP-1559 type 2), sending and receipts.

Nonces are tracked locally and kept contiguous: the nonce lock is held from reserving a
nonce to the node accepting the signed transaction, so a send the node refuses gives its
nonce back and the next transaction reuses it. A transaction that is mined and reverts
still used its nonce. "nonce too low" and detected gaps resync from the node, except
when the node knows the very transaction just signed: an earlier try of the same send
got through (its answer was lost and the retry hears "nonce too low"), so it counts as
sent and is never signed again at another nonce.

Another transaction can already sit in the node's pool at the nonce we hold ("replacement
transaction underpriced", "tx with this nonce already in mempool"): another process
signing with the same key, a transaction of the bot's last run that is still pending
while the node's pending count left it out, or one of ours the node has not counted yet.
Its bytes are not ours (ours would be "already known"), and we never outbid it to
replace it: it may be a take or a requote whose outcome someone is waiting on, and the
same call signed at a higher fee would race it. The nonce is taken, so the send moves
past it: to the node's pending count when the node counts that transaction, else to the
next nonce (the only place ours can land is after it); below it when the node reports a
gap. One warning per such move names the nonce. A nonce held by one of our own
transactions still waiting for its receipt is said to be ours (at info level).

Stuck transactions: one of ours that is not mined ``fee_bump_after_s`` after it was signed
(and at least ``BUMP_MIN_BLOCKS`` blocks later) while its fees are what holds it back
(its maxFeePerGas is below the next base fee, e.g. after a spike that more than doubled
the base fee, or it is the next nonce of the account and still not included, e.g. a tip
too low) holds every later transaction of ours behind it. :meth:`TxSender.wait` then
replaces it at the same nonce with the same call at higher fees: at least +12.5 % on both
maxFeePerGas and maxPriorityFeePerGas (geth and anvil want +10 % to replace), and at
least twice the next base fee plus the tip, never above the ``max_fee_gwei`` cap, at
most ``max_fee_bumps`` times, one warning per bump naming the nonce and the fees (and one
error when the cap allows no further bump). This is the one case where we outbid a
transaction at our nonce: it is our own, the same call, and the old and the new bytes
are one logical send (:attr:`SentTx.hashes`): the receipt wait watches every hash, and
whichever lands is the outcome (only one can, they share a nonce).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_utils import to_checksum_address

from flashmm.venues.sei.abi import ContractAbi
from flashmm.venues.sei.errors import (
    ChainIdMismatch,
    RpcError,
    RpcTransportError,
    TxDropped,
    TxReverted,
)
from flashmm.venues.sei.rpc import JsonRpc

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

log = logging.getLogger(__name__)

GWEI = 10**9
RECEIPT_POLL_S = 0.1
#: a stuck transaction is replaced only after this many blocks were mined without it
BUMP_MIN_BLOCKS = 2
#: how often a transaction due for a bump but not (yet) judged stuck is looked at again
BUMP_RECHECK_S = 0.5


# how nodes word these answers to eth_sendRawTransaction
NONCE_TOO_LOW = ("nonce too low", "nonce has already been used", "old nonce")
NONCE_GAP = ("nonce too high", "nonce gap", "future nonce")
# the node has these very bytes: geth/anvil wordings, and the Tendermint mempool's under
# Sei (its cache of recent transactions answers a repeat of the same bytes)
ALREADY_KNOWN = (
    "already known",
    "known transaction",
    "already imported",
    "tx already exists in cache",
)
# another transaction sits at this nonce in the pool: geth and anvil ask for a higher fee
# to replace it, Sei's mempool wants a higher priority; not a fee problem of ours
NONCE_TAKEN = (
    "replacement transaction underpriced",
    "replacement fee too low",
    "nonce already in mempool",
)
# the node refuses a transaction for its fees (check NONCE_TAKEN first: "replacement
# transaction underpriced" is a taken nonce)
FEE_TOO_LOW = (
    "less than block base fee",
    "fee cap less than",
    "feecap too low",
    "transaction underpriced",
    "insufficient fee",
    "max fee per gas less than",
)


def _says(err: RpcError, phrases: tuple[str, ...]) -> bool:
    msg = err.message.lower()
    return any(p in msg for p in phrases)


class NonceManager:
    """Hands out contiguous nonces for one address."""

    def __init__(self, rpc: JsonRpc, address: str) -> None:
        self.rpc = rpc
        self.address = address
        self.lock = asyncio.Lock()
        self._next: int | None = None
        self.resyncs = 0

    async def sync(self) -> int:
        """Set the next nonce from the node's pending count."""
        count = int(await self.rpc.call("eth_getTransactionCount", [self.address, "pending"]), 16)
        if self._next is not None and count != self._next:
            log.info("nonce resync %s: local %s -> node %s", self.address, self._next, count)
        self._next = count
        self.resyncs += 1
        return count

    async def current(self) -> int:
        """The nonce the next transaction gets (call with :attr:`lock` held)."""
        if self._next is None:
            await self.sync()
        assert self._next is not None
        return self._next

    def advance(self) -> None:
        assert self._next is not None
        self._next += 1

    async def skip_taken(self, nonce: int) -> int:
        """``nonce`` is held by another transaction in the node's pool: the next nonce from
        the node's pending count, but past ``nonce`` when the node leaves that transaction
        out of its count (call with :attr:`lock` held). A count below ``nonce`` is a gap
        the node reports: it is filled first."""
        count = await self.sync()
        if count == nonce:
            self._next = nonce + 1
        assert self._next is not None
        return self._next


@dataclass(slots=True)
class Fees:
    max_fee: int
    priority_fee: int


class FeeOracle:
    """EIP-1559 fees from eth_feeHistory (fallback eth_gasPrice), capped, cached briefly."""

    def __init__(
        self,
        rpc: JsonRpc,
        *,
        max_fee_gwei: float,
        priority_fee_gwei: float | None = None,
        ttl_s: float = 2.0,
    ) -> None:
        self.rpc = rpc
        self.cap = int(max_fee_gwei * GWEI)
        self.priority_override = (
            None if priority_fee_gwei is None else int(priority_fee_gwei * GWEI)
        )
        self.ttl_s = ttl_s
        self._cached: Fees | None = None
        self._at = 0.0

    def invalidate(self) -> None:
        """Forget the cached fees: the next :meth:`fees` asks the node."""
        self._cached = None

    async def fees(self) -> Fees:
        now = time.monotonic()
        if self._cached is not None and now - self._at < self.ttl_s:
            return self._cached
        base, tip = await self.base_and_tip()
        if base > self.cap:
            raise RpcError(
                "eth_feeHistory",
                0,
                f"base fee {base / GWEI:.2f} gwei is above the cap {self.cap / GWEI:.2f} gwei",
            )
        max_fee = min(2 * base + tip, self.cap)
        tip = min(tip, max_fee)
        self._cached = Fees(max_fee=max_fee, priority_fee=tip)
        self._at = now
        return self._cached

    async def base_and_tip(self) -> tuple[int, int]:
        """The next block's base fee and the tip to offer, from the node (not cached)."""
        try:
            hist = await self.rpc.call("eth_feeHistory", [5, "latest", [50]])
            base = int(hist["baseFeePerGas"][-1], 16)
            rewards = [int(r[0], 16) for r in hist.get("reward") or [] if r]
            tip = sorted(rewards)[len(rewards) // 2] if rewards else 0
        except (RpcError, KeyError, IndexError, TypeError, ValueError):
            price = int(await self.rpc.call("eth_gasPrice"), 16)
            base, tip = price, 0
        if self.priority_override is not None:
            tip = self.priority_override
        return base, tip

    def bumped(self, old: Fees, base: int, tip: int) -> Fees | None:
        """Fees that replace a transaction paying ``old`` at the same nonce: at least
        +12.5 % on both (nodes want +10 %), at least 2 x ``base`` + tip, capped; None when
        the cap leaves no room for a valid replacement."""
        new_tip = max(old.priority_fee * 9 // 8 + 1, tip)
        new_max = min(max(old.max_fee * 9 // 8 + 1, 2 * base + new_tip), self.cap)
        new_tip = min(new_tip, new_max)
        if new_max * 10 < old.max_fee * 11 or new_tip * 10 < old.priority_fee * 11:
            return None
        return Fees(max_fee=new_max, priority_fee=new_tip)


@dataclass(slots=True)
class _Bump:
    """Where one send stands on its way to a fee bump (see :meth:`TxSender.wait`)."""

    due: float
    signed_at: float = field(default_factory=time.monotonic)
    #: the head when its latest version was signed (None: not read yet)
    head: int | None = None
    done: bool = False
    #: the fees of the last replacement signed (sent or refused)
    tried: Fees | None = None


@dataclass(slots=True)
class SentTx:
    """One logical send. ``tx_hash``, ``raw`` and ``tx`` are its latest signed bytes; after
    a fee bump :attr:`hashes` holds every version (oldest first): they share the nonce, so
    at most one of them lands, and that one is the send's outcome."""

    tx_hash: str
    nonce: int
    raw: bytes
    tx: dict[str, Any]
    sent_at: float = field(default_factory=time.monotonic)
    hashes: list[str] = field(default_factory=list)
    #: how many times it was replaced with higher fees
    bumps: int = 0

    def __post_init__(self) -> None:
        if not self.hashes:
            self.hashes.append(self.tx_hash)

    def is_ours(self, tx_hash: str) -> bool:
        return tx_hash.lower() in {h.lower() for h in self.hashes}


class TxSender:
    """Signs and sends transactions for one account on one chain, waits for receipts."""

    def __init__(
        self,
        rpc: JsonRpc,
        account: LocalAccount,
        chain_id: int,
        *,
        max_fee_gwei: float = 100.0,
        priority_fee_gwei: float | None = None,
        gas_margin: float = 0.2,
        receipt_timeout_s: float = 30.0,
        fee_bump_after_s: float = 2.0,
        max_fee_bumps: int = 3,
        abi: ContractAbi | None = None,
    ) -> None:
        self.rpc = rpc
        self.account = account
        self.address: str = account.address
        self.chain_id = chain_id
        self.nonces = NonceManager(rpc, self.address)
        self.fees = FeeOracle(rpc, max_fee_gwei=max_fee_gwei, priority_fee_gwei=priority_fee_gwei)
        self.gas_margin = gas_margin
        self.receipt_timeout_s = receipt_timeout_s
        self.fee_bump_after_s = fee_bump_after_s
        self.max_fee_bumps = max_fee_bumps
        self.abi = abi
        self._chain_checked = False
        # nonce -> our send waiting for its receipt there (see the NONCE_TAKEN path)
        self._waiting: dict[int, SentTx] = {}
        self.stats = {
            "sent": 0,
            "reverted": 0,
            "dropped": 0,
            "nonce_resyncs": 0,
            "nonce_taken": 0,
            "rebroadcasts": 0,
            "fee_bumps": 0,
        }

    async def check_chain(self) -> None:
        """Refuse to sign for a node whose chain id differs from the configured one."""
        got = int(await self.rpc.call("eth_chainId"), 16)
        if got != self.chain_id:
            raise ChainIdMismatch(
                f"node at {self.rpc.url} serves chain id {got}, configured chain id is "
                f"{self.chain_id}; nothing was signed"
            )
        self._chain_checked = True

    async def estimate(self, to: str | None, data: bytes, value: int = 0) -> int:
        call = self._call_obj(to, data, value)
        try:
            est = int(await self.rpc.call("eth_estimateGas", [call, "latest"]), 16)
        except RpcError as exc:
            raise self._reverted_call(exc) from exc
        return int(est * (1 + self.gas_margin)) + 2_000

    def _call_obj(self, to: str | None, data: bytes, value: int) -> dict[str, Any]:
        """``data`` sent from our address as a JSON-RPC call object."""
        call = {"from": self.address, "data": "0x" + data.hex(), "value": hex(value)}
        if to is not None:
            call["to"] = to
        return call

    def _reverted_call(self, exc: RpcError) -> RpcError | TxReverted:
        data = exc.revert_data
        if data is not None and self.abi is not None:
            return TxReverted("(estimate)", self.abi.decode_revert(data))
        if "revert" in exc.message.lower():
            return TxReverted("(estimate)", exc.message)
        return exc

    async def send(
        self,
        to: str | None,
        data: bytes,
        *,
        gas: int | None = None,
        value: int = 0,
    ) -> SentTx:
        """Sign and send; returns once the node accepted the transaction."""
        if not self._chain_checked:
            await self.check_chain()
        if gas is None:
            gas = await self.estimate(to, data, value)
        fees = await self.fees.fees()
        async with self.nonces.lock:
            for attempt in range(3):
                nonce = await self.nonces.current()
                tx: dict[str, Any] = {
                    "type": 2,
                    "chainId": self.chain_id,
                    "nonce": nonce,
                    "gas": gas,
                    "maxFeePerGas": fees.max_fee,
                    "maxPriorityFeePerGas": fees.priority_fee,
                    "value": value,
                    "data": data,
                }
                if to is not None:
                    tx["to"] = to_checksum_address(to)
                signed = self.account.sign_transaction(tx)
                raw = bytes(signed.raw_transaction)
                tx_hash = "0x" + bytes(signed.hash).hex()
                try:
                    await self._broadcast(raw)
                except RpcError as exc:
                    if _says(exc, NONCE_TOO_LOW) and await self._node_has(tx_hash):
                        # Our own bytes, already taken: an earlier try of this send (its
                        # answer lost, the transport retried it) reached the node. Signing
                        # the same call again at the next nonce would execute it twice.
                        break
                    if _says(exc, NONCE_TOO_LOW + NONCE_GAP):
                        self.stats["nonce_resyncs"] += 1
                        await self.nonces.sync()
                        if attempt < 2:
                            continue
                    if _says(exc, NONCE_TAKEN):
                        if await self._node_has(tx_hash):
                            break  # our very bytes, worded as a conflict: sent
                        # Another transaction holds this nonce (see the module docstring):
                        # move past it, never outbid it.
                        self.stats["nonce_taken"] += 1
                        nxt = await self.nonces.skip_taken(nonce)
                        own = self._waiting.get(nonce)
                        if own is not None:
                            # one of ours still waiting for its receipt (a resync counted
                            # below it): its wait bumps it if it is stuck
                            log.info(
                                "nonce %d of %s is held by our pending transaction %s;"
                                " this send moves to nonce %d",
                                nonce,
                                self.address,
                                own.tx_hash,
                                nxt,
                            )
                        else:
                            log.warning(
                                "nonce %d of %s is held by another transaction in the node's"
                                " pool (%s): not replacing it; this send moves to nonce %d",
                                nonce,
                                self.address,
                                exc.message,
                                nxt,
                            )
                        if attempt < 2:
                            continue
                    elif _says(exc, FEE_TOO_LOW) and attempt < 2:
                        # fees cached from before a base fee spike: ask the node again
                        self.fees.invalidate()
                        fees = await self.fees.fees()
                        continue
                    raise
                except RpcTransportError:
                    # Unknown whether the node got it: ask it which nonce it expects.
                    if await self._node_has(tx_hash):
                        break
                    await self.nonces.sync()
                    raise
                break
            self.nonces.advance()
        self.stats["sent"] += 1
        return SentTx(tx_hash=tx_hash, nonce=nonce, raw=raw, tx=tx)

    async def _broadcast(self, raw: bytes) -> None:
        try:
            await self.rpc.call("eth_sendRawTransaction", ["0x" + raw.hex()])
        except RpcError as exc:
            if _says(exc, ALREADY_KNOWN):
                return
            raise

    async def _node_has(self, tx_hash: str) -> bool:
        try:
            return await self.rpc.call("eth_getTransactionByHash", [tx_hash]) is not None
        except (RpcError, RpcTransportError):
            return False

    async def wait(self, sent: SentTx) -> dict[str, Any]:
        """Poll for the receipt (null receipts are normal for a moment).

        Rebroadcasts the signed bytes if the node forgot the transaction; replaces it at
        the same nonce with higher fees if it is stuck (see the module docstring); raises
        :class:`TxDropped` if no version of it lands in ``receipt_timeout_s``,
        :class:`TxReverted` if the one that landed reverted.
        """
        self._waiting[sent.nonce] = sent
        try:
            return await self._wait(sent)
        finally:
            if self._waiting.get(sent.nonce) is sent:
                del self._waiting[sent.nonce]

    async def _wait(self, sent: SentTx) -> dict[str, Any]:
        deadline = time.monotonic() + self.receipt_timeout_s
        next_check = time.monotonic() + max(1.0, self.receipt_timeout_s / 10)
        taken_seen = False
        bump = _Bump(time.monotonic() + self.fee_bump_after_s)
        bump.done = self.max_fee_bumps <= 0
        while True:
            receipt = await self._any_receipt(sent)
            if receipt is not None:
                landed = str(receipt.get("transactionHash") or sent.tx_hash)
                if int(receipt.get("status", "0x1"), 16) == 0:
                    self.stats["reverted"] += 1
                    raise TxReverted(landed, await self.revert_reason(sent, receipt))
                return dict(receipt)
            now = time.monotonic()
            if now >= deadline:
                self.stats["dropped"] += 1
                # under the lock: a send between reserving its nonce and counting it must
                # not see the node's count (which may already include it) land underneath
                async with self.nonces.lock:
                    await self.nonces.sync()
                versions = f" ({len(sent.hashes)} versions)" if len(sent.hashes) > 1 else ""
                raise TxDropped(
                    f"no receipt for {sent.tx_hash}{versions} (nonce {sent.nonce}) "
                    f"after {self.receipt_timeout_s:.0f}s"
                )
            if not bump.done and (bump.head is None or now >= bump.due):
                with contextlib.suppress(RpcError, RpcTransportError):
                    await self._maybe_bump(sent, bump, now)
            if now >= next_check:
                next_check = now + max(1.0, self.receipt_timeout_s / 10)
                if not any([await self._node_has(h) for h in reversed(sent.hashes)]):
                    self.stats["rebroadcasts"] += 1
                    try:
                        await self._broadcast(sent.raw)
                    except RpcError as exc:
                        if _says(exc, NONCE_TAKEN) and not taken_seen:
                            # another transaction took its nonce in the pool: ours lands
                            # only if that one is dropped; the receipt timeout decides
                            taken_seen = True
                            bump.done = True  # never outbid a transaction not ours
                            log.warning(
                                "%s (nonce %d): another transaction holds its nonce in"
                                " the node's pool",
                                sent.tx_hash,
                                sent.nonce,
                            )
                        elif _says(exc, FEE_TOO_LOW) and not _says(exc, NONCE_TAKEN):
                            pass  # its fees: the bump replaces it when it is due
                        elif not _says(exc, NONCE_TOO_LOW + NONCE_TAKEN):
                            log.warning("rebroadcast of %s failed: %s", sent.tx_hash, exc)
                    except RpcTransportError:
                        pass
            await asyncio.sleep(RECEIPT_POLL_S)

    async def _any_receipt(self, sent: SentTx) -> dict[str, Any] | None:
        """The receipt of whichever version of ``sent`` landed (newest asked first)."""
        for h in reversed(sent.hashes):
            try:
                receipt = await self.rpc.call("eth_getTransactionReceipt", [h])
            except RpcTransportError:
                continue
            if receipt is not None:
                return dict(receipt)
        return None

    async def _maybe_bump(self, sent: SentTx, bump: _Bump, now: float) -> None:
        """Replace ``sent`` with higher fees if it is stuck: due, ``BUMP_MIN_BLOCKS``
        blocks mined since it was signed, not mined, and held back by its own fees."""
        head = int(await self.rpc.call("eth_blockNumber"), 16)
        if bump.head is None:
            bump.head = head
            return
        if sent.bumps >= self.max_fee_bumps:
            bump.done = True
            return
        bump.due = now + BUMP_RECHECK_S
        if head < bump.head + BUMP_MIN_BLOCKS:
            return
        on_node = await self.rpc.call("eth_getTransactionByHash", [sent.tx_hash])
        if on_node is not None and on_node.get("blockNumber") is not None:
            return  # mined: its receipt comes next
        count = await self.rpc.call("eth_getTransactionCount", [self.address, "latest"])
        if int(count, 16) > sent.nonce:
            return  # its nonce is used: a version of it landed (its receipt comes next)
        if on_node is None and not any([await self._node_has(h) for h in sent.hashes]):
            # the node dropped ours; a transaction its pending count includes at our
            # nonce is not ours (another process's): never outbid it
            pending = await self.rpc.call("eth_getTransactionCount", [self.address, "pending"])
            if int(pending, 16) > sent.nonce:
                bump.done = True
                log.warning(
                    "%s (nonce %d): another transaction holds its nonce in the node's pool;"
                    " not replacing it",
                    sent.tx_hash,
                    sent.nonce,
                )
                return
        base, tip = await self.fees.base_and_tip()
        old = Fees(int(sent.tx["maxFeePerGas"]), int(sent.tx["maxPriorityFeePerGas"]))
        if old.max_fee >= base and int(count, 16) != sent.nonce:
            return  # not its fees: it waits for a transaction of ours before it
        # from the fees last tried: a replacement the node refused is not tried again
        fees = self.fees.bumped(bump.tried or old, base, tip)
        if fees is None:
            bump.done = True
            log.error(
                "transaction %s (nonce %d of %s) is stuck at maxFeePerGas %.4f gwei (next"
                " base fee %.4f gwei) and the cap max_fee_gwei %.4f gwei leaves no room to"
                " replace it: every later transaction waits behind it",
                sent.tx_hash,
                sent.nonce,
                self.address,
                old.max_fee / GWEI,
                base / GWEI,
                self.fees.cap / GWEI,
            )
            return
        bump.tried = fees
        await self._replace(sent, old, fees, base, now - bump.signed_at)
        bump.signed_at = now
        bump.due = now + self.fee_bump_after_s
        bump.head = head

    async def _replace(
        self, sent: SentTx, old: Fees, fees: Fees, base: int, waited_s: float
    ) -> None:
        """Sign ``sent``'s call again at its nonce with ``fees`` and send it."""
        tx = dict(sent.tx, maxFeePerGas=fees.max_fee, maxPriorityFeePerGas=fees.priority_fee)
        signed = self.account.sign_transaction(tx)
        raw = bytes(signed.raw_transaction)
        tx_hash = "0x" + bytes(signed.hash).hex()
        sent.bumps += 1
        self.stats["fee_bumps"] += 1
        log.warning(
            "nonce %d of %s not mined after %.1f s (maxFeePerGas %.4f gwei, tip %.4f gwei;"
            " next base fee %.4f gwei): replaced by %s at maxFeePerGas %.4f gwei, tip"
            " %.4f gwei (bump %d of at most %d)",
            sent.nonce,
            self.address,
            waited_s,
            old.max_fee / GWEI,
            old.priority_fee / GWEI,
            base / GWEI,
            tx_hash,
            fees.max_fee / GWEI,
            fees.priority_fee / GWEI,
            sent.bumps,
            self.max_fee_bumps,
        )
        try:
            await self._broadcast(raw)
        except RpcError as exc:
            if _says(exc, NONCE_TOO_LOW):
                return  # a version of it (or another transaction) was mined meanwhile
            log.warning("replacement %s (nonce %d) refused: %s", tx_hash, sent.nonce, exc)
            return
        except RpcTransportError:
            pass  # it may have reached the node: watched like the others
        sent.hashes.append(tx_hash)
        sent.tx_hash, sent.raw, sent.tx = tx_hash, raw, tx

    async def revert_reason(self, sent: SentTx, receipt: dict[str, Any]) -> str:
        """Replay a reverted transaction with eth_call at its block to read the reason."""
        tx = sent.tx
        gas_used = int(receipt.get("gasUsed", "0x0"), 16)
        if gas_used >= int(tx["gas"]):
            return f"out of gas (limit {tx['gas']})"
        call = self._call_obj(tx.get("to"), bytes(tx["data"]), tx.get("value", 0))
        call["gas"] = hex(tx["gas"])
        try:
            await self.rpc.call("eth_call", [call, receipt["blockNumber"]])
        except RpcError as exc:
            data = exc.revert_data
            if data is not None and self.abi is not None:
                return self.abi.decode_revert(data)
            return exc.message
        except RpcTransportError as exc:
            return f"reverted (reason unavailable: {exc})"
        return "reverted (state changed since; replay succeeded)"

    async def transact(
        self, to: str | None, data: bytes, *, gas: int | None = None, value: int = 0
    ) -> dict[str, Any]:
        """Send and wait for a successful receipt."""
        sent = await self.send(to, data, gas=gas, value=value)
        return await self.wait(sent)
