"""Backtest plots as one self-contained HTML file (inline SVG, no dependencies).

Charts: equity with its split (spread capture, inventory, fees), inventory,
our best quotes against the book's best bid/ask, and the markout curve.
Long series are thinned to at most ``MAX_POINTS`` points (min and max of
each bucket are kept so spikes stay visible).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flashmm.types import NS_PER_S

if TYPE_CHECKING:
    from flashmm.backtest.recorder import BacktestResult

MAX_POINTS = 1500
W, H = 960, 280
PAD_L, PAD_R, PAD_T, PAD_B = 70, 16, 28, 30
COLORS = ("#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b")

Series = tuple[str, np.ndarray, np.ndarray, str]  # name, x, y (NaN = gap), colour


def _thin(x: np.ndarray, y: np.ndarray, n: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= n:
        return x, y
    k = math.ceil(len(x) / (n // 2))
    xs, ys = [], []
    for i in range(0, len(x), k):
        seg = y[i : i + k]
        xs_seg = x[i : i + k]
        if np.all(np.isnan(seg)):
            xs.append(xs_seg[0])
            ys.append(np.nan)
            continue
        lo, hi = int(np.nanargmin(seg)), int(np.nanargmax(seg))
        for j in sorted({lo, hi}):
            xs.append(xs_seg[j])
            ys.append(seg[j])
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 0.1 or a == 0:
        return f"{v:.3f}"
    return f"{v:.2e}"


def clock_format(x0: float, x1: float) -> Callable[[float], str]:
    """Tick labels for epoch seconds: UTC clock time, with the date when the span is long."""
    span = x1 - x0
    fmt = "%m-%d %H:%M" if span > 86_400 else "%H:%M" if span > 600 else "%H:%M:%S"
    return lambda v: datetime.fromtimestamp(v, UTC).strftime(fmt)


def line_chart(
    title: str,
    series: Sequence[Series],
    x_label: str,
    y_label: str,
    step: bool = True,
    clock: bool = False,
) -> str:
    """An SVG line chart. ``step`` draws sample-and-hold steps; ``clock``: x is epoch
    seconds, labelled in UTC clock time."""
    thinned = [(n, *_thin(np.asarray(x, float), np.asarray(y, float)), c) for n, x, y, c in series]
    xs = np.concatenate([s[1] for s in thinned]) if thinned else np.zeros(0)
    ys = np.concatenate([s[2] for s in thinned]) if thinned else np.zeros(0)
    ys = ys[~np.isnan(ys)]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        'font-family="sans-serif" font-size="11">'
    ]
    out.append(
        f'<text x="{PAD_L}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>'
    )
    if not len(xs) or not len(ys):
        out.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(out)
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = float(ys.min()), float(ys.max())
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    x_fmt = clock_format(x0, x1) if clock else _fmt
    if clock:
        x_label = f"UTC time ({datetime.fromtimestamp(x0, UTC):%Y-%m-%d})"

    def sx(v: float) -> float:
        return PAD_L + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return PAD_T + (y1 - v) / (y1 - y0) * ph

    out.append(
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>'
    )
    for i in range(5):
        v = y0 + (y1 - y0) * i / 4
        yy = sy(v)
        out.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>'
        )
        out.append(f'<text x="{PAD_L - 4}" y="{yy + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
        xv = x0 + (x1 - x0) * i / 4
        out.append(f'<text x="{sx(xv):.1f}" y="{H - 12}" text-anchor="middle">{x_fmt(xv)}</text>')
    if y0 < 0 < y1:
        out.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{sy(0):.1f}" y2="{sy(0):.1f}" '
            'stroke="#bbb" stroke-dasharray="4"/>'
        )
    out.append(
        f'<text x="{W - PAD_R}" y="{H - 1}" text-anchor="end" fill="#555">'
        f"{html.escape(x_label)}</text>"
    )
    out.append(
        f'<text x="12" y="{PAD_T + ph / 2}" transform="rotate(-90 12 {PAD_T + ph / 2})" '
        f'text-anchor="middle" fill="#555">{html.escape(y_label)}</text>'
    )
    lx = PAD_L + 8 * len(title) + 24  # legend after the title
    for name, x, y, colour in thinned:
        pts: list[str] = []
        segs: list[str] = []
        prev_y: float | None = None
        for xv, yv in zip(x.tolist(), y.tolist(), strict=True):
            if math.isnan(yv):
                if len(pts) > 1:
                    segs.append(" ".join(pts))
                pts, prev_y = [], None
                continue
            if step and prev_y is not None:
                pts.append(f"{sx(xv):.1f},{sy(prev_y):.1f}")
            pts.append(f"{sx(xv):.1f},{sy(yv):.1f}")
            prev_y = yv
        if pts:
            segs.append(" ".join(pts))
        for s in segs:
            if " " not in s:
                out.append(
                    f'<circle cx="{s.split(",")[0]}" cy="{s.split(",")[1]}" r="2" fill="{colour}"/>'
                )
            else:
                out.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" points="{s}"/>'
                )
        out.append(f'<rect x="{lx}" y="8" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{lx + 14}" y="17">{html.escape(name)}</text>')
        lx += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


def charts(res: BacktestResult) -> list[str]:
    rec = res.recorder
    rep = res.report
    t = np.asarray(rec.s_t, dtype=float) / NS_PER_S  # epoch s, shown as UTC clock time
    xl = "UTC time"
    eq = np.asarray(rec.s_equity, dtype=float)
    fees = np.asarray(rec.s_fees, dtype=float)
    # cumulative spread capture at each sample time
    from flashmm.backtest.report import FillTable

    ft = FillTable(rec.fills, rec, rep["sim_end_ns"])
    order = np.argsort(ft.ts, kind="stable")
    cum = np.cumsum(ft.capture[order]) if len(order) else np.zeros(0)
    idx = np.searchsorted(ft.ts[order], np.asarray(rec.s_t, dtype=np.int64), side="right") - 1
    spread = np.where(idx >= 0, cum[np.maximum(idx, 0)] if len(cum) else 0.0, 0.0)
    inventory = eq + fees - spread
    out = [
        line_chart(
            "Equity and P&L split (USDC)",
            [
                ("equity", t, eq, COLORS[0]),
                ("spread capture", t, spread, COLORS[1]),
                ("inventory", t, inventory, COLORS[2]),
                ("-fees", t, -fees, COLORS[3]),
            ],
            xl,
            "USDC",
            clock=True,
        )
    ]
    inv_series: list[Series] = []
    for i, (sym, tr) in enumerate(rec.tracks.items()):
        inv_series.append((sym, t, np.asarray(tr.s_inv, dtype=float), COLORS[i % len(COLORS)]))
    out.append(line_chart("Inventory (USDC at mid)", inv_series, xl, "USDC", clock=True))
    for sym, tr in rec.tracks.items():
        tick = tr.ms.spec.tick

        def px(v: list[int], tick: float = tick) -> np.ndarray:
            a = np.asarray(v, dtype=float) * tick
            a[a <= 0] = np.nan
            return a

        out.append(
            line_chart(
                f"{sym}: our best quotes against the book",
                [
                    ("book bid", t, px(tr.s_bid), "#9ecae1"),
                    ("book ask", t, px(tr.s_ask), "#fdae6b"),
                    ("our bid", t, px(tr.s_qbid), COLORS[0]),
                    ("our ask", t, px(tr.s_qask), COLORS[2]),
                ],
                xl,
                "price",
                clock=True,
            )
        )
    curve = rep.get("markout_curve_bps", {})
    hs = np.asarray([float(k[:-1]) for k in curve], dtype=float)
    vs = np.asarray([np.nan if v is None else v for v in curve.values()], dtype=float)
    out.append(
        line_chart(
            "Markout curve: mean side·(mid(t+h) − price)/price",
            [("markout", np.log10(hs) if len(hs) else hs, vs, COLORS[0])],
            "log10 horizon (s)",
            "bps",
            step=False,
        )
    )
    return out


def write_html(res: BacktestResult, path: Path) -> Path:
    rep = res.report
    keys = [
        "pnl_usdc", "pnl_spread_usdc", "pnl_inventory_usdc", "fees_usdc", "fills", "fill_ratio",
        "quote_uptime", "avg_quoted_spread_bps", "avg_market_spread_bps", "markout_bps",
        "max_abs_inventory_usdc", "max_drawdown_usdc", "sharpe", "state", "events", "wall_s",
    ]  # fmt: skip
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(rep.get(k)))}</td></tr>" for k in keys
    )
    body = "\n".join(f"<div>{c}</div>" for c in charts(res))
    files = ", ".join(html.escape(f) for f in rep.get("data", {}).get("files", []))
    doc = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>FlashMM backtest</title>
<style>body{{font-family:sans-serif;margin:20px}}
table{{border-collapse:collapse;margin-bottom:16px}}
th,td{{border:1px solid #ddd;padding:3px 8px;text-align:left;font-size:12px}}</style></head>
<body><h2>FlashMM backtest</h2><p>{files}</p>
<table>{rows}</table>
{body}
</body></html>
"""
    path.write_text(doc)
    return path


__all__ = ["line_chart", "write_html"]
