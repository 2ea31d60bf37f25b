"""Live profiles: Sei venue settings from a deployment file, dev keys for local chains only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flashmm.config import load_config
from flashmm.errors import ConfigError
from flashmm.venues.base import VenueError
from flashmm.venues.sei.errors import KeySourceError
from flashmm.venues.sei.settings import SeiVenueSettings

ROOT = Path(__file__).resolve().parents[1]
BOOK = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
KEY = "0x" + "11" * 32


def deployment(tmp: Path, rpc: str = "http://127.0.0.1:8545", **extra: Any) -> Path:
    data = {
        "chain_id": 1328,
        "rpc_url": rpc,
        "ws_url": rpc.replace("http", "ws"),
        "book": BOOK,
        "tokens": {},
        "markets": {"SEI/USDC": {"id": 1}, "ETH/USDC": {"id": 2}},
        "accounts": {"maker": {"address": "0x0", "private_key": KEY}},
        "block": 3,
        **extra,
    }
    path = tmp / "dep.json"
    path.write_text(json.dumps(data))
    return path


def test_local_and_testnet_profiles_validate() -> None:
    local = load_config(ROOT / "configs" / "local.yaml")
    assert local.mode == "live" and local.venue.kind == "sei"
    assert [m.symbol for m in local.markets] == ["SEI/USDC", "ETH/USDC"]
    sei = SeiVenueSettings.model_validate(local.venue.sei)
    assert sei.deployment and sei.dev_account == "maker"
    # the explicit form (testnet) still validates unchanged
    testnet = load_config(ROOT / "configs" / "testnet.yaml")
    assert SeiVenueSettings.model_validate(testnet.venue.sei).chain_id == 1328


def test_local_profile_units_match_what_chain_local_deploys() -> None:
    from decimal import Decimal

    from flashmm.venues.sei.local import LOCAL_MARKETS

    cfg = load_config(ROOT / "configs" / "local.yaml")
    deployed = {m.symbol: (Decimal(m.tick_size), Decimal(m.lot_size)) for m in LOCAL_MARKETS}
    for m in cfg.markets:
        assert (m.tick_size, m.lot_size) == deployed[m.symbol]


def test_deployment_fills_what_is_not_explicit(tmp_path: Path) -> None:
    dep = deployment(tmp_path)
    s = SeiVenueSettings(deployment=str(dep), ws_url="ws://127.0.0.1:1")
    r = s.resolved(["SEI/USDC"])
    assert (r.rpc_url, r.chain_id, r.book_address) == ("http://127.0.0.1:8545", 1328, BOOK)
    assert r.ws_url == "ws://127.0.0.1:1"  # explicit wins
    assert r.markets == {"SEI/USDC": 1}  # only the profile's markets
    assert s.resolved().markets == {"SEI/USDC": 1, "ETH/USDC": 2}
    with pytest.raises(VenueError, match="BTC/USDC"):
        s.resolved(["BTC/USDC"])


def test_missing_deployment_file_is_one_clear_error(tmp_path: Path) -> None:
    s = SeiVenueSettings(deployment=str(tmp_path / "nope.json"))
    with pytest.raises(VenueError, match="flashmm chain local"):
        s.resolved()


@pytest.mark.parametrize("markets", [[{"id": 1}], {"SEI/USDC": {}}, {"SEI/USDC": {"id": "1"}}])
def test_deployment_markets_without_integer_ids_are_one_clear_error(
    tmp_path: Path, markets: Any
) -> None:
    """A list, an entry without ``id`` or a string id was an AttributeError/KeyError."""
    s = SeiVenueSettings(deployment=str(deployment(tmp_path, markets=markets)))
    with pytest.raises(VenueError, match="markets must map names to entries with an integer id"):
        s.resolved()


def test_explicit_form_needs_every_address_field() -> None:
    with pytest.raises(ValidationError, match="book_address, markets required"):
        SeiVenueSettings(rpc_url="http://x", chain_id=1328)


def test_dev_account_is_for_loopback_only(tmp_path: Path) -> None:
    s = SeiVenueSettings(deployment=str(deployment(tmp_path)), dev_account="maker")
    assert s.dev_private_key() == KEY
    remote = deployment(tmp_path, rpc="https://evm-rpc-testnet.sei-apis.com")
    s = SeiVenueSettings(deployment=str(remote), dev_account="maker")
    with pytest.raises(KeySourceError, match="local chains only"):
        s.dev_private_key()
    with pytest.raises(ValidationError, match="local chains only"):
        SeiVenueSettings(deployment=str(remote), rpc_url="https://rpc.example", dev_account="maker")
    with pytest.raises(ValidationError, match="exclusive"):
        SeiVenueSettings(deployment=str(remote), dev_account="maker", keystore="k.json")
    s = SeiVenueSettings(deployment=str(deployment(tmp_path)), dev_account="nobody")
    with pytest.raises(KeySourceError, match="no dev account"):
        s.dev_private_key()


def test_a_fee_bump_after_the_receipt_timeout_is_refused(tmp_path: Path) -> None:
    """A transaction stuck on its fees is written off at receipt_timeout_s: a first fee
    bump due later would never come (the stuck requote just waits to be dropped)."""
    dep = str(deployment(tmp_path))
    with pytest.raises(ValidationError, match=r"fee_bump_after_s \(20 s\) must be below"):
        SeiVenueSettings(deployment=dep, fee_bump_after_s=20, receipt_timeout_s=20)
    SeiVenueSettings(deployment=dep, fee_bump_after_s=20, receipt_timeout_s=20, max_fee_bumps=0)
    SeiVenueSettings(deployment=dep, fee_bump_after_s=5, receipt_timeout_s=20)
    text = (ROOT / "configs" / "local.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        text.replace("dev_account: maker", "dev_account: maker\n    fee_bump_after_s: 30")
    )
    with pytest.raises(ConfigError, match="fee_bump_after_s"):
        load_config(bad)


def test_bad_venue_block_is_reported_with_its_path(tmp_path: Path) -> None:
    text = (ROOT / "configs" / "local.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("dev_account: maker", "dev_acount: maker"))
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    assert "venue.sei.dev_acount" in str(exc.value)
