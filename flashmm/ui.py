"""The Rich live panel, drawn from a `Snapshot` (never from the hot path)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from flashmm.snapshot import Snapshot

_STATE_STYLE = {
    "running": "bold green",
    "paused": "bold yellow",
    "halted": "bold red",
    "stopped": "dim",
}


def _num(v: Any, fmt: str = "{:,.4f}", none: str = "-") -> str:
    if v is None:
        return none
    try:
        return fmt.format(v)
    except (TypeError, ValueError):
        return str(v)


def _pnl(v: float | None) -> Text:
    if v is None:
        return Text("-")
    style = "green" if v > 0 else "red" if v < 0 else ""
    return Text(f"{v:+,.4f}", style=style)


def header(snap: Snapshot, narrow: bool = False) -> Text:
    """The run's state, latency and totals; on two lines in a narrow terminal."""
    t = Text()
    t.append(" FlashMM ", style="bold white on blue")
    t.append(f"  {snap.mode} ", style="bold")
    t.append(f"[{snap.profile}]  ")
    t.append(snap.state.upper(), style=_STATE_STYLE.get(snap.state, ""))
    if snap.reason:
        t.append(f" ({snap.reason})", style="yellow")
    lat = snap.latency
    decision = f"  decision p50 {lat.p50_us:,.0f}µs p99 {lat.p99_us:,.0f}µs"
    t.append(f"   up {snap.uptime_s:,.0f}s  events {snap.events:,}")
    if not narrow:
        t.append(decision)
    t.append("\n P&L " if narrow else "   P&L ")
    t.append_text(_pnl(snap.pnl_usdc))
    t.append(f" USDC  fills {snap.fills_shown}  fees {snap.fees_usdc:,.4f}")
    if narrow:
        t.append(decision)
    return t


def _arrow(direction: int) -> str:
    return {1: "▲", -1: "▼"}.get(direction, "•")


def _usage_style(usage: float) -> str:
    """The position limit's use: yellow past 60 %, red past 90 %."""
    return "red" if usage > 0.9 else "yellow" if usage > 0.6 else ""


