"""A local chain for development, tests and benchmarks: anvil + a FlashBook deployment.

anvil comes from npm (``npm ci`` installs ``node_modules/.bin/anvil``). It runs on
127.0.0.1 with Sei's testnet chain id (1328) and 0.4 s blocks. The dev accounts are
anvil's well-known mnemonic accounts: for LOCAL chains only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

from flashmm.venues.base import VenueError
from flashmm.venues.sei.book import BookClient, TokenClient, deploy, deploy_token
from flashmm.venues.sei.rpc import JsonRpc
from flashmm.venues.sei.tx import TxSender

SEI_TESTNET_CHAIN_ID = 1328
DEV_MNEMONIC = "test test test test test test test test test test test junk"
REPO_ROOT = Path(__file__).resolve().parents[3]


class AnvilMissing(VenueError):
    """node_modules/.bin/anvil is not installed."""


def anvil_path() -> Path:
    path = REPO_ROOT / "node_modules" / ".bin" / "anvil"
    if not path.exists():
        raise AnvilMissing(f"anvil not found at {path}: run `npm ci` in the repository root")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dev_private_key(index: int) -> str:
    """Private key of anvil dev account ``index`` (well known; never use on a real chain)."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    acct = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return "0x" + bytes(acct.key).hex()


def _listening(port: int, timeout_s: float = 0.5) -> bool:
    """True when something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


class Anvil:
    """An anvil process on 127.0.0.1; stop() ends it (and only it)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        chain_id: int = SEI_TESTNET_CHAIN_ID,
        block_time: float | None = 0.4,
    ) -> None:
        self.port = port or free_port()
        self.chain_id = chain_id
        self.block_time = block_time
        self.binary = anvil_path()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> Anvil:
        if _listening(self.port):
            # another node (or anything) answers there: never deploy onto it
            raise VenueError(
                f"port {self.port} on 127.0.0.1 is already in use (another node?):"
                " stop it or choose another --port"
            )
        args = [str(self.binary), "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--chain-id", str(self.chain_id), "--accounts", "10", "--balance", "1000000"]
        if self.block_time:
            args += ["--block-time", str(self.block_time)]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise VenueError(
                    f"anvil exited with code {self.proc.returncode} (port {self.port} busy?)"
                )
            if _listening(self.port, 0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise VenueError(f"anvil did not start within {timeout_s:.0f}s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        # anvil was started in its own session: signal that process group only.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class LocalMarket:
    symbol: str
    base_symbol: str
    base_decimals: int
    tick_size: str
    lot_size: str
    mid_price: str  # a starting price used to size the funding


LOCAL_MARKETS = (
    LocalMarket("SEI/USDC", "SEI", 18, "0.0001", "1", "0.30"),
    LocalMarket("ETH/USDC", "WETH", 18, "0.01", "0.001", "3000"),
)


def market_units(
    tick_size: str, lot_size: str, base_decimals: int, quote_decimals: int
) -> tuple[int, int]:
    """(tickValue, lotUnits) for the contract from decimal tick and lot sizes."""
    tick, lot = Decimal(tick_size), Decimal(lot_size)
    lot_units = lot * (Decimal(10) ** base_decimals)
    tick_value = tick * lot * (Decimal(10) ** quote_decimals)
    if lot_units != lot_units.to_integral_value() or tick_value != tick_value.to_integral_value():
        raise ValueError(
            f"tick {tick_size} x lot {lot_size} is not a whole number of token units "
            f"(decimals base {base_decimals}, quote {quote_decimals})"
        )
    return int(tick_value), int(lot_units)


#: keys every ``markets`` entry of a deployment file has (what the commands read)
MARKET_KEYS = ("id", "base", "quote", "tick_size", "lot_size")


@dataclass
class Deployment:
    """What ``flashmm chain local``/``deploy`` wrote: addresses, markets, accounts."""

    chain_id: int
    rpc_url: str
    ws_url: str
    book: str
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    markets: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounts: dict[str, dict[str, str]] = field(default_factory=dict)
    #: a block at or before the deployment (where scans of our deposit logs start)
    block: int | None = None

    def market_id(self, symbol: str) -> int:
        try:
            return int(self.markets[symbol]["id"])
        except KeyError as exc:
            raise VenueError(
                f"market {symbol!r} not in deployment; known: {', '.join(self.markets)}"
            ) from exc

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def write(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Deployment:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: bad JSON or not UTF-8 text
            raise VenueError(f"cannot read deployment file {path}: {exc}") from exc
        shape = f"{path} is not a deployment file (chain local or chain deploy writes one)"
        if not isinstance(data, dict):
            raise VenueError(shape)
        for key in ("tokens", "markets", "accounts"):
            section = data.get(key, {})
            if not isinstance(section, dict) or not all(
                isinstance(v, dict) for v in section.values()
            ):
                raise VenueError(f"{shape}: {key} must map names to entries")
        known = {f.name for f in fields(cls)}
        try:
            dep = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:  # a required field missing
            raise VenueError(f"{shape}: {exc}") from None
        dep._check_entries(shape)
        return dep

    def _check_entries(self, shape: str) -> None:
        """Every token and market entry has the keys the commands read (a KeyError later)."""
        for sym, tok in self.tokens.items():
            missing = [k for k in ("address", "decimals") if k not in tok]
            if missing:
                raise VenueError(f"{shape}: token {sym!r} lacks {', '.join(missing)}")
            if not isinstance(tok["decimals"], int) or isinstance(tok["decimals"], bool):
                raise VenueError(f"{shape}: token {sym!r}: decimals must be an integer")
        for sym, m in self.markets.items():
            missing = [k for k in MARKET_KEYS if k not in m]
            if missing:
                raise VenueError(f"{shape}: market {sym!r} lacks {', '.join(missing)}")
            for side in ("base", "quote"):
                if m[side] not in self.tokens:
                    raise VenueError(
                        f"{shape}: market {sym!r} names {side} token {m[side]!r},"
                        " which is not under tokens"
                    )


async def deploy_book_and_markets(
    sender: TxSender,
    rpc: JsonRpc,
    *,
    markets: tuple[LocalMarket, ...] = LOCAL_MARKETS,
    ws_url: str = "",
    quote_symbol: str = "USDC",
    quote_token: str | None = None,
) -> Deployment:
    """Deploy TestTokens (unless ``quote_token`` is given), a FlashBook and its markets.

    Independent transactions are sent back to back (contiguous nonces) and awaited
    together, so a chain with 0.4 s blocks is set up in a few blocks.
    """
    tokens: dict[str, dict[str, Any]] = {}
    start_block = int(await rpc.call("eth_blockNumber"), 16)
    jobs: list[Any] = [deploy(sender, "FlashBook")]
    jobs += [
        deploy_token(sender, f"Test {m.base_symbol}", m.base_symbol, m.base_decimals)
        for m in markets
    ]
    if quote_token is None:
        jobs.append(deploy_token(sender, "Test USD Coin", quote_symbol, 6))
    addresses = await asyncio.gather(*jobs)
    book_addr = addresses[0]
    if quote_token is None:
        quote_token = addresses[-1]
        tokens[quote_symbol] = {"address": quote_token, "decimals": 6, "mintable": True}
    else:
        decimals = await TokenClient(rpc, quote_token).decimals()
        tokens[quote_symbol] = {"address": quote_token, "decimals": decimals, "mintable": False}
    book = BookClient(rpc, book_addr)
    units = []
    for m, base in zip(markets, addresses[1 : 1 + len(markets)], strict=True):
        tokens[m.base_symbol] = {"address": base, "decimals": m.base_decimals, "mintable": True}
        units.append(
            market_units(m.tick_size, m.lot_size, m.base_decimals, tokens[quote_symbol]["decimals"])
        )
    out_markets: dict[str, dict[str, Any]] = {}
    # one by one: market ids follow the order of ``markets``
    for m, (tick_value, lot_units) in zip(markets, units, strict=True):
        base = tokens[m.base_symbol]["address"]
        out_markets[m.symbol] = {
            "id": await book.create_market(sender, base, quote_token, tick_value, lot_units),
            "base": m.base_symbol,
            "quote": quote_symbol,
            "tick_size": m.tick_size,
            "lot_size": m.lot_size,
            "tick_value": tick_value,
            "lot_units": lot_units,
            "mid_price": m.mid_price,
        }
    return Deployment(
        chain_id=sender.chain_id,
        rpc_url=rpc.url,
        ws_url=ws_url,
        book=book_addr,
        tokens=tokens,
        markets=out_markets,
        block=start_block,
    )


def market_funding(dep: Deployment, symbol: str, notional_usdc: float) -> tuple[int, int]:
    """Base and quote token units worth ``notional_usdc`` each in ``symbol`` (at its mid)."""
    m = dep.markets[symbol]
    base = Decimal(str(notional_usdc)) / Decimal(m["mid_price"])
    base_units = int(base * (Decimal(10) ** dep.tokens[m["base"]]["decimals"]))
    return base_units, int(notional_usdc * 10 ** dep.tokens[m["quote"]]["decimals"])


def funding_amounts(dep: Deployment, notional_usdc: float) -> dict[str, int]:
    """Token units (by token symbol) that fund ``notional_usdc`` per market on each side."""
    amounts: dict[str, int] = {}
    for sym, m in dep.markets.items():
        base_units, quote_units = market_funding(dep, sym, notional_usdc)
        amounts[m["base"]] = amounts.get(m["base"], 0) + base_units
        amounts[m["quote"]] = amounts.get(m["quote"], 0) + quote_units
    return amounts


async def fund_accounts(
    dep: Deployment,
    rpc: JsonRpc,
    minter: TxSender,
    owners: list[TxSender],
    *,
    notional_usdc: float = 100_000.0,
) -> None:
    """Mint test tokens to each owner and deposit ``notional_usdc`` of each side per market."""
    book = BookClient(rpc, dep.book)
    amounts = funding_amounts(dep, notional_usdc)
    await asyncio.gather(
        *(
            TokenClient(rpc, dep.tokens[sym]["address"]).mint(minter, o.address, amt)
            for o in owners
            for sym, amt in amounts.items()
        )
    )
    await asyncio.gather(
        *(
            TokenClient(rpc, dep.tokens[sym]["address"]).approve(o, dep.book, 2**256 - 1)
            for o in owners
            for sym in amounts
        )
    )
    await asyncio.gather(
        *(
            book.deposit(o, dep.market_id(sym), *market_funding(dep, sym, notional_usdc))
            for o in owners
            for sym in dep.markets
        )
    )


async def setup_local_chain(
    rpc_url: str,
    ws_url: str,
    *,
    chain_id: int = SEI_TESTNET_CHAIN_ID,
    roles: tuple[str, ...] = ("maker", "taker"),
    notional_usdc: float = 100_000.0,
) -> Deployment:
    """Deploy everything on a fresh local chain and fund one dev account per role.

    Dev account 0 deploys and mints; roles take accounts 1, 2...
    """
    from flashmm.venues.sei.keys import account_from_hex

    async with JsonRpc(rpc_url) as rpc:
        deployer = TxSender(rpc, account_from_hex(dev_private_key(0)), chain_id)
        dep = await deploy_book_and_markets(deployer, rpc, ws_url=ws_url)
        dep.accounts["deployer"] = {"address": deployer.address, "private_key": dev_private_key(0)}
        owners = []
        for i, role in enumerate(roles, start=1):
            key = dev_private_key(i)
            owners.append(TxSender(rpc, account_from_hex(key), chain_id))
            dep.accounts[role] = {"address": owners[-1].address, "private_key": key}
        await fund_accounts(dep, rpc, deployer, owners, notional_usdc=notional_usdc)
        return dep
