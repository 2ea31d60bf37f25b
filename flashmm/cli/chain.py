"""``flashmm chain``: a local chain, FlashBook deployment, funds and a taker tool.

Heavy imports (eth-account, aiohttp) happen inside the commands.
"""

from __future__ import annotations

import contextlib
import random
import re
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
    from flashmm.venues.sei.errors import KeySourceError
    from flashmm.venues.sei.keys import account_from_hex, load_account
    from flashmm.venues.sei.settings import is_loopback

    try:
        if dev_account:
            if not is_loopback(rpc_url):
                raise UserInputError("--dev-account is for local chains only (RPC on 127.0.0.1)")
            if dep is None or dev_account not in dep.accounts:
                known = ", ".join(dep.accounts) if dep is not None and dep.accounts else "none"
                raise UserInputError(
                    f"--dev-account: no dev account {dev_account!r} in the deployment file"
                    f" (known: {known})"
                )
            return account_from_hex(dep.accounts[dev_account]["private_key"])
        return load_account(keystore)
    except KeySourceError as exc:  # no key, unreadable keystore, wrong passphrase: fix the input
        raise UserInputError(str(exc)) from exc


def load_deployment(path: Path) -> Any:
    """The deployment file of ``--deployment``; a missing or malformed one is a user error."""
    from flashmm.errors import UserInputError
    from flashmm.venues.base import VenueError
    from flashmm.venues.sei.local import Deployment

    if not Path(path).is_file():
        raise UserInputError(
            f"--deployment: {path} not found (flashmm chain local or chain deploy writes it)"
        )
    try:
        return Deployment.load(path)
    except VenueError as exc:
        raise UserInputError(f"--deployment: {exc}") from exc
    except (TypeError, AttributeError):  # JSON, but not what chain local/deploy write
        raise UserInputError(
            f"--deployment: {path} is not a deployment file (needs chain_id, rpc_url, ws_url,"
            " book, tokens, markets)"
        ) from None


def market_of(dep: Any, market: str, deployment: Path) -> dict[str, Any]:
    """The ``markets`` entry of ``market``; an unknown one names the known ones."""
    from flashmm.errors import UserInputError

    m = dep.markets.get(market) if isinstance(dep.markets, dict) else None
    if not isinstance(m, dict):
        known = ", ".join(dep.markets) if dep.markets else "none"
        raise UserInputError(f"--market: no market {market!r} in {deployment} (known: {known})")
    return m


def check_url(url: str, option: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """``url`` if it is a URL of one of ``schemes`` with a host and a valid port."""
    from urllib.parse import urlsplit

    from flashmm.errors import UserInputError

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port outside 0..65535
    except ValueError as exc:
        raise UserInputError(f"{option}: {url!r} is not a valid URL ({exc})") from None
    if parts.scheme in schemes and not parts.hostname:
        raise UserInputError(f"{option}: {url!r} has no host (e.g. {parts.scheme}://127.0.0.1)")
    if parts.scheme not in schemes:
        raise UserInputError(
            f"{option}: expected a URL starting {' or '.join(f'{s}://' for s in schemes)},"
            f" was {url!r}"
        )
    return url


def rpc_url(rpc: str | None, dep: Any, deployment: Path | None) -> str:
    """``--rpc`` if given, else the deployment's; checked as an http(s) URL either way."""
    if rpc:
        return check_url(rpc, "--rpc")
    return check_url(str(dep.rpc_url), f"--deployment: {deployment}: rpc_url")


def check_address(value: str, option: str) -> str:
    """``value`` as a checksummed address: 0x and 40 hex digits; mixed case must pass EIP-55."""
    from eth_utils import is_checksum_address, to_checksum_address

    from flashmm.errors import UserInputError

    v = value.strip()
    digits = v[2:]
    if not (
        v[:2] in ("0x", "0X")
        and len(digits) == 40
        and all(c in "0123456789abcdefABCDEF" for c in digits)
    ):
        raise UserInputError(
            f"{option}: expected an address, 0x and 40 hex digits (20 bytes), was {value!r}"
        )
    v = "0x" + digits
    if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(v):
        raise UserInputError(
            f"{option}: {value} fails its EIP-55 checksum (mixed case): a typo? "
            "(all lower case skips the check)"
        )
    return str(to_checksum_address(v))


def check_out(out: Path, option: str = "--out") -> Path:
    """``out`` if a file can be written there (its folder is made): checked before a chain
    is set up or a contract deployed, so their record is not lost to a bad path."""
    import os

    from flashmm.errors import UserInputError

    if out.is_dir():
        raise UserInputError(f"{option}: {out} is a folder; give a file path")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"{option}: cannot make folder {out.parent}: {exc.strerror}") from None
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UserInputError(f"{option}: {out} is not writable")
    return out


