"""FlashBook contract client: deploy, markets, funds, requote/take and views."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import encode as abi_encode

from flashmm.contracts import load_artifact
from flashmm.venues.base import VenueError
from flashmm.venues.sei.abi import (
    TAKE_MAX_LEVELS,
    TAKE_MAX_ORDERS,
    ContractAbi,
    OrderInfo,
    book_abi,
    hex_to_bytes,
    token_abi,
    unpack_info,
)
from flashmm.venues.sei.errors import RpcError, TxReverted
from flashmm.venues.sei.rpc import JsonRpc
from flashmm.venues.sei.tx import SentTx, TxSender


@dataclass(frozen=True, slots=True)
class MarketInfo:
    market: int
    base: str
    quote: str
    tick_value: int
    lot_units: int
    best_bid_hint: int
    best_ask_hint: int
    bid_levels: int
    ask_levels: int


@dataclass(frozen=True, slots=True)
class MarketConfig:
    min_size: int
    status: int  # 0 open, 1 paused, 2 delisted
    base_decimals: int
    quote_decimals: int

    @property
    def status_name(self) -> str:
        return MARKET_STATUS.get(self.status, str(self.status))


MARKET_STATUS = {0: "open", 1: "paused", 2: "delisted"}


@dataclass(frozen=True, slots=True)
class Balances:
    base_free: int
    quote_free: int
    base_locked: int
    quote_locked: int

    @property
    def base_total(self) -> int:
        return self.base_free + self.base_locked


@dataclass(frozen=True, slots=True)
class DepthLevel:
    price: int
    size: int
    orders: int


async def eth_call(
    rpc: JsonRpc, abi: ContractAbi, to: str, fn: str, *args: Any, block: str = "latest"
) -> tuple[Any, ...]:
    f = abi.fn(fn)
    try:
        out = await rpc.call("eth_call", [{"to": to, "data": "0x" + f.encode(*args).hex()}, block])
    except RpcError as exc:
        data = exc.revert_data
        if data is not None:
            raise TxReverted(f"(call {fn})", abi.decode_revert(data)) from exc
        raise
    return f.decode_output(hex_to_bytes(out))


async def deploy(
    sender: TxSender, name: str, *ctor_args: Any, ctor_types: tuple[str, ...] = ()
) -> str:
    """Deploy contract ``name`` from the committed artifacts; returns its address."""
    art = load_artifact(name)
    data = hex_to_bytes(art["bytecode"]) + (
        abi_encode(list(ctor_types), list(ctor_args)) if ctor_types else b""
    )
    receipt = await sender.transact(None, data)
    address = receipt.get("contractAddress")
    if not address:
        raise VenueError(f"deploying {name}: receipt has no contract address")
    return str(address)


async def deploy_token(sender: TxSender, name: str, symbol: str, decimals: int) -> str:
    return await deploy(
        sender, "TestToken", name, symbol, decimals, ctor_types=("string", "string", "uint8")
    )


class _Contract:
    """Calls and transactions against one deployed contract."""

    def __init__(self, rpc: JsonRpc, address: str, abi: ContractAbi) -> None:
        self.rpc = rpc
        self.address = address
        self.abi = abi

    async def call(self, fn: str, *args: Any, block: str = "latest") -> tuple[Any, ...]:
        return await eth_call(self.rpc, self.abi, self.address, fn, *args, block=block)

    def calldata(self, fn: str, *args: Any) -> bytes:
        return self.abi.fn(fn).encode(*args)

    async def _transact(self, sender: TxSender, fn: str, *args: Any) -> dict[str, Any]:
        return await sender.transact(self.address, self.calldata(fn, *args))


class TokenClient(_Contract):
    def __init__(self, rpc: JsonRpc, address: str) -> None:
        super().__init__(rpc, address, token_abi())

    async def balance_of(self, owner: str) -> int:
        return int((await self.call("balanceOf", owner))[0])

    async def decimals(self) -> int:
        return int((await self.call("decimals"))[0])

    async def mint(self, sender: TxSender, to: str, amount: int) -> dict[str, Any]:
        return await self._transact(sender, "mint", to, amount)

    async def approve(self, sender: TxSender, spender: str, amount: int) -> dict[str, Any]:
        return await self._transact(sender, "approve", spender, amount)


class BookClient(_Contract):
    """Calls and transactions against one FlashBook deployment."""

    def __init__(self, rpc: JsonRpc, address: str) -> None:
        super().__init__(rpc, address, book_abi())

    # --- transactions -----------------------------------------------------------------
    async def create_market(
        self, sender: TxSender, base: str, quote: str, tick_value: int, lot_units: int
    ) -> int:
        receipt = await self._transact(sender, "createMarket", base, quote, tick_value, lot_units)
        for log in receipt.get("logs", []):
            topics = log.get("topics", [])
            if topics and hex_to_bytes(topics[0]) == self.abi.events["MarketCreated"].topic0:
                return int(topics[1], 16)
        raise VenueError("createMarket: no MarketCreated event in the receipt")

    async def deposit(
        self, sender: TxSender, market: int, base_amount: int, quote_amount: int
    ) -> dict[str, Any]:
        return await self._transact(sender, "deposit", market, base_amount, quote_amount)

    async def withdraw(
        self, sender: TxSender, market: int, base_amount: int, quote_amount: int
    ) -> dict[str, Any]:
        return await self._transact(sender, "withdraw", market, base_amount, quote_amount)

    async def send_requote(
        self,
        sender: TxSender,
        market: int,
        ops: list[int],
        gas: int | None = None,
        *,
        deadline: int = 0,
    ) -> SentTx:
        """``deadline``: unix seconds after which the book refuses it (0: none)."""
        return await sender.send(
            self.address, self.calldata("requote", market, ops, deadline), gas=gas
        )

    async def requote(
        self,
        sender: TxSender,
        market: int,
        ops: list[int],
        gas: int | None = None,
        *,
        deadline: int = 0,
    ) -> dict[str, Any]:
        return await sender.wait(
            await self.send_requote(sender, market, ops, gas, deadline=deadline)
        )

    def take_calldata(
        self,
        market: int,
        side: int,
        limit_price: int,
        size: int,
        *,
        max_levels: int = TAKE_MAX_LEVELS,
        max_orders: int = TAKE_MAX_ORDERS,
        deadline: int = 0,
    ) -> bytes:
        return self.calldata(
            "take", market, side, limit_price, size, max_levels, max_orders, deadline
        )

    async def take(
        self,
        sender: TxSender,
        market: int,
        side: int,
        limit_price: int,
        size: int,
        gas: int | None = None,
        *,
        max_levels: int = TAKE_MAX_LEVELS,
        max_orders: int = TAKE_MAX_ORDERS,
        deadline: int = 0,
    ) -> dict[str, Any]:
        """IOC take; stops after ``max_levels`` levels or ``max_orders`` maker orders."""
        data = self.take_calldata(
            market,
            side,
            limit_price,
            size,
            max_levels=max_levels,
            max_orders=max_orders,
            deadline=deadline,
        )
        return await sender.transact(self.address, data, gas=gas)

    async def warm(
        self, sender: TxSender, market: int, from_tick: int, to_tick: int
    ) -> dict[str, Any]:
        """Pre-pay level and bitmap storage of both sides over a tick range (<= 4,096)."""
        return await self._transact(sender, "warm", market, from_tick, to_tick)

    # --- admin ------------------------------------------------------------------------
    async def admin_call(self, sender: TxSender, fn: str, *args: Any) -> dict[str, Any]:
        """``pause``, ``unpause``, ``delist``, ``setMinSize``, ``setGuardian``,
        ``transferAdmin``, ``acceptAdmin``."""
        return await self._transact(sender, fn, *args)

    async def cancel_all(self, sender: TxSender, market: int) -> dict[str, Any]:
        return await self._transact(sender, "cancelAll", market)

    # --- views ------------------------------------------------------------------------
    async def market(self, market: int) -> MarketInfo:
        r = await self.call("getMarket", market)
        return MarketInfo(market, str(r[0]), str(r[1]), *(int(x) for x in r[2:]))

    async def balances(self, owner: str, market: int, *, block: str = "latest") -> Balances:
        r = await self.call("balances", owner, market, block=block)
        return Balances(*(int(x) for x in r))

    async def open_orders(self, owner: str, market: int) -> list[OrderInfo]:
        (words,) = await self.call("openOrders", owner, market)
        return [unpack_info(int(w)) for w in words]

    async def depth_page(
        self, market: int, side: int, from_tick: int = 0, levels: int = 10
    ) -> tuple[list[DepthLevel], int]:
        """One page of one side: levels from ``from_tick`` (0: the best) and where the
        next page starts (0: no further level)."""
        prices, sizes, counts, nxt = await self.call("depth", market, side, from_tick, levels)
        out = [
            DepthLevel(int(p), int(s), int(c))
            for p, s, c in zip(prices, sizes, counts, strict=True)
        ]
        return out, int(nxt)

    async def depth(self, market: int, side: int, levels: int = 10) -> list[DepthLevel]:
        """The best ``levels`` levels of one side (following pages as needed)."""
        out: list[DepthLevel] = []
        start = 0
        for _ in range(64):
            page, start = await self.depth_page(market, side, start, levels - len(out))
            out += page
            if start == 0 or len(out) >= levels:
                break
        return out

    async def market_config(self, market: int) -> MarketConfig:
        r = await self.call("marketConfig", market)
        return MarketConfig(*(int(x) for x in r))

    async def trader_index(self, owner: str) -> int:
        return int((await self.call("traderIndex", owner))[0])
