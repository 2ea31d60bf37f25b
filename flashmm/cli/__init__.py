"""The ``flashmm`` command: the only place that parses arguments and prints for humans.

Heavy modules (onnxruntime, sklearn, eth-account) are imported inside the
commands that need them so that ``flashmm --help`` stays instant. Every
FlashMM error becomes one line on stderr and an exit code (2 = bad input,
1 = runtime failure); a traceback means a bug.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, NoReturn

import typer

from flashmm.errors import ConfigError, FlashMMError

_APP_SETTINGS: dict[str, Any] = {
    "no_args_is_help": True,
    "pretty_exceptions_enable": False,
    "add_completion": False,
    "rich_markup_mode": None,
    "context_settings": {"max_content_width": 110},
}
app = typer.Typer(
    name="flashmm",
    help="FlashMM: a market-making bot for Sei. Paper, backtest and live trading with one engine."
    " (flashmm --version prints the version.)",
    **_APP_SETTINGS,
)
#: width of tables printed to a pipe or file (a terminal's own width is used otherwise)
PIPE_WIDTH = 200


def stdout_console() -> Any:
    """A Rich console for stdout. Piped (``flashmm status | cat``, ``> report.txt``) Rich
    would use 80 columns and wrap every table; then it is wide enough not to, unless
    ``COLUMNS`` says otherwise."""
    import os

    from rich.console import Console

    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=PIPE_WIDTH)


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


def _mount(module: str, name: str, help_: str) -> Any:
    mod = _optional(module)
    if mod is not None:
        app.add_typer(mod.app, name=name, help=help_)
    return mod


_model = _mount("model", "model", "Check and evaluate prediction models.")
_mount("chain", "chain", "Local chain, contract deployment and balances on Sei EVM.")
_mount("wallet", "wallet", "Keys and balances.")
_mount("feed", "feed", "Market-data tools: a local replay server, recording.")
if _model is not None:
    app.command("train")(_model.train_command)
_ops = importlib.import_module("flashmm.cli.ops")
for _name in ("status", "pause", "resume", "stop", "emergency-stop", "reset"):
    app.command(_name)(getattr(_ops, _name.replace("-", "_")))


# plain metavars in --help: by option name, else by type, else the name (flags show none)
_METAVARS = {
    "config": "PATH",
    "data": "FILE",
    "out": "PATH",
    "socket": "PATH",
    "set_": "KEY=VALUE",
    "from_ts": "TIME",
    "to_ts": "TIME",
    "sweep": "FILE",
    "ray": "ADDRESS",
    "keystore": "FILE",
    "deployment": "FILE",
    "ws_url": "URL",
    "rest_url": "URL",
    "rpc": "URL",
    "ws": "URL",
    "quote_token": "ADDRESS",
    "dev_account": "ROLE",
    "horizon": "DURATION",
}


def plain_metavars(cmd: Any) -> Any:
    """Give every option of ``cmd`` and its subcommands a plain metavar (PATH, FILE, N)."""
    for p in cmd.params:
        if p.metavar is not None or getattr(p, "is_flag", False) or getattr(p, "count", False):
            continue
        desc = getattr(p, "type_descriptor", None)
        ann = getattr(desc, "annotation", None)
        if desc is not None and desc.is_list:
            ann = (getattr(ann, "__args__", None) or (str,))[0]
        choices = getattr(desc, "choices", None) if desc is not None else None
        if choices:
            p.metavar = "[" + "|".join(str(getattr(c, "value", c)) for c in choices) + "]"
        elif p.name in _METAVARS:
            p.metavar = _METAVARS[p.name]
        elif ann is int:
            p.metavar = "N"
        elif ann is float:
            p.metavar = "X"
        elif desc is not None and desc.is_path:
            p.metavar = "PATH"
        else:
            p.metavar = (p.name or "value").rstrip("_").upper().replace("_", "-")
    for sub in getattr(cmd, "commands", {}).values():
        plain_metavars(sub)
    return cmd


def command(argv: list[str] | None = None) -> Any:
    """The click command tree of ``flashmm``, with plain metavars.

    When ``argv`` names a top-level command (``flashmm status ...``) the tree holds
    that command alone: typer builds every command it holds from its signature, and
    building the other 25 costs ~70 ms of a ``status`` that should answer at once.
    """
    first = argv[0] if argv else None
    chosen = [c for c in app.registered_commands if first is not None and c.name == first]
    if not chosen:
        return plain_metavars(typer.main.get_command(app))
    one = typer.Typer(name="flashmm", **_APP_SETTINGS)
    one.registered_commands = chosen
    one.callback()(lambda: None)  # a group, so the command is still ``flashmm <name>``
    return plain_metavars(typer.main.get_command(one))


def error_line(what: str, why: str = "", hint: str = "") -> str:
    """The one error format: ``flashmm: error: <what>: <why> (<hint>)``."""
    line = f"flashmm: error: {what}"
    if why:
        line += f": {why}"
    if hint:
        line += f" ({hint})"
    return line


def main(argv: list[str] | None = None) -> NoReturn:
    from typer import _click

    try:
        args = sys.argv[1:] if argv is None else argv
        if args[:1] in (["--version"], ["-V"]):
            args = ["version"]
        rv = command(args).main(args=args, prog_name="flashmm", standalone_mode=False)
    except ConfigError as exc:
        for where, problem in zip(exc.where, exc.problems, strict=True):
            print(error_line(where, problem), file=sys.stderr)
        sys.exit(exc.exit_code)
    except FlashMMError as exc:
        print(error_line(str(exc)), file=sys.stderr)
        sys.exit(exc.exit_code)
    except _click.exceptions.NoArgsIsHelpError as exc:
        print(exc.format_message(), file=sys.stderr)
        sys.exit(2)
    except _click.exceptions.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else "flashmm"
        msg = exc.format_message().rstrip(".")
        print(error_line(msg, hint=f"see '{path} --help'"), file=sys.stderr)
        sys.exit(2)
    except _click.exceptions.ClickException as exc:
        print(error_line(exc.format_message()), file=sys.stderr)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    # like click's standalone mode: always exit, with the command's code
    sys.exit(rv if isinstance(rv, int) else 0)
