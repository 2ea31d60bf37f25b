"""``flashmm chain``: a local chain, FlashBook deployment, funds and a taker tool.

Heavy imports (eth-account, aiohttp) happen inside the commands.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import typer

app = typer.Typer(help="Local chain, FlashBook deployment, deposits and a taker tool on Sei EVM.")

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; turn venue errors into FlashMM errors the main CLI prints in one line."""
    import asyncio

    from flashmm.errors import RuntimeFailure, UserInputError
    from flashmm.venues.base import VenueError
    from flashmm.venues.sei.errors import ChainIdMismatch, KeySourceError
    from flashmm.venues.sei.local import AnvilMissing

    try:
        return asyncio.run(coro)
    except (AnvilMissing, KeySourceError, ChainIdMismatch) as exc:
        raise UserInputError(str(exc)) from exc
    except VenueError as exc:
        raise RuntimeFailure(str(exc)) from exc


def load_signer(keystore: Path | None, dev_account: str | None, dep: Any, rpc_url: str) -> Any:
    """The account that signs: a local dev account, a keystore or FLASHMM_PRIVATE_KEY."""
    from flashmm.errors import UserInputError
    from flashmm.venues.sei.keys import account_from_hex, load_account
    from flashmm.venues.sei.settings import is_loopback

    if dev_account:
        if not is_loopback(rpc_url):
            raise UserInputError("--dev-account is for local chains only (RPC on 127.0.0.1)")
        if dep is None or dev_account not in dep.accounts:
            raise UserInputError(f"no dev account {dev_account!r} in the deployment file")
        return account_from_hex(dep.accounts[dev_account]["private_key"])
    return load_account(keystore)


def token_units(amount: str, decimals: int) -> int:
    return int(Decimal(amount) * (Decimal(10) ** decimals))


RPC_OPT = typer.Option(None, "--rpc", help="HTTP JSON-RPC URL (default: from the deployment file)")
DEP_OPT = typer.Option(Path("var/local-deployment.json"), "--deployment", help="Deployment JSON")
KEYSTORE_OPT = typer.Option(None, "--keystore", help="Keystore file (else FLASHMM_PRIVATE_KEY)")
DEV_OPT = typer.Option(None, "--dev-account", help="Role of a local dev account (maker, taker...)")
CHAIN_OPT = typer.Option(
    None, "--chain-id", help="Expected chain id (default: from the deployment)"
)


