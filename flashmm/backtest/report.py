"""The backtest report: ``report.json`` keys, fills CSV rows and the terminal summary.

Every key is defined in ``docs/backtest.md``. In short (USDC unless said):

- ``pnl_usdc`` = realized + unrealized (marked at the final mid) − fees
  = ``pnl_spread_usdc`` + ``pnl_inventory_usdc`` − ``fees_usdc``;
- ``pnl_spread_usdc`` = Σ over fills of side · (mid at the fill − price) · size
  (side +1 buy, −1 sell; mid of the engine's book at the fill's venue time);
- ``pnl_inventory_usdc`` = the rest before fees: what holding the position
  through mid moves earned;
- markouts: side · (mid(t + h) − price) / price in bps, mean over fills
  whose horizon ends inside the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flashmm.types import NS_PER_S, Fill, Liquidity

if TYPE_CHECKING:
    from flashmm.backtest.recorder import BacktestResult, MarketTrack, Recorder
    from flashmm.config import Config
    from flashmm.engine import Engine
    from flashmm.feeds.cache import CachedFeed

MARKOUT_HORIZONS_S = (1.0, 5.0, 30.0)
CURVE_HORIZONS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
MINUTES_PER_YEAR = 365 * 24 * 60

REPORT_KEYS = (
    "pnl_usdc",
    "pnl_spread_usdc",
    "pnl_inventory_usdc",
    "fees_usdc",
    "volume_usdc",
    "fills",
    "maker_fills",
    "taker_fills",
    "orders_sent",
    "cancels_sent",
    "fill_ratio",
    "order_to_trade",
    "quote_uptime",
    "avg_quoted_spread_bps",
    "avg_market_spread_bps",
    "markout_bps",
    "max_abs_inventory_usdc",
    "final_inventory_usdc",
    "position_limit_breaches",
    "max_drawdown_usdc",
    "sharpe",
    "events",
    "wall_s",
    "events_per_s",
    "loop_s",
    "loop_events_per_s",
    "loop_cpu_s",
    "load_s",
    "cpu_s",
    "state",
    "breakers",
    "sim_start_ns",
    "sim_end_ns",
    "sim_s",
    "data",
    "markets",
    "markout_curve_bps",
    "config",
)


#: the report's keys that time the run (they differ between two runs of the same input)
TIMING_KEYS = frozenset(
    {"wall_s", "events_per_s", "loop_s", "loop_events_per_s", "loop_cpu_s", "load_s", "cpu_s"}
)


def _mid_lookup(tr: MarketTrack) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(tr.mid_ts, dtype=np.int64), np.asarray(tr.mid2, dtype=np.int64)


def mid_at(ts: np.ndarray, mid_ts: np.ndarray, mid2: np.ndarray) -> np.ndarray:
    """Mid in ticks at each time (last book change at or before it); NaN before the first."""
    idx = np.searchsorted(mid_ts, ts, side="right") - 1
    out = np.full(len(ts), np.nan)
    ok = idx >= 0
    vals = mid2[idx[ok]].astype(float) / 2.0
    vals[vals <= 0] = np.nan
    out[ok] = vals
    return out


class FillTable:
    """Per-fill arrays: mid at the fill, spread capture and markouts."""

    def __init__(self, fills: Sequence[Fill], rec: Recorder, end_ns: int) -> None:
        self.fills = [f for f in fills if f.market in rec.tracks]
        n = len(self.fills)
        self.ts = np.array([f.ts_ns for f in self.fills], dtype=np.int64)
        self.side = np.array([int(f.side) for f in self.fills], dtype=np.int64)
        self.px = np.array([f.price_ticks for f in self.fills], dtype=float)
        self.size = np.array([f.size_lots for f in self.fills], dtype=float)
        self.unit = np.array([rec.tracks[f.market].unit for f in self.fills], dtype=float)
        self.mid = np.full(n, np.nan)
        self.end_ns = end_ns
        self.markouts: dict[float, np.ndarray] = {}
        by_market: dict[str, list[int]] = {}
        for i, f in enumerate(self.fills):
            by_market.setdefault(f.market, []).append(i)
        self._by_market = {m: np.array(ix, dtype=np.int64) for m, ix in by_market.items()}
        self._lookups = {m: _mid_lookup(rec.tracks[m]) for m in self._by_market}
        for m, ix in self._by_market.items():
            self.mid[ix] = mid_at(self.ts[ix], *self._lookups[m])
        mid = np.where(np.isnan(self.mid), self.px, self.mid)
        self.capture = self.side * (mid - self.px) * self.size * self.unit
        for h in sorted(set(MARKOUT_HORIZONS_S) | set(CURVE_HORIZONS_S)):
            self.markouts[h] = self._markout(h)

    def _markout(self, h: float) -> np.ndarray:
        out = np.full(len(self.fills), np.nan)
        dt = int(h * NS_PER_S)
        for m, ix in self._by_market.items():
            t = self.ts[ix] + dt
            later = mid_at(t, *self._lookups[m])
            later[t > self.end_ns] = np.nan  # the horizon runs past the data
            out[ix] = self.side[ix] * (later - self.px[ix]) / self.px[ix] * 1e4
        return out

    def mean_markout(self, h: float) -> float | None:
        v = self.markouts[h]
        v = v[~np.isnan(v)]
        return round(float(v.mean()), 4) if len(v) else None


def _label(h: float) -> str:
    return f"{h:g}s"


def equity_curve(rec: Recorder, final_ns: int, final_pnl: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray([*rec.s_t, final_ns], dtype=np.int64)
    e = np.asarray([*rec.s_equity, final_pnl], dtype=float)
    return t, e


def max_drawdown(equity: np.ndarray) -> float:
    if not len(equity):
        return 0.0
    peak = np.maximum.accumulate(np.maximum(equity, 0.0))
    return float(np.max(peak - equity))


def sharpe_per_minute(t: np.ndarray, e: np.ndarray) -> float:
    """Annualised Sharpe of per-minute equity changes (24/7 market, risk-free rate 0)."""
    if len(t) < 2:
        return 0.0
    step = 60 * NS_PER_S
    grid = np.arange(t[0], t[-1] + 1, step, dtype=np.int64)
    if grid[-1] != t[-1]:
        grid = np.append(grid, t[-1])
    if len(grid) < 3:
        return 0.0
    idx = np.searchsorted(t, grid, side="right") - 1
    d = np.diff(e[idx])
    sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    if sd <= 1e-12:
        return 0.0
    return float(d.mean() / sd * math.sqrt(MINUTES_PER_YEAR))


def _r(v: float | None, nd: int = 6) -> float | None:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return round(float(v), nd)


def build_report(
    cfg: Config,
    engine: Engine,
    rec: Recorder,
    feed: CachedFeed,
    events: int,
    timing: dict[str, Any],
    from_ns: int | None,
    to_ns: int | None,
) -> dict[str, Any]:
    acct = engine.acct
    summary = engine.summary()  # marks the accounts at the final mids
    mids = engine.mids()
    pnl = acct.total_pnl(mids)
    fees = acct.fees
    tracks = rec.tracks.values()
    end_ns = max((tr.mid_ts[-1] for tr in tracks if tr.mid_ts), default=0)
    data_end = int(end_ns or engine.now_ns)
    ft = FillTable(rec.fills, rec, data_end)
    spread_pnl = float(ft.capture.sum())
    t, e = equity_curve(rec, engine.now_ns, pnl)
    dd = max(max_drawdown(e), acct.max_drawdown)
    max_inv = max([acct.max_abs_inventory_usdc, *(abs(x) for tr in tracks for x in tr.s_inv)])
    orders_sent = sum(ms.orders_sent for ms in engine.markets.values())
    cancels_sent = sum(ms.cancels_sent for ms in engine.markets.values())
    sent_lots = sum(tr.sent_lots for tr in tracks)
    maker_lots = sum(
        f.size_lots for f in rec.fills if f.client_id and f.liquidity is Liquidity.MAKER
    )
    fills = acct.fills
    t_total = sum(tr.t_total_ns for tr in tracks)
    t_both = sum(tr.t_both_ns for tr in tracks)
    t_valid = sum(tr.t_valid_ns for tr in tracks)
    q_int = sum(tr.q_spread_int for tr in tracks)
    m_int = sum(tr.m_spread_int for tr in tracks)
    wall = float(timing["wall_s"])
    loop_s = float(timing["loop_s"])
    sim_start = rec.s_t[0] if rec.s_t else 0
    breakers = [
        {"kind": kind, **payload}
        for kind, payload in rec.notes
        if kind in ("breaker", "state") and isinstance(payload, dict)
    ]
    markets: dict[str, Any] = {}
    for sym, tr in rec.tracks.items():
        pos = acct.positions[sym]
        mid = mids.get(sym, 0.0)
        markets[sym] = {
            "reference": tr.ms.spec.reference,
            "pnl_usdc": _r(acct.market_pnl(sym, mid)),
            "pnl_spread_usdc": _r(
                float(sum(c for f, c in zip(ft.fills, ft.capture, strict=True) if f.market == sym))
            ),
            "fees_usdc": _r(pos.fees_usdc),
            "fills": pos.fills,
            "volume_usdc": _r(pos.volume_usdc),
            "final_position_lots": pos.lots,
            "final_inventory_usdc": _r(acct.inventory_usdc(sym, mid)),
            "orders_sent": tr.ms.orders_sent,
            "cancels_sent": tr.ms.cancels_sent,
            "quote_uptime": _r(tr.t_both_ns / tr.t_total_ns if tr.t_total_ns else 0.0),
            "avg_quoted_spread_bps": _r(
                tr.q_spread_int / tr.t_both_ns if tr.t_both_ns else None, 4
            ),
            "avg_market_spread_bps": _r(
                tr.m_spread_int / tr.t_valid_ns if tr.t_valid_ns else None, 4
            ),
            "book_checks": tr.ms.builder.checks,
            "book_mismatches": tr.ms.builder.mismatches,
        }
    return {
        "pnl_usdc": _r(pnl),
        "pnl_spread_usdc": _r(spread_pnl),
        "pnl_inventory_usdc": _r(pnl + fees - spread_pnl),
        "fees_usdc": _r(fees),
        "volume_usdc": _r(acct.volume),
        "fills": fills,
        "maker_fills": acct.maker_fills,
        "taker_fills": acct.taker_fills,
        "orders_sent": orders_sent,
        "cancels_sent": cancels_sent,
        "fill_ratio": _r(maker_lots / sent_lots if sent_lots else 0.0),
        "order_to_trade": _r(orders_sent / fills if fills else None, 3),
        "quote_uptime": _r(t_both / t_total if t_total else 0.0),
        "avg_quoted_spread_bps": _r(q_int / t_both if t_both else None, 4),
        "avg_market_spread_bps": _r(m_int / t_valid if t_valid else None, 4),
        "markout_bps": {_label(h): ft.mean_markout(h) for h in MARKOUT_HORIZONS_S},
        "max_abs_inventory_usdc": _r(max_inv),
        "final_inventory_usdc": _r(
            sum(acct.inventory_usdc(s, mids.get(s, 0.0)) for s in rec.tracks)
        ),
        "position_limit_breaches": acct.limit_breaches,
        "max_drawdown_usdc": _r(dd),
        "sharpe": _r(sharpe_per_minute(t, e), 4),
        "events": events,
        "wall_s": round(wall, 3),
        "events_per_s": round(events / wall, 1) if wall > 0 else None,
        "loop_s": round(loop_s, 3),
        "loop_events_per_s": round(events / loop_s, 1) if loop_s > 0 else None,
        "loop_cpu_s": round(float(timing.get("loop_cpu_s", 0.0)), 3),
        "load_s": round(float(timing["load_s"]), 3),
        "cpu_s": round(float(timing.get("cpu_s", 0.0)), 3),
        "state": engine.state,
        "breakers": breakers,
        "sim_start_ns": sim_start,
        "sim_end_ns": engine.now_ns,
        "sim_s": round((engine.now_ns - sim_start) / NS_PER_S, 3) if sim_start else 0.0,
        "data": {
            "files": [Path(f).name for f in feed.stats.files],
            "lines": feed.stats.lines,
            "bad_lines": feed.stats.bad_lines,
            "from_ns": from_ns,
            "to_ns": to_ns,
            "warmup_events": timing.get("warmup_events", 0),
            "from_cache": feed.from_cache,
            "orders_left_open": timing.get("orders_left_open", 0),
            "feed_gaps": summary.get("feed_gaps", 0),
        },
        "markets": markets,
        "markout_curve_bps": {_label(h): ft.mean_markout(h) for h in CURVE_HORIZONS_S},
        "config": cfg.model_dump(mode="json", by_alias=True),
    }


# --- outputs -----------------------------------------------------------------

FILL_COLUMNS = (
    "ts_ns",
    "market",
    "side",
    "price",
    "size",
    "price_ticks",
    "size_lots",
    "liquidity",
    "fee_usdc",
    "client_id",
    "fill_id",
    "mid_at_fill",
    "spread_capture_usdc",
    "markout_1s_bps",
    "markout_5s_bps",
    "markout_30s_bps",
)


def fill_rows(res: BacktestResult) -> list[dict[str, Any]]:
    rec = res.recorder
    ft = FillTable(rec.fills, rec, res.report["sim_end_ns"])
    rows = []

    def num(x: float) -> str:
        return "" if math.isnan(x) else f"{x:.4f}"

    for i, f in enumerate(ft.fills):
        spec = rec.tracks[f.market].ms.spec
        mid = ft.mid[i]
        rows.append(
            {
                "ts_ns": f.ts_ns,
                "market": f.market,
                "side": f.side.name.lower(),
                "price": f"{spec.price(f.price_ticks):.10g}",
                "size": f"{spec.size(f.size_lots):.10g}",
                "price_ticks": f.price_ticks,
                "size_lots": f.size_lots,
                "liquidity": f.liquidity.name.lower(),
                "fee_usdc": f"{f.fee_usdc:.8f}",
                "client_id": f.client_id,
                "fill_id": f.fill_id,
                "mid_at_fill": "" if math.isnan(mid) else f"{spec.price(mid):.10g}",
                "spread_capture_usdc": f"{ft.capture[i]:.8f}",
                "markout_1s_bps": num(ft.markouts[1.0][i]),
                "markout_5s_bps": num(ft.markouts[5.0][i]),
                "markout_30s_bps": num(ft.markouts[30.0][i]),
            }
        )
    return rows


def _fmt(v: Any, fmt: str) -> str:
    if v is None:
        return "-"
    try:
        return fmt.format(v)
    except (TypeError, ValueError):
        return str(v)


def summary_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title="Backtest", title_justify="left", header_style="bold", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value", justify="right")
    mk = report.get("markout_bps", {})
    rows = [
        ("P&L (USDC)", _fmt(report["pnl_usdc"], "{:+,.4f}")),
        ("  spread capture", _fmt(report["pnl_spread_usdc"], "{:+,.4f}")),
        ("  inventory", _fmt(report["pnl_inventory_usdc"], "{:+,.4f}")),
        ("  fees", _fmt(report["fees_usdc"], "{:,.4f}")),
        ("volume (USDC)", _fmt(report["volume_usdc"], "{:,.2f}")),
        (
            "fills (maker/taker)",
            f"{report['fills']} ({report['maker_fills']}/{report['taker_fills']})",
        ),
        ("orders / cancels", f"{report['orders_sent']:,} / {report['cancels_sent']:,}"),
        ("fill ratio (lots)", _fmt(report["fill_ratio"], "{:.4%}")),
        ("order-to-trade", _fmt(report["order_to_trade"], "{:,.1f}")),
        ("quote uptime", _fmt(report["quote_uptime"], "{:.1%}")),
        (
            "quoted / market spread (bps)",
            f"{_fmt(report['avg_quoted_spread_bps'], '{:.2f}')} / "
            f"{_fmt(report['avg_market_spread_bps'], '{:.2f}')}",
        ),
        (
            "markout 1s / 5s / 30s (bps)",
            " / ".join(_fmt(mk.get(k), "{:+.2f}") for k in ("1s", "5s", "30s")),
        ),
        ("max |inventory| (USDC)", _fmt(report["max_abs_inventory_usdc"], "{:,.2f}")),
        ("limit breaches", str(report["position_limit_breaches"])),
        ("max drawdown (USDC)", _fmt(report["max_drawdown_usdc"], "{:,.4f}")),
        ("Sharpe (per-minute, annualised)", _fmt(report["sharpe"], "{:.2f}")),
        ("state", str(report["state"])),
        ("sim time", _fmt(report["sim_s"], "{:,.0f} s")),
        ("events", f"{report['events']:,}"),
        ("wall / loop (s)", f"{report['wall_s']:.2f} / {report['loop_s']:.2f}"),
        (
            "events/s (end to end / loop)",
            f"{_fmt(report['events_per_s'], '{:,.0f}')} / "
            f"{_fmt(report['loop_events_per_s'], '{:,.0f}')}",
        ),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t


__all__ = [
    "REPORT_KEYS",
    "FillTable",
    "build_report",
    "fill_rows",
    "max_drawdown",
    "sharpe_per_minute",
    "summary_table",
]
