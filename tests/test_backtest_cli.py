"""``flashmm backtest`` from the command line: outputs and one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kit.data import NEXO_23 as NEXO_20MIN

from flashmm.cli import main
from flashmm.cli.backtest import parse_ts
from flashmm.errors import UserInputError
from flashmm.paths import find_profile


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASHMM_CACHE_DIR", str(tmp_path / "cache"))


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["backtest", "--no-progress", *args])
    out, err = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else 0
    return code, out, err


def test_missing_file_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _out, err = run_cli(["--data", str(tmp_path / "nope.dat.gz")], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flashmm: error: data file not found")


def test_recording_without_a_snapshot_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A file that continues another (no depth snapshot of its own) alone would never
    sync a book: a backtest of it quoted nothing and reported zeros, silently."""
    import gzip

    with gzip.open(NEXO_20MIN, "rb") as fh:
        lines = fh.readlines()
    later = tmp_path / "nexousdt_continued.dat.gz"
    with gzip.open(later, "wb") as out:  # the same minutes without the REST snapshot
        out.writelines(ln for ln in lines if b'"lastUpdateId"' not in ln)
    code, _, err = run_cli(["--data", str(later)], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("flashmm: error: nexousdt_continued.dat.gz: no depth snapshot")
    assert "--data EARLIER --data THIS" in line
    # paper mode on the same file refuses it the same way
    from flashmm.config import load_config
    from flashmm.errors import DataError
    from flashmm.runner import RunOptions, build_feed

    with pytest.raises(DataError, match="no depth snapshot for nexousdt"):
        build_feed(load_config("paper"), RunOptions(data=[str(later)]))
    # behind the file that has the snapshot it is a continuation, and runs
    code, out, err = run_cli(["--data", str(NEXO_20MIN), "--data", str(later), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["fills"] > 0


def test_empty_range_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        [
            "--data",
            str(NEXO_20MIN),
            "--from",
            "2024-07-23T15:50:00Z",
            "--to",
            "2024-07-23T15:45:00Z",
        ],
        capsys,
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "empty time range" in err
    # a window outside the data
    code, _, err = run_cli(
        [
            "--data",
            str(NEXO_20MIN),
            "--from",
            "2024-07-25T00:00:00Z",
            "--to",
            "2024-07-25T01:00:00Z",
        ],
        capsys,
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no events between" in err


def test_unknown_param_is_the_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        ["--data", str(NEXO_20MIN), "--set", "strategy.params.gamma_typo=1"], capsys
    )
    assert code == 2
    (line,) = err.strip().splitlines()
    # blamed on --set, not on the shipped profile the user never wrote
    assert line.startswith("flashmm: error: --set: strategy.params.gamma_typo: unknown key")


def test_each_config_problem_names_its_origin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(
        find_profile("backtest").read_text().replace("risk:\n", "risk:\n  typo_in_file: 1\n")
    )
    code, _, err = run_cli(["--config", str(profile), "--set", "strategy.params.gamma=nan"], capsys)
    (line,) = err.strip().splitlines()
    assert code == 2 and line.startswith("flashmm: error: --set: strategy.params.gamma: must be")
    code, _, err = run_cli(["--config", str(profile), "--set", "risk.max_position_usdc=x"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2, lines
    assert any(ln.startswith(f"flashmm: error: {profile}: risk.typo_in_file:") for ln in lines)
    assert any(ln.startswith("flashmm: error: --set: risk.max_position_usdc:") for ln in lines)


def test_bad_timestamp_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["--from", "yesterday"], capsys)
    assert code == 2 and "--from" in err and len(err.strip().splitlines()) == 1


def test_json_and_out(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    code, out, _ = run_cli(
        [
            "--data",
            str(NEXO_20MIN),
            "--json",
            "--out",
            str(out_dir),
            "--from",
            "2024-07-23T15:45:00Z",
        ],
        capsys,
    )
    assert code == 0
    rep = json.loads(out)
    assert rep["position_limit_breaches"] == 0
    assert rep["events"] > 1000 and rep["data"]["warmup_events"] > 0
    assert rep["sim_start_ns"] >= parse_ts("2024-07-23T15:45:00Z", "--from")
    assert json.loads((out_dir / "report.json").read_text())["fills"] == rep["fills"]
    assert (out_dir / "fills.csv").is_file() and (out_dir / "plots.html").is_file()


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--data", str(NEXO_20MIN)], capsys)
    assert code == 0 and "P&L" in out and "markout" in out


def test_parse_ts_forms() -> None:
    ns = 1_721_750_000_000_000_000
    assert parse_ts(str(ns), "--from") == ns
    assert parse_ts(str(ns // 1000), "--from") == ns
    assert parse_ts(str(ns // 1_000_000_000), "--from") == ns
    assert parse_ts("2024-07-23T15:53:20Z", "--from") == ns
    assert parse_ts("2024-07-23 15:53:20", "--from") == ns
    with pytest.raises(UserInputError):
        parse_ts("soon", "--to")


def test_a_bad_value_is_blamed_on_the_sweep_file_or_compare_that_gave_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "bad.yaml"
    sweep.write_text(
        "base:\n  strategy.params.gamma_typo: 1\ngrid:\n  strategy.params.gamma: [0.1]\n"
    )
    code, _, err = run_cli(["--sweep", str(sweep)], capsys)
    assert code == 2 and err.startswith(f"flashmm: error: {sweep} base: strategy.params.gamma_typo")
    sweep.write_text("grid:\n  strategy.params.gamma: [abc]\n")
    code, _, err = run_cli(["--sweep", str(sweep)], capsys)
    assert code == 2 and err.startswith(f"flashmm: error: {sweep} grid: strategy.params.gamma:")
    code, _, err = run_cli(["--compare", "strategy.params.gamma_typo=1"], capsys)
    assert code == 2 and err.startswith("flashmm: error: --compare: strategy.params.gamma_typo")
    # a cross-field check of a section is blamed on the --set inside it
    code, _, err = run_cli(["--set", "strategy.params.max_spread_bps=1"], capsys)
    assert code == 2 and err.startswith("flashmm: error: --set: strategy.params: min_spread_bps")
