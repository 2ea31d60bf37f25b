"""Sei-priced gas: anvil charges Ethereum's 20,000 for a fresh storage slot; Sei charges
its chain parameter ``SeiSstoreSetGasEip2200`` (72,000 in sei-chain v6.3.0, 20,000 again
in v6.3.1; which one a network runs depends on its upgrade history).

``sei_gas = gas_used + (sstore_set_gas - 20,000) * fresh_slots`` where a fresh slot is one
whose value goes from zero (at the start of the transaction) to non-zero (at its end).
Fresh slots are counted from ``debug_traceTransaction`` with the prestate tracer in diff
mode. The price is a setting (``venue.sei.sstore_set_gas``, default the higher value);
:func:`probe_sstore_set_gas` and :func:`probe_node_sstore_set_gas` measure the one a node
charges (the live value of the chain parameter; the venue logs it at start and shows it in
``status``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flashmm.venues.sei.rpc import JsonRpc

#: default of ``venue.sei.sstore_set_gas``: SeiSstoreSetGasEip2200 of sei-chain v6.3.0
SEI_SSTORE_SET = 72_000
ETH_SSTORE_SET = 20_000
#: an SSTORE to a slot that is already non-zero (cold), the same on every chain
SSTORE_RESET = 2_900


@dataclass(frozen=True, slots=True)
class GasReport:
    tx_hash: str
    gas_used: int
    fresh_slots: int
    written_slots: int
    sstore_set_gas: int = SEI_SSTORE_SET

    @property
    def sei_gas(self) -> int:
        return sei_priced(self.gas_used, self.fresh_slots, self.sstore_set_gas)


def sei_priced(gas_used: int, fresh_slots: int, sstore_set_gas: int = SEI_SSTORE_SET) -> int:
    """anvil gas repriced with Sei's fresh-slot price ``sstore_set_gas``."""
    return gas_used + (sstore_set_gas - ETH_SSTORE_SET) * fresh_slots


def _nonzero(value: str | None) -> bool:
    return value is not None and int(value, 16) != 0


def count_fresh_slots(diff: dict[str, Any]) -> tuple[int, int]:
    """(fresh, written) storage slots from a prestateTracer diffMode result."""
    pre: dict[str, Any] = diff.get("pre", {})
    post: dict[str, Any] = diff.get("post", {})
    fresh = written = 0
    for addr, acct in post.items():
        before = (pre.get(addr) or {}).get("storage") or {}
        for slot, value in (acct.get("storage") or {}).items():
            written += 1
            if _nonzero(value) and not _nonzero(before.get(slot)):
                fresh += 1
    return fresh, written


async def trace_fresh_slots(rpc: JsonRpc, tx_hash: str) -> tuple[int, int]:
    """(fresh, written) storage slots of a mined transaction (``debug_traceTransaction``)."""
    diff = await rpc.call(
        "debug_traceTransaction",
        [tx_hash, {"tracer": "prestateTracer", "tracerConfig": {"diffMode": True}}],
    )
    return count_fresh_slots(diff)


async def gas_report(
    rpc: JsonRpc, tx_hash: str, receipt: dict[str, Any], *, sstore_set_gas: int = SEI_SSTORE_SET
) -> GasReport:
    fresh, written = await trace_fresh_slots(rpc, tx_hash)
    return GasReport(tx_hash, int(receipt["gasUsed"], 16), fresh, written, sstore_set_gas)


async def probe_sstore_set_gas(rpc: JsonRpc, token: str, owner: str, spender: str) -> int:
    """The fresh-slot price the node charges, from two ``eth_estimateGas`` of an ERC-20
    ``approve`` by ``owner``: to ``spender`` (whose allowance is already non-zero: a reset)
    and to a spender never approved (a fresh slot). Sends nothing."""
    from eth_abi import encode

    sel = bytes.fromhex("095ea7b3")  # approve(address,uint256)
    fresh_spender = "0x" + "5e" * 20

    async def est(to: str) -> int:
        data = sel + encode(["address", "uint256"], [to, 2**255])
        tx = {"from": owner, "to": token, "data": "0x" + data.hex()}
        return int(await rpc.call("eth_estimateGas", [tx, "latest"]), 16)

    diff = await est(fresh_spender) - await est(spender)
    return round((diff + SSTORE_RESET) / 100) * 100  # calldata bytes differ a little


#: init code ``GAS PUSH1 1 PUSH1 0 SSTORE GAS SWAP1 SUB PUSH1 0 MSTORE PUSH1 32 PUSH1 0
#: RETURN``: a contract creation that returns the gas its write of a fresh slot took
_MEASURE_SSTORE = "0x5a60016000555a900360005260206000f3"
#: what the measurement adds to the fresh-slot price: PUSH1, PUSH1, GAS and the cold-slot
#: surcharge (EIP-2929)
_MEASURE_EXTRA = 3 + 3 + 2 + 2_100


async def probe_node_sstore_set_gas(rpc: JsonRpc) -> int:
    """The fresh-slot price the node charges, from one ``eth_call`` of a contract creation
    that writes a fresh slot and returns the gas the write took (``GAS`` before and after).
    Needs no account, token or allowance; sends nothing."""
    out = await rpc.call("eth_call", [{"data": _MEASURE_SSTORE, "gas": hex(1_000_000)}, "latest"])
    return int(str(out), 16) - _MEASURE_EXTRA
