"""``flashmm backtest --compare K=V``: a baseline and a variant on the same data.

Both runs use the same profile, ``--set`` pairs, data and window; the variant
adds the ``--compare`` pairs. Backtests are deterministic, so the difference
is the effect of the change alone. To say whether it is more than noise, the
simulated time is cut into ``windows`` equal windows; in each one the P&L
made, the 1/5/30 s markouts of its fills and the |inventory| samples are
summed for both runs. The difference (variant − baseline) over the whole
run gets a 95 % interval from a paired bootstrap over the windows (windows
drawn with replacement, the same draw for both runs, the metric recomputed:
P&L summed, markouts and inventory averaged; seeded, so reproducible).
An interval that excludes 0 is flagged ``significant``. Student's t over the
per-window differences is given too (``window_diffs``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flashmm.backtest.report import MARKOUT_HORIZONS_S, FillTable, equity_curve

if TYPE_CHECKING:
    from flashmm.backtest.recorder import BacktestResult
    from flashmm.feeds.cache import CachedFeed

BOOTSTRAP_SAMPLES = 4000
METRICS = ("pnl_usdc", "markout_1s_bps", "markout_5s_bps", "markout_30s_bps", "abs_inventory_usdc")


def t_cdf(t: float, df: int) -> float:
    """Student's t distribution function for an integer ``df`` >= 1.

    The closed form for integer degrees of freedom (Abramowitz & Stegun
    26.7.3/26.7.4): with ``θ = atan(t/√df)``, a finite series in cos²θ. Exact to
    rounding; no SciPy needed on a plain install.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    term = 1.0
    total = 1.0
    if df % 2:  # odd: A = (2/π)(θ + sinθ cosθ (1 + 2/3 c² + 2·4/(3·5) c⁴ + ...))
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        a = (2 / math.pi) * (theta + (math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0))
    else:  # even: A = sinθ (1 + 1/2 c² + 1·3/(2·4) c⁴ + ...)
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        a = math.sin(theta) * total
    return 0.5 + 0.5 * a  # A(t) is P(|T| <= |t|) signed with t


#: above this many degrees of freedom the quantile comes from the normal one's expansion
#: (``t_cdf`` costs O(df) and bisection calls it ~50 times)
T_EXPANSION_DF = 200


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with integer ``df``: bisection on ``t_cdf``, or
    for ``df`` > ``T_EXPANSION_DF`` the expansion around the normal quantile
    (Abramowitz & Stegun 26.7.5, four terms; error below 1e-9 there)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if df > T_EXPANSION_DF:
        from statistics import NormalDist

        x = NormalDist().inv_cdf(p)
        x2 = x * x
        g1 = (x2 + 1) * x / 4
        g2 = ((5 * x2 + 16) * x2 + 3) * x / 96
        g3 = (((3 * x2 + 19) * x2 + 17) * x2 - 15) * x / 384
        g4 = ((((79 * x2 + 776) * x2 + 1482) * x2 - 1920) * x2 - 945) * x / 92160
        return x + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > p:
        lo *= 2
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


def window_edges(start_ns: int, end_ns: int, windows: int) -> np.ndarray:
    """``windows + 1`` edges cutting [start, end] into equal windows."""
    return np.linspace(start_ns, end_ns, windows + 1).astype(np.int64)


def window_sums(res: BacktestResult, edges: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per window and metric, ``(sum, count)``: P&L made (count 1); the markouts of the
    window's fills (count: fills whose horizon ends in the data); |inventory| samples."""
    rec = res.recorder
    n = len(edges) - 1
    ones = np.ones(n)
    t, e = equity_curve(rec, res.engine.now_ns, res.report["pnl_usdc"])
    # equity at each edge: the last sample at or before it (0 before the first)
    idx = np.searchsorted(t, edges, side="right") - 1
    eq = np.where(idx >= 0, e[np.clip(idx, 0, None)], 0.0)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {"pnl_usdc": (np.diff(eq), ones)}
    ft = FillTable(rec.fills, rec, int(res.report["sim_end_ns"]))
    which = np.clip(np.searchsorted(edges, ft.ts, side="right") - 1, 0, n - 1)
    for h in MARKOUT_HORIZONS_S:
        v = ft.markouts[h]
        ok = ~np.isnan(v)
        out[f"markout_{h:g}s_bps"] = (
            np.bincount(which[ok], weights=v[ok], minlength=n).astype(float),
            np.bincount(which[ok], minlength=n).astype(float),
        )
    inv = np.zeros(len(rec.s_t))
    for tr in rec.tracks.values():
        inv = inv + np.abs(np.asarray(tr.s_inv, dtype=float))
    st = np.asarray(rec.s_t, dtype=np.int64)
    w = np.searchsorted(edges, st, side="right") - 1
    ok = (w >= 0) & (w < n)
    out["abs_inventory_usdc"] = (
        np.bincount(w[ok], weights=inv[ok], minlength=n).astype(float),
        np.bincount(w[ok], minlength=n).astype(float),
    )
    return out


def _stat(k: str, s: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The metric over a set of windows (last axis): P&L adds up, the others are means."""
    if k == "pnl_usdc":
        return np.asarray(s.sum(axis=-1))
    cnt = c.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, s.sum(axis=-1) / np.where(cnt > 0, cnt, 1), np.nan)


def diff_ci(
    k: str,
    base: tuple[np.ndarray, np.ndarray],
    var: tuple[np.ndarray, np.ndarray],
    seed: int = 0,
) -> dict[str, Any]:
    """Variant − baseline over the whole run, with a 95 % interval from a paired
    bootstrap over windows (seeded), and Student's t over the per-window differences."""
    (sb, cb), (sv, cv) = base, var
    n = len(sb)
    diff = float(_stat(k, sv, cv) - _stat(k, sb, cb))
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n, size=(BOOTSTRAP_SAMPLES, n))
    boot = _stat(k, sv[pick], cv[pick]) - _stat(k, sb[pick], cb[pick])
    boot = boot[~np.isnan(boot)]
    ci = [float(x) for x in np.percentile(boot, [2.5, 97.5])] if len(boot) else None
    # per-window differences (windows where both runs have the metric)
    if k == "pnl_usdc":
        d = sv - sb
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(
                (cb > 0) & (cv > 0),
                sv / np.where(cv > 0, cv, 1) - sb / np.where(cb > 0, cb, 1),
                np.nan,
            )
    d = d[~np.isnan(d)]
    t_ci = None
    if len(d) >= 2:
        half = t_quantile(0.975, len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d))
        m = float(d.mean())
        t_ci = [m - half, m + half]
    return {
        "diff": diff if math.isfinite(diff) else None,
        "ci95": ci,
        "significant": None if ci is None else bool(ci[0] > 0 or ci[1] < 0),
        "window_diffs": {
            "n": len(d),
            "mean": float(d.mean()) if len(d) else None,
            "ci95_t": t_ci,
        },
    }


