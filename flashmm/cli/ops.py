"""Operator commands that talk to a running bot over its control socket.

Plain functions with Typer annotations; the main app registers them::

    app.command()(ops.pause)
    app.command()(ops.resume)
    app.command()(ops.status)
    app.command()(ops.stop)
    app.command("emergency-stop")(ops.emergency_stop)
    app.command()(ops.reset)

The socket comes from ``--socket`` or from the profile given with
``--config`` (see :func:`resolve_socket`). When no bot is running each
command prints one line to stderr and exits 1; when, in addition, ``--config``
names neither a file nor a shipped profile, the line says so and the exit is 2
(a typo, not a stopped bot).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, NoReturn

import typer

from flashmm.errors import FlashMMError, NotRunningError

DEFAULT_CONFIG = "paper"

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        metavar="PATH",
        help=f"Profile of the bot to talk to: a file or a shipped name [default: {DEFAULT_CONFIG}]",
    ),
]
SocketOpt = Annotated[
    str | None, typer.Option("--socket", help="Control socket path (overrides --config)")
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the answer")]


def resolve_socket(config_path: str | None, socket: str | None) -> str:
    """The control socket of the bot described by ``config_path`` (or ``socket`` itself).

    Uses ``control.socket_path`` of the profile when set, else the default
    path for its profile name and ``control.data_dir``. A missing config
    file falls back to the default path with the file's stem as profile.
    """
    from flashmm.ops.client import default_socket_path, socket_path_from_config

    if socket:
        return socket
    from flashmm.paths import find_profile

    path = find_profile(config_path or DEFAULT_CONFIG)
    if not path.exists():
        return default_socket_path(path.stem)
    # only the name and the control section matter: read them without validating the
    # whole profile (pydantic, plugins), so that status answers at once
    from types import SimpleNamespace

    import yaml

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        from flashmm.config import load_config

        load_config(path)  # reports the problem in the usual form
        raise
    control = raw.get("control") if isinstance(raw, dict) else None
    control = control if isinstance(control, dict) else {}
    name = raw.get("name") if isinstance(raw, dict) else None
    cfg = SimpleNamespace(
        profile=name or path.stem,
        control=SimpleNamespace(
            socket_path=control.get("socket_path"), data_dir=control.get("data_dir", "var")
        ),
    )
    return socket_path_from_config(cfg, fallback_profile=path.stem)


def missing_profile(config_path: str | None) -> str | None:
    """Why ``--config`` names no profile (neither a file nor a shipped name), else None.

    Path lookups only: ``status`` must answer at once.
    """
    from flashmm.paths import find_profile, profile_names

    name = config_path or DEFAULT_CONFIG
    if find_profile(name).exists():
        return None
    return (
        f"--config: no profile {name!r}: no such file and no shipped profile of that name"
        f" (shipped: {', '.join(profile_names())})"
    )


def _fail(message: str, code: int = 1) -> NoReturn:
    print(f"flashmm: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _call(
    cmd: str,
    config: str | None,
    socket: str | None,
    args: Mapping[str, Any] | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Send ``cmd``; return its result, or print one error line and exit."""
    import math

    from flashmm.ops.client import send_command

    if not (math.isfinite(timeout) and timeout > 0):
        _fail(f"--timeout: must be a finite number > 0 (seconds), was {timeout:g}", 2)
    try:
        path = resolve_socket(config, socket)
        response = send_command(path, cmd, args, timeout=timeout)
    except NotRunningError as exc:
        # a typo in --config reads as "no bot running": name the profile instead
        missing = None if socket else missing_profile(config)
        if missing is not None:
            _fail(f"{missing}; nothing listens on {path}", 2)
        _fail(str(exc), exc.exit_code)
    except FlashMMError as exc:
        hint = " (or pass --socket PATH)" if "config" in type(exc).__name__.lower() else ""
        _fail(f"{exc}{hint}", exc.exit_code)
    if not response.get("ok"):
        _fail(f"{cmd.replace('_', '-')} refused: {response.get('error') or 'no reason given'}")
    result = response.get("result")
    return result if isinstance(result, dict) else {}


def _report(cmd: str, result: Mapping[str, Any]) -> None:
    parts = [f"{cmd.replace('_', '-')}: ok"]
    parts += [f"{key}: {result[key]}" for key in ("state", "message") if result.get(key)]
    print(" - ".join(parts))


def pause(config: ConfigOpt = None, socket: SocketOpt = None, timeout: TimeoutOpt = 5.0) -> None:
    """Cancel all quotes and stop quoting; keep feeds, model and positions."""
    _report("pause", _call("pause", config, socket, timeout=timeout))


def resume(config: ConfigOpt = None, socket: SocketOpt = None, timeout: TimeoutOpt = 5.0) -> None:
    """Start quoting again after a pause (refused while a breaker is latched)."""
    _report("resume", _call("resume", config, socket, timeout=timeout))


def stop(config: ConfigOpt = None, socket: SocketOpt = None, timeout: TimeoutOpt = 5.0) -> None:
    """Graceful shutdown: cancel all orders, flush the journal, exit 0."""
    _report("stop", _call("stop", config, socket, timeout=timeout))


def emergency_stop(
    config: ConfigOpt = None, socket: SocketOpt = None, timeout: TimeoutOpt = 10.0
) -> None:
    """Kill switch: cancel every order, flatten positions and halt (latched until reset)."""
    _report("emergency_stop", _call("emergency_stop", config, socket, timeout=timeout))


