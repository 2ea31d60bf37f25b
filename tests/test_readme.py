"""The README's command lines, run as written (install aside) from a folder outside the
repository, as a new user would after ``pip install``.

``flashmm`` and ``.venv/bin/flashmm`` are a shim running this checkout's code. Lines that
run until Ctrl-C get ``--duration`` or are stopped once they print what the README says;
lines that read ``../shared`` get it beside their folder and skip without it. On a clone
with no ``../shared`` beside it (CI's second job) everything else still runs.

The README's settings table, and the API example and ``/health`` answers of
docs/operations.md, are checked against the settings' models and the OpenAPI document.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kit.data import NEXO_24, ROOT, needs

README = (ROOT / "README.md").read_text()
LONG_RUNNING = {  # the four-terminal local-chain recipe: the same run is tests/test_live_e2e.py
    "flashmm chain local": "starts a chain and runs until Ctrl-C",
    "flashmm run --config local": "needs the local chain",
    "flashmm chain taker": "needs the local chain and a quoting bot",
}


def bash_lines() -> list[str]:
    """Command lines of the README's ```bash blocks (continuations joined, comments cut)."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(" ".join(line.split()))
    return lines


def without_install(line: str) -> str | None:
    """The part of a line after its set-up steps (venv, pip, npm); None for set-up only."""
    parts = [p.strip() for p in line.split("&&")]
    setup = ("python3 -m venv", ".venv/bin/pip", "npm ci", ".venv/bin/ruff", ".venv/bin/mypy")
    rest = [p for p in parts if not p.startswith(setup)]
    if not rest or any(p.startswith(".venv/bin/python -m pytest") for p in rest):
        return None  # the test command itself
    return " && ".join(rest)


LINES = [c for line in bash_lines() if (c := without_install(line))]


@pytest.fixture
def elsewhere(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """An empty folder outside the repository with ``flashmm`` and ``.venv/bin/flashmm``."""
    home = tmp_path / "newcomer"
    bin_dir = home / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    shim = bin_dir / "flashmm"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m flashmm "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASHMM_", "NOTIFY_"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        FLASHMM_CACHE_DIR=str(tmp_path / "cache"),
        XDG_RUNTIME_DIR=str(tmp_path / "run"),
        COLUMNS="160",
    )
    (tmp_path / "run").mkdir()
    return home, env


