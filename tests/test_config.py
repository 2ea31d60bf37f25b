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
    # the engine routes a reference stream to one market: two on one stream are refused
    twice = BASE + "  - {symbol: SEI/USDT, tick_size: 0.001, lot_size: 0.01, reference: nexousdt}\n"
    assert _problems(tmp_path, twice) == [
        "markets: each market needs its own reference stream, ['nexousdt'] is followed twice"
    ]


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


# --- fuzzed inputs: one clean line, exit 2, never a traceback --------------------------------


def _paper_with(**changes: object) -> str:
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    for key, value in changes.items():
        node = cfg
        *parents, last = key.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return yaml.safe_dump(cfg)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'mode: paper\nname: "caf\xe9"\n', "line 2: not UTF-8 text (byte 0xe9)"),
        (
            _paper_with(venue__sim__entry_latency_ms=float("nan")).encode(),
            "venue.sim.entry_latency_ms: must be a finite number (was nan)",
        ),
        (
            _paper_with(venue__sim__entry_latency_ms="nan").encode(),
            "venue.sim.entry_latency_ms: must be a finite number (was 'nan')",
        ),
        (
            _paper_with(strategy__params__order_size_usdc=float("inf")).encode(),
            "strategy.params.order_size_usdc: must be a finite number (was inf)",
        ),
        (
            _paper_with(model={"path": "m" * 5000}).encode(),
            "model.path: too long (5000 characters; at most 1024)",
        ),
        (_paper_with(model={"path": "m" * 300}).encode(), "File name too long"),
    ],
    ids=["non-utf8", "nan", "nan-text", "inf", "path-5000", "path-300"],
)
def test_fuzzed_profiles_give_one_line(tmp_path: Path, text: bytes, expected: str) -> None:
    bad = tmp_path / "fuzz.yaml"
    bad.write_bytes(text)
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert len(e.value.problems) == 1 and expected in e.value.problems[0], e.value.problems
    assert "\n" not in e.value.problems[0] and len(e.value.problems[0]) < 200


def _validate(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flashmm", "config", "validate", path],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_cli_validate_device_fifo_folder_and_nan_set(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "profile.yaml"
    os.mkfifo(fifo)  # nothing writes to it: reading it would block forever
    cases = {
        "/dev/zero": "/dev/zero: not a regular file (a pipe or device)",
        str(fifo): f"{fifo}: not a regular file (a pipe or device)",
        str(tmp_path): f"{tmp_path}: not a regular file (a folder)",
    }
    for path, expected in cases.items():
        r = _validate(path)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip() == f"flashmm: error: {expected}"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "flashmm",
            "config",
            "validate",
            "configs/paper.yaml",
            "--set",
            "strategy.params.order_size_usdc=inf",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 2 and "order_size_usdc: must be a finite number" in r.stderr


def test_panel_log_file_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    """``flashmm run`` on a terminal (the panel is up) with logging.file under a file."""
    import os
    import pty

    import yaml

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    cfg = yaml.safe_load(_paper_with())
    cfg["logging"]["file"] = str(blocker / "logs" / "flashmm.log")
    cfg["control"] = {"data_dir": str(tmp_path / "data"), "journal": False}
    profile = tmp_path / "panel.yaml"
    profile.write_text(yaml.safe_dump(cfg))
    main, tty = pty.openpty()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "flashmm", "run", "--config", str(profile), "--duration", "5"],
            stdin=tty,
            stdout=tty,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )
    finally:
        os.close(tty)
        os.close(main)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == (
        f"flashmm: error: logging.file: cannot write the log file"
        f" {blocker / 'logs' / 'flashmm.log'} (Not a directory)"
    )
