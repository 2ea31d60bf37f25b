"""``flashmm wallet``: create a key, show the address, show balances.

A key is never printed unless ``--show-key`` is given.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from flashmm.cli.chain import (
    KEYSTORE_OPT,
    check_address,
    check_out,
    load_deployment,
    load_signer,
    rpc_url,
    run_async,
)
from flashmm.cli.chain import (
    fmt_units as units,
)

app = typer.Typer(
    help="Signing keys (env FLASHMM_PRIVATE_KEY or an encrypted keystore) and balances."
)


@app.command()
def new(
    out: Path | None = typer.Option(
        None, "--out", help="Write an encrypted keystore here (mode 600)"
    ),
    show_key: bool = typer.Option(False, "--show-key", help="Print the private key (careful)"),
) -> None:
    """Create a new key. With --out, encrypt it with FLASHMM_KEYSTORE_PASSWORD (or a prompt)."""
    from eth_account import Account

    from flashmm.errors import UserInputError
    from flashmm.venues.sei.errors import KeySourceError
    from flashmm.venues.sei.keys import ENV_PASSWORD, write_keystore

    if out is not None:
        check_out(out)  # a folder, or a folder that cannot be made; before the key is made
        if out.exists():  # a key that cannot be saved is lost
            raise UserInputError(f"--out: {out} exists; refusing to overwrite a keystore")
        if not os.environ.get(ENV_PASSWORD) and not sys.stdin.isatty():
            raise UserInputError(f"set {ENV_PASSWORD}: no terminal to ask for the passphrase")
    acct = Account.create()
    if out is not None:
        password = os.environ.get(ENV_PASSWORD) or typer.prompt(
            "keystore passphrase", hide_input=True, confirmation_prompt=True
        )
        try:
            write_keystore(out, bytes(acct.key), password)
        except KeySourceError as exc:
            raise UserInputError(str(exc)) from exc
        typer.echo(f"keystore: {out}")
    elif not show_key:
        typer.echo(
            "note: without --out or --show-key this key is lost; nothing was saved", err=True
        )
    typer.echo(f"address:  {acct.address}")
    if show_key:
        typer.echo(f"private key: 0x{bytes(acct.key).hex()}")


@app.command()
def address(
    keystore: Path | None = KEYSTORE_OPT,
) -> None:
    """The address of the configured key (keystore, else FLASHMM_PRIVATE_KEY)."""
    from flashmm.errors import UserInputError
    from flashmm.venues.sei.errors import KeySourceError
    from flashmm.venues.sei.keys import load_account

    try:
        typer.echo(load_account(keystore).address)
    except KeySourceError as exc:
        raise UserInputError(str(exc)) from exc


@app.command()
def balances(
    who: str | None = typer.Option(None, "--address", help="Address (default: the configured key)"),
    deployment: Path | None = typer.Option(
        None, "--deployment", help="Deployment JSON for tokens/book"
    ),
    rpc: str | None = typer.Option(
        None, "--rpc", help="JSON-RPC URL (default: from the deployment)"
    ),
    keystore: Path | None = KEYSTORE_OPT,
    role: str | None = typer.Option(
        None, "--role", help="Address of a role in the deployment file (maker, taker...)"
    ),
) -> None:
    """Native SEI, token balances and FlashBook accounts of an address."""
    from flashmm.errors import UserInputError
    from flashmm.venues.sei.book import BookClient, TokenClient
    from flashmm.venues.sei.rpc import JsonRpc

    # the address and URL are checked before any call: a node's error names neither
    if who is not None:
        who = check_address(who, "--address")
        if role is not None:
            raise UserInputError("--address and --role: give one (both name the address)")
    dep = load_deployment(deployment) if deployment else None
    if not rpc and dep is None:
        raise UserInputError("give --rpc or --deployment")
    url = rpc_url(rpc, dep, deployment)
    if who is None and role is not None:
        if dep is None or role not in dep.accounts:
            known = f" (known: {', '.join(dep.accounts) or 'none'})" if dep is not None else ""
            raise UserInputError(f"--role: no role {role!r} in the deployment file{known}")
        who = dep.accounts[role]["address"]
    if who is None:
        who = load_signer(keystore, None, None, url).address

    async def main() -> list[str]:
        lines: list[str] = []
        async with JsonRpc(url) as client:
            wei = int(await client.call("eth_getBalance", [who, "latest"]), 16)
            lines.append(f"SEI (native)  {units(wei, 18)}")
            if dep is not None:
                for sym, tok in dep.tokens.items():
                    held = await TokenClient(client, tok["address"]).balance_of(who)
                    lines.append(f"{sym:<13} {units(held, tok['decimals'])}")
                book = BookClient(client, dep.book)
                for sym, m in dep.markets.items():
                    b = await book.balances(who, int(m["id"]))
                    bd, qd = dep.tokens[m["base"]]["decimals"], dep.tokens[m["quote"]]["decimals"]
                    lines.append(
                        f"book {sym:<8} {m['base']} {units(b.base_free, bd)} free "
                        f"+ {units(b.base_locked, bd)} locked; {m['quote']} "
                        f"{units(b.quote_free, qd)} free + {units(b.quote_locked, qd)} locked"
                    )
        return lines

    lines = run_async(main())
    typer.echo(f"address: {who}")
    for line in lines:
        typer.echo(line)
