"""Parameter sweeps: one backtest per point of a grid, in parallel.

A sweep file (YAML)::

    base:                       # optional: --set overrides for every run
      risk.kill_switch_enabled: false
    grid:                       # every combination of these values is run
      strategy.params.gamma: [0.1, 0.5]
      strategy.params.min_spread_bps: [4, 8]

Runs go to a :class:`concurrent.futures.ProcessPoolExecutor` (``workers``
processes) or, with ``ray_address`` (``"local"`` starts a local Ray), to Ray
remote tasks. Every run reads the same cached arrays (converted once, before
the runs start) and returns its report without the config; the results are
ranked by P&L.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flashmm.errors import UserInputError

SUMMARY_KEYS = (
    "pnl_usdc",
    "pnl_spread_usdc",
    "pnl_inventory_usdc",
    "fees_usdc",
    "sharpe",
    "fills",
    "fill_ratio",
    "quote_uptime",
    "max_abs_inventory_usdc",
    "max_drawdown_usdc",
    "position_limit_breaches",
    "markout_bps",
    "state",
    "events",
    "wall_s",
)


@dataclass(frozen=True)
class SweepSpec:
    base: list[str]
    grid: dict[str, list[Any]]
    #: the sweep file, to name it when one of its values is a bad config value
    path: str = "the sweep file"

    def points(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        return [
            dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.grid.values())
        ]


def _as_set(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"


def load_sweep(path: str | Path) -> SweepSpec:
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"sweep file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise UserInputError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("grid"), dict) or not raw["grid"]:
        raise UserInputError(
            f"{p}: expected a mapping with a non-empty 'grid' (see sweeps/example.yaml)"
        )
    unknown = sorted(set(raw) - {"base", "grid"})
    if unknown:
        raise UserInputError(f"{p}: unknown key(s) {', '.join(unknown)} (allowed: base, grid)")
    grid: dict[str, list[Any]] = {}
    for k, v in raw["grid"].items():
        vals = v if isinstance(v, list) else [v]
        if not vals:
            raise UserInputError(f"{p}: grid.{k}: empty list of values")
        grid[str(k)] = vals
    base_raw = raw.get("base") or {}
    if isinstance(base_raw, dict):
        base = [_as_set(str(k), v) for k, v in base_raw.items()]
    elif isinstance(base_raw, list):
        base = [str(x) for x in base_raw]
    else:
        raise UserInputError(f"{p}: base: expected a mapping of key: value")
    return SweepSpec(base, grid, str(p))


@dataclass(frozen=True)
class Task:
    index: int
    config: str | None
    sets: tuple[str, ...]
    params: dict[str, Any]
    files: tuple[str, ...]
    from_ns: int | None
    to_ns: int | None
    cache_dir: str | None


def run_task(task: Task) -> dict[str, Any]:
    """One sweep point (runs in a worker process or a Ray task)."""
    from loguru import logger

    from flashmm.backtest.runner import run_backtest
    from flashmm.config import load_config

    logger.remove()  # workers stay quiet; the parent reports
    cfg = load_config(task.config, list(task.sets))
    res = run_backtest(
        cfg,
        list(task.files),
        from_ns=task.from_ns,
        to_ns=task.to_ns,
        cache_dir=Path(task.cache_dir) if task.cache_dir else None,
    )
    rep = {k: v for k, v in res.report.items() if k != "config"}
    return {"index": task.index, "params": task.params, "sets": list(task.sets), "report": rep}


def make_tasks(
    spec: SweepSpec,
    config: str | None,
    sets: Sequence[str],
    files: Sequence[str],
    from_ns: int | None,
    to_ns: int | None,
    cache_dir: Path | None,
) -> list[Task]:
    """Tasks for every grid point; each config is validated here (bad keys fail before any run)."""
    from flashmm.config import load_config

    tasks = []
    for i, point in enumerate(spec.points()):
        point_sets = tuple([*spec.base, *sets, *(_as_set(k, v) for k, v in point.items())])
        origins = [f"{spec.path} base"] * len(spec.base) + ["--set"] * len(sets)
        origins += [f"{spec.path} grid"] * len(point)
        load_config(config, list(point_sets), origins)  # raises ConfigError (exit 2)
        tasks.append(
            Task(
                i,
                config,
                point_sets,
                point,
                tuple(files),
                from_ns,
                to_ns,
                str(cache_dir) if cache_dir else None,
            )
        )
    return tasks


def run_sweep(
    tasks: Sequence[Task],
    workers: int = 2,
    ray_address: str | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every task; results ranked by P&L (best first)."""
    results: list[dict[str, Any]] = []
    for r in _results(tasks, workers, ray_address):
        results.append(r)
        if on_done:
            on_done(r)
    return rank(results)


def _results(
    tasks: Sequence[Task], workers: int, ray_address: str | None
) -> Iterator[dict[str, Any]]:
    """Each task's result as soon as it is done."""
    if ray_address:
        yield from _run_ray(tasks, ray_address, workers)
    elif workers <= 1 or len(tasks) == 1:
        yield from (run_task(t) for t in tasks)
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            futs = [pool.submit(run_task, t) for t in tasks]
            yield from (f.result() for f in as_completed(futs))


def rank(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(r: dict[str, Any]) -> tuple[float, int]:
        pnl = r["report"].get("pnl_usdc")
        return (-(pnl if pnl is not None else float("-inf")), r["index"])

    out = sorted(results, key=key)
    for i, r in enumerate(out, 1):
        r["rank"] = i
    return out


def _run_ray(tasks: Sequence[Task], address: str, workers: int) -> Iterator[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise UserInputError("--ray needs Ray: pip install 'flashmm[ray]'") from None
    started = False
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(run_task)
        pending = [remote.remote(t) for t in tasks]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield from (ray.get(ref) for ref in done)
    finally:
        if started and os.environ.get("FLASHMM_RAY_KEEP") != "1":
            ray.shutdown()


def params_label(params: dict[str, Any]) -> str:
    """A grid point as ``gamma=0.1, min_spread_bps=4`` (the last part of each key)."""
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in params.items())


def sweep_table(results: Sequence[dict[str, Any]]) -> Any:
    from rich.table import Table

    t = Table(title="Sweep (ranked by P&L)", title_justify="left", header_style="bold")
    cols = ("#", "params", "P&L", "spread", "inventory", "Sharpe", "fills", "max |inv|")
    for col in (*cols, "max DD", "uptime", "state"):
        t.add_column(col, justify="left" if col in ("params", "state") else "right")

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else fmt.format(v)

    for r in results:
        rep = r["report"]
        params = params_label(r["params"])
        t.add_row(
            str(r["rank"]),
            params,
            f(rep.get("pnl_usdc"), "{:+,.4f}"),
            f(rep.get("pnl_spread_usdc"), "{:+,.4f}"),
            f(rep.get("pnl_inventory_usdc"), "{:+,.4f}"),
            f(rep.get("sharpe"), "{:.2f}"),
            f(rep.get("fills"), "{:,}"),
            f(rep.get("max_abs_inventory_usdc"), "{:,.2f}"),
            f(rep.get("max_drawdown_usdc"), "{:,.4f}"),
            f(rep.get("quote_uptime"), "{:.1%}"),
            str(rep.get("state")),
        )
    return t


def summary_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"rank": r["rank"], "params": r["params"], **{k: r["report"].get(k) for k in SUMMARY_KEYS}}
        for r in results
    ]


__all__ = [
    "SweepSpec",
    "Task",
    "load_sweep",
    "make_tasks",
    "params_label",
    "rank",
    "run_sweep",
    "run_task",
    "sweep_table",
]
