"""``flashmm backtest --compare K=V``: baseline and variant, differences with intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kit.data import NEXO_23 as NEXO_20MIN

from flashmm.backtest.compare import diff_ci
from flashmm.cli import main


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASHMM_CACHE_DIR", str(tmp_path / "cache"))


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["backtest", "--no-progress", "--data", str(NEXO_20MIN), *args])
    out, err = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else 0
    return code, out, err


def test_compare_model_off_writes_both_reports_and_intervals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    code, stdout, _ = run_cli(
        ["--compare", "model.enabled=false", "--windows", "8", "--json", "--out", str(out)],
        capsys,
    )
    assert code == 0
    res = json.loads(stdout)
    assert res["variant"]["sets"] == ["model.enabled=false"] and res["windows"] == 8
    base = json.loads((out / "baseline" / "report.json").read_text())
    var = json.loads((out / "variant" / "report.json").read_text())
    assert json.loads((out / "compare.json").read_text()) == res
    assert (out / "variant" / "fills.csv").is_file()
    m = res["metrics"]
    assert set(m) == {
        "pnl_usdc",
        "markout_1s_bps",
        "markout_5s_bps",
        "markout_30s_bps",
        "abs_inventory_usdc",
    }
    assert m["pnl_usdc"]["baseline"] == base["pnl_usdc"]
    assert m["pnl_usdc"]["diff"] == pytest.approx(var["pnl_usdc"] - base["pnl_usdc"], abs=1e-5)
    assert m["markout_5s_bps"]["variant"] == var["markout_bps"]["5s"]
    for k, v in m.items():
        lo, hi = v["ci95"]
        assert lo <= v["diff"] <= hi, k  # the interval brackets the run's own difference
        assert v["significant"] == (lo > 0 or hi < 0)
    # deterministic: the same command gives the same comparison
    code, again, _ = run_cli(
        ["--compare", "model.enabled=false", "--windows", "8", "--json"], capsys
    )
    assert json.loads(again) == res


def test_compare_with_no_change_is_zero_and_table_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, stdout, _ = run_cli(["--compare", "model.enabled=true", "--to", "1721749800000"], capsys)
    assert code == 0
    assert "P&L (USDC)" in stdout and "markout 5 s" in stdout and "95 % CI" in stdout


def test_bad_compare_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for args, what in (
        (["--compare", "model.enabled"], "--compare: expected KEY=VALUE"),
        (["--compare", "risk.no_such_key=1"], "no_such_key"),
        (["--compare", "model.enabled=false", "--windows", "1"], "--windows"),
    ):
        code, _, err = run_cli(args, capsys)
        assert code == 2, args
        lines = err.strip().splitlines()
        assert len(lines) == 1 and what in lines[0], lines


def test_diff_ci_pnl_sums_and_markouts_average() -> None:
    n = 10
    ones = np.ones(n)
    base = (np.full(n, 1.0), ones)
    same = diff_ci("pnl_usdc", base, base)
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0] and same["significant"] is False
    better = diff_ci("pnl_usdc", base, (np.full(n, 1.5) + np.linspace(-0.1, 0.1, n), ones))
    assert better["diff"] == pytest.approx(5.0) and better["significant"] is True
    # markouts: fill-weighted means, windows without fills left out
    sb, cb = np.array([2.0, 0.0, 6.0]), np.array([1.0, 0.0, 3.0])
    sv, cv = np.array([4.0, 0.0, 3.0]), np.array([2.0, 0.0, 3.0])
    r = diff_ci("markout_5s_bps", (sb, cb), (sv, cv))
    assert r["diff"] == pytest.approx(7 / 5 - 8 / 4)
    assert r["window_diffs"]["n"] == 2


def test_t_quantile_matches_the_table_and_needs_no_scipy() -> None:
    """The window-difference interval uses FlashMM's own Student's t (a plain install
    has no SciPy: ``--compare`` raised ModuleNotFoundError there)."""
    import subprocess
    import sys

    from flashmm.backtest.compare import t_cdf, t_quantile

    table = {1: 12.7062047, 2: 4.3026527, 3: 3.1824463, 5: 2.5705818, 10: 2.2281389}
    table |= {30: 2.0422725, 100: 1.9839715}
    for df, q in table.items():
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-6)
        assert t_quantile(0.025, df) == pytest.approx(-q, abs=1e-6)
        assert t_cdf(q, df) == pytest.approx(0.975, abs=1e-7)  # q has 7 decimals
    assert t_cdf(0.0, 7) == 0.5
    # past T_EXPANSION_DF the normal expansion: the table and the bisection it replaces
    table = {201: 1.9718365, 250: 1.9694984, 1000: 1.9623391, 10**6: 1.9599663}
    for df, q in table.items():
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-6)
    for df in (201, 400):
        for p in (0.001, 0.05, 0.3, 0.99):
            assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-10)
    code = (
        "import sys, numpy as np\n"
        "from flashmm.backtest.compare import diff_ci\n"
        "a = (np.array([1.0, 2.0, 3.0]), np.array([1, 1, 1]))\n"
        "b = (np.array([2.0, 2.5, 4.5]), np.array([1, 1, 1]))\n"
        "r = diff_ci('pnl_usdc', a, b)\n"
        "assert r['window_diffs']['ci95_t'] is not None\n"
        "assert 'scipy' not in sys.modules, 'scipy imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_table_is_not_wrapped_when_piped(tmp_path: Path) -> None:
    """Piped, Rich would print 80 columns and wrap the intervals over two lines."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["FLASHMM_CACHE_DIR"] = str(tmp_path / "cache")
    args = ["backtest", "--no-progress", "--data", str(NEXO_20MIN), "--windows", "4"]
    r = subprocess.run(
        [sys.executable, "-m", "flashmm", *args, "--compare", "strategy.params.gamma=0.2"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = [ln for ln in r.stdout.splitlines() if "P&L (USDC)" in ln]
    assert "[" in row and "]" in row  # the 95 % CI on one line
    (row,) = [ln for ln in r.stdout.splitlines() if "mean |inventory| (USDC)" in ln]
