"""Decision latency of a paper bot without and with API stream load.

Runs of the same replay (bundled NEXO recording, same duration and speed):
with the API on and no client, then with 200 WebSocket clients reading the
stream and one client that connects and never reads (``api.stream_queue``
64, so that it is dropped within the run); ``--rounds`` repeats the pair.
Prints each run's decision latency p50/p99 (from the bot's own summary),
what the clients got, how many messages they missed and how many clients
were dropped. Nothing here is asserted: the figures are the result.

The clients stand in for remote ones: they run in a process of their own at
nice +10 (like the bot's stream fan-out process), so that on a small machine
they take the CPU the bot leaves.

Usage (from the repo root)::

    .venv/bin/python benchmarks/api_stream.py [--duration 30] [--speed 5] [--clients 200]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

TOKEN = "bench-" + "x" * 26
# a short queue per client, so that the client that never reads is dropped within the run
QUEUE = 64
SEQ = re.compile(r'\{"seq":(\d+),"type":"(\w+)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_bot(tmp: Path, port: int, duration: float, speed: float) -> subprocess.Popen[bytes]:
    sock_dir = Path(tempfile.mkdtemp(prefix="fmmb", dir="/tmp"))
    cmd = [
        sys.executable, "-m", "flashmm", "run", "--config", "paper", "--headless", "--json",
        "--duration", str(duration), "--speed", str(speed),
        "--set", f"control.data_dir={tmp}", "--set", f"control.socket_path={sock_dir}/b.sock",
        "--set", "api.enabled=true", "--set", f"api.port={port}",
        "--set", "risk.stale_feed_ms=600000", "--set", f"api.stream_queue={QUEUE}",
        # the readers connect at the same moment: each one's HTTP connection counts until
        # it is handed to the fan-out
        "--set", "api.max_connections=256",
    ]  # fmt: skip
    env = {**os.environ, "FLASHMM_API_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    err = open(tmp / "bot.err", "wb")  # noqa: SIM115
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)


async def wait_api(port: int) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("bot API did not come up")


def stalled_client(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n"
        ).encode()
    )
    return s  # never read from again


async def load(port: int, clients: int, stop: asyncio.Event) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/stream"
    got = [0] * clients
    gaps = [0] * clients

    async def reader(i: int, http: aiohttp.ClientSession) -> None:
        last = None
        try:
            async with http.ws_connect(url, headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
                async for msg in ws:
                    # only the message's head is parsed: the clients must not eat the CPU
                    # the bot runs on (2 cores here)
                    head = SEQ.match(msg.data[:48])
                    if head is None:
                        continue
                    seq, kind = int(head.group(1)), head.group(2)
                    if last is not None and seq != last + 1 and kind != "hello":
                        gaps[i] += 1
                    last = seq
                    got[i] += 1
                    if stop.is_set():
                        break
        except (TimeoutError, aiohttp.ClientError):
            pass

    stalled = stalled_client(port)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        tasks = [asyncio.create_task(reader(i, http)) for i in range(clients)]
        await stop.wait()
        await asyncio.sleep(0.5)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    stalled.close()
    return {
        "messages_min": min(got),
        "messages_max": max(got),
        "clients_with_gaps": sum(1 for g in gaps if g),
    }


async def one(duration: float, speed: float, clients: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fmmbench"))
    port = free_port()
    proc = start_bot(tmp, port, duration, speed)
    await wait_api(port)
    stats: dict[str, Any] = {}
    health: dict[str, Any] = {}
    worker = None
    if clients:  # the clients run in a process of their own at nice +10
        cmd = [sys.executable, __file__, "--load-port", str(port), "--clients", str(clients)]
        worker = await asyncio.create_subprocess_exec(
            "nice", "-n", "10", *cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while proc.poll() is None and time.monotonic() - t0 < duration + 60:
            try:
                auth = {"Authorization": f"Bearer {TOKEN}"}  # the stream counters need it
                async with http.get(f"http://127.0.0.1:{port}/health", headers=auth) as r:
                    health = await r.json()
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(1.0)
    if worker is not None:
        out_w, _ = await worker.communicate(b"")  # end of input: stop and report
        stats = json.loads(out_w.decode() or "{}")
    out, _ = proc.communicate(timeout=120)
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    summary = json.loads(lines[-1]) if lines else {}
    return {"summary": summary, "stream": health.get("stream", {}), "clients": stats}


async def load_worker(port: int, clients: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.run_in_executor(None, sys.stdin.read).add_done_callback(lambda _: stop.set())
    print(json.dumps(await load(port, clients, stop)), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--speed", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--load-port", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.load_port:
        asyncio.run(load_worker(a.load_port, a.clients))
        return
    rows: dict[str, Any] = {}
    for r in range(1, a.rounds + 1):
        tag = f" #{r}" if a.rounds > 1 else ""
        rows["no client" + tag] = asyncio.run(one(a.duration, a.speed, 0))
        rows[f"{a.clients} readers + 1 never reads{tag}"] = asyncio.run(
            one(a.duration, a.speed, a.clients)
        )
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"paper bot, bundled NEXO replay, {a.duration:g}s at speed {a.speed:g}, API on")
    print(f"{'run':<35} {'events':>8} {'p50 µs':>9} {'p99 µs':>9}  stream")
    for name, r in rows.items():
        s = r["summary"]
        st = r["stream"]
        c = r["clients"]
        extra = (
            f"seq {st.get('seq')}, lost {st.get('lost')},"
            f" dropped clients {st.get('dropped_clients')},"
            f" msgs/client {c.get('messages_min')}-{c.get('messages_max')},"
            f" clients with gaps {c.get('clients_with_gaps')}"
            if c
            else "-"
        )
        print(
            f"{name:<35} {s.get('events', 0):>8} {s.get('decision_p50_us', 0):>9.1f}"
            f" {s.get('decision_p99_us', 0):>9.1f}  {extra}"
        )


if __name__ == "__main__":
    main()
