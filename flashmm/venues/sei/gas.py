"""Sei-priced gas: anvil charges Ethereum's 20,000 for a fresh storage slot, Sei 72,000.

``sei_gas = gas_used + (72,000 - 20,000) * fresh_slots`` where a fresh slot is one whose
value goes from zero (at the start of the transaction) to non-zero (at its end). Fresh
slots are counted from ``debug_traceTransaction`` with the prestate tracer in diff mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flashmm.venues.sei.rpc import JsonRpc

SEI_SSTORE_SET = 72_000
ETH_SSTORE_SET = 20_000
FRESH_SLOT_SURCHARGE = SEI_SSTORE_SET - ETH_SSTORE_SET


@dataclass(frozen=True, slots=True)
class GasReport:
    tx_hash: str
    gas_used: int
    fresh_slots: int
    written_slots: int

    @property
    def sei_gas(self) -> int:
        return sei_priced(self.gas_used, self.fresh_slots)


def sei_priced(gas_used: int, fresh_slots: int) -> int:
    return gas_used + FRESH_SLOT_SURCHARGE * fresh_slots


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


async def gas_report(
    rpc: JsonRpc, tx_hash: str, receipt: dict[str, Any] | None = None
) -> GasReport:
    if receipt is None:
        receipt = await rpc.call("eth_getTransactionReceipt", [tx_hash])
    assert receipt is not None
    diff = await rpc.call(
        "debug_traceTransaction",
        [tx_hash, {"tracer": "prestateTracer", "tracerConfig": {"diffMode": True}}],
    )
    fresh, written = count_fresh_slots(diff)
    return GasReport(tx_hash, int(receipt["gasUsed"], 16), fresh, written)
