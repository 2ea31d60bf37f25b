"""ABI helpers for FlashBook without web3.py: selectors, call encoding, log decoding.

Also the bit layouts shared with ``contracts/FlashBook.sol``: the requote op word and the
``info`` word carried by the order events (LSB first):

    op:   clientId 0..63 | price 64..95 | size 96..159 | side 160 | slot 168..175 |
          kind 176..183 | oldClientId 184..247
    info: clientId 0..63 | price 64..95 | size 96..159 | side 160 | slot 168..175 |
          market 176..191 | extra 192..255 (reject reason, or a Fill's maker remainder)

side 0 is a bid (buy), 1 an ask (sell).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak

from flashmm.contracts import load_artifact

U32 = (1 << 32) - 1
U64 = (1 << 64) - 1

OP_CANCEL = 0
OP_PLACE = 1
OP_REPLACE = 2

BID = 0
ASK = 1

#: OrderRejected codes every order of that side would meet again at the next requote
#: (no free balance, market paused or delisted): the engine holds the side back. Not a
#: race (a cross, a busy slot, a scan budget) nor one order's own fault (bad order,
#: minimum size, level cap: the other levels stay)
LASTING_REJECTS = frozenset({3, 6})
REJECT_REASONS = {
    1: "post-only order would cross",
    2: "order slot busy",
    3: "insufficient free balance",
    4: "bad price, size or slot",
    5: "size below the market's minimum order size",
    6: "market paused or delisted (cancel-only)",
    7: "the side already has the maximum number of price levels",
    8: "cross check ran out of its scan budget (stale best price over a sparse book; "
    "a retry goes on from where it stopped)",
}

#: order slots per owner and market (``FlashBook.SLOTS``)
N_SLOTS = 232
#: take() stops after this many price levels / maker orders unless told otherwise
TAKE_MAX_LEVELS = 32
TAKE_MAX_ORDERS = 64

#: What FlashBook's custom errors mean, for readable revert reasons.
ERROR_HINTS = {
    "Expired": "the transaction's deadline passed before it was mined",
    "MarketPaused": "the market is paused by the guardian: no new orders or takes "
    "(cancels and withdrawals work)",
    "MarketDelisted": "the market is delisted: cancel-only (cancels and withdrawals work)",
    "LevelCap": "the side already has the maximum number of price levels",
    "UnknownMarket": "no such market on this book",
    "NoAccount": "this address has no account in the market (deposit first)",
    "InsufficientBalance": "not enough free balance",
    "FeeOnTransfer": "the token delivered less than the amount (fee-on-transfer tokens are "
    "refused)",
    "BadToken": "not a token contract answering decimals() with at most 18",
    "BadAmount": "bad amount or range",
    "NotAdmin": "only the book's admin may do this",
    "NotGuardian": "only the guardian or the admin may do this",
}


def _canonical_type(param: dict[str, Any]) -> str:
    typ: str = param["type"]
    if typ.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param["components"])
        return f"({inner}){typ[5:]}"
    return typ


@dataclass(frozen=True, slots=True)
class AbiFunction:
    name: str
    selector: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def encode(self, *args: Any) -> bytes:
        return self.selector + abi_encode(list(self.inputs), list(args))

    def decode_output(self, data: bytes) -> tuple[Any, ...]:
        return tuple(abi_decode(list(self.outputs), data))


@dataclass(frozen=True, slots=True)
class AbiEvent:
    name: str
    topic0: bytes
    indexed: tuple[tuple[str, str], ...]
    data: tuple[tuple[str, str], ...]

    def decode(self, topics: list[bytes], data: bytes) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for (name, typ), topic in zip(self.indexed, topics[1:], strict=False):
            out[name] = abi_decode([typ], topic)[0]
        values = abi_decode([t for _, t in self.data], data)
        for (name, _), value in zip(self.data, values, strict=True):
            out[name] = value
        return out


class ContractAbi:
    """Functions, events and custom errors of one compiled contract."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self.functions: dict[str, AbiFunction] = {}
        self.events: dict[str, AbiEvent] = {}
        self.events_by_topic: dict[bytes, AbiEvent] = {}
        self.errors: dict[bytes, tuple[str, tuple[str, ...]]] = {}
        for item in abi:
            kind = item.get("type")
            if kind not in ("function", "event", "error"):
                continue
            name, params = item["name"], item["inputs"]
            ins = tuple(_canonical_type(p) for p in params)
            hashed = keccak(text=f"{name}({','.join(ins)})")
            if kind == "function":
                outs = tuple(_canonical_type(p) for p in item["outputs"])
                self.functions[name] = AbiFunction(name, hashed[:4], ins, outs)
            elif kind == "event":
                named = [(p["indexed"], (p["name"], t)) for p, t in zip(params, ins, strict=True)]
                indexed = tuple(nt for ix, nt in named if ix)
                event = AbiEvent(name, hashed, indexed, tuple(nt for ix, nt in named if not ix))
                self.events[name] = event
                self.events_by_topic[event.topic0] = event
            else:
                self.errors[hashed[:4]] = (name, ins)

    def fn(self, name: str) -> AbiFunction:
        return self.functions[name]

    def decode_revert(self, data: bytes) -> str:
        """A readable reason for revert data (custom error, Error(string) or Panic(uint256))."""
        if not data:
            return "reverted without a reason"
        sel, body = data[:4], data[4:]
        if sel == bytes.fromhex("08c379a0"):
            try:
                return str(abi_decode(["string"], body)[0])
            except Exception:
                return f"reverted: 0x{data.hex()}"
        if sel == bytes.fromhex("4e487b71"):
            code = abi_decode(["uint256"], body)[0] if len(body) >= 32 else -1
            return f"panic 0x{code:02x}" + (
                " (arithmetic overflow/underflow)" if code == 0x11 else ""
            )
        if sel in self.errors:
            name, ins = self.errors[sel]
            try:
                args = abi_decode(list(ins), body) if ins else ()
            except Exception:
                args = ()
            text = f"{name}({', '.join(str(a) for a in args)})"
            hint = ERROR_HINTS.get(name)
            return f"{text}: {hint}" if hint else text
        return f"reverted: 0x{data.hex()}"