def check_finite(value: float, option: str, minimum: float, *, above: bool = False) -> float:
    """``value`` if it is finite and >= ``minimum`` (> with ``above``)."""
    import math

    from flashmm.errors import UserInputError

    if not math.isfinite(value) or value < minimum or (above and value == minimum):
        raise UserInputError(
            f"{option}: must be a finite number {'>' if above else '>='} {minimum:g}, was {value:g}"
        )
    return value


#: FlashBook keeps an account's free base in 120 bits and its free quote in 128
MAX_BASE_UNITS = (1 << 120) - 1
MAX_QUOTE_UNITS = (1 << 128) - 1


def token_units(
    amount: str,
    decimals: int,
    option: str = "amount",
    symbol: str = "",
    limit: int = (1 << 256) - 1,
) -> int:
    """The integer token units of the decimal ``amount``, exactly (no rounding): refuses
    what is not a number, not finite, negative, finer than ``decimals`` or above ``limit``."""
    from decimal import InvalidOperation, localcontext

    from flashmm.errors import UserInputError

    try:
        value = Decimal(amount.strip())
    except InvalidOperation:
        # Decimal refuses an exponent past its own range: a number, far too large (or small)
        big = bool(re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+\s*", amount))
        why = "is too large or too small an exponent" if big else "is not a decimal number"
        raise UserInputError(f"{option}: {amount!r} {why}") from None
    if not value.is_finite():
        raise UserInputError(f"{option}: must be a finite decimal number, was {amount!r}")
    if value.is_signed() and not value.is_zero():
        raise UserInputError(f"{option}: must not be negative, was {amount}")
    if value.is_zero():
        return 0
    # integer arithmetic on the digits: Decimal's context would round long amounts
    _, digit_tuple, exponent = value.as_tuple()
    digits = list(digit_tuple)
    assert isinstance(exponent, int)
    while digits[-1] == 0:
        digits.pop()
        exponent += 1
    shift = exponent + decimals
    what = f" {symbol}" if symbol else ""
    if shift < 0:
        raise UserInputError(
            f"{option}: {amount} has more decimals than{what or ' the token'} has ({decimals})"
        )
    with localcontext() as ctx:
        ctx.prec = 100  # exact: the default 28 digits would round the limit
        largest = f"{Decimal(limit).scaleb(-decimals):f}"
    too_large = UserInputError(
        f"{option}: {amount} is more than a FlashBook account holds (at most {largest}{what})"
    )
    if len(digits) + shift > len(str(limit)):
        raise too_large
    units: int = int("".join(map(str, digits))) * 10**shift
    if units > limit:
        raise too_large
    return units


RPC_OPT = typer.Option(None, "--rpc", help="HTTP JSON-RPC URL (default: from the deployment file)")
DEP_OPT = typer.Option(Path("var/local-deployment.json"), "--deployment", help="Deployment JSON")
KEYSTORE_OPT = typer.Option(None, "--keystore", help="Keystore file (else FLASHMM_PRIVATE_KEY)")
DEV_OPT = typer.Option(None, "--dev-account", help="Role of a local dev account (maker, taker...)")
CHAIN_OPT = typer.Option(
    None, "--chain-id", min=1, help="Expected chain id (default: from the deployment)"
)


@app.command()
def local(
    port: int = typer.Option(
        8545, min=0, max=65535, help="RPC/WS port on 127.0.0.1 (0 = any free port)"
    ),
    out: Path = typer.Option(
        Path("var/local-deployment.json"), "--out", help="Deployment JSON to write"
    ),
    block_time: float = typer.Option(
        0.4, "--block-time", help="Seconds per block (Sei: 0.4; 0 = a block per transaction)"
    ),
    chain_id: int = typer.Option(
        1328, "--chain-id", min=1, max=(1 << 64) - 1, help="Chain id of the local chain"
    ),
) -> None:
    """Start anvil, deploy tokens + FlashBook, create SEI/USDC and ETH/USDC, fund a maker
    and a taker, write the deployment file, and keep the chain running until Ctrl-C."""
    import signal

    from flashmm.venues.sei.local import Anvil, setup_local_chain

    check_finite(block_time, "--block-time", 0)
    check_out(out)
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
        # stopped: a late repeat (an echo from a process group, a supervisor's SIGTERM)
        # must not kill the exiting process. Python puts the default action back for
        # its own handlers as it exits (rc -2 in a CI run); an ignored signal stays so.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)


async def _start(anvil: Any) -> None:
    anvil.start()


@app.command()
def deploy(
    rpc: str = typer.Option(..., "--rpc", help="HTTP JSON-RPC URL"),
    chain_id: int = typer.Option(..., "--chain-id", min=1, help="1328 testnet, 1329 mainnet"),
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
    force: bool = typer.Option(
        False, "--force", help="Overwrite an existing deployment file at --out"
    ),
) -> None:
    """Deploy FlashBook (+ test base tokens, and a test quote token unless given) and markets."""
    from flashmm.venues.sei.abi import book_abi
    from flashmm.venues.sei.local import deploy_book_and_markets
    from flashmm.venues.sei.rpc import JsonRpc
    from flashmm.venues.sei.tx import TxSender

    check_url(rpc, "--rpc")
    if ws:
        check_url(ws, "--ws", ("ws", "wss"))
    if quote_token is not None:
        quote_token = check_address(quote_token, "--quote-token")
    check_finite(max_fee_gwei, "--max-fee-gwei", 0, above=True)
    check_out(out)
    if out.is_file() and not force:
        from flashmm.errors import UserInputError

        # the only record of an earlier book's address and markets (funds may rest there)
        raise UserInputError(
            f"--out: {out} exists (an earlier deployment's record); give another path or --force"
        )
    account = load_signer(keystore, None, None, rpc)

    async def main() -> Any:
        async with JsonRpc(rpc) as client:
            sender = TxSender(client, account, chain_id, max_fee_gwei=max_fee_gwei, abi=book_abi())
            await sender.check_chain()
            if quote_token is not None:  # before anything is deployed
                await _check_quote_token(client, quote_token)
            return await deploy_book_and_markets(sender, client, ws_url=ws, quote_token=quote_token)

    dep = run_async(main())
    dep.accounts["deployer"] = {"address": account.address}
    dep.write(out)
    typer.echo(
        f"FlashBook {dep.book} on chain {chain_id}; markets: "
        + ", ".join(f"{s}={m['id']}" for s, m in dep.markets.items())
    )
    typer.echo(f"deployment: {out}")


async def _check_quote_token(client: Any, token: str) -> None:
    """Refuse a --quote-token that is not an ERC-20 token FlashBook accepts."""
    from eth_abi.exceptions import DecodingError

    from flashmm.errors import UserInputError
    from flashmm.venues.sei.book import TokenClient
    from flashmm.venues.sei.errors import RpcError, TxReverted

    code = await client.call("eth_getCode", [token, "latest"])
    if not str(code or "").removeprefix("0x").strip("0"):
        raise UserInputError(f"--quote-token: no contract at {token} on this chain")
    try:
        decimals = await TokenClient(client, token).decimals()
    except (RpcError, TxReverted, DecodingError):
        raise UserInputError(f"--quote-token: {token} has no ERC-20 decimals()") from None
    if decimals > 18:  # FlashBook's MAX_DECIMALS
        raise UserInputError(f"--quote-token: {token} has {decimals} decimals (at most 18)")


def fmt_units(n: int, decimals: int) -> str:
    """Exact token amount from integer units, without float noise or trailing zeros."""
    from decimal import localcontext

    with localcontext() as ctx:
        ctx.prec = 100
        return f"{Decimal(n).scaleb(-decimals).normalize():f}"


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
    from flashmm.errors import UserInputError
    from flashmm.venues.sei.abi import book_abi
    from flashmm.venues.sei.book import BookClient, TokenClient
    from flashmm.venues.sei.rpc import JsonRpc
    from flashmm.venues.sei.tx import TxSender

    verb = "withdraw" if withdraw_ else "deposit"
    # everything the command line says is checked before any connection
    dep = load_deployment(deployment)
    m = market_of(dep, market, deployment)
    btok, qtok = dep.tokens[m["base"]], dep.tokens[m["quote"]]
    base_units = token_units(base, btok["decimals"], "--base", m["base"], MAX_BASE_UNITS)
    quote_units = token_units(quote, qtok["decimals"], "--quote", m["quote"], MAX_QUOTE_UNITS)
    if base_units == 0 and quote_units == 0:
        raise UserInputError(f"nothing to {verb}: give --base and/or --quote (amounts > 0)")
    wanted = [
        (opt, sym, tok, units, text)
        for opt, sym, tok, units, text in (
            ("--base", m["base"], btok, base_units, base),
            ("--quote", m["quote"], qtok, quote_units, quote),
        )
        if units
    ]
    # --mint mints the deployment's test tokens; the others (a real USDC) come from the wallet
    minted = {sym for _, sym, tok, _, _ in wanted if mint and tok.get("mintable") is not False}
    if mint and not minted:
        raise UserInputError(
            f"--mint: {' and '.join(w[1] for w in wanted)} of this deployment cannot be minted"
            " (only its test tokens can)"
        )
    url = rpc_url(rpc, dep, deployment)
    account = load_signer(keystore, dev_account, dep, url)

    async def main() -> Any:
        async with JsonRpc(url) as client:
            sender = TxSender(client, account, chain_id or dep.chain_id, abi=book_abi())
            book = BookClient(client, dep.book)
            if withdraw_:
                have = await book.balances(sender.address, int(m["id"]))
                free = {"--base": have.base_free, "--quote": have.quote_free}
                for opt, sym, tok, units, text in wanted:
                    if units > free[opt]:
                        raise UserInputError(
                            f"{opt}: {text} {sym} is more than the"
                            f" {fmt_units(free[opt], tok['decimals'])} {sym} free in the"
                            f" {market} account of {sender.address}"
                        )
                await book.withdraw(sender, int(m["id"]), base_units, quote_units)
            else:
                # before the approvals: nothing is sent for a deposit that would fail
                for opt, sym, tok, units, text in wanted:
                    if sym in minted:
                        continue
                    held = await TokenClient(client, tok["address"]).balance_of(sender.address)
                    if units > held:
                        hint = " (--mint mints test tokens)" if tok.get("mintable") else ""
                        raise UserInputError(
                            f"{opt}: {text} {sym} is more than the"
                            f" {fmt_units(held, tok['decimals'])} {sym} that"
                            f" {sender.address} holds{hint}"
                        )
                for _, sym, tok, units, _ in wanted:
                    tc = TokenClient(client, tok["address"])
                    if sym in minted:
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
    bd, qd = btok["decimals"], qtok["decimals"]
    typer.echo(f"{market} account of {account.address}:")
    typer.echo(
        f"  {m['base']}: free {fmt_units(bal.base_free, bd)},"
        f" locked {fmt_units(bal.base_locked, bd)}"
    )
    typer.echo(
        f"  {m['quote']}: free {fmt_units(bal.quote_free, qd)},"
        f" locked {fmt_units(bal.quote_locked, qd)}"
    )


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
    levels: int = typer.Option(5, "--levels", min=1, max=1024, help="Price levels per side"),
    deployment: Path = DEP_OPT,
    rpc: str | None = RPC_OPT,
) -> None:
    """Print the top of the on-chain book."""
    from flashmm.venues.sei.book import BookClient
    from flashmm.venues.sei.rpc import JsonRpc

    dep = load_deployment(deployment)
    m = market_of(dep, market, deployment)
    url = rpc_url(rpc, dep, deployment)

    async def main() -> tuple[Any, Any]:
        async with JsonRpc(url) as client:
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
    rate: float = typer.Option(0.5, "--rate", help="Takes per second (on average)"),
    size: int = typer.Option(3, "--size", min=1, help="Maximum lots per take"),
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
    from flashmm.venues.sei.rpc import JsonRpc
    from flashmm.venues.sei.tx import TxSender

    check_finite(rate, "--rate", 0, above=True)
    check_finite(duration, "--duration", 0)
    dep = load_deployment(deployment)
    m = market_of(dep, market, deployment)
    url = rpc_url(rpc, dep, deployment)
    account = load_signer(keystore, dev_account, dep, url)
    mid = int(m["id"])
    tick = Decimal(str(m["tick_size"]))
    lot = Decimal(str(m["lot_size"]))
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
                await asyncio.sleep(rng.expovariate(rate))

    import signal

    # a script's background job starts with SIGINT ignored (Python then installs no
    # handler): `kill -INT` must stop the taker as Ctrl-C does
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        run_async(main())
