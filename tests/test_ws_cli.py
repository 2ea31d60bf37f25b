"""The replay server's REST/stream surface and the ``flashmm feed`` commands, on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import signal
import sys
import time
from pathlib import Path

import aiohttp
import orjson
from kit.data import ETH_SLICE
from kit.data import NEXO_23 as NEXO
from typer.testing import CliRunner
from websockets.asyncio.client import connect

from flashmm.book import BookBuilder
from flashmm.cli.feed import app, out_path, record_stream
from flashmm.feeds.binance import Scale
from flashmm.feeds.replay import ReplayFeed
from flashmm.feeds.server import ReplayServer, format_units
from flashmm.feeds.ws import BinanceWSFeed
from flashmm.marketdata import BookTicker, DepthDiff, DepthSnapshot

ROOT = Path(__file__).resolve().parents[1]

NEXO_SCALE = Scale.of(0.001, 0.01)


def recorded_lines(path: Path, n: int) -> list[bytes]:
    out = []
    with gzip.open(path, "rb") as fh:
        for line in fh:
            out.append(line.rstrip(b"\n").split(b" ", 1)[1])
            if len(out) >= n:
                break
    return out


def replay_check(path: Path) -> BookBuilder:
    """Replay a recording with the ordinary replay code; raises on a sequence gap."""
    b = BookBuilder("nexousdt")
    feed = ReplayFeed([path], {"nexousdt": NEXO_SCALE})
    for ev in feed.events():
        if isinstance(ev, DepthSnapshot):
            b.on_snapshot(ev)
        elif isinstance(ev, DepthDiff):
            b.on_diff(ev)
        elif isinstance(ev, BookTicker):
            b.on_ticker(ev)
    assert feed.stats.bad_lines == 0
    return b


def test_format_units_and_out_path() -> None:
    assert format_units(121400000, 8) == "1.21400000"
    assert format_units(0, 8) == "0.00000000"
    assert format_units(5, 2) == "0.05"
    assert format_units(-150, 2) == "-1.50"
    assert format_units(7, 0) == "7"
    out = Path("rec/x.dat.gz")
    assert out_path(out, "nexousdt", False) == out
    assert out_path(out, "nexousdt", True) == Path("rec/x_nexousdt.dat.gz")
    assert out_path(Path("a.gz"), "ethusdt", True) == Path("a_ethusdt.gz")
    assert out_path(Path("d/{symbol}.gz"), "ethusdt", False) == Path("d/ethusdt.gz")


async def test_rest_snapshot_is_the_recorded_one_before_play() -> None:
    recorded = orjson.loads(recorded_lines(NEXO, 1)[0])
    async with ReplayServer([NEXO], speed=0) as srv, aiohttp.ClientSession() as http:
        url = f"{srv.rest_url}/api/v3/depth"
        async with http.get(url, params={"symbol": "NEXOUSDT", "limit": "5000"}) as r:
            assert r.status == 200
            snap = await r.json()
        # no client yet: playback stopped right after the recorded snapshot line
        assert snap["lastUpdateId"] == recorded["lastUpdateId"]
        assert snap["bids"] == recorded["bids"] and snap["asks"] == recorded["asks"]
        async with http.get(url, params={"symbol": "NEXOUSDT", "limit": "3"}) as r:
            top = await r.json()
        assert top["bids"] == recorded["bids"][:3] and top["asks"] == recorded["asks"][:3]
        async with http.get(url, params={"symbol": "BTCUSDT"}) as r:
            assert r.status == 400 and (await r.json())["code"] == -1121
        async with http.get(f"{srv.rest_url}/api/v3/ping") as r:
            assert r.status == 200
    assert srv.stats.messages_sent == 0


async def test_stream_filter_and_raw_bytes_resent() -> None:
    lines = recorded_lines(NEXO, 400)
    trades = [ln for ln in lines if b'"stream":"nexousdt@trade"' in ln]
    async with ReplayServer([NEXO], speed=0) as srv:
        # max_queue=None: the client keeps reading, so closing it is quick
        url = f"{srv.ws_url}/stream?streams=nexousdt@trade"
        async with connect(url, max_queue=None) as ws:
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(5)]
        assert [g.encode() for g in got] == trades[:5]  # byte for byte, trades only
        # a client that asks for nothing in particular gets every stream
        async with connect(srv.ws_url, max_queue=None) as ws:
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(3)]
        assert all(orjson.loads(g)["stream"].startswith("nexousdt@") for g in got)


async def test_client_that_stops_reading_is_cut_off() -> None:
    # looped: more data than any socket buffer holds, however large
    async with ReplayServer([ETH_SLICE], speed=0, send_timeout=0.3, loop=True) as srv:
        ws = await connect(srv.ws_url, max_queue=1, close_timeout=0.5)
        await ws.recv()  # then stop reading: the server's buffers fill up
        t0 = time.monotonic()
        while srv.clients and time.monotonic() - t0 < 30:
            await asyncio.sleep(0.05)
        assert srv.clients == 0
        await ws.close()


async def test_record_command_against_local_server(tmp_path: Path) -> None:
    # a reconnect in the middle: the recording gets a second snapshot and still replays cleanly
    async with ReplayServer([NEXO], speed=2000, close_after=700) as srv:
        out = tmp_path / "rec.dat.gz"
        runner = CliRunner()
        args = [
            "record",
            "--symbols",
            "nexousdt",
            "--out",
            str(out),
            "--duration",
            "5",  # room for the reconnect and 1,000 lines on a loaded machine
            "--ws-url",
            srv.ws_url,
            "--rest-url",
            srv.rest_url,
        ]
        res = await asyncio.to_thread(runner.invoke, app, args)
        assert res.exit_code == 0, res.output
        assert "nexousdt:" in res.output and str(out) in res.output
    assert srv.stats.closes_injected == 1
    with gzip.open(out, "rb") as fh:
        lines = fh.read().splitlines()
    ts0, first = lines[0].split(b" ", 1)
    assert b"lastUpdateId" in first and len(ts0) == 16  # <ts_us> <json>, snapshot first
    assert sum(b"lastUpdateId" in ln for ln in lines) == 2
    assert len(lines) > 1000
    b = replay_check(out)  # no SequenceGap
    assert b.checks > 0 and b.mismatches == 0 and b.gaps == 0


async def test_record_two_symbols_one_file_each(tmp_path: Path) -> None:
    eth = ETH_SLICE
    async with ReplayServer([NEXO, eth], speed=2000, limit=3000) as srv:
        summary = await record_stream(
            ["nexousdt", "ethusdt"],
            tmp_path / "{symbol}.gz",
            1.0,
            ws_url=srv.ws_url,
            rest_url=srv.rest_url,
            feed_options={"backoff_initial": 0.02},
        )
    assert summary["without_snapshot"] == []
    for sym in ("nexousdt", "ethusdt"):
        p = tmp_path / f"{sym}.gz"
        assert summary["files"][sym] == str(p)
        with gzip.open(p, "rb") as fh:
            first = fh.readline()
        assert b"lastUpdateId" in first
        with gzip.open(p, "rb") as fh:
            assert all(b'"stream":"' + sym.encode() in ln for ln in fh.readlines()[1:])


async def test_serve_command_in_a_subprocess() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), LOGURU_LEVEL="WARNING")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flashmm.cli.feed",
        "serve",
        "--data",
        str(NEXO),
        "--port",
        "0",
        "--http-port",
        "0",
        "--speed",
        "2000",
        cwd=str(ROOT),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # started as a script's background job is: SIGINT ignored; Ctrl-C must still stop it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert proc.stdout is not None
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 8
        while len(urls) < 2 and time.monotonic() < deadline:
            line = (await asyncio.wait_for(proc.stdout.readline(), 8)).decode()
            assert line, "serve exited early"
            key, _, val = line.partition(":")
            if key in ("ws_url", "rest_url"):
                urls[key] = val.strip()
        assert urls["ws_url"].startswith("ws://127.0.0.1:")
        assert urls["rest_url"].startswith("http://127.0.0.1:")
        feed = BinanceWSFeed(
            {"nexousdt": NEXO_SCALE}, urls["ws_url"], urls["rest_url"], backoff_initial=0.02
        )
        b = BookBuilder("nexousdt")
        async with feed:
            t_end = time.monotonic() + 30
            async for ev in feed:
                if isinstance(ev, DepthSnapshot):
                    b.on_snapshot(ev)
                elif isinstance(ev, DepthDiff):
                    b.on_diff(ev)
                elif isinstance(ev, BookTicker):
                    b.on_ticker(ev)
                if b.checks >= 10 or time.monotonic() > t_end:
                    break
        assert b.checks >= 10 and b.mismatches == 0
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    err = (await proc.stderr.read()).decode(errors="replace") if proc.stderr else ""
    assert proc.returncode == 0, err[-3000:]
    # the bot's log format (time, level, message), not loguru's default "| INFO | module:"
    assert re.search(r"^\S+ \S+ INFO +replay server: ws ws://127\.0\.0\.1:", err, re.M), err
