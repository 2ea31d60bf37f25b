"""FlashBook gas and latency on a local anvil with Sei's 0.4 s blocks.

    python benchmarks/chain.py [--duration 60] [--rate 5] [--samples 40] [--json]

Reports gas per requote (3+3 all moved by one tick; one of six changed), per take of two
levels, fresh storage slots per operation, Sei-priced gas (each fresh slot at 72,000 instead
of anvil's 20,000), submit->receipt latency p50/p99, a sustained run of the SeiVenue at
``--rate`` requotes per second (transactions, coalesced requotes, failed transactions,
nonce resyncs) and the projected daily gas cost at 50 gwei.
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
from flashmm.venues.sei.abi import ASK, BID, book_abi, op_place, op_replace
from flashmm.venues.sei.book import BookClient
from flashmm.venues.sei.gas import GasReport, gas_report
from flashmm.venues.sei.keys import account_from_hex
from flashmm.venues.sei.local import Anvil, Deployment, setup_local_chain
from flashmm.venues.sei.rpc import JsonRpc
from flashmm.venues.sei.settings import SeiVenueSettings
from flashmm.venues.sei.tx import TxSender
from flashmm.venues.sei.venue import SeiVenue

SEI = 1
GAS_PRICE_GWEI = 50
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
    return await gas_report(rpc, sent.tx_hash, receipt), latency


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
            # the best two ask levels hold 10 lots each: take 15 lots = two levels
            receipt = await book.take(taker, SEI, 0, q.mid + 2, 15)
            takes.append(await gas_report(rpc, receipt["transactionHash"], receipt))
            await measure(rpc, book, maker, q.ops())  # restore the quotes
        await book.cancel_all(maker, SEI)  # leave an empty book for the sustained run
        return {
            "first_requote": first,
            "moves": moves,
            "one_changed": [g for g, _ in ones],
            "takes": takes,
            "latency_s": latencies,
        }
    finally:
        await rpc.aclose()


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


def summarize(g: dict[str, Any], s: dict[str, Any] | None) -> dict[str, Any]:
    moves: list[GasReport] = g["moves"]
    out: dict[str, Any] = {
        "first_requote_3+3": {
            "gas": g["first_requote"].gas_used,
            "fresh_slots": g["first_requote"].fresh_slots,
            "sei_gas": g["first_requote"].sei_gas,
        },
        "requote_3+3_moved": {
            "gas_mean": statistics.mean(x.gas_used for x in moves),
            "gas_max": max(x.gas_used for x in moves),
            "fresh_slots_total": sum(x.fresh_slots for x in moves),
            "sei_gas_mean": statistics.mean(x.sei_gas for x in moves),
            "sei_gas_max": max(x.sei_gas for x in moves),
        },
        "requote_one_changed": {
            "gas_mean": statistics.mean(x.gas_used for x in g["one_changed"]),
            "fresh_slots_total": sum(x.fresh_slots for x in g["one_changed"]),
        },
        "take_2_levels": {
            "gas_mean": statistics.mean(x.gas_used for x in g["takes"]),
            "gas_max": max(x.gas_used for x in g["takes"]),
            "fresh_slots_total": sum(x.fresh_slots for x in g["takes"]),
        },
        "latency_submit_to_receipt_s": {
            "p50": pct(g["latency_s"], 0.5),
            "p99": pct(g["latency_s"], 0.99),
            "n": len(g["latency_s"]),
        },
    }
    sei_gas = out["requote_3+3_moved"]["sei_gas_mean"]
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
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args()

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


def report(out: dict[str, Any], block_time: float, rate: float) -> None:
    f, r = out["first_requote_3+3"], out["requote_3+3_moved"]
    o, t = out["requote_one_changed"], out["take_2_levels"]
    lat, p = out["latency_submit_to_receipt_s"], out["projection_50_gwei"]
    lines = [
        f"FlashBook on anvil, {block_time}s blocks; Sei gas = anvil gas + 52,000 x fresh slots",
        f"first 3+3 placement      gas {f['gas']:>9,}  fresh slots {f['fresh_slots']}"
        f"  Sei gas {f['sei_gas']:,}",
        f"3+3 requote, all moved   gas {r['gas_mean']:>9,.0f}  max {r['gas_max']:,}"
        f"  fresh slots {r['fresh_slots_total']}  Sei gas mean {r['sei_gas_mean']:,.0f}"
        f" max {r['sei_gas_max']:,}",
        f"requote, 1 of 6 changed  gas {o['gas_mean']:>9,.0f}"
        f"  fresh slots {o['fresh_slots_total']}",
        f"take of 2 levels         gas {t['gas_mean']:>9,.0f}  max {t['gas_max']:,}"
        f"  fresh slots {t['fresh_slots_total']}",
        f"submit->receipt          p50 {lat['p50'] * 1000:.0f} ms  p99 {lat['p99'] * 1000:.0f} ms"
        f"  (n={lat['n']})",
    ]
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