def _bash(
    line: str, cwd: Path, env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_the_readme_lines_are_all_walked() -> None:
    walked = [ln for ln in LINES if not any(ln.startswith(k) for k in LONG_RUNNING)]
    assert any(ln.endswith("flashmm run") for ln in walked)
    assert any("--sweep" in ln for ln in walked) and any("feed serve" in ln for ln in walked)
    assert len(walked) == 6, LINES


def test_quick_start_run(elsewhere: tuple[Path, dict[str, str]]) -> None:
    home, env = elsewhere
    (line,) = [ln for ln in LINES if ln.endswith("flashmm run")]
    r = _bash(f"{line} --duration 3", home, env)  # the README: --duration stops it
    assert r.returncode == 0, r.stderr[-2000:]
    assert "FlashMM run summary" in r.stdout and "fills" in r.stdout
    assert "Traceback" not in r.stderr


def test_backtest_json_on_the_bundled_data(elsewhere: tuple[Path, dict[str, str]]) -> None:
    home, env = elsewhere
    (line,) = [ln for ln in LINES if "--json > report.json" in ln]
    r = _bash(line, home, env)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((home / "report.json").read_text())
    assert report["fills"] > 0 and report["config"]["strategy"]["params"]["gamma"] == 0.2


def test_backtest_sweep(elsewhere: tuple[Path, dict[str, str]]) -> None:
    home, env = elsewhere
    (line,) = [ln for ln in LINES if "--sweep" in ln]
    r = _bash(line, home, env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "gamma" in r.stdout and r.stdout.count("│ 6 │") == 1  # six runs, ranked


def test_backtest_compare(elsewhere: tuple[Path, dict[str, str]]) -> None:
    home, env = elsewhere
    (line,) = [ln for ln in LINES if "--compare" in ln]
    r = _bash(line, home, env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "model.enabled=true vs baseline" in r.stdout and "95 % CI" in r.stdout
    out = home / "runs" / "cmp"
    assert json.loads((out / "compare.json").read_text())["metrics"]["pnl_usdc"]["ci95"]
    assert (out / "baseline" / "report.json").is_file()
    assert (out / "variant" / "report.json").is_file()


@pytest.mark.slow
@needs(NEXO_24)
def test_backtest_of_the_shared_day(elsewhere: tuple[Path, dict[str, str]]) -> None:
    home, env = elsewhere
    (line,) = [ln for ln in LINES if "../shared" in ln and "backtest" in ln]
    (home.parent / "shared").symlink_to(NEXO_24.parents[1])  # ../shared beside this folder
    r = _bash(line, home, env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = home / "runs" / "nexo-day"
    assert json.loads((out / "report.json").read_text())["events"] > 100_000
    assert (out / "plots.html").is_file()


def test_feed_serve_starts_on_the_bundled_recording(elsewhere: tuple[Path, dict[str, str]]) -> None:
    home, env = elsewhere
    (line,) = [ln for ln in LINES if "feed serve" in ln]
    # the README's ports are fixed (9000/9001): any free ones here, the rest as written
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {line} --port 0 --http-port 0"],
        cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = [proc.stdout.readline() for _ in range(3)]
        assert first[0].startswith("symbols:  nexousdt"), first
        assert first[1].startswith("ws_url:   ws://127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_config_validate_prints_the_documented_lines(
    elsewhere: tuple[Path, dict[str, str]],
) -> None:
    home, env = elsewhere
    block = re.search(r"```\n\$ (flashmm config validate bad\.yaml)\n(.*?)```", README, re.S)
    assert block is not None
    command, expected = block.group(1), block.group(2).strip().splitlines()
    (home / "bad.yaml").write_text(
        "markets: [{symbol: SEI/USDC, tick_size: 0.001, lot_size: 0.01, reference: nexousdt}]\n"
        "risk: {max_position_usdc: -5, nope: 1}\n"
    )
    r = _bash(command, home, env)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == expected


def test_ci_runs_the_readme_test_command() -> None:
    """`.ci/run` runs the README's test command exactly as written."""
    (command,) = [ln for ln in bash_lines() if ".venv/bin/python -m pytest" in ln]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in [" ".join(line.split()) for line in ci]


def test_no_line_needs_the_repository_folder_but_the_shared_data() -> None:
    for line in LINES:
        if "../shared" not in line:
            assert "configs/" not in line and "models/" not in line, line


def _settings_rows() -> list[tuple[str, list[str], list[str]]]:
    """The README's settings table: (section, keys, defaults) per row, a key's prefix
    (``sim.``, ``sei.``) carried to the keys after it in its row."""
    table = README.split("| section | key | default | meaning |")[1].split("\n\n")[0]
    rows, section = [], ""
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        section = cells[0].strip("`").removesuffix("[]") or section
        keys, prefix = [], ""
        for key in re.findall(r"`([a-z_.]+)`", cells[1].split("(")[0]):
            if "." in key:
                prefix, key = key.rsplit(".", 1)
            keys.append(f"{prefix}.{key}" if prefix else key)
        defaults = [d.strip().strip("`") for d in cells[2].split(", ")]
        rows.append((section, keys, defaults))
    return rows


def _settings_models() -> dict[str, type]:
    from flashmm import config as c
    from flashmm.feeds.settings import FeedConfig
    from flashmm.risk import RiskConfig
    from flashmm.strategy.avellaneda import AvellanedaParams
    from flashmm.strategy.base import StrategyConfig
    from flashmm.venues.sei.settings import SeiVenueSettings
    from flashmm.venues.sim import SimSettings

    return {
        "feed": FeedConfig, "venue.sim": SimSettings, "venue.sei": SeiVenueSettings,
        "strategy": StrategyConfig, "strategy.params": AvellanedaParams, "risk": RiskConfig,
        "ui": c.UIConfig, "logging": c.LoggingConfig, "control": c.ControlConfig,
        "api": c.ApiConfig, "alerts": c.AlertsConfig,
    }  # fmt: skip


def _model_of(section: str, key: str) -> tuple[str, str]:
    """(the model's name in _settings_models, the field) of a table key."""
    if section == "venue" and "." in key:
        sub, key = key.split(".", 1)
        return f"venue.{sub}", key
    return section, key


def test_the_settings_table_names_every_setting_and_its_numeric_defaults() -> None:
    """Every field of these sections is in the README's table (a Sei setting may be in
    docs/sei.md's table instead), and a number or a boolean the table gives as a
    default is the code's default."""
    models = _settings_models()
    named: dict[str, set[str]] = {name: set() for name in models}
    for section, keys, defaults in _settings_rows():
        for i, key in enumerate(keys):
            name, field = _model_of(section, key)
            if name not in models:
                continue
            fields = models[name].model_fields
            by_alias = {(f.alias or n): n for n, f in fields.items()}
            assert field in by_alias, f"README: {section} {key} is not a setting"
            named[name].add(by_alias[field])
            if len(defaults) != len(keys):
                continue  # a row whose defaults are prose
            want = fields[by_alias[field]].default
            got = defaults[i]
            if isinstance(want, bool):
                assert got in ("true", "false"), (section, key, got)
                assert (got == "true") is want, f"README: {section} {key} default {got}"
            elif isinstance(want, int | float) and re.fullmatch(r"-?[\d.]+", got):
                assert float(got) == want, f"README: {section} {key} default {got}, code {want}"
    sei_doc = (ROOT / "docs" / "sei.md").read_text().split("Settings (`SeiVenueSettings`")[1]
    named["venue.sei"] |= set(re.findall(r"`([a-z_]+)`", sei_doc.split("\n\n## ")[0]))
    for name, model in models.items():
        missing = sorted(set(model.model_fields) - named[name])
        # `webhooks[]` and `strategy.params` have rows of their own
        missing = [
            m for m in missing if (name, m) not in {("alerts", "webhooks"), ("strategy", "params")}
        ]
        assert not missing, f"README settings table: {name} lacks {missing}"


def test_the_api_block_of_the_operations_guide_shows_the_defaults() -> None:
    """docs/operations.md's `api:` example lists every API setting at its default
    (`enabled` aside: the example turns the API on)."""
    import yaml

    from flashmm.config import ApiConfig

    guide = (ROOT / "docs" / "operations.md").read_text()
    block = re.search(r"```yaml\n(api:\n.*?)```", guide, re.S)
    assert block is not None
    shown = yaml.safe_load(block.group(1))["api"]
    want = {n: f.default for n, f in ApiConfig.model_fields.items()}
    assert shown.pop("enabled") is True and want.pop("enabled") is False
    assert shown == want


def test_the_health_examples_have_the_documented_shape() -> None:
    """docs/operations.md's `/health` answers, without and with a token, have the keys of
    the OpenAPI document's Health: its required ones, and all of them."""
    from flashmm.api.openapi import openapi_document

    guide = (ROOT / "docs" / "operations.md").read_text()
    answers = re.findall(r"^\$ curl -s (.*?)/health\s.*\n(\{.*\})$", guide, re.M)
    assert len(answers) == 2, answers
    health = openapi_document()["components"]["schemas"]["Health"]
    for (curl, body), keys in zip(answers, (health["required"], health["properties"]), strict=True):
        assert ("Authorization" in curl) == (keys is health["properties"])
        assert set(json.loads(body)) == set(keys), curl
