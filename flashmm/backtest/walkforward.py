"""Walk-forward over a sweep: choose a grid point on the past, trade it on the next window.

A sweep ranked on all the data tells how well the best point fitted that data,
not how it would have done live. ``flashmm backtest --sweep GRID --walk-forward N``
cuts the time span (the data's, or ``--from``/``--to``) into N + 1 equal parts and
backtests every grid point and the profile as it is (the sweep's ``base`` applied)
on every part; each part starts flat, with the book and features warmed on the data
before it. Window i (1..N) is traded by the candidate with the best summed P&L on
parts 0..i-1 (ties: the profile, then the earlier grid point), so no window's
figure comes from data its choice saw. The result gives per window the choice, its
P&L next to the profile's and to the best point in hindsight, and over all windows
the walk-forward P&L against the profile's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from flashmm.backtest.sweep import SweepSpec, Task, make_tasks, params_label
from flashmm.errors import UserInputError

PROFILE = "profile"  # the candidate without grid values


def cut(lo_ns: int, hi_ns: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` equal, adjacent time ranges covering ``[lo_ns, hi_ns]``."""
    if parts < 2:
        raise UserInputError(f"--walk-forward: needs at least 1 window, was {parts - 1}")
    step = (hi_ns - lo_ns) / parts
    edges = [lo_ns + round(step * k) for k in range(parts)] + [hi_ns]
    return [(edges[k], edges[k + 1] - (1 if k + 1 < parts else 0)) for k in range(parts)]


def make_walk_forward_tasks(
    spec: SweepSpec,
    config: str | None,
    sets: Sequence[str],
    files: Sequence[str],
    parts: Sequence[tuple[int, int]],
) -> list[Task]:
    """One task per part and candidate (the profile first, then the grid points);
    ``index = part * candidates + candidate``."""
    grid = make_tasks(spec, config, sets, files, None, None, None)
    profile = Task(0, config, (*spec.base, *sets), {}, tuple(files), None, None, None)
    candidates = [profile, *grid]
    n = len(candidates)
    return [
        replace(t, index=k * n + j, from_ns=lo, to_ns=hi)
        for k, (lo, hi) in enumerate(parts)
        for j, t in enumerate(candidates)
    ]


def _label(params: dict[str, Any]) -> str:
    return params_label(params) if params else PROFILE


def walk_forward(
    results: Sequence[dict[str, Any]], parts: Sequence[tuple[int, int]]
) -> dict[str, Any]:
    """The walk-forward figures from every (part, candidate) result of the tasks above."""
    n = len(results) // len(parts)
    pnl = [[0.0] * n for _ in parts]
    fills = [[0] * n for _ in parts]
    params: list[dict[str, Any]] = [{} for _ in range(n)]
    for r in results:
        k, j = divmod(int(r["index"]), n)
        pnl[k][j] = float(r["report"].get("pnl_usdc") or 0.0)
        fills[k][j] = int(r["report"].get("fills") or 0)
        params[j] = r["params"]
    windows: list[dict[str, Any]] = []
    for k in range(1, len(parts)):
        past = [sum(pnl[p][j] for p in range(k)) for j in range(n)]
        chosen = max(range(n), key=lambda j: (past[j], -j))
        best = max(range(n), key=lambda j: (pnl[k][j], -j))
        windows.append(
            {
                "window": k,
                "from_ns": parts[k][0],
                "to_ns": parts[k][1],
                "chosen": _label(params[chosen]),
                "chosen_params": params[chosen],
                "chosen_past_pnl_usdc": round(past[chosen], 6),
                "pnl_usdc": round(pnl[k][chosen], 6),
                "fills": fills[k][chosen],
                "profile_pnl_usdc": round(pnl[k][0], 6),
                "profile_fills": fills[k][0],
                "best": _label(params[best]),
                "best_pnl_usdc": round(pnl[k][best], 6),
            }
        )
    total = sum(w["pnl_usdc"] for w in windows)
    profile_total = sum(w["profile_pnl_usdc"] for w in windows)
    return {
        "parts": len(parts),
        "candidates": [_label(p) for p in params],
        "windows": windows,
        "walk_forward_pnl_usdc": round(total, 6),
        "profile_pnl_usdc": round(profile_total, 6),
        "hindsight_pnl_usdc": round(sum(w["best_pnl_usdc"] for w in windows), 6),
        "windows_ahead_of_profile": sum(w["pnl_usdc"] > w["profile_pnl_usdc"] for w in windows),
        "windows_behind_profile": sum(w["pnl_usdc"] < w["profile_pnl_usdc"] for w in windows),
        "pnl_by_part": [[round(x, 6) for x in row] for row in pnl],
    }


def walk_forward_table(result: dict[str, Any]) -> Any:
    from datetime import UTC, datetime

    from rich.table import Table

    def ts(ns: int) -> str:
        return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%m-%d %H:%M")

    t = Table(
        title="Walk-forward: each window traded by the best candidate on the windows before it",
        title_justify="left",
        header_style="bold",
        caption=(
            f"chosen ahead of the profile in {result['windows_ahead_of_profile']} window(s), "
            f"behind in {result['windows_behind_profile']}; best in hindsight: the best "
            "candidate of that window, known only afterwards"
        ),
        caption_justify="left",
    )
    left = ("from (UTC)", "chosen on the past")
    for col in ("window", *left, "P&L", "profile", "hindsight"):
        t.add_column(col, justify="left" if col in left else "right")
    for w in result["windows"]:
        t.add_row(
            str(w["window"]),
            ts(w["from_ns"]),
            w["chosen"],
            f"{w['pnl_usdc']:+,.4f}",
            f"{w['profile_pnl_usdc']:+,.4f}",
            f"{w['best_pnl_usdc']:+,.4f}",
        )
    t.add_row(
        "all",
        "",
        "",
        f"{result['walk_forward_pnl_usdc']:+,.4f}",
        f"{result['profile_pnl_usdc']:+,.4f}",
        f"{result['hindsight_pnl_usdc']:+,.4f}",
        style="bold",
    )
    return t


__all__ = ["cut", "make_walk_forward_tasks", "walk_forward", "walk_forward_table"]