def _totals(rep: dict[str, Any], win: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    mk = rep.get("markout_bps", {})
    s, c = win["abs_inventory_usdc"]
    return {
        "pnl_usdc": rep["pnl_usdc"],
        "markout_1s_bps": mk.get("1s"),
        "markout_5s_bps": mk.get("5s"),
        "markout_30s_bps": mk.get("30s"),
        "abs_inventory_usdc": float(s.sum() / c.sum()) if c.sum() else None,
    }


def compare_results(
    base: BacktestResult,
    variant: BacktestResult,
    windows: int,
    base_sets: Sequence[str],
    variant_sets: Sequence[str],
) -> dict[str, Any]:
    """The comparison: totals of both runs, and per metric the difference with its CI."""
    start = min(base.report["sim_start_ns"], variant.report["sim_start_ns"])
    end = max(base.report["sim_end_ns"], variant.report["sim_end_ns"])
    edges = window_edges(start, end, windows)
    wb, wv = window_sums(base, edges), window_sums(variant, edges)
    tb, tv = _totals(base.report, wb), _totals(variant.report, wv)
    metrics: dict[str, Any] = {}
    for k in METRICS:
        r = diff_ci(k, wb[k], wv[k])
        wd = r["window_diffs"]
        metrics[k] = {
            "baseline": _round(tb[k]),
            "variant": _round(tv[k]),
            "diff": _round(r["diff"]),
            "ci95": _round(r["ci95"]),
            "significant": r["significant"],
            "window_diffs": {
                "n": wd["n"],
                "mean": _round(wd["mean"]),
                "ci95_t": _round(wd["ci95_t"]),
            },
        }
    return {
        "baseline": {"sets": list(base_sets), "fills": base.report["fills"]},
        "variant": {"sets": list(variant_sets), "fills": variant.report["fills"]},
        "windows": windows,
        "window_s": round((end - start) / windows / 1e9, 3),
        "metrics": metrics,
    }


def _round(v: Any) -> Any:
    """A float to 6 places (None when not finite), an interval's ends to 6 places."""
    if isinstance(v, list):
        return [round(x, 6) for x in v]
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else None
    return v


def run_compare(
    config: str,
    sets: Sequence[str],
    variant: Sequence[str],
    files: Sequence[str],
    feed: CachedFeed,
    from_ns: int | None,
    to_ns: int | None,
    windows: int,
    out: Path | None,
) -> dict[str, Any]:
    """Run both backtests on one feed, compare, and write both reports and ``compare.json``."""
    from flashmm.backtest.outputs import write_outputs
    from flashmm.backtest.runner import run_backtest
    from flashmm.config import load_config

    base_sets = list(sets)
    var_sets = [*sets, *variant]
    base_cfg = load_config(config, base_sets)
    # a bad --compare pair fails before any run, named as --compare
    var_cfg = load_config(config, var_sets, ["--set"] * len(sets) + ["--compare"] * len(variant))
    base = run_backtest(base_cfg, files, from_ns=from_ns, to_ns=to_ns, feed=feed)
    var = run_backtest(var_cfg, files, from_ns=from_ns, to_ns=to_ns, feed=feed)
    result = compare_results(base, var, windows, base_sets, var_sets)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_outputs(base, out / "baseline")
        write_outputs(var, out / "variant")
        (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


LABELS = {
    "pnl_usdc": "P&L (USDC)",
    "markout_1s_bps": "markout 1 s (bps)",
    "markout_5s_bps": "markout 5 s (bps)",
    "markout_30s_bps": "markout 30 s (bps)",
    "abs_inventory_usdc": "mean |inventory| (USDC)",
}


def compare_table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    change = " ".join(result["variant"]["sets"][len(result["baseline"]["sets"]) :])
    t = Table(
        title=f"{change} vs baseline: {result['windows']} windows of {result['window_s']:g} s",
        title_justify="left",
        header_style="bold",
    )
    for col in ("", "baseline", "variant", "diff", "95 % CI", "n", "significant"):
        t.add_column(col, justify="right" if col else "left")

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:+.3f}"

    for k, m in result["metrics"].items():
        ci = m["ci95"]
        sig = m["significant"]
        t.add_row(
            LABELS.get(k, k),
            f(m["baseline"]),
            f(m["variant"]),
            f(m["diff"]),
            "-" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]",
            str(m["window_diffs"]["n"]),
            "-" if sig is None else ("yes" if sig else "no"),
        )
    return t


__all__ = ["compare_results", "compare_table", "diff_ci", "run_compare", "window_sums"]
