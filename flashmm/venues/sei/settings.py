"""Configuration of the Sei venue (embedded in FlashMM's main config as ``venue.sei``).

Two ways to say where the book is:

- explicitly: ``rpc_url``, ``chain_id``, ``book_address`` and ``markets``;
- ``deployment: var/local-deployment.json``: the file ``flashmm chain local`` or
  ``flashmm chain deploy`` wrote. Whatever is not given explicitly (RPC and WS URLs,
  chain id, book address, market ids) is read from it when the venue is built, so a
  profile needs no hand-copied addresses. Explicit values win.

The file is read by :meth:`SeiVenueSettings.resolved`, not when the profile is loaded,
so the control commands and ``--help`` work before the chain exists; ``flashmm config
validate`` checks that the file exists and names the command that writes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flashmm.venues.base import VenueError
from flashmm.venues.sei.errors import KeySourceError

REPO_ROOT = Path(__file__).resolve().parents[3]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: what a profile must say when it names no deployment file (else the file fills them)
_REQUIRED = ("rpc_url", "chain_id", "book_address", "markets")


def is_loopback(url: str) -> bool:
    return (urlparse(url).hostname or "") in LOOPBACK_HOSTS


def find_file(path: str) -> Path:
    """A relative path: the current directory first, then the repository root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    alt = REPO_ROOT / p
    return alt if alt.exists() else p


