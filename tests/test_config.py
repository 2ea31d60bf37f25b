from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flashmm.config import load_config
from flashmm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["paper", "backtest", "testnet"])
def test_shipped_profiles_validate(name: str) -> None:
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.markets
    assert cfg.risk.max_position_usdc == 2000
    assert {m.symbol for m in cfg.markets} >= {"SEI/USDC", "ETH/USDC"}


def test_testnet_profile_is_sei_chain_1328() -> None:
    cfg = load_config(ROOT / "configs" / "testnet.yaml")
    assert cfg.mode == "live"
    assert cfg.venue.kind == "sei"
    assert cfg.venue.sei is not None and cfg.venue.sei["chain_id"] == 1328


def _problems(tmp_path: Path, text: str) -> list[str]:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    return info.value.problems


BASE = """
markets:
  - {symbol: SEI/USDC, tick_size: 0.001, lot_size: 0.01, reference: nexousdt}
"""


def test_minimal_profile_gets_defaults(tmp_path: Path) -> None:
    p = tmp_path / "min.yaml"
    p.write_text(BASE)
    cfg = load_config(p)
    assert cfg.mode == "paper"
    assert cfg.strategy.quote_hz == 5
    assert cfg.profile == "min"


def test_unknown_key_names_its_path(tmp_path: Path) -> None:
    probs = _problems(tmp_path, BASE + "risk:\n  max_postion_usdc: 10\n")
    assert probs == [
        "risk.max_postion_usdc: unknown key (check the spelling; see the config reference)"
    ]


def test_bad_value_names_path_value_and_bound(tmp_path: Path) -> None:
    probs = _problems(tmp_path, BASE + "risk:\n  max_position_usdc: -5\n")
    assert len(probs) == 1
    assert probs[0].startswith("risk.max_position_usdc: ")
    assert "greater than 0" in probs[0] and "-5" in probs[0]


def test_every_problem_is_reported(tmp_path: Path) -> None:
    probs = _problems(
        tmp_path,
        BASE + "mode: sideways\nstrategy:\n  quote_hz: 0\nui:\n  colour: blue\n",
    )
    paths = sorted(p.split(":")[0] for p in probs)
    assert paths == ["mode", "strategy.quote_hz", "ui.colour"]
    assert any("'paper', 'live' or 'backtest'" in p for p in probs)


def test_strategy_params_are_checked_by_the_strategy(tmp_path: Path) -> None:
    probs = _problems(tmp_path, BASE + "strategy:\n  params:\n    levels: 0\n    gama: 1\n")
    assert any(p.startswith("strategy.params.levels: ") for p in probs)
    assert any(p.startswith("strategy.params.gama: unknown key") for p in probs)


def test_unknown_strategy(tmp_path: Path) -> None:
    probs = _problems(tmp_path, BASE + "strategy:\n  name: nope\n")
    assert probs[0].startswith("strategy.name: unknown strategy; available: avellaneda")


def test_missing_markets_and_cross_checks(tmp_path: Path) -> None:
    assert _problems(tmp_path, "mode: paper\n") == ["markets: required but missing"]
    probs = _problems(tmp_path, BASE + "mode: live\n")
    assert probs == ["venue.kind: live mode needs venue.kind 'sei'"]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    probs = _problems(tmp_path, "markets: [\n  - a\n risk: {")
    assert probs[0].startswith("line ")


def test_set_overrides(tmp_path: Path) -> None:
    p = tmp_path / "min.yaml"
    p.write_text(BASE)
    cfg = load_config(p, ["strategy.params.gamma=0.2", "risk.max_position_usdc=1000"])
    assert cfg.strategy.params["gamma"] == 0.2
    assert cfg.risk.max_position_usdc == 1000


def test_cli_validate_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "risk:\n  max_position_usdc: -5\n  nope: 1\n")
    r = subprocess.run(
        [sys.executable, "-m", "flashmm", "config", "validate", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"flashmm: error: {bad}: risk.") for line in lines)
    assert "Traceback" not in r.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "flashmm", "config", "validate", "configs/paper.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "flashmm", "run", "--config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert missing.returncode == 2
    assert "file not found" in missing.stderr and "Traceback" not in missing.stderr
