"""Parameter sweeps: grids, worker processes, Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
from kit.data import NEXO_23 as NEXO_20MIN

from flashmm.backtest.report import TIMING_KEYS
from flashmm.backtest.sweep import load_sweep, make_tasks, run_sweep
from flashmm.errors import ConfigError, UserInputError

ROOT = Path(__file__).resolve().parents[1]


def _spec(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sweep.yaml"
    p.write_text(text)
    return p


def test_grid_expansion(tmp_path: Path) -> None:
    spec = load_sweep(
        _spec(
            tmp_path,
            "base:\n  risk.kill_switch_enabled: false\n"
            "grid:\n  strategy.params.gamma: [0.1, 0.5]\n  strategy.params.levels: [1, 2, 3]\n",
        )
    )
    assert spec.base == ["risk.kill_switch_enabled=false"]
    pts = spec.points()
    assert len(pts) == 6 and pts[0] == {"strategy.params.gamma": 0.1, "strategy.params.levels": 1}


def test_bad_sweep_files(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="not found"):
        load_sweep(tmp_path / "none.yaml")
    with pytest.raises(UserInputError, match="grid"):
        load_sweep(_spec(tmp_path, "base: {}\n"))
    with pytest.raises(UserInputError, match="unknown key"):
        load_sweep(_spec(tmp_path, "grid: {a: [1]}\nextra: 1\n"))
    spec = load_sweep(_spec(tmp_path, "grid:\n  strategy.params.no_such_param: [1]\n"))
    with pytest.raises(ConfigError):
        make_tasks(spec, "configs/backtest.yaml", [], [str(NEXO_20MIN)], None, None, tmp_path)


def test_two_parameter_sets_in_processes(tmp_path: Path) -> None:
    spec = load_sweep(_spec(tmp_path, "grid:\n  strategy.params.min_spread_bps: [4, 40]\n"))
    tasks = make_tasks(spec, "configs/backtest.yaml", [], [str(NEXO_20MIN)], None, None, tmp_path)
    results = run_sweep(tasks, workers=2)
    assert [r["rank"] for r in results] == [1, 2]
    pnls = [r["report"]["pnl_usdc"] for r in results]
    assert pnls == sorted(pnls, reverse=True)
    by_spread = {r["params"]["strategy.params.min_spread_bps"]: r["report"] for r in results}
    assert set(by_spread) == {4, 40}
    # a wider minimum spread quotes wider
    assert by_spread[40]["avg_quoted_spread_bps"] > by_spread[4]["avg_quoted_spread_bps"]
    assert all(r["report"]["position_limit_breaches"] == 0 for r in results)
    # the same point run alone gives the same report (deterministic across processes)
    alone = run_sweep(tasks[:1], workers=1)[0]["report"]
    par = next(r["report"] for r in results if r["index"] == 0)
    timing = TIMING_KEYS | {"data"}
    assert {k: v for k, v in alone.items() if k not in timing} == {
        k: v for k, v in par.items() if k not in timing
    }


def test_sweep_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from flashmm.cli import main

    monkeypatch.setenv("FLASHMM_CACHE_DIR", str(tmp_path / "cache"))
    sweep = _spec(tmp_path, "grid:\n  strategy.params.gamma: [0.1, 0.5]\n")
    with pytest.raises(SystemExit) as exc:
        main(["backtest", "--no-progress", "--data", str(NEXO_20MIN), "--sweep", str(sweep), "--json",
              "--out", str(tmp_path / "o")])  # fmt: skip
    assert exc.value.code in (0, None)
    rows = json.loads(capsys.readouterr().out)["sweep"]
    assert [r["rank"] for r in rows] == [1, 2]
    assert (tmp_path / "o" / "sweep.json").is_file() and (tmp_path / "o" / "sweep.csv").is_file()


@pytest.mark.slow
def test_ray_local(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    spec = load_sweep(_spec(tmp_path, "grid:\n  strategy.params.min_spread_bps: [4, 40]\n"))
    tasks = make_tasks(
        spec, str(ROOT / "configs/backtest.yaml"), [], [str(NEXO_20MIN)], None, None, tmp_path
    )
    local = run_sweep(tasks, workers=2)
    ray_res = run_sweep(tasks, workers=2, ray_address="local")
    assert [r["params"] for r in ray_res] == [r["params"] for r in local]
    assert [r["report"]["pnl_usdc"] for r in ray_res] == [r["report"]["pnl_usdc"] for r in local]
