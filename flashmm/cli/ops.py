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
command prints one line to stderr and exits 1.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, NoReturn

import typer

from flashmm.errors import FlashMMError

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
    from flashmm.ops.control import default_socket_path, socket_path_from_config

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
    from flashmm.ops.control import send_command

    try:
        path = resolve_socket(config, socket)
        response = send_command(path, cmd, args, timeout=timeout)
    except FlashMMError as exc:
        hint = " (or pass --socket PATH)" if "config" in type(exc).__name__.lower() else ""
        _fail(f"{exc}{hint}", exc.exit_code)
    if not response.get("ok"):
        _fail(f"{cmd.replace('_', '-')} refused: {response.get('error') or 'no reason given'}")
    result = response.get("result")
    return result if isinstance(result, dict) else {}


def _report(cmd: str, result: Mapping[str, Any]) -> None:
    parts = [f"{cmd.replace('_', '-')}: ok"]
    for key in ("state", "message"):
        if result.get(key):
            parts.append(f"{key}: {result[key]}")
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
    from rich.console import Console

    render_status(result, Console())


# --- rendering ---------------------------------------------------------------


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _fmt(v: Any, digits: int = 4, signed: bool = False) -> str:
    x = _num(v)
    if x is None:
        return "-" if v is None or v == "" else str(v)
    if x == int(x) and abs(x) < 1e15 and digits == 0:
        return f"{int(x):+d}" if signed else str(int(x))
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _fmt_duration(v: Any) -> str:
    s = _num(v)
    if s is None:
        return "-"
    s = int(s)
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d{h:02d}h{m:02d}m"
    if h:
        return f"{h}h{m:02d}m{sec:02d}s"
    return f"{m}m{sec:02d}s"


def _fmt_since(v: Any) -> str:
    x = _num(v)
    if x is None:
        return "-" if not v else str(v)
    if x > 1e17:  # ns
        x /= 1e9
    elif x > 1e14:  # µs
        x /= 1e6
    elif x > 1e11:  # ms
        x /= 1e3
    if x < 1e9:  # not an epoch: seconds ago / since start
        return f"{_fmt_duration(x)}"
    try:
        t = datetime.fromtimestamp(x)
    except (OverflowError, OSError, ValueError):
        return str(v)
    ago = _fmt_duration(time.time() - x)
    return f"{t:%Y-%m-%d %H:%M:%S} ({ago} ago)"


def _fmt_quote(q: Any) -> str:
    if not isinstance(q, Mapping):
        return str(q)
    side = str(q.get("side", "?")).lower()
    letter = {"buy": "B", "bid": "B", "1": "B", "sell": "A", "ask": "A", "-1": "A"}.get(side, side)
    price = next((q[k] for k in ("price", "px", "price_ticks") if k in q), None)
    size = next((q[k] for k in ("size", "qty", "size_lots") if k in q), None)
    return f"{letter} {_fmt(price, 4) if price is not None else '?'}x{_fmt(size, 0)}"


_OK_STATES = {"ok", "closed", "armed", "normal", "clear", "idle", "reset"}