class SeiVenueSettings(BaseModel):
    """Where and how to trade on the FlashBook contract.

    Prices and sizes are the contract's ticks and lots: a market's on-chain tickValue and
    lotUnits must equal the MarketSpec's tick_size x lot_size x 10**quote_decimals and
    lot_size x 10**base_decimals (checked at start when specs are given).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    deployment: str | None = Field(
        default=None,
        description="deployment JSON written by `flashmm chain local|deploy`; fills rpc_url, "
        "ws_url, chain_id, book_address and markets that are not set explicitly",
    )
    rpc_url: str | None = Field(
        default=None,
        description="HTTP JSON-RPC endpoint, e.g. https://evm-rpc-testnet.sei-apis.com",
    )
    rpc_fallback_urls: list[str] = Field(
        default_factory=list,
        description="more HTTP JSON-RPC endpoints of the same chain, tried in order when "
        "the one in use does not answer (checked with eth_chainId first); the first one "
        "is used again once it answers and has caught up",
    )
    ws_url: str | None = Field(
        default=None, description="WebSocket endpoint for eth_subscribe; None polls"
    )
    chain_id: int | None = Field(
        default=None, description="1328 testnet (atlantic-2), 1329 mainnet; checked before signing"
    )
    book_address: str | None = Field(default=None, description="FlashBook contract address")
    markets: dict[str, int] | None = Field(
        default=None,
        description="FlashMM market symbol -> on-chain market id (from the deployment: the "
        "profile's markets)",
    )
    keystore: str | None = Field(
        default=None,
        description="encrypted keystore file (passphrase from FLASHMM_KEYSTORE_PASSWORD); "
        "None reads FLASHMM_PRIVATE_KEY",
    )
    dev_account: str | None = Field(
        default=None,
        description="LOCAL CHAINS ONLY: sign with this role's anvil dev key from the "
        "deployment file (maker, taker); refused unless rpc_url is on 127.0.0.1",
    )
    inventory_base: dict[str, str] | None = Field(
        default=None,
        description="neutral base holdings per market (base tokens, decimal); a position is "
        "holdings minus this. Default: the account's net deposits (Deposit - Withdraw logs)",
    )
    max_fee_gwei: float = Field(default=100.0, gt=0, description="cap on maxFeePerGas")
    priority_fee_gwei: float | None = Field(default=None, ge=0)
    max_inflight_txs: int = Field(default=2, ge=1, le=16)
    receipt_timeout_s: float = Field(default=20.0, gt=0)
    fee_bump_after_s: float = Field(
        default=2.0,
        gt=0,
        description="a transaction of ours not mined this long after it was signed (and 2 "
        "blocks later) while its fees hold it back is replaced at its nonce with higher fees; "
        "below receipt_timeout_s to matter",
    )
    max_fee_bumps: int = Field(
        default=3, ge=0, le=20, description="replacements per transaction (0: never bump)"
    )
    gas_margin: float = Field(
        default=0.2, ge=0, le=2, description="gas limit = estimate x (1 + margin)"
    )
    gas_headroom_per_op: int = Field(
        default=25_000,
        ge=0,
        description="gas added to a requote's limit per op: transactions still in flight "
        "can change what an op writes (unused gas is not charged on an EVM that refunds)",
    )
    sstore_set_gas: int = Field(
        default=72_000,
        ge=20_000,
        description="gas Sei charges for a fresh storage slot (chain parameter "
        "SeiSstoreSetGasEip2200: 72,000 in sei-chain v6.3.0, 20,000 in v6.3.1); prices "
        "gas projections measured on anvil",
    )
    log_poll_s: float = Field(
        default=0.5, gt=0, description="eth_getLogs poll period without ws_url"
    )
    log_range: int = Field(
        default=2_000, ge=1, description="largest block range of one eth_getLogs request"
    )
    rpc_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("book_address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not (v.startswith("0x") and len(v) == 42):
            raise ValueError(f"must be a 0x-prefixed 20-byte address, was {v!r}")
        int(v, 16)
        return v

    @field_validator("markets")
    @classmethod
    def _markets(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("needs at least one market (symbol -> market id)")
        for sym, mid in v.items():
            if not 1 <= mid <= 0xFFFF:
                raise ValueError(f"market id of {sym} must be in 1..65535, was {mid}")
        return v

    @field_validator("inventory_base")
    @classmethod
    def _inventory(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        for sym, amount in v.items():
            try:
                if Decimal(str(amount)) < 0:
                    raise ValueError
            except (InvalidOperation, ValueError):
                raise ValueError(
                    f"inventory_base of {sym} must be a non-negative decimal, was {amount!r}"
                ) from None
        return {k: str(x) for k, x in v.items()}

    @model_validator(mode="after")
    def _complete(self) -> SeiVenueSettings:
        if self.deployment is None:
            missing = [name for name in _REQUIRED if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    f"venue.sei: {', '.join(missing)} required (or give deployment: FILE)"
                )
            if self.dev_account is not None:
                raise ValueError("venue.sei: dev_account reads keys from a deployment file")
        if self.dev_account is not None and self.keystore is not None:
            raise ValueError("venue.sei: keystore and dev_account are exclusive")
        if self.rpc_url is not None and self.dev_account is not None:
            self.check_dev_account_url(self.rpc_url)
        for url in self.rpc_fallback_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"venue.sei.rpc_fallback_urls: {url!r} is not an http(s) URL")
            if self.dev_account is not None:
                self.check_dev_account_url(url)
        if self.max_fee_bumps and self.fee_bump_after_s >= self.receipt_timeout_s:
            raise ValueError(
                f"venue.sei: fee_bump_after_s ({self.fee_bump_after_s:g} s) must be below "
                f"receipt_timeout_s ({self.receipt_timeout_s:g} s): a transaction stuck on "
                "its fees would be written off before its first fee bump "
                "(or set max_fee_bumps: 0)"
            )
        return self

    def check_dev_account_url(self, rpc_url: str) -> None:
        if not is_loopback(rpc_url):
            raise ValueError(
                f"venue.sei: dev_account is for local chains only; rpc_url {rpc_url} is not "
                "on 127.0.0.1 (use FLASHMM_PRIVATE_KEY or a keystore)"
            )

    # ------------------------------------------------------------------ deployment
    def load_deployment(self) -> dict[str, Any]:
        if self.deployment is None:
            return {}
        path = find_file(self.deployment)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise VenueError(
                f"deployment file {path} not found: start the chain first "
                "(`flashmm chain local`) or deploy (`flashmm chain deploy`)"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise VenueError(f"cannot read deployment file {path}: {exc}") from exc
        if not isinstance(data, dict) or "book" not in data:
            raise VenueError(f"{path} is not a FlashMM deployment file (no 'book')")
        markets = data.get("markets") or {}
        if not isinstance(markets, dict) or not all(
            isinstance(m, dict) and isinstance(m.get("id"), int) and not isinstance(m["id"], bool)
            for m in markets.values()
        ):
            raise VenueError(
                f"{path} is not a FlashMM deployment file: markets must map names to"
                " entries with an integer id"
            )
        return data

    def resolved(self, symbols: Iterable[str] | None = None) -> SeiVenueSettings:
        """Settings with every deployment-provided field filled in.

        ``symbols``: the profile's markets; with market ids from the deployment only these
        are traded. Raises :class:`VenueError` if the file is missing or lacks a market.
        """
        dep = self.load_deployment()
        if not dep:
            return self
        update: dict[str, Any] = {}
        for ours, theirs in (
            ("rpc_url", "rpc_url"),
            ("ws_url", "ws_url"),
            ("chain_id", "chain_id"),
            ("book_address", "book"),
        ):
            if getattr(self, ours) is None and dep.get(theirs):
                update[ours] = dep[theirs]
        if self.markets is None:
            known = {s: int(m["id"]) for s, m in (dep.get("markets") or {}).items()}
            wanted = list(symbols) if symbols is not None else list(known)
            missing = [s for s in wanted if s not in known]
            if missing:
                raise VenueError(
                    f"market(s) {', '.join(missing)} not in deployment {self.deployment}; "
                    f"it has {', '.join(known) or 'none'}"
                )
            update["markets"] = {s: known[s] for s in wanted}
        out = self.model_copy(update=update)
        for name in _REQUIRED:
            if getattr(out, name) is None:
                raise VenueError(f"venue.sei.{name}: not set and not in {self.deployment}")
        return out

    def dev_private_key(self) -> str:
        """The anvil dev key of ``dev_account`` from the deployment file (local only)."""
        assert self.dev_account is not None
        rpc = self.rpc_url or str(self.load_deployment().get("rpc_url", ""))
        try:
            self.check_dev_account_url(rpc)
        except ValueError as exc:
            raise KeySourceError(str(exc)) from None
        accounts = self.load_deployment().get("accounts") or {}
        key = (accounts.get(self.dev_account) or {}).get("private_key")
        if not key:
            raise KeySourceError(
                f"no dev account {self.dev_account!r} with a key in {self.deployment} "
                f"(roles: {', '.join(accounts) or 'none'})"
            )
        return str(key)

    # typed accessors for a resolved instance
    @property
    def rpc(self) -> str:
        assert self.rpc_url is not None, "call resolved() first"
        return self.rpc_url

    @property
    def chain(self) -> int:
        assert self.chain_id is not None, "call resolved() first"
        return self.chain_id

    @property
    def book(self) -> str:
        assert self.book_address is not None, "call resolved() first"
        return self.book_address

    @property
    def market_ids(self) -> dict[str, int]:
        assert self.markets is not None, "call resolved() first"
        return self.markets
