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


def test_walk_forward_cut_and_choice() -> None:
    from flashmm.backtest.walkforward import cut, walk_forward

    parts = cut(0, 999, 3)
    assert parts == [(0, 332), (333, 665), (666, 999)]  # adjacent, covering, no overlap
    # candidates: the profile, then two grid points; P&L per part
    pnl = [[1.0, 3.0, 0.0], [2.0, -1.0, 2.0], [1.0, 5.0, 0.5]]
    params: list[dict[str, float]] = [{}, {"a.b": 1}, {"a.b": 2}]
    results = [
        {"index": k * 3 + j, "params": params[j], "report": {"pnl_usdc": pnl[k][j], "fills": 1}}
        for k in range(3)
        for j in range(3)
    ]
    r = walk_forward(results[::-1], parts)  # the order results come back in does not matter
    w1, w2 = r["windows"]
    # window 1 by part 0: b=1 earned most (3.0); window 2 by parts 0-1: the profile
    # earned 3.0, b=1 and b=2 2.0 each
    assert (w1["chosen"], w1["pnl_usdc"], w1["profile_pnl_usdc"]) == ("b=1", -1.0, 2.0)
    assert (w2["chosen"], w2["pnl_usdc"], w2["best"]) == ("profile", 1.0, "b=1")
    assert r["walk_forward_pnl_usdc"] == 0.0 and r["profile_pnl_usdc"] == 3.0
    assert r["hindsight_pnl_usdc"] == 7.0
    assert (r["windows_ahead_of_profile"], r["windows_behind_profile"]) == (0, 1)
    # a tie on the past goes to the profile
    tie = [dict(x, report={"pnl_usdc": 1.0, "fills": 0}) for x in results]
    assert walk_forward(tie, parts)["windows"][0]["chosen"] == "profile"


def test_walk_forward_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from flashmm.cli import main

    monkeypatch.setenv("FLASHMM_CACHE_DIR", str(tmp_path / "cache"))
    sweep = _spec(tmp_path, "grid:\n  strategy.params.min_spread_bps: [4, 40]\n")
    with pytest.raises(SystemExit) as exc:
        main(["backtest", "--no-progress", "--data", str(NEXO_20MIN), "--sweep", str(sweep),
              "--walk-forward", "2", "--workers", "1", "--json", "--out", str(tmp_path / "o")])  # fmt: skip
    assert exc.value.code in (0, None)
    r = json.loads(capsys.readouterr().out)["walk_forward"]
    assert r["parts"] == 3 and [w["window"] for w in r["windows"]] == [1, 2]
    assert r["candidates"] == ["profile", "min_spread_bps=4", "min_spread_bps=40"]
    # the profile's own min_spread_bps is 4: the same backtest, the same P&L in every part
    assert all(row[0] == row[1] for row in r["pnl_by_part"])
    assert (tmp_path / "o" / "walk_forward.json").is_file()
    # --walk-forward chooses among a grid: without --sweep it is a one-line error
    with pytest.raises(SystemExit) as exc:
        main(["backtest", "--no-progress", "--data", str(NEXO_20MIN), "--walk-forward", "2"])
    assert exc.value.code == 2
    assert "--walk-forward: needs --sweep" in capsys.readouterr().err


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
