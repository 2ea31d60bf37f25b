"""``flashmm backtest``: argument checks, progress bar, outputs and sweeps."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flashmm.errors import UserInputError

if TYPE_CHECKING:
    from flashmm.backtest.sweep import SweepSpec

DEFAULT_BACKTEST_CONFIG = "backtest"


def parse_ts(value: str | None, flag: str) -> int | None:
    """``--from``/``--to``: epoch time (s, ms, µs or ns, told apart by magnitude) or ISO 8601.

    An ISO time without a zone is UTC.
    """
    if value is None or value == "":
        return None
    from flashmm.feeds.binance import ts_to_ns

    v = value.strip()
    if v.lstrip("-").isdigit():
        n = int(v)
        if n <= 0:
            raise UserInputError(
                f"{flag}: expected a positive epoch time or an ISO date, got {value!r}"
            )
        return ts_to_ns(n)
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise UserInputError(
            f"{flag}: cannot read {value!r}: use epoch ns/µs/ms/s or ISO 8601, "
            "e.g. 2024-07-23T18:00:00Z"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000) * 1_000


def _setup_logging(quiet: bool, console: Any = None) -> None:
    """Warnings to stderr; with a progress bar, through its console so that they print
    above the bar instead of breaking it up."""
    from loguru import logger

    logger.remove()
    level = "ERROR" if quiet else "WARNING"
    if console is None:
        logger.add(sys.stderr, level=level)
    else:
        logger.add(
            lambda m: console.print(str(m).rstrip("\n"), markup=False, highlight=False),
            level=level,
            format="{time:HH:mm:ss} {level: <7} {message}",
        )


def progress_step(total: int) -> int:
    """Events between progress updates: about 200 steps for the run, so the bar moves."""
    return min(max(total // 200, 64), 8192)


def open_plots(path: Path) -> str:
    """Open ``plots.html`` in a browser, or say how to see it from a headless machine."""
    import os

    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if not headless:
        import webbrowser

        if webbrowser.open(path.resolve().as_uri()):
            return f"opened {path}"
    return (
        f"plots: {path} (no browser here: `python -m http.server -d {path.parent} 8000`, "
        f"then open http://HOST:8000/{path.name})"
    )


def _check_data(data: Sequence[str] | None) -> None:
    from flashmm.paths import resolve_path

    for d in data or []:
        if not resolve_path(d).is_file():
            raise UserInputError(f"data file not found: {d}")


def backtest_command(
    config: str | None,
    data: Sequence[str] | None,
    from_ts: str | None,
    to_ts: str | None,
    out: str | None,
    json_out: bool,
    sets: Sequence[str],
    sweep: str | None,
    workers: int,
    ray: str | None,
    progress: bool,
    compare: Sequence[str] = (),
    windows: int = 10,
    open_: bool = False,
    walk_forward: int = 0,
) -> None:
    from flashmm.config import load_config, load_dotenv_file

    load_dotenv_file(config)
    from_ns = parse_ts(from_ts, "--from")
    to_ns = parse_ts(to_ts, "--to")
    if from_ns is not None and to_ns is not None and from_ns >= to_ns:
        raise UserInputError(f"empty time range: --from {from_ts} is not before --to {to_ts}")
    _check_data(data)
    if workers < 1:
        raise UserInputError(f"--workers: must be >= 1, was {workers}")
    if walk_forward and sweep is None:
        raise UserInputError("--walk-forward: needs --sweep (the grid to choose from)")
    if walk_forward < 0:
        raise UserInputError(f"--walk-forward: must be >= 1, was {walk_forward}")
    if compare and sweep is not None:
        raise UserInputError("--compare and --sweep: use one or the other")
    if compare and windows < 2:
        raise UserInputError(f"--windows: must be >= 2 for confidence intervals, was {windows}")
    for pair in compare:
        if "=" not in pair:
            raise UserInputError(f"--compare: expected KEY=VALUE (like --set), got {pair!r}")
    profile = config or DEFAULT_BACKTEST_CONFIG
    cfg = load_config(profile, list(sets))
    show_progress = progress and sys.stderr.isatty()
    console = None
    if show_progress:
        from rich.console import Console

        console = Console(stderr=True)
    _setup_logging(quiet=json_out, console=console)
    if open_ and out is None and sweep is None:
        out = str(Path("runs") / f"backtest-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    from flashmm.backtest.runner import data_files, open_feed

    files = data_files(cfg, data)
    _check_data(files)
    # converts (or loads) every file once, and refuses an empty window, before any run;
    # a first parse of a day takes seconds: say so rather than sit silent
    if console is not None:
        with console.status("reading recordings (parsed once, then cached)"):
            feed = open_feed(cfg, files, from_ns, to_ns)
    else:
        feed = open_feed(cfg, files, from_ns, to_ns)
    if sweep is not None and walk_forward:
        grid = _Grid(profile, sets, sweep, files, out, json_out, workers, ray, show_progress)
        _walk_forward(grid, feed, walk_forward)
        return
    if sweep is not None:
        grid = _Grid(profile, sets, sweep, files, out, json_out, workers, ray, show_progress)
        _sweep(grid, from_ns, to_ns)
        return
    if compare:
        _compare(profile, sets, compare, files, feed, from_ns, to_ns, windows, out, json_out)
        return
    from flashmm.backtest.outputs import write_outputs
    from flashmm.backtest.report import summary_table
    from flashmm.backtest.runner import run_backtest

    total = feed.count_in_window()
    if console is not None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        class _Rate(TextColumn):
            def render(self, task: Any) -> Any:
                from rich.text import Text

                speed = task.finished_speed or task.speed
                return Text(f"{speed:,.0f} ev/s" if speed else "- ev/s")

        with Progress(
            TextColumn("backtest"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(""),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            refresh_per_second=8,
        ) as bar:
            tid = bar.add_task("events", total=total)
            res = run_backtest(
                cfg,
                files,
                from_ns=from_ns,
                to_ns=to_ns,
                feed=feed,
                progress=lambda k: bar.advance(tid, k),
                progress_every=progress_step(total),
            )
    else:
        res = run_backtest(cfg, files, from_ns=from_ns, to_ns=to_ns, feed=feed)
    if out:
        paths = write_outputs(res, Path(out))
        if not json_out:
            print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
        if open_:
            plots = next((p for p in paths if p.name.endswith(".html")), None)
            if plots is not None:
                print(open_plots(plots), file=sys.stderr)
    from flashmm.types import clean_floats

    _show(json_out, clean_floats(res.report), lambda: summary_table(res.report))


def _show(json_out: bool, data: Any, table: Callable[[], Any]) -> None:
    """``data`` as one JSON line on stdout, or the table ``table()`` builds."""
    if json_out:
        sys.stdout.write(json.dumps(data) + "\n")
        return
    from flashmm.cli import stdout_console

    stdout_console().print(table())


def _compare(
    config: str,
    sets: Sequence[str],
    variant: Sequence[str],
    files: Sequence[str],
    feed: Any,
    from_ns: int | None,
    to_ns: int | None,
    windows: int,
    out: str | None,
    json_out: bool,
) -> None:
    from flashmm.backtest.compare import compare_table, run_compare

    result = run_compare(
        config, sets, variant, files, feed, from_ns, to_ns, windows, Path(out) if out else None
    )
    if out and not json_out:
        print(
            f"wrote {out}/compare.json, {out}/baseline/ and {out}/variant/ (report.json, "
            "fills.csv, plots.html)",
            file=sys.stderr,
        )
    _show(json_out, result, lambda: compare_table(result))


@dataclass(frozen=True, slots=True)
class _Grid:
    """What a sweep and a walk-forward share: the grid, where it runs, where results go."""

    profile: str
    sets: Sequence[str]
    sweep_path: str
    files: Sequence[str]
    out: str | None
    json_out: bool
    workers: int
    ray: str | None
    show_progress: bool

    def load(self) -> tuple[SweepSpec, str]:
        """The sweep file and the profile's absolute path: workers (Ray nodes included)
        may run elsewhere."""
        from flashmm.backtest.sweep import load_sweep
        from flashmm.paths import find_profile, find_sweep

        return load_sweep(find_sweep(self.sweep_path)), str(find_profile(self.profile).resolve())

    def run(self, tasks: list[Any], on_done: Callable[[dict[str, Any]], None]) -> list[Any]:
        from flashmm.backtest.sweep import run_sweep

        return run_sweep(tasks, workers=self.workers, ray_address=self.ray, on_done=on_done)

    def out_dir(self) -> Path | None:
        if not self.out:
            return None
        d = Path(self.out)
        d.mkdir(parents=True, exist_ok=True)
        return d


def _sweep(grid: _Grid, from_ns: int | None, to_ns: int | None) -> None:
    from flashmm.backtest.sweep import make_tasks, summary_rows, sweep_table

    spec, config = grid.load()
    tasks = make_tasks(spec, config, grid.sets, grid.files, from_ns, to_ns, None)
    done = {"n": 0}

    def on_done(r: dict[str, Any]) -> None:
        done["n"] += 1
        if grid.show_progress:
            rep = r["report"]
            print(
                f"[{done['n']}/{len(tasks)}] {r['params']}: pnl {rep['pnl_usdc']:+.4f} "
                f"fills {rep['fills']} ({rep['wall_s']:.1f} s)",
                file=sys.stderr,
            )

    results = grid.run(tasks, on_done)
    rows = summary_rows(results)
    d = grid.out_dir()
    if d is not None:
        (d / "sweep.json").write_text(json.dumps({"results": results}, indent=2) + "\n")
        import csv

        with (d / "sweep.csv").open("w", newline="") as fh:
            keys = ["rank", "params", *[k for k in rows[0] if k not in ("rank", "params")]]
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            for row in rows:
                w.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()})
    _show(grid.json_out, {"sweep": rows}, lambda: sweep_table(results))


def _walk_forward(grid: _Grid, feed: Any, windows: int) -> None:
    from flashmm.backtest.walkforward import (
        cut,
        make_walk_forward_tasks,
        walk_forward,
        walk_forward_table,
    )

    spec, config = grid.load()
    lo, hi = feed.span()
    lo = max(lo, feed.start_ns) if feed.start_ns is not None else lo
    hi = min(hi, feed.end_ns) if feed.end_ns is not None else hi
    parts = cut(lo, hi, windows + 1)
    tasks = make_walk_forward_tasks(spec, config, grid.sets, grid.files, parts)
    done = {"n": 0}

    def on_done(r: dict[str, Any]) -> None:
        done["n"] += 1
        if grid.show_progress:
            print(f"\r{done['n']}/{len(tasks)} backtests", end="", file=sys.stderr, flush=True)

    if grid.show_progress:
        print(f"{len(tasks)} backtests ({len(parts)} parts x {len(tasks) // len(parts)} "
              "candidates: the profile and the grid)", file=sys.stderr)  # fmt: skip
    results = grid.run(tasks, on_done)
    if grid.show_progress:
        print(file=sys.stderr)
    result = walk_forward(results, parts)
    d = grid.out_dir()
    if d is not None:
        (d / "walk_forward.json").write_text(json.dumps(result, indent=2) + "\n")
    _show(grid.json_out, {"walk_forward": result}, lambda: walk_forward_table(result))


__all__ = ["backtest_command", "parse_ts"]
