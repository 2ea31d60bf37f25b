"""The Sei JSON-RPC client: nonces, faults (through a proxy on 127.0.0.1), reverts, keys, logs."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from chain_fixtures import LocalChain, RpcProxy, WsProxy

from flashmm.venues.sei.abi import ASK, book_abi, decode_log, op_place
from flashmm.venues.sei.book import BookClient
from flashmm.venues.sei.errors import ChainIdMismatch, KeySourceError, TxReverted
from flashmm.venues.sei.keys import account_from_hex, load_account, write_keystore
from flashmm.venues.sei.logs import LogStream
from flashmm.venues.sei.tx import TxSender

pytest_plugins = ["chain_fixtures"]
SEI = 1


def noop_call(chain: LocalChain) -> tuple[str, bytes]:
    """A cheap transaction: a requote that cancels nothing."""
    book = BookClient(None, chain.dep.book)  # type: ignore[arg-type]
    return chain.dep.book, book.calldata("requote", SEI, [], 0)


async def test_nonces_stay_contiguous_under_concurrent_sends(
    chain: LocalChain, rpc_factory: Any
) -> None:
    rpc = rpc_factory(chain.rpc_url)
    sender = chain.sender(rpc, "spare")
    to, data = noop_call(chain)
    start = await sender.nonces.sync()
    sent = await asyncio.gather(*(sender.send(to, data, gas=60_000) for _ in range(20)))
    assert sorted(s.nonce for s in sent) == list(range(start, start + 20))
    receipts = await asyncio.gather(*(sender.wait(s) for s in sent))
    assert all(r["status"] == "0x1" for r in receipts)
    assert await sender.nonces.sync() == start + 20


async def test_recovers_from_nonce_too_low(chain: LocalChain, rpc_factory: Any) -> None:
    rpc = rpc_factory(chain.rpc_url)
    a, b = chain.sender(rpc, "spare"), chain.sender(rpc, "spare")
    to, data = noop_call(chain)
    await b.nonces.sync()  # b now holds a nonce that a is about to use
    await a.transact(to, data, gas=60_000)
    receipt = await b.transact(to, data, gas=60_000)
    assert receipt["status"] == "0x1"
    assert b.stats["nonce_resyncs"] >= 1


async def test_transport_faults_are_retried(
    chain: LocalChain, rpc_proxy: RpcProxy, rpc_factory: Any
) -> None:
    rpc = rpc_factory(rpc_proxy.url, timeout_s=1.0, retries=3, backoff_s=0.05)
    sender = chain.sender(rpc, "spare", receipt_timeout_s=20)
    to, data = noop_call(chain)
    rpc_proxy.faults.http_500 = 2
    rpc_proxy.faults.timeouts = 1
    rpc_proxy.faults.timeout_methods = ("eth_chainId",)
    sent = await sender.send(to, data, gas=60_000)
    rpc_proxy.faults.null_receipts = 3
    receipt = await sender.wait(sent)
    assert receipt["status"] == "0x1"
    log = " ".join(rpc_proxy.faults.log)
    assert log.count("500") == 2 and "timeout" in log and log.count("null receipt") == 3
    assert rpc.transport_errors >= 3


async def test_dropped_transaction_is_rebroadcast(
    chain: LocalChain, rpc_proxy: RpcProxy, rpc_factory: Any
) -> None:
    rpc = rpc_factory(rpc_proxy.url)
    sender = chain.sender(rpc, "spare", receipt_timeout_s=10)
    to, data = noop_call(chain)
    rpc_proxy.faults.drop_sends = 1
    sent = await sender.send(to, data, gas=60_000)
    receipt = await sender.wait(sent)
    assert receipt["status"] == "0x1"
    assert rpc_proxy.faults.log == ["dropped send"]
    assert sender.stats["rebroadcasts"] == 1
    # the next transaction follows without a gap
    nxt = await sender.transact(to, data, gas=60_000)
    assert int(nxt["blockNumber"], 16) >= int(receipt["blockNumber"], 16)


async def test_revert_is_decoded_and_its_nonce_used(chain: LocalChain, rpc_factory: Any) -> None:
    rpc = rpc_factory(chain.rpc_url)
    sender = chain.sender(rpc, "spare")
    book = BookClient(rpc, chain.dep.book)
    # An explicit gas limit skips the estimate, so the transaction is mined and reverts.
    sent = await sender.send(book.address, book.calldata("withdraw", SEI, 0, 10**30), gas=80_000)
    with pytest.raises(TxReverted, match=r"InsufficientBalance\(\)"):
        await sender.wait(sent)
    # The estimate path reports the same reason without sending anything.
    with pytest.raises(TxReverted, match=r"InsufficientBalance\(\)"):
        await book.withdraw(sender, SEI, 0, 10**30)
    to, data = noop_call(chain)
    after = await sender.send(to, data, gas=60_000)
    assert after.nonce == sent.nonce + 1
    assert (await sender.wait(after))["status"] == "0x1"


async def test_wrong_chain_id_refuses_to_sign(chain: LocalChain, rpc_factory: Any) -> None:
    rpc = rpc_factory(chain.rpc_url)
    sender = TxSender(rpc, account_from_hex(chain.key("spare")), 1329)
    to, data = noop_call(chain)
    with pytest.raises(ChainIdMismatch, match="1328"):
        await sender.send(to, data, gas=60_000)
    assert sender.stats["sent"] == 0


def test_keystore_needs_private_mode_and_passphrase(tmp_path: Path, chain: LocalChain) -> None:
    key = bytes.fromhex(chain.key("spare")[2:])
    path = tmp_path / "key.json"
    address = write_keystore(path, key, "pw")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    env = {"FLASHMM_KEYSTORE_PASSWORD": "pw"}
    assert load_account(path, env=env).address == address
    with pytest.raises(KeySourceError, match="wrong passphrase"):
        load_account(path, env={"FLASHMM_KEYSTORE_PASSWORD": "nope"})
    with pytest.raises(KeySourceError, match="FLASHMM_KEYSTORE_PASSWORD"):
        load_account(path, env={})
    os.chmod(path, 0o644)
    with pytest.raises(KeySourceError, match="chmod 600"):
        load_account(path, env=env)
    assert load_account(None, env={"FLASHMM_PRIVATE_KEY": chain.key("spare")}).address == address
    with pytest.raises(KeySourceError) as err:
        load_account(None, env={"FLASHMM_PRIVATE_KEY": "0x1234"})
    assert "1234" not in str(err.value)
    assert json.loads(path.read_text())["address"].lower() == address[2:].lower()


@pytest.mark.slow
async def test_ws_disconnect_during_fills_misses_nothing(
    chain: LocalChain, ws_proxy: WsProxy, rpc_factory: Any
) -> None:
    rpc = rpc_factory(chain.rpc_url)
    maker, taker = chain.sender(rpc, "maker"), chain.sender(rpc, "taker")
    book = BookClient(rpc, chain.dep.book)
    head = int(await rpc.call("eth_blockNumber"), 16)
    seen: list[dict[str, Any]] = []
    stream = LogStream(
        rpc, book.address, seen.append, ws_url=ws_proxy.url, from_block=head + 1, backoff_s=0.1
    )
    stream.start()
    await asyncio.wait_for(stream.connected.wait(), 10)
    await book.requote(maker, SEI, [op_place(i, 9000 + i, ASK, 20_000 + i, 3) for i in range(6)])

    async def takes() -> None:
        for i in range(6):
            await book.take(taker, SEI, 0, 20_010, 2 + (i % 2))

    async def chaos() -> None:
        for _ in range(3):
            await asyncio.sleep(0.5)
            ws_proxy.refuse = True
            await ws_proxy.cut()
            await asyncio.sleep(0.6)
            ws_proxy.refuse = False

    await asyncio.gather(takes(), chaos())
    tip = int(await rpc.call("eth_blockNumber"), 16)
    for _ in range(100):
        if (stream.complete_to or 0) >= tip:
            break
        await asyncio.sleep(0.1)
    await stream.aclose()
    truth = await rpc.call(
        "eth_getLogs", [{"address": book.address, "fromBlock": hex(head + 1), "toBlock": hex(tip)}]
    )
    fills = [decode_log(x, book_abi()) for x in truth]
    want = sorted((x.tx_hash, x.log_index) for x in fills if x is not None and x.name == "Fill")
    got_logs = [decode_log(x, book_abi()) for x in seen]
    got = sorted(
        (x.tx_hash, x.log_index)
        for x in got_logs
        if x is not None and x.name == "Fill" and x.block_number <= tip
    )
    assert len(want) >= 6
    assert got == want  # every fill exactly once
    assert stream.connections >= 2 and stream.backfilled > 0
    await book.cancel_all(maker, SEI)