def reset(
    config: ConfigOpt = None,
    socket: SocketOpt = None,
    confirm: Annotated[
        bool, typer.Option("--confirm", help="Required: you checked why it halted")
    ] = False,
    timeout: TimeoutOpt = 5.0,
) -> None:
    """Clear the kill switch and latched breakers; the bot stays paused until resume."""
    if not confirm:
        _fail(
            "reset clears the kill switch and latched breakers; check why the bot halted,"
            " then run again with --confirm",
            2,
        )
    _report("reset", _call("reset", config, socket, {"confirm": True}, timeout=timeout))


def status(
    config: ConfigOpt = None,
    socket: SocketOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw status as JSON")] = False,
    timeout: TimeoutOpt = 5.0,
) -> None:
    """Show mode, state, markets, positions, P&L, quotes, breakers and latency."""
    result = _call("status", config, socket, timeout=timeout)
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
        return
    from flashmm.cli import stdout_console

    render_status(result, stdout_console())


# --- rendering ---------------------------------------------------------------


def _fmt(v: float | None, digits: int = 4, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _fmt_duration(s: float) -> str:
    d, rem = divmod(int(s), 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d{h:02d}h{m:02d}m"
    if h:
        return f"{h}h{m:02d}m{sec:02d}s"
    return f"{m}m{sec:02d}s"


def _fmt_since(ns: int) -> str:
    """An engine time (ns since the epoch) with how long ago it was."""
    t = ns / 1e9
    return f"{datetime.fromtimestamp(t):%Y-%m-%d %H:%M:%S} ({_fmt_duration(time.time() - t)} ago)"


def render_status(st: Mapping[str, Any], console: Any) -> None:
    """Print a status (:meth:`flashmm.snapshot.Snapshot.to_dict`) as Rich tables; one in
    another schema (a bot of another version) is shown as JSON, with a note."""
    from rich.markup import escape
    from rich.table import Table

    from flashmm.snapshot import SCHEMA_VERSION

    if st.get("schema") != SCHEMA_VERSION:
        console.print(f"status schema {st.get('schema')}, not {SCHEMA_VERSION}: shown as JSON")
        console.print_json(json.dumps(st, default=str))
        return
    state = st["state"]
    color = {"running": "green", "paused": "yellow", "halted": "red"}.get(state, "white")
    console.print(
        f"[bold]FlashMM[/bold]  {escape(st['profile'])}  mode [bold]{st['mode']}[/bold]  "
        f"state [bold {color}]{state}[/bold {color}]  uptime {_fmt_duration(st['uptime_s'])}"
    )
    if st["reason"] and state != "running":
        console.print(f"reason: {escape(st['reason'])}")
    # with a journal: fills it has made durable, and those still on their way
    pending = st.get("fills_pending", 0)
    totals = f"P&L {st['pnl_usdc']:+.2f} USDC  fills {st['fills']}"
    totals += f" (+{pending} not yet journaled)" if pending else ""
    journal = st.get("journal")
    if journal and (journal["error"] or journal["failure"]):
        totals += f"  [bold red]journal error: {escape(journal['error'] or journal['failure'])}[/]"
    console.print(totals)
    venue = st["venue"]
    if "gas_per_day_projected" in venue:  # a chain venue, once it has run a while
        console.print(
            f"venue {escape(venue['name'])}: txs {venue['txs']}  gas used {venue['gas_used']}"
            f"  projected {venue['gas_per_day_projected']:.0f} gas/day"
            f" (~{venue['sei_per_day_at_50_gwei']:.1f} SEI/day at 50 gwei)"
        )
    t = Table(title="Markets", title_justify="left")
    for col in ("Market", "Mid", "Bid", "Ask", "Pos lots", "Pos USDC", "P&L USDC", "Quotes"):
        t.add_column(col, justify="left" if col in ("Market", "Quotes") else "right")
    for sym, m in st["markets"].items():
        pnl = m["pnl_usdc"]
        quotes = m["quotes"]
        shown = ", ".join(
            f"{'B' if q['side'] == 'buy' else 'A'} {q['price']:.4f}x{q['size']:g}"
            for q in quotes[:4]
        )
        more = f" (+{len(quotes) - 4})" if len(quotes) > 4 else ""
        t.add_row(
            escape(sym),
            _fmt(m["mid"]),
            _fmt(m["bid"]),
            _fmt(m["ask"]),
            f"{m['position_lots']:+d}",
            _fmt(m["position_usdc"], 2, signed=True),
            f"[{'green' if pnl >= 0 else 'red'}]{pnl:+.2f}[/]",
            escape(shown + more or "none"),
        )
    console.print(t)
    t = Table(title="Breakers", title_justify="left")
    for col in ("Breaker", "State", "Action", "Reason", "Since"):
        t.add_column(col)
    for name, b in st["breakers"].items():
        tripped = b["state"] == "tripped"
        reason = b["reason"] + (f" ({b['clears']})" if tripped and b["clears"] else "")
        t.add_row(
            escape(name),
            f"[{'bold red' if tripped else 'green'}]{b['state']}[/]",
            b["action"] + (" (latched)" if b["latched"] else ""),
            escape(reason),
            _fmt_since(b["since_ns"]) if tripped else "",
        )
    console.print(t)
    shown = "  ".join(f"{k}={v}" for k, v in st["model"].items() if v not in (None, "", {}))
    console.print(f"model: {escape(shown or 'rules only')}")
    lat = st["latency"]
    console.print(f"decision latency: p50 {lat['p50_us']:.0f} µs, p99 {lat['p99_us']:.0f} µs")