def render_status(st: Mapping[str, Any], console: Any) -> None:
    """Print a status dict as Rich tables; tolerant of missing or odd keys."""
    from rich.markup import escape
    from rich.table import Table

    state = escape(str(st.get("state", "?")))
    color = {"running": "green", "paused": "yellow", "halted": "red"}.get(state.lower(), "white")
    head = ["[bold]FlashMM[/bold]"]
    if st.get("profile"):
        head.append(escape(str(st["profile"])))
    head += [
        f"mode [bold]{escape(str(st.get('mode', '?')))}[/bold]",
        f"state [bold {color}]{state}[/bold {color}]",
        f"uptime {_fmt_duration(st.get('uptime_s'))}",
    ]
    console.print("  ".join(head))
    if st.get("reason") and state.lower() != "running":
        console.print(f"reason: {escape(str(st['reason']))}")
    totals = []
    if st.get("pnl_usdc") is not None:
        totals.append(f"P&L {_fmt(st.get('pnl_usdc'), 2, signed=True)} USDC")
    if st.get("fills") is not None:
        pending = _num(st.get("fills_pending")) or 0
        extra = f" (+{int(pending)} not yet journaled)" if pending else ""
        totals.append(f"fills {_fmt(st.get('fills'), 0)}{extra}")
    journal = st.get("journal")
    if isinstance(journal, Mapping) and (journal.get("error") or journal.get("failure")):
        why = journal.get("error") or journal.get("failure")
        totals.append(f"[bold red]journal error: {escape(str(why))}[/]")
    if totals:
        console.print("  ".join(totals))
    venue = st.get("venue")
    if isinstance(venue, Mapping) and venue.get("gas_used") is not None:
        console.print(
            f"venue {escape(str(venue.get('name', '?')))}: txs {_fmt(venue.get('txs'), 0)}  "
            f"gas used {_fmt(venue.get('gas_used'), 0)}  projected "
            f"{_fmt(venue.get('gas_per_day_projected'), 0)} gas/day "
            f"(~{_fmt(venue.get('sei_per_day_at_50_gwei'), 1)} SEI/day at 50 gwei)"
        )
    markets = st.get("markets")
    if isinstance(markets, Mapping) and markets:
        t = Table(title="Markets", title_justify="left")
        for col in ("Market", "Mid", "Bid", "Ask", "Pos lots", "Pos USDC", "P&L USDC", "Quotes"):
            t.add_column(col, justify="left" if col in ("Market", "Quotes") else "right")
        for sym, m in markets.items():
            if not isinstance(m, Mapping):
                t.add_row(escape(str(sym)), *["-"] * 6, escape(str(m)))
                continue
            pnl = _num(m.get("pnl_usdc"))
            pnl_s = _fmt(m.get("pnl_usdc"), 2, signed=True)
            if pnl is not None:
                pnl_s = f"[{'green' if pnl >= 0 else 'red'}]{pnl_s}[/]"
            quotes = m.get("quotes")
            if isinstance(quotes, list | tuple):
                shown = ", ".join(_fmt_quote(q) for q in quotes[:4])
                quotes_s = shown + (f" (+{len(quotes) - 4})" if len(quotes) > 4 else "")
                quotes_s = quotes_s or "none"
            else:
                quotes_s = "-" if quotes is None else str(quotes)
            t.add_row(
                escape(str(sym)),
                _fmt(m.get("mid")),
                _fmt(m.get("bid")),
                _fmt(m.get("ask")),
                _fmt(m.get("position_lots"), 0, signed=True),
                _fmt(m.get("position_usdc"), 2, signed=True),
                pnl_s,
                escape(quotes_s),
            )
        console.print(t)
    else:
        console.print("markets: none")
    breakers = st.get("breakers")
    if isinstance(breakers, Mapping) and breakers:
        t = Table(title="Breakers", title_justify="left")
        for col in ("Breaker", "State", "Action", "Reason", "Since"):
            t.add_column(col)
        for name, b in breakers.items():
            b = b if isinstance(b, Mapping) else {"state": b}
            bstate = escape(str(b.get("state", "?")))
            style = "green" if bstate.lower() in _OK_STATES else "bold red"
            action = escape(str(b.get("action") or ""))
            if b.get("latched"):
                action = f"{action} (latched)" if action else "latched"
            since = b.get("since", b.get("since_ns"))
            tripped = bstate.lower() not in _OK_STATES
            reason = str(b.get("reason") or "")
            if tripped and b.get("clears"):
                reason = f"{reason} ({b['clears']})"
            t.add_row(
                escape(str(name)),
                f"[{style}]{bstate}[/]",
                action,
                escape(reason),
                _fmt_since(since) if tripped or b.get("since") else "",
            )
        console.print(t)
    model = st.get("model")
    if isinstance(model, Mapping) and model:
        console.print("model: " + escape("  ".join(f"{k}={v}" for k, v in model.items())))
    elif model:
        console.print(f"model: {escape(str(model))}")
    lat = st.get("latency")
    if isinstance(lat, Mapping) and lat:
        console.print(
            f"decision latency: p50 {_fmt(lat.get('p50_us'), 0)} µs,"
            f" p99 {_fmt(lat.get('p99_us'), 0)} µs"
        )
