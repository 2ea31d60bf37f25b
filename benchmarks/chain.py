"""FlashBook gas and latency on a local anvil with Sei's 0.4 s blocks.

    python benchmarks/chain.py [--duration 60] [--rate 5] [--samples 40]
                               [--sstore-set-gas 72000] [--json]

Reports gas and fresh storage slots (from debug_traceTransaction, prestateTracer in diff
mode) per operation: the first 3+3 placement, a 3+3 requote moving all six by one tick
(warm oscillation, and a 200-tick one-direction trend before and after the level ring is
warmed), one of six changed,
a take of two full levels, cancelAll of 6 orders and of none, and 3 asks stepped up by a tick
on a book without bids after another account placed and cancelled an ask 50,000 ticks below
them (which left a stale best-ask hint before far-ahead levels were counted apart).
Sei-priced gas counts each fresh slot at ``--sstore-set-gas`` (Sei's chain parameter
SeiSstoreSetGasEip2200: 72,000 in sei-chain v6.3.0, 20,000 in v6.3.1; default: the
venue setting's default)
instead of anvil's 20,000. Also submit->receipt latency p50/p99, a sustained run of the
SeiVenue at ``--rate`` requotes per second (transactions, coalesced requotes, failed
transactions, nonce resyncs) and the projected daily gas cost at 50 gwei.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flashmm.types import MarketSpec, OrderRequest, Side
from flashmm.venues.sei.abi import ASK, BID, book_abi, op_cancel, op_place, op_replace
from flashmm.venues.sei.book import BookClient
from flashmm.venues.sei.gas import GasReport, gas_report, probe_sstore_set_gas
from flashmm.venues.sei.keys import account_from_hex
from flashmm.venues.sei.local import Anvil, Deployment, setup_local_chain
from flashmm.venues.sei.rpc import JsonRpc
from flashmm.venues.sei.settings import SeiVenueSettings
from flashmm.venues.sei.tx import TxSender
from flashmm.venues.sei.venue import SeiVenue

SEI = 1
GAS_PRICE_GWEI = 50
TREND_TICKS = 200
STALE_STEPS = 20
SSTORE_SET_GAS = SeiVenueSettings.model_fields["sstore_set_gas"].default
SECONDS_PER_DAY = 86_400


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


class Quoter:
    """3 bids + 3 asks around a mid, moved with replace ops in fixed slots."""

    def __init__(self, mid: int) -> None:
        self.mid = mid
        self.next_id = 1
        self.ids: dict[int, int] = {}

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def ops(self, *, first: bool = False, only_one: bool = False) -> list[int]:
        out = []
        for i in range(6):
            if only_one and i != 0:
                continue
            side = BID if i < 3 else ASK
            price = self.mid - 1 - i if side == BID else self.mid + 1 + (i - 3)
            size = 10 if not only_one else 9 + (self.next_id % 2)
            new = self._id()
            if first:
                out.append(op_place(i, new, side, price, size))
            else:
                out.append(op_replace(i, self.ids[i], new, side, price, size))
            self.ids[i] = new
        return out


async def measure(
    rpc: JsonRpc, book: BookClient, sender: TxSender, ops: list[int]
) -> tuple[GasReport, float]:
    t0 = time.perf_counter()
    sent = await book.send_requote(sender, SEI, ops)
    receipt = await sender.wait(sent)
    latency = time.perf_counter() - t0
    return await gas_report(rpc, sent.tx_hash, receipt, sstore_set_gas=SSTORE_SET_GAS), latency


async def report_of(rpc: JsonRpc, receipt: dict[str, Any]) -> GasReport:
    return await gas_report(rpc, receipt["transactionHash"], receipt, sstore_set_gas=SSTORE_SET_GAS)


async def gas_figures(dep: Deployment, samples: int) -> dict[str, Any]:
    rpc = JsonRpc(dep.rpc_url)
    try:
        maker = TxSender(
            rpc,
            account_from_hex(dep.accounts["maker"]["private_key"]),
            dep.chain_id,
            abi=book_abi(),
        )
        taker = TxSender(
            rpc,
            account_from_hex(dep.accounts["taker"]["private_key"]),
            dep.chain_id,
            abi=book_abi(),
        )
        book = BookClient(rpc, dep.book)
        usdc = dep.tokens["USDC"]["address"]
        probed = await probe_sstore_set_gas(rpc, usdc, maker.address, dep.book)
        q = Quoter(3000)
        first, _ = await measure(rpc, book, maker, q.ops(first=True))
        for _ in range(8):  # warm up: touch the level and bitmap words around the quotes
            q.mid += 1
            await measure(rpc, book, maker, q.ops())
        q.mid -= 8
        moves: list[GasReport] = []
        latencies: list[float] = []
        for k in range(samples):
            q.mid += 1 if (k // 4) % 2 == 0 else -1
            g, lat = await measure(rpc, book, maker, q.ops())
            moves.append(g)
            latencies.append(lat)
        ones = [await measure(rpc, book, maker, q.ops(only_one=True)) for _ in range(5)]
        takes: list[GasReport] = []
        for _ in range(5):
            # the best two ask levels hold 10 lots each: take 20 lots = two full levels
            receipt = await book.take(taker, SEI, 0, q.mid + 2, 20)
            takes.append(await report_of(rpc, receipt))
            await measure(rpc, book, maker, q.ops())  # restore the quotes
        # cancelAll of 6 live orders, then of none
        cancel6 = await report_of(rpc, await book.cancel_all(maker, SEI))
        cancel0 = await report_of(rpc, await book.cancel_all(maker, SEI))
        # a one-direction trend of TREND_TICKS ticks into ring entries no quote has used yet
        # (fresh level and bitmap words at the leading edge); then warm() pays for the whole
        # ring once, and a trend far from every earlier quote writes no fresh slot
        trend_cold = await trend(rpc, book, maker, Quoter(20_000))
        ring = int((await book.call("RING_TICKS"))[0])
        chunk = -(-ring // 4)  # four transactions, each under Sei's 12.5 M block gas
        parts = [
            await report_of(rpc, await book.warm(maker, SEI, lo, min(ring, lo + chunk - 1)))
            for lo in range(1, ring + 1, chunk)
        ]
        warm = GasReport(
            parts[0].tx_hash,
            sum(p.gas_used for p in parts),
            sum(p.fresh_slots for p in parts),
            sum(p.written_slots for p in parts),
            SSTORE_SET_GAS,
        )
        trend_warm = await trend(rpc, book, maker, Quoter(400_000))
        await book.cancel_all(maker, SEI)
        stale = await stale_hint(rpc, book, maker, taker)  # leaves an empty book
        return {
            "probed_sstore_set_gas": probed,
            "first_requote": first,
            "moves": moves,
            "one_changed": [g for g, _ in ones],
            "takes": takes,
            "cancel_all_6": cancel6,
            "cancel_all_0": cancel0,
            "trend_cold": trend_cold,
            "warm_range": warm,
            "trend_warm": trend_warm,
            "stale_hint": stale,
            "latency_s": latencies,
        }

    finally:
        await rpc.aclose()


async def trend(rpc: JsonRpc, book: BookClient, maker: TxSender, q: Quoter) -> list[GasReport]:
    await measure(rpc, book, maker, q.ops(first=True))
    out = []
    for _ in range(TREND_TICKS):
        q.mid += 1
        out.append((await measure(rpc, book, maker, q.ops()))[0])
    await book.cancel_all(maker, SEI)
    return out


async def stale_hint(
    rpc: JsonRpc, book: BookClient, maker: TxSender, other: TxSender
) -> list[GasReport]:
    """3 asks stepping up a tick per requote (warmed ticks, no bids in the book) after
    `other` placed and cancelled a one-lot ask 50,000 ticks below them, which leaves the
    best-ask hint there: nothing on a one-sided book tightens it but the book itself."""
    mid = 600_000
    await book.warm(maker, SEI, mid - 8, mid + STALE_STEPS + 8)
    ids = [1, 2, 3]
    await book.requote(maker, SEI, [op_place(i, ids[i], ASK, mid + i, 10) for i in range(3)])
    await book.requote(other, SEI, [op_place(0, 77, ASK, mid - 50_000, 1), op_cancel(0, 77)])
    out = []
    for k in range(1, STALE_STEPS + 1):
        ops = []
        for i in range(3):
            ops.append(op_replace(i, ids[i], ids[i] + 10, ASK, mid + k + i, 10))
            ids[i] += 10
        out.append(await report_of(rpc, await book.requote(maker, SEI, ops)))
    await book.cancel_all(maker, SEI)
    return out


async def sustained(dep: Deployment, duration_s: float, rate: float) -> dict[str, Any]:
    spec = MarketSpec("SEI/USDC", Decimal("0.0001"), Decimal("1"), "seiusdt")
    settings = SeiVenueSettings(
        rpc_url=dep.rpc_url,
        ws_url=dep.ws_url,
        chain_id=dep.chain_id,
        book_address=dep.book,
        markets={"SEI/USDC": SEI},
    )
    venue = SeiVenue(
        settings,
        specs={"SEI/USDC": spec},
        account=account_from_hex(dep.accounts["venue"]["private_key"]),
    )
    await venue.start()
    rpc = JsonRpc(dep.rpc_url)
    taker = TxSender(
        rpc, account_from_hex(dep.accounts["taker"]["private_key"]), dep.chain_id, abi=book_abi()
    )
    book = BookClient(rpc, dep.book)
    rng = random.Random(7)
    mid, cid = 5000, 1
    live: list[int] = []
    fills = rejects = accepted = 0
    requotes = 0
    t_end = time.monotonic() + duration_s
    next_take = time.monotonic() + 1.0
    take_tasks: list[asyncio.Task[Any]] = []
    try:
        while time.monotonic() < t_end:
            mid += rng.choice((-1, 0, 1))
            places = []
            for i in range(3):
                places.append(OrderRequest("SEI/USDC", cid, Side.BUY, mid - 1 - i, 10))
                places.append(OrderRequest("SEI/USDC", cid + 1, Side.SELL, mid + 1 + i, 10))
                cid += 2
            venue.requote("SEI/USDC", live, places, time.time_ns())
            requotes += 1
            live = [p.client_id for p in places]
            if time.monotonic() >= next_take:  # someone lifts our offer now and then
                next_take += 1.0
                side = rng.randint(0, 1)  # marketable: buy at the ask, sell at the bid
                limit = mid + 1 if side == 0 else mid - 1
                take = book.take(taker, SEI, side, limit, 3, gas=160_000)
                take_tasks.append(asyncio.create_task(take))
            for ev in venue.poll(time.time_ns()):
                name = type(ev).__name__
                fills += name == "Fill"
                rejects += name == "OrderRejected"
                accepted += name == "OrderAccepted"
            await asyncio.sleep(1.0 / rate)
        venue.cancel_all(None, time.time_ns())
        await venue.idle(60)
        await asyncio.gather(*take_tasks, return_exceptions=True)
        assert venue.sender is not None
        return {
            "duration_s": duration_s,
            "requotes": requotes,
            "txs": venue.stats["txs"],
            "coalesced": venue.stats["coalesced"],
            "reverted": venue.stats["reverted"],
            "dropped": venue.stats["dropped"],
            "send_errors": venue.stats["send_errors"],
            "nonce_resyncs_after_start": venue.sender.nonces.resyncs
            - 1
            + venue.sender.stats["nonce_resyncs"],
            "gas_used": venue.stats["gas_used"],
            "accepted": accepted,
            "rejected": rejects,
            "fills": fills,
        }
    finally:
        await venue.aclose()
        await rpc.aclose()


def stats(xs: list[GasReport]) -> dict[str, Any]:
    return {
        "n": len(xs),
        "gas_mean": statistics.mean(x.gas_used for x in xs),
        "gas_max": max(x.gas_used for x in xs),
        "fresh_slots_total": sum(x.fresh_slots for x in xs),
        "fresh_slots_max": max(x.fresh_slots for x in xs),
        "sei_gas_mean": statistics.mean(x.sei_gas for x in xs),
        "sei_gas_max": max(x.sei_gas for x in xs),
    }


def summarize(g: dict[str, Any], s: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sstore_set_gas": SSTORE_SET_GAS,
        "probed_sstore_set_gas_anvil": g["probed_sstore_set_gas"],
        "first_requote_3+3": stats([g["first_requote"]]),
        "requote_3+3_oscillation": stats(g["moves"]),
        "requote_3+3_trend_cold": stats(g["trend_cold"]),
        "warm_range": stats([g["warm_range"]]),
        "requote_3+3_trend_after_warm": stats(g["trend_warm"]),
        "requote_3_asks_stale_hint": stats(g["stale_hint"]),
        "requote_one_changed": stats(g["one_changed"]),
        "take_2_full_levels": stats(g["takes"]),
        "cancel_all_6": stats([g["cancel_all_6"]]),
        "cancel_all_none": stats([g["cancel_all_0"]]),
        "latency_submit_to_receipt_s": {
            "p50": pct(g["latency_s"], 0.5),
            "p99": pct(g["latency_s"], 0.99),
            "n": len(g["latency_s"]),
        },
    }
    sei_gas = out["requote_3+3_oscillation"]["sei_gas_mean"]
    per_tx_sei = sei_gas * GAS_PRICE_GWEI * 1e-9
    out["projection_50_gwei"] = {
        "sei_per_requote": per_tx_sei,
        "sei_per_day_5hz_every_cycle": per_tx_sei * 5 * SECONDS_PER_DAY,
    }
    if s is not None:
        out["sustained"] = s
        tx_rate = s["txs"] / s["duration_s"]
        avg_gas = s["gas_used"] / max(1, s["txs"])
        out["projection_50_gwei"]["sustained_tx_per_s"] = tx_rate
        out["projection_50_gwei"]["sei_per_day_sustained"] = (
            avg_gas * GAS_PRICE_GWEI * 1e-9 * tx_rate * SECONDS_PER_DAY
        )
    return out


def main() -> None:
    global SSTORE_SET_GAS
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--duration", type=float, default=60.0, help="sustained run in seconds (0 skips it)"
    )
    ap.add_argument(
        "--rate", type=float, default=5.0, help="requotes per second in the sustained run"
    )
    ap.add_argument("--samples", type=int, default=40, help="timed 3+3 requotes")
    ap.add_argument("--block-time", type=float, default=0.4)
    ap.add_argument(
        "--sstore-set-gas",
        type=int,
        default=SSTORE_SET_GAS,
        help="Sei's fresh-slot price (SeiSstoreSetGasEip2200) used for Sei gas",
    )
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args()
    SSTORE_SET_GAS = args.sstore_set_gas

    with Anvil(block_time=args.block_time) as anvil:
        dep = asyncio.run(
            setup_local_chain(anvil.rpc_url, anvil.ws_url, roles=("maker", "taker", "venue"))
        )
        g = asyncio.run(gas_figures(dep, args.samples))
        s = asyncio.run(sustained(dep, args.duration, args.rate)) if args.duration > 0 else None
    out = summarize(g, s)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    report(out, args.block_time, args.rate)


ROWS = (
    ("first 3+3 placement", "first_requote_3+3"),
    ("3+3 requote, oscillation", "requote_3+3_oscillation"),
    (f"3+3 trend {TREND_TICKS} ticks, cold", "requote_3+3_trend_cold"),
    ("warm() of the whole ring", "warm_range"),
    (f"3+3 trend {TREND_TICKS} ticks, warm", "requote_3+3_trend_after_warm"),
    (f"3 asks {STALE_STEPS} ticks, stale hint", "requote_3_asks_stale_hint"),
    ("requote, 1 of 6 changed", "requote_one_changed"),
    ("take of 2 full levels", "take_2_full_levels"),
    ("cancelAll of 6", "cancel_all_6"),
    ("cancelAll of none", "cancel_all_none"),
)


def report(out: dict[str, Any], block_time: float, rate: float) -> None:
    lat, p = out["latency_submit_to_receipt_s"], out["projection_50_gwei"]
    lines = [
        f"FlashBook on anvil, {block_time}s blocks; Sei gas = anvil gas +"
        f" ({out['sstore_set_gas']:,} - 20,000) x fresh slots"
        f" (anvil's own fresh-slot price, probed: {out['probed_sstore_set_gas_anvil']:,})",
        f"{'operation':<28} {'n':>4} {'gas mean':>9} {'gas max':>9} {'fresh':>6}"
        f" {'fresh max':>9} {'Sei mean':>9} {'Sei max':>9}",
    ]
    for label, key in ROWS:
        r = out[key]
        lines.append(
            f"{label:<28} {r['n']:>4} {r['gas_mean']:>9,.0f} {r['gas_max']:>9,}"
            f" {r['fresh_slots_total']:>6} {r['fresh_slots_max']:>9}"
            f" {r['sei_gas_mean']:>9,.0f} {r['sei_gas_max']:>9,}"
        )
    lines.append(
        f"submit->receipt          p50 {lat['p50'] * 1000:.0f} ms  p99 {lat['p99'] * 1000:.0f} ms"
        f"  (n={lat['n']})"
    )
    s = out.get("sustained")
    if s is not None:
        lines += [
            f"sustained {s['duration_s']:.0f}s at {rate:g} Hz: {s['requotes']} requotes ->"
            f" {s['txs']} txs ({s['coalesced']} coalesced)",
            f"  failed txs: reverted {s['reverted']}, dropped {s['dropped']},"
            f" send errors {s['send_errors']}; nonce resyncs {s['nonce_resyncs_after_start']}",
            f"  accepted {s['accepted']}, rejected {s['rejected']}, fills {s['fills']},"
            f" avg gas/tx {s['gas_used'] / max(1, s['txs']):,.0f}",
        ]
    lines.append(
        f"at 50 gwei: {p['sei_per_requote']:.5f} SEI per 3+3 requote;"
        f" {p['sei_per_day_5hz_every_cycle']:,.0f} SEI/day if every 5 Hz cycle moves all 6"
    )
    if "sei_per_day_sustained" in p:
        lines.append(
            f"            {p['sei_per_day_sustained']:,.0f} SEI/day at the sustained"
            f" {p['sustained_tx_per_s']:.2f} tx/s"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
