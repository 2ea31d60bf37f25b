"""``flashmm run``, ``flashmm backtest``, ``flashmm config ...`` and ``flashmm version``."""

from __future__ import annotations

import json
import math
import sys
from typing import Annotated, Any

import typer

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        metavar="PATH",
        help="Strategy profile: a YAML file or a shipped name (paper, backtest, local, testnet)."
        " Default: paper.",
    ),
]
DataOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        "-d",
        metavar="FILE",
        help="Recording to replay instead of the profile's feed; repeat for more"
        " (bundled:NAME is one shipped with FlashMM, e.g. bundled:nexo).",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value, e.g. --set strategy.params.gamma=0.2"),
]


def _load(config: str | None, sets: list[str] | None = None) -> Any:
    from flashmm.config import load_config, load_dotenv_file

    load_dotenv_file(config)
    return load_config(config, sets or [])


def run(
    config: ConfigOpt = None,
    data: DataOpt = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many wall-clock seconds.")
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option("--speed", help="Replay speed: 1 = real time, 0 = as fast as possible."),
    ] = None,
    headless: Annotated[
        bool, typer.Option("--headless", help="No live panel: console logs (for systemd).")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the end summary as one JSON object on stdout.")
    ] = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="Logs as JSON lines.")] = False,
    set_: SetOpt = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="On recorded data: continue the profile's last run (its journal, positions,"
            " breakers) instead of starting flat.",
        ),
    ] = False,
    new_journal: Annotated[
        bool,
        typer.Option(
            "--new-journal",
            help="Start an empty journal where one is expected but missing, empty or failed"
            " (a non-empty old file is moved aside).",
        ),
    ] = False,
) -> None:
    """Run the bot: paper mode on bundled recorded data by default.

    Stops at the end of --duration, when the data ends, or on Ctrl-C /
    SIGTERM; then cancels every order and prints a summary of this run.
    A run on recorded data starts flat with its own journal unless --resume.
    Exits 1 after the summary if the journal could not be written.
    """
    from flashmm.app import run_bot
    from flashmm.errors import UserInputError

    if speed is not None and not (math.isfinite(speed) and speed >= 0):
        raise UserInputError(
            f"--speed must be a finite number >= 0 (0 = as fast as possible), was {speed:g}"
        )
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise UserInputError(f"--duration must be a finite number > 0 (seconds), was {duration:g}")
    cfg = _load(config, set_)
    from flashmm.runner import data_files, uses_sim_clock

    if uses_sim_clock(cfg, data):
        data_files(cfg, data)  # no recordings: say so before a journal or socket exists
    summary = run_bot(
        cfg,
        data=data,
        duration=duration,
        speed=speed,
        headless=headless or json_out or not sys.stdout.isatty(),
        log_json=log_json,
        resume=resume,
        new_journal=new_journal,
    )
    _print_summary(summary, json_out)
    journal = summary.get("journal") or {}
    if journal.get("failure"):
        from flashmm.errors import RuntimeFailure

        raise RuntimeFailure(
            f"{journal['failure']}; fills of this run may be missing from the journal"
        )


def _print_summary(summary: dict[str, Any], json_out: bool) -> None:
    from flashmm.types import clean_floats

    summary = clean_floats(summary)
    if json_out:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
        return
    from flashmm.cli import stdout_console
    from flashmm.ui import summary_table

    stdout_console().print(summary_table(summary))


def backtest(
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="Strategy profile: a YAML file or a shipped name. Default: backtest"
            " (the bundled 20 minutes of NEXO).",
        ),
    ] = None,
    data: DataOpt = None,
    from_ts: Annotated[
        str | None,
        typer.Option("--from", help="Start time: ISO 8601 (UTC if no zone) or epoch s/ms/µs/ns."),
    ] = None,
    to_ts: Annotated[str | None, typer.Option("--to", help="End time, as --from.")] = None,
    out: Annotated[
        str | None, typer.Option("--out", help="Folder for report.json, fills.csv and plots.html.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print report.json to stdout.")] = False,
    set_: SetOpt = None,
    sweep: Annotated[
        str | None, typer.Option("--sweep", help="Parameter grid (YAML) to run.")
    ] = None,
    walk_forward: Annotated[
        int,
        typer.Option(
            "--walk-forward",
            help="With --sweep: cut the data into N + 1 time parts and trade each of the"
            " last N with the grid point (or the profile) that earned most on the parts"
            " before it; prints that P&L next to the profile's.",
        ),
    ] = 0,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes for --sweep.")] = 2,
    ray: Annotated[
        str | None, typer.Option("--ray", help="Ray address for --sweep (needs .[ray]).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
    compare: Annotated[
        list[str] | None,
        typer.Option(
            "--compare",
            help="KEY=VALUE (repeatable): also run this variant and compare it with the "
            "baseline (P&L, markouts, inventory, with 95 % CIs over time windows).",
        ),
    ] = None,
    windows: Annotated[
        int, typer.Option("--windows", help="Time windows for the --compare intervals.")
    ] = 10,
    open_: Annotated[
        bool,
        typer.Option(
            "--open",
            help="Open plots.html when done (writes to runs/backtest-TIME without --out);"
            " on a headless machine print its path and how to serve it.",
        ),
    ] = False,
) -> None:
    """Replay recorded order-book data through the engine on a simulated clock."""
    from flashmm.cli.backtest import backtest_command

    backtest_command(
        config=config,
        data=data,
        from_ts=from_ts,
        to_ts=to_ts,
        out=out,
        json_out=json_out,
        sets=set_ or [],
        sweep=sweep,
        walk_forward=walk_forward,
        workers=workers,
        ray=ray,
        progress=progress,
        compare=compare or [],
        windows=windows,
        open_=open_,
    )


def config_validate(
    path: Annotated[str, typer.Argument(metavar="PATH", help="Profile to check (file or name).")],
    set_: SetOpt = None,
) -> None:
    """Check a profile and the files it names; one line per problem, exit 2 when invalid."""
    from flashmm.config import check_files, model_enabled
    from flashmm.errors import ConfigError

    cfg = _load(path, set_)
    problems = check_files(cfg)
    if problems:
        raise ConfigError(path, problems)
    typer.echo(
        f"{path}: OK (mode {cfg.mode}, {len(cfg.markets)} market(s): "
        f"{', '.join(m.symbol for m in cfg.markets)}; venue {cfg.venue.kind}; files found"
        + ("; model loads" if model_enabled(cfg) else "; model off: the rule")
        + ")"
    )


def config_show(
    path: Annotated[
        str | None,
        typer.Argument(metavar="[PATH]", help="Profile to show (file or name; default paper)."),
    ] = None,
    set_: SetOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False,
) -> None:
    """Print a profile as YAML with every default filled in, nested sections too."""
    from flashmm.config import full_dump

    data = full_dump(_load(path, set_))
    if json_out:
        typer.echo(json.dumps(data, indent=2))
        return
    import yaml

    typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())


def version() -> None:
    """Print the FlashMM version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    try:
        typer.echo(f"flashmm {v('flashmm')}")
    except PackageNotFoundError:
        typer.echo("flashmm (not installed)")