@cache
def contract_abi(name: str) -> ContractAbi:
    return ContractAbi(load_artifact(name)["abi"])


def book_abi() -> ContractAbi:
    return contract_abi("FlashBook")


def token_abi() -> ContractAbi:
    return contract_abi("TestToken")


# --- packed words ---------------------------------------------------------------------


def _check_fields(client_id: int, price: int, size: int) -> None:
    if not 0 <= client_id <= U64:
        raise ValueError(f"client id must fit in 64 bits, was {client_id}")
    if not 0 <= price <= U32:
        raise ValueError(f"price must fit in 32 bits (ticks), was {price}")
    if not 0 <= size <= U64:
        raise ValueError(f"size must fit in 64 bits (lots), was {size}")


def _op(
    kind: int, slot: int, client_id: int, side: int = 0, price: int = 0, size: int = 0, old: int = 0
) -> int:
    """A requote op word (layout in the module docstring)."""
    _check_fields(client_id, price, size)
    _check_fields(old, 0, 0)
    word = client_id | (price << 64) | (size << 96) | (side << 160) | (slot << 168)
    return word | (kind << 176) | (old << 184)


def op_cancel(slot: int, client_id: int) -> int:
    return _op(OP_CANCEL, slot, client_id)


def op_place(slot: int, client_id: int, side: int, price: int, size: int) -> int:
    return _op(OP_PLACE, slot, client_id, side, price, size)


def op_replace(
    slot: int, old_client_id: int, client_id: int, side: int, price: int, size: int
) -> int:
    return _op(OP_REPLACE, slot, client_id, side, price, size, old_client_id)


@dataclass(frozen=True, slots=True)
class OrderInfo:
    """An unpacked ``info`` word."""

    client_id: int
    price: int
    size: int
    side: int
    slot: int
    market: int
    extra: int


def unpack_info(info: int) -> OrderInfo:
    return OrderInfo(
        client_id=info & U64,
        price=(info >> 64) & U32,
        size=(info >> 96) & U64,
        side=(info >> 160) & 1,
        slot=(info >> 168) & 0xFF,
        market=(info >> 176) & 0xFFFF,
        extra=info >> 192,
    )


@dataclass(frozen=True, slots=True)
class BookLog:
    """One decoded FlashBook log."""

    name: str
    args: dict[str, Any]
    block_number: int
    tx_hash: str
    log_index: int


def hex_to_bytes(value: str) -> bytes:
    return bytes.fromhex(value[2:] if value.startswith("0x") else value)


def decode_log(log: dict[str, Any], abi: ContractAbi | None = None) -> BookLog | None:
    """Decode a JSON-RPC log object; None for a log this ABI does not know."""
    abi = abi or book_abi()
    topics = [hex_to_bytes(t) for t in log.get("topics", [])]
    if not topics or topics[0] not in abi.events_by_topic:
        return None
    event = abi.events_by_topic[topics[0]]
    args = event.decode(topics, hex_to_bytes(log.get("data", "0x")))
    return BookLog(
        name=event.name,
        args=args,
        block_number=int(log["blockNumber"], 16) if log.get("blockNumber") else -1,
        tx_hash=str(log.get("transactionHash", "")),
        log_index=int(log["logIndex"], 16) if log.get("logIndex") else -1,
    )
