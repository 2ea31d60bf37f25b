"""Signing keys: from the FLASHMM_PRIVATE_KEY env var or an encrypted keystore file.

A keystore's passphrase comes from FLASHMM_KEYSTORE_PASSWORD. A keystore readable by
group or others is refused. Keys are never logged; ``repr`` of a loaded key hides it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from flashmm.venues.sei.errors import KeySourceError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

ENV_KEY = "FLASHMM_PRIVATE_KEY"
ENV_PASSWORD = "FLASHMM_KEYSTORE_PASSWORD"


def check_private_file(path: Path) -> None:
    """Refuse a key file that group or others can read or write."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeySourceError(f"cannot read keystore {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeySourceError(
            f"keystore {path} is accessible by group/others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )


def account_from_hex(private_key: str) -> LocalAccount:
    from eth_account import Account

    try:
        acct: LocalAccount = Account.from_key(private_key.strip())
        return acct
    except Exception as exc:  # never echo the key
        raise KeySourceError("the private key is not a valid 32-byte hex key") from exc


def load_account(
    keystore: str | Path | None = None, *, env: dict[str, str] | None = None
) -> LocalAccount:
    """The signing account: the keystore if given, else FLASHMM_PRIVATE_KEY."""
    env = dict(os.environ) if env is None else env
    if keystore is not None:
        from eth_account import Account

        path = Path(keystore).expanduser()
        check_private_file(path)
        password = env.get(ENV_PASSWORD)
        if password is None:
            raise KeySourceError(f"set {ENV_PASSWORD} to unlock keystore {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise KeySourceError(f"keystore {path} is not a readable JSON keystore") from exc
        try:
            key = Account.decrypt(data, password)
        except ValueError as exc:
            raise KeySourceError(f"wrong passphrase for keystore {path}") from exc
        acct: LocalAccount = Account.from_key(key)
        return acct
    raw = env.get(ENV_KEY)
    if not raw:
        raise KeySourceError(f"no signing key: set {ENV_KEY} or give a keystore file")
    return account_from_hex(raw)


def write_keystore(path: str | Path, private_key: bytes, password: str) -> str:
    """Encrypt ``private_key`` into a new keystore file (mode 600); returns the address."""
    from eth_account import Account

    path = Path(path).expanduser()
    if path.exists():
        raise KeySourceError(f"{path} exists; refusing to overwrite a keystore")
    data = Account.encrypt(private_key, password)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    return str(Account.from_key(private_key).address)
