"""``--help`` is plain and complete; every error is one line in one format; config validate/show."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kit.cli import run_main as _run

from flashmm.cli import command
from flashmm.config import find_profile

ERROR = re.compile(r"^flashmm: error: \S.*$")


def _commands(cmd: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path, cmd)]
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        found += _commands(sub, (*path, name))
    return found


def test_every_option_has_a_description_and_a_plain_metavar() -> None:
    missing, typed = [], []
    for path, cmd in _commands(command()):
        for p in cmd.params:
            if p.name == "help":
                continue
            if not getattr(p, "help", None) and p.param_type_name == "option":
                missing.append(f"{' '.join(path)} {p.opts[0]}")
            if p.metavar and ("<" in p.metavar or "[str]" in p.metavar):
                typed.append(f"{' '.join(path)} {p.opts[0]}: {p.metavar}")
    assert missing == [] and typed == []


@pytest.mark.parametrize("argv", [[], ["run"], ["backtest"], ["chain", "taker"], ["feed", "serve"]])
def test_help_text_is_plain(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run([*argv, "--help"], capsys)
    assert code == 0 and out.startswith("Usage: flashmm")
    assert "<bool>" not in out and "<float>" not in out and "list[str]" not in out
    assert "╭" not in out  # no Rich panels: plain text that pipes and greps


def test_backtest_help_keeps_brackets_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _run(["backtest", "--help"], capsys)
    assert "(needs .[ray])" in out
    assert "--data FILE" in out and "--workers N" in out and "--set KEY=VALUE" in out
    _, out, _ = _run(["run", "--help"], capsys)
    assert "Default: paper." in out


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["run", "--nope"], 2),
        (["backtest", "--workers", "x"], 2),
        (["config", "validate", "/nonexistent/profile.yaml"], 2),
        (["backtest", "--data", "bundled:nothing"], 2),
        (["status", "--socket", "/nonexistent/flashmm.sock"], 1),
    ],
)
def test_errors_are_one_line_in_one_format(
    argv: list[str], code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    got, _, err = _run(argv, capsys)
    lines = err.strip().splitlines()
    assert got == code and len(lines) == 1 and ERROR.match(lines[0]), err


def test_usage_errors_name_the_help_to_read(capsys: pytest.CaptureFixture[str]) -> None:
    _, _, err = _run(["run", "--nope"], capsys)
    assert "--nope" in err and err.strip().endswith("(see 'flashmm run --help')")


def _profile(tmp_path: Path, **changes: Any) -> Path:
    raw = yaml.safe_load(find_profile("paper").read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_validate_checks_that_files_exist_and_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(["config", "validate", "paper", "--set", "model.enabled=true"], capsys)
    assert code == 0 and "files found; model loads" in out
    bad_model = tmp_path / "bad.onnx"
    bad_model.write_bytes(b"not a model")
    p = _profile(
        tmp_path,
        feed__files=["missing.dat.gz", "bundled:nexo"],
        model__path=str(bad_model),
        model__enabled=True,
    )
    code, _, err = _run(["config", "validate", str(p)], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2, err
    assert lines[0] == f"flashmm: error: {p}: feed.files[0]: file not found: missing.dat.gz"
    assert lines[1].startswith(f"flashmm: error: {p}: model.path: bad.onnx does not load")


def test_a_replay_profile_without_recordings_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """validate said OK and run refused only after its journal and control socket existed."""
    code, out, _ = _run(["config", "validate", "paper"], capsys)
    assert code == 0 and "files found; model off: the rule" in out
    code, out, _ = _run(["config", "validate", "paper", "--set", 'model.enabled="false"'], capsys)
    assert code == 0 and "model off: the rule" in out  # the settings read the text as off
    p = _profile(tmp_path, feed__files=[])
    code, _, err = _run(["config", "validate", str(p)], capsys)
    assert code == 2 and err.startswith(f"flashmm: error: {p}: feed.files: no recordings"), err
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(["run", "--config", str(p), "--headless", "--duration", "1"], capsys)
    assert code == 2 and "feed.files: no recordings configured" in err
    assert not (tmp_path / "var").exists()  # no journal, no socket


def test_show_prints_yaml_with_every_nested_default(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["config", "show", "paper"], capsys)
    assert code == 0
    data = yaml.safe_load(out)
    assert data["name"] == "paper"
    assert data["strategy"]["params"]["refresh_size_tolerance"] == 0.2  # not in the file
    assert data["venue"]["sim"]["queue_power"] == 3.0
    assert data["model"]["cooldown_s"] > 0 and data["risk"]["venue_error_limit"] == 5
    code, out, _ = _run(["config", "show", "backtest", "--json"], capsys)
    assert code == 0 and out.lstrip().startswith("{")


_HEAVY = ("numpy", "onnxruntime", "numba", "aiohttp", "websockets")


@pytest.mark.parametrize(
    ("args", "heavy"),
    [
        # `flashmm --help` stays instant: the profile models (pydantic), numpy, the model
        # runtimes and the network stacks load only inside the commands that need them
        (["--help"], (*_HEAVY, "pydantic", "yaml")),
        # `flashmm status` is what one types at 3 a.m.: the client side of the control
        # socket needs no event loop, no logger and no trading types
        (["status", "--socket", "/tmp/flashmm-no-such-bot.sock"], (*_HEAVY, "asyncio", "loguru")),
    ],
    ids=["help", "status"],
)
def test_cli_start_loads_no_heavy_module(args: list[str], heavy: tuple[str, ...]) -> None:
    code = (
        "import contextlib, io, sys\n"
        "from flashmm.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    try:\n"
        f"        main({args!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_version_flag_and_the_shipped_model_by_its_repository_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and out.startswith("flashmm ")
    # from another folder, the path the docs give finds the shipped model
    monkeypatch.chdir(tmp_path)
    args = ["model", "check", "models/flashmm-direction-1s.onnx", "--calls", "20", "--json"]
    code, out, err = _run(args, capsys)
    assert code == 0, err
    code, _, err = _run(["model", "check", "models/nope.onnx"], capsys)
    assert code == 2 and "model file not found: models/nope.onnx" in err
