"""The ``flashmm`` command: the only place that parses arguments and prints for humans.

Heavy modules (onnxruntime, sklearn, eth-account) are imported inside the
commands that need them so that ``flashmm --help`` stays instant. Every
FlashMM error becomes one line on stderr and an exit code (2 = bad input,
1 = runtime failure); a traceback means a bug.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

from flashmm.errors import ConfigError, FlashMMError

app = typer.Typer(
    name="flashmm",
    help="FlashMM: a market-making bot for Sei. Paper, backtest and live trading with one engine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
config_app = typer.Typer(help="Check strategy profiles.", no_args_is_help=True)
app.add_typer(config_app, name="config")

from flashmm.cli import run as _run  # noqa: E402

app.command("run")(_run.run)
app.command("backtest")(_run.backtest)
app.command("version")(_run.version)
app.command("init")(importlib.import_module("flashmm.cli.init").init)
config_app.command("validate")(_run.config_validate)
config_app.command("show")(_run.config_show)


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(f"flashmm.cli.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"flashmm.cli.{module}":
            return None
        raise


def _mount(module: str, name: str, help_: str) -> None:
    mod = _optional(module)
    if mod is not None:
        app.add_typer(mod.app, name=name, help=help_)


_mount("model", "model", "Check and evaluate prediction models.")
_mount("chain", "chain", "Local chain, contract deployment and balances on Sei EVM.")
_mount("wallet", "wallet", "Keys and balances.")
_mount("feed", "feed", "Market-data tools: a local replay server, recording.")


def _register_optional() -> None:
    model = _optional("model")
    if model is not None:
        app.command("train")(model.train_command)
    ops = importlib.import_module("flashmm.cli.ops")

    app.command("status")(ops.status)
    app.command("pause")(ops.pause)
    app.command("resume")(ops.resume)
    app.command("stop")(ops.stop)
    app.command("emergency-stop")(ops.emergency_stop)
    app.command("reset")(ops.reset)


_register_optional()


def main(argv: list[str] | None = None) -> Any:
    try:
        return app(args=argv, standalone_mode=True)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"flashmm: config error: {exc.path}: {problem}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except FlashMMError as exc:
        print(f"flashmm: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