def market_table(snap: Snapshot) -> Table:
    t = Table(expand=True, title="Markets", title_justify="left", header_style="bold")
    for col, just in (
        ("market", "left"),
        ("mid", "right"),
        ("spread\nours / ref", "right"),
        ("bids (ours)", "right"),
        ("asks (ours)", "right"),
        ("position", "right"),
        ("limit", "right"),
        ("realized", "right"),
        ("unrealized", "right"),
        ("fills", "right"),
        ("signal", "left"),
        ("feed", "right"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for sym, m in snap.markets.items():
        quotes = [q for q in m.quotes if q.live]
        bids = [q for q in quotes if q.side == "buy"]
        asks = sorted((q for q in quotes if q.side == "sell"), key=lambda q: q.price)
        bid_txt = "\n".join(f"{q.size:,.4g} @ {q.price:,.6g}" for q in bids) or "-"
        ask_txt = "\n".join(f"{q.price:,.6g} x {q.size:,.4g}" for q in asks) or "-"
        sig = m.signal
        arrow = _arrow(sig.direction)
        # the skew the strategy applied (capped at model.max_skew_bps), not the raw view
        sig_txt = f"{arrow} skew {sig.skew_bps:+.1f}bps c={sig.confidence:.2f}\n{sig.source or '-'}"
        usage = m.limit_usage
        usage_style = _usage_style(usage)
        age = m.data_age_ms
        feed = "-" if age is None else f"{age:,.0f}ms"
        if m.blocked:
            feed += f"\n[yellow]{m.blocked}[/]"
        t.add_row(
            sym,
            _num(m.mid, "{:,.6g}"),
            f"{_num(m.quoted_spread_bps, '{:.1f}bps')}\n{_num(m.spread_bps, '{:.2f}bps')} ref",
            bid_txt,
            ask_txt,
            f"{m.position:,.4g}\n{m.position_usdc:,.2f} USDC",
            Text(f"{usage:.0%}", style=usage_style),
            _pnl(m.realized_usdc),
            _pnl(m.unrealized_usdc),
            str(m.fills),
            sig_txt,
            feed,
        )
    return t


#: below this many columns the panel shows the compact market table (an 80-column
#: terminal cut every cell of the full one to "1.2…")
FULL_TABLE_WIDTH = 140


def compact_market_table(snap: Snapshot) -> Table:
    """One line per market for a narrow terminal: mid, our best bid and ask, position,
    P&L, fills and the applied skew (a stale feed shows in the breakers; the rest is in
    ``flashmm status``)."""
    t = Table(
        title="Markets",
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for col in ("market", "mid", "bid / ask (ours)", "pos USDC", "P&L", "fills", "skew"):
        t.add_column(col, justify="left" if col == "market" else "right", no_wrap=True)
    for sym, m in snap.markets.items():
        quotes = [q for q in m.quotes if q.live]
        bid = max((q.price for q in quotes if q.side == "buy"), default=None)
        ask = min((q.price for q in quotes if q.side == "sell"), default=None)
        usage = m.limit_usage
        usage_style = _usage_style(usage)
        arrow = _arrow(m.signal.direction)
        pnl = (m.realized_usdc or 0.0) + (m.unrealized_usdc or 0.0)
        t.add_row(
            sym if not m.blocked else Text(sym, style="yellow"),
            _num(m.mid, "{:,.6g}"),
            f"{_num(bid, '{:,.6g}')} / {_num(ask, '{:,.6g}')}",
            Text(f"{m.position_usdc:,.0f}", style=usage_style),
            _pnl(pnl),
            str(m.fills),
            f"{arrow}{m.signal.skew_bps:+.1f}",
        )
    return t


class _Fitted:
    """The panel laid out for the terminal: full from ``FULL_TABLE_WIDTH`` columns; below,
    the header on two lines, the compact market table and the closed breakers counted."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        narrow = options.max_width < FULL_TABLE_WIDTH
        yield header(self.snap, narrow)
        yield compact_market_table(self.snap) if narrow else market_table(self.snap)
        yield breaker_lines(self.snap, narrow)


def breaker_lines(snap: Snapshot, narrow: bool = False) -> Text:
    """One line of breaker lamps, then a line per tripped breaker with its reason.

    ``narrow``: the closed breakers are one green lamp with their count (13 lamps of
    two markets wrapped over four lines at 80 columns); tripped ones keep their names.
    """
    t = Text("Breakers ", style="bold")
    tripped = [(name, b) for name, b in snap.breakers.items() if b.get("state") == "tripped"]
    if narrow:
        closed = len(snap.breakers) - len(tripped)
        if closed:
            t.append("● ", style="green")
            t.append(f"{closed} closed  ")
        for name, _ in tripped:
            t.append("● ", style="bold red")
            t.append(name + "  ", style="red")
    else:
        for name, b in snap.breakers.items():
            bad = b.get("state") == "tripped"
            t.append("● ", style="bold red" if bad else "green")
            t.append(name + "  ", style="red" if bad else "")
    model = snap.model
    if model.state is not None:
        # off in the profile (the shipped default: the rule) is not an alarm
        lamp = {"closed": "green", "disabled": "dim"}.get(model.state, "bold red")
        t.append("● ", style=lamp)
        t.append(f"model ({'off: rules' if model.state == 'disabled' else model.state})")
        hr, ce = model.hit_rate_moved, model.calibration_error_pts
        if hr is not None:
            live = f" live hit {hr:.2f}"
            if ce is not None:
                live += f", calib {ce:.1f} pts"
            if model.online:
                live += " (online)"
            t.append(live, style="dim")
    for name, b in tripped:
        t.append(f"\n  {name}: {b.get('action', '')} — {b.get('reason', '')}", style="red")
    if model.state not in (None, "closed", "disabled") and model.reason:
        t.append(
            f"\n  model breaker {model.state}: {model.reason} (quoting on rules)",
            style="yellow",
        )
    return t


def render(snap: Snapshot | None) -> RenderableType:
    if snap is None:
        return Panel(Text("starting…"), title="FlashMM")
    return _Fitted(snap)


def live_panel(get_snapshot: Callable[[], Snapshot | None], refresh_hz: float = 4.0) -> Any:
    """A Rich ``Live`` that renders the latest snapshot from its own refresh thread."""
    from rich.live import Live

    return Live(
        get_renderable=lambda: render(get_snapshot()),
        refresh_per_second=min(refresh_hz, 4.0),
        screen=False,
        transient=False,
        redirect_stdout=False,
        redirect_stderr=False,
    )


def summary_table(summary: Mapping[str, Any]) -> Table:
    t = Table(title="FlashMM run summary", title_justify="left", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value", justify="right")
    for k in (
        "mode",
        "state",
        "events",
        "pnl_usdc",
        "fees_usdc",
        "fills",
        "volume_usdc",
        "max_abs_inventory_usdc",
        "position_limit_breaches",
        "quotes_sent",
        "cancels_sent",
        "decision_p50_us",
        "decision_p99_us",
        "wall_s",
        "events_per_s",
    ):
        if k in summary:
            v = summary[k]
            t.add_row(k, f"{v:,.4f}" if isinstance(v, float) else str(v))
    if "open_positions" in summary:
        pos = summary["open_positions"] or {}
        t.add_row("open positions", ", ".join(f"{m} {v:g}" for m, v in pos.items()) or "none")
    if "open_orders" in summary:
        t.add_row("open orders at exit", str(len(summary["open_orders"] or [])))
    journal = summary.get("journal")
    if isinstance(journal, Mapping):
        t.add_row(
            "journal (all runs)",
            f"fills {journal.get('fills', 0)}, P&L {float(journal.get('pnl_usdc') or 0):,.4f}",
        )
        if journal.get("failure"):
            t.add_row("journal failure", escape(str(journal["failure"])))
    return t
