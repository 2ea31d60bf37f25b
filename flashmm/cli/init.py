"""``flashmm init [DIR]``: an editable profile and a ``.env`` template for a new user."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

ENV_TEMPLATE = """\
# FlashMM secrets (read from the directory you run flashmm in, then from the folder of
# the profile you run; keep it mode 0600). Never put them in a YAML profile: they are
# redacted from logs and never shown by `flashmm status`.

# Hex private key of the trading account (live mode), 0x-prefixed.
FLASHMM_PRIVATE_KEY=

# Or an encrypted keystore: set `venue.sei.keystore: PATH` in the profile
# (the file must be mode 0600) and its passphrase here.
FLASHMM_KEYSTORE_PASSWORD=

# Optional: where backtests cache parsed recordings (default ~/.cache/flashmm).
# FLASHMM_CACHE_DIR=
"""


def init(
    directory: Annotated[
        Path, typer.Argument(metavar="[DIR]", help="Folder to write into (created if missing).")
    ] = Path("."),
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            metavar="NAME",
            help="Shipped profile to start from: paper, backtest, local or testnet.",
        ),
    ] = "paper",
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite files that already exist.")
    ] = False,
) -> None:
    """Write an editable profile (NAME.yaml) and a .env template into DIR."""
    from flashmm.errors import UserInputError
    from flashmm.paths import PACKAGE_PROFILES, profile_names

    src = PACKAGE_PROFILES / f"{profile}.yaml"
    if not src.is_file():
        raise UserInputError(
            f"--profile: no shipped profile {profile!r} (choose {', '.join(profile_names())})"
        )
    dst = directory / f"{profile}.yaml"
    env = directory / ".env"
    existing = [str(p) for p in (dst, env) if p.exists()]
    if existing and not force:
        raise UserInputError(
            f"{existing[0]}: already exists (pass --force to overwrite, or choose another DIR)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Written by `flashmm init` from the shipped '{profile}' profile: edit freely.\n"
        "# Files named here (recordings, model, keystore) are found relative to this file,\n"
        "# then in FlashMM's package ('bundled:NAME' is a recording shipped with FlashMM).\n"
    )
    dst.write_text(header + src.read_text())
    fd = os.open(env, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(ENV_TEMPLATE)
    os.chmod(env, 0o600)
    typer.echo(f"wrote {dst} and {env} (mode 0600)")
    typer.echo(
        f"next: cd {directory} && flashmm config validate {dst.name}"
        f" && flashmm run --config {dst.name}"
    )