@app.command()
def local(
    port: int = typer.Option(8545, help="RPC/WS port on 127.0.0.1"),
    out: Path = typer.Option(
        Path("var/local-deployment.json"), "--out", help="Deployment JSON to write"
    ),
    block_time: float = typer.Option(0.4, "--block-time", help="Seconds per block (Sei: 0.4)"),
    chain_id: int = typer.Option(1328, "--chain-id", help="Chain id of the local chain"),
) -> None:
    """Start anvil, deploy tokens + FlashBook, create SEI/USDC and ETH/USDC, fund a maker
    and a taker, write the deployment file, and keep the chain running until Ctrl-C."""
    import signal

    from flashmm.venues.sei.local import Anvil, setup_local_chain

    stopping = False

    def _interrupt(signum: int, frame: Any) -> None:
        nonlocal stopping
        if not stopping:  # a repeat while anvil stops (bounded: 5 s + 5 s) is the same stop
            stopping = True
            raise KeyboardInterrupt

    # SIGTERM, or SIGHUP when the terminal closes, must stop anvil too (it runs
    # in a process group of its own). SIGINT is set here as well: a script's
    # background job starts with SIGINT ignored, and Python then installs no handler.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    anvil = Anvil(port, chain_id=chain_id, block_time=block_time)
    try:
        run_async(_start(anvil))
        dep = run_async(setup_local_chain(anvil.rpc_url, anvil.ws_url, chain_id=chain_id))
        dep.write(out)
        typer.echo(
            f"anvil:      {anvil.rpc_url}  (ws {anvil.ws_url}, "
            f"chain id {chain_id}, {block_time}s blocks)"
        )
        typer.echo(f"FlashBook:  {dep.book}")
        for sym, m in dep.markets.items():
            typer.echo(f"market {m['id']}:   {sym}  tick {m['tick_size']}  lot {m['lot_size']}")
        for role in ("maker", "taker"):
            typer.echo(f"{role:<11} {dep.accounts[role]['address']}  (anvil dev key, LOCAL ONLY)")
        typer.echo(f"deployment: {out}")
        typer.echo("next:")
        typer.echo(f"  flashmm chain book --deployment {out} --market SEI/USDC")
        typer.echo(
            f"  flashmm chain taker --deployment {out} --market SEI/USDC --dev-account taker"
        )
        typer.echo("  venue config (configs/local.yaml reads the deployment file):")
        typer.echo(f"    sei:\n      deployment: {out}\n      dev_account: maker")
        typer.echo(
            "  or sign with the maker key: "
            f"export FLASHMM_PRIVATE_KEY=$(jq -r .accounts.maker.private_key {out})"
        )
        typer.echo("Ctrl-C to stop the chain.", err=True)
        while anvil.proc is not None and anvil.proc.poll() is None:
            time.sleep(0.5)
        typer.echo("anvil exited", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        anvil.stop()


async def _start(anvil: Any) -> None:
    anvil.start()


@app.command()
def deploy(
    rpc: str = typer.Option(..., "--rpc", help="HTTP JSON-RPC URL"),
    chain_id: int = typer.Option(..., "--chain-id", help="1328 testnet, 1329 mainnet"),
    ws: str = typer.Option("", "--ws", help="WebSocket URL to record in the deployment"),
    quote_token: str | None = typer.Option(
        None,
        "--quote-token",
        help="Existing quote token (testnet USDC 0x4fCF1784B31630811181f670Aea7A7bEF803eaED)",
    ),
    keystore: Path | None = KEYSTORE_OPT,
    max_fee_gwei: float = typer.Option(100.0, "--max-fee-gwei", help="Fee cap per gas (gwei)"),
    out: Path = typer.Option(
        Path("var/deployment.json"), "--out", help="Deployment JSON to write (for venue.sei)"
    ),
) -> None:
    """Deploy FlashBook (+ test base tokens, and a test quote token unless given) and markets."""
    from flashmm.venues.sei.abi import book_abi
    from flashmm.venues.sei.keys import load_account
    from flashmm.venues.sei.local import deploy_book_and_markets
    from flashmm.venues.sei.rpc import JsonRpc
    from flashmm.venues.sei.tx import TxSender

    account = load_account(keystore)

    async def main() -> Any:
        async with JsonRpc(rpc) as client:
            sender = TxSender(client, account, chain_id, max_fee_gwei=max_fee_gwei, abi=book_abi())
            await sender.check_chain()
            return await deploy_book_and_markets(sender, client, ws_url=ws, quote_token=quote_token)

    dep = run_async(main())
    dep.accounts["deployer"] = {"address": account.address}
    dep.write(out)
    typer.echo(
        f"FlashBook {dep.book} on chain {chain_id}; markets: "
        + ", ".join(f"{s}={m['id']}" for s, m in dep.markets.items())
    )
    typer.echo(f"deployment: {out}")


def _funds(
    withdraw_: bool,
    market: str,
    base: str,
    quote: str,
    deployment: Path,
    rpc: str | None,
    chain_id: int | None,
    keystore: Path | None,
    dev_account: str | None,
    mint: bool,
) -> None:
    from flashmm.venues.sei.abi import book_abi
    from flashmm.venues.sei.book import BookClient, TokenClient
    from flashmm.venues.sei.local import Deployment
    from flashmm.venues.sei.rpc import JsonRpc
    from flashmm.venues.sei.tx import TxSender

    dep = Deployment.load(deployment)
    url = rpc or dep.rpc_url
    account = load_signer(keystore, dev_account, dep, url)
    m = dep.markets.get(market)
    if m is None:
        from flashmm.errors import UserInputError

        raise UserInputError(
            f"market {market!r} not in {deployment}; known: {', '.join(dep.markets)}"
        )
    btok, qtok = dep.tokens[m["base"]], dep.tokens[m["quote"]]
    base_units = token_units(base, btok["decimals"])
    quote_units = token_units(quote, qtok["decimals"])

    async def main() -> Any:
        async with JsonRpc(url) as client:
            sender = TxSender(client, account, chain_id or dep.chain_id, abi=book_abi())
            book = BookClient(client, dep.book)
            if withdraw_:
                await book.withdraw(sender, int(m["id"]), base_units, quote_units)
            else:
                for tok, units in ((btok, base_units), (qtok, quote_units)):
                    if units == 0:
                        continue
                    tc = TokenClient(client, tok["address"])
                    if mint:
                        minter = (
                            TxSender(client, load_signer(None, "deployer", dep, url), dep.chain_id)
                            if dev_account
                            else sender
                        )
                        await tc.mint(minter, sender.address, units)
                    await tc.approve(sender, dep.book, units)
                await book.deposit(sender, int(m["id"]), base_units, quote_units)
            return await book.balances(sender.address, int(m["id"]))

    bal = run_async(main())
    bd, qd = Decimal(10) ** btok["decimals"], Decimal(10) ** qtok["decimals"]
    typer.echo(f"{market} account of {account.address}:")
    typer.echo(f"  {m['base']}: free {bal.base_free / bd}, locked {bal.base_locked / bd}")
    typer.echo(f"  {m['quote']}: free {bal.quote_free / qd}, locked {bal.quote_locked / qd}")


@app.command()
def deposit(
    market: str = typer.Option(..., "--market", help="e.g. SEI/USDC"),
    base: str = typer.Option("0", "--base", help="Base tokens to deposit (decimal)"),
    quote: str = typer.Option("0", "--quote", help="Quote tokens to deposit (decimal)"),
    mint: bool = typer.Option(
        False, "--mint", help="Mint test tokens first (deployer's TestTokens only)"
    ),
    deployment: Path = DEP_OPT,
    rpc: str | None = RPC_OPT,
    chain_id: int | None = CHAIN_OPT,
    keystore: Path | None = KEYSTORE_OPT,
    dev_account: str | None = DEV_OPT,
) -> None:
    """Deposit tokens into your FlashBook account of one market."""
    _funds(False, market, base, quote, deployment, rpc, chain_id, keystore, dev_account, mint)


@app.command()
def withdraw(
    market: str = typer.Option(..., "--market", help="e.g. SEI/USDC"),
    base: str = typer.Option("0", "--base", help="Base tokens to withdraw (decimal)"),
    quote: str = typer.Option("0", "--quote", help="Quote tokens to withdraw (decimal)"),
    deployment: Path = DEP_OPT,
    rpc: str | None = RPC_OPT,
    chain_id: int | None = CHAIN_OPT,
    keystore: Path | None = KEYSTORE_OPT,
    dev_account: str | None = DEV_OPT,
) -> None:
    """Withdraw free (unlocked) tokens from your FlashBook account of one market."""
    _funds(True, market, base, quote, deployment, rpc, chain_id, keystore, dev_account, False)


@app.command()
def book(
    market: str = typer.Option("SEI/USDC", "--market", help="Market to show"),
    levels: int = typer.Option(5, "--levels", help="Price levels per side"),
    deployment: Path = DEP_OPT,
    rpc: str | None = RPC_OPT,
) -> None:
    """Print the top of the on-chain book."""
    from flashmm.venues.sei.book import BookClient
    from flashmm.venues.sei.local import Deployment
    from flashmm.venues.sei.rpc import JsonRpc

    dep = Deployment.load(deployment)
    m = dep.markets[market]

    async def main() -> tuple[Any, Any]:
        async with JsonRpc(rpc or dep.rpc_url) as client:
            b = BookClient(client, dep.book)
            return await b.depth(int(m["id"]), 0, levels), await b.depth(int(m["id"]), 1, levels)

    bids, asks = run_async(main())
    tick = Decimal(m["tick_size"])
    typer.echo(f"{market}  (ticks x {m['tick_size']}, lots x {m['lot_size']})")
    if not bids and not asks:
        typer.echo("  the book is empty: no resting orders (is a bot quoting this market?)")
        return
    if not asks:
        typer.echo("  no asks")
    for a in reversed(asks):
        typer.echo(f"  ask {a.price * tick:>14}  {a.size:>10} lots  ({a.orders} orders)")
    for b in bids:
        typer.echo(f"  bid {b.price * tick:>14}  {b.size:>10} lots  ({b.orders} orders)")
    if not bids:
        typer.echo("  no bids")


@app.command()
def taker(
    market: str = typer.Option("SEI/USDC", "--market", help="Market to trade"),
    rate: float = typer.Option(0.5, "--rate", help="Takes per second"),
    size: int = typer.Option(3, "--size", help="Maximum lots per take"),
    duration: float = typer.Option(0.0, "--duration", help="Seconds to run (0 = until Ctrl-C)"),
    seed: int = typer.Option(0, "--seed", help="Random seed of sides and sizes"),
    deployment: Path = DEP_OPT,
    rpc: str | None = RPC_OPT,
    chain_id: int | None = CHAIN_OPT,
    keystore: Path | None = KEYSTORE_OPT,
    dev_account: str | None = DEV_OPT,
) -> None:
    """Send marketable take() orders at the best bid/ask so a maker gets real fills."""
    from flashmm.venues.sei.abi import book_abi
    from flashmm.venues.sei.book import BookClient
    from flashmm.venues.sei.local import Deployment
    from flashmm.venues.sei.rpc import JsonRpc
    from flashmm.venues.sei.tx import TxSender

    dep = Deployment.load(deployment)
    url = rpc or dep.rpc_url
    account = load_signer(keystore, dev_account, dep, url)
    mid = dep.market_id(market)
    tick = Decimal(str(dep.markets[market]["tick_size"]))
    lot = Decimal(str(dep.markets[market]["lot_size"]))
    rng = random.Random(seed)

    async def main() -> None:
        import asyncio

        async with JsonRpc(url) as client:
            sender = TxSender(client, account, chain_id or dep.chain_id, abi=book_abi())
            b = BookClient(client, dep.book)
            end = time.monotonic() + duration if duration > 0 else float("inf")
            n = 0
            while time.monotonic() < end:
                side = rng.randint(0, 1)  # 0 buys the best ask, 1 sells to the best bid
                top = await b.depth(mid, 1 - side, 1)
                if top:
                    lots = min(top[0].size, rng.randint(1, size))
                    receipt = await b.take(sender, mid, side, top[0].price, lots)
                    fills = len(receipt.get("logs") or [])
                    n += 1
                    typer.echo(
                        f"take #{n}: {'buy' if side == 0 else 'sell'} {lots * lot} "
                        f"@ {top[0].price * tick} ({lots} lots at tick {top[0].price}), "
                        f"{fills} log(s), gas {int(receipt['gasUsed'], 16)}"
                    )
                await asyncio.sleep(rng.expovariate(rate) if rate > 0 else 1.0)

    with contextlib.suppress(KeyboardInterrupt):
        run_async(main())
