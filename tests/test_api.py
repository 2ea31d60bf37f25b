"""The HTTP API in-process: auth, limits, control through the socket's handler, the stream.

A real engine (paper profile, simulator venue), real OpsServices with its
journal and control socket, and the real aiohttp server on a free loopback
port; clients are aiohttp clients and raw sockets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flashmm.api.openapi import CONTROL_ROUTES, READ_ROUTES
from flashmm.api.server import ApiServer
from flashmm.config import Config, load_config
from flashmm.errors import RuntimeFailure
from flashmm.ops.journal import Journal
from flashmm.ops.service import OpsServices
from flashmm.runner import engine_from
from flashmm.types import Fill, Liquidity, Side
from flashmm.venues.sim import SimVenue

CONTROL = "c0ntrol-" + "t" * 24
READ = "read-only-" + "r" * 22
SYM = "SEI/USDC"


def config(data: Path, sock: Path, *sets: str) -> Config:
    return load_config(
        "configs/paper.yaml",
        [
            f"control.data_dir={data}",
            f"control.socket_path={sock / 'api.sock'}",
            "name=api",
            "ui.panel=false",
            "api.enabled=true",
            "api.port=0",
            *sets,
        ],
    )


@contextlib.asynccontextmanager
async def running(cfg: Config) -> AsyncIterator[OpsServices]:
    engine = engine_from(cfg, SimVenue({s.symbol: s for s in cfg.specs()}))
    ops = OpsServices(cfg, engine, engine.venue, sim_clock=False)
    await ops.start()
    task = asyncio.create_task(ops.task(engine))
    try:
        for _ in range(500):
            if ops.ready:
                break
            await asyncio.sleep(0.01)
        yield ops
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ops.aclose()


@pytest.fixture()
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASHMM_API_TOKEN", CONTROL)
    monkeypatch.setenv("FLASHMM_API_READ_TOKEN", READ)


def url(ops: OpsServices, path: str) -> str:
    return f"http://127.0.0.1:{ops.api.port}{path}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_tokens_wrong_missing_and_read_only(dirs: tuple[Path, Path], tokens: None) -> None:
    cfg = config(*dirs)
    async with running(cfg) as ops, aiohttp.ClientSession() as http:
        async with http.get(url(ops, "/health")) as r:  # no auth
            assert r.status == 200 and (await r.json())["live"] is True
        async with http.get(url(ops, "/api/v1/status")) as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(url(ops, "/api/v1/status"), headers=bearer("nope" * 8)) as r:
            assert r.status == 401 and (await r.json())["error"] == "invalid token"
        for token in (READ, CONTROL):
            async with http.get(url(ops, "/api/v1/status"), headers=bearer(token)) as r:
                body = await r.json()
                assert r.status == 200 and body["api_version"] == 1
                # the same data as `flashmm status --json`
                assert set(body["data"]) >= {"state", "markets", "breakers", "journal", "pid"}
        for path in READ_ROUTES:
            async with http.get(url(ops, path), headers=bearer(READ)) as r:
                assert r.status == 200, path
        # control: missing, wrong, read-only tokens refused; nothing happens
        for headers, code in (({}, 401), (bearer("x" * 32), 401), (bearer(READ), 403)):
            async with http.post(url(ops, "/api/v1/pause"), headers=headers) as r:
                assert r.status == code
        assert ops.engine.state == "running"
        async with http.post(
            url(ops, "/api/v1/pause"), headers=bearer(CONTROL), json={"reason": "lunch"}
        ) as r:
            body = await r.json()
            assert r.status == 200 and body["ok"] and body["result"]["state"] == "paused"
        assert ops.engine.state == "paused" and "lunch" in ops.engine.pause_reason
        async with http.post(url(ops, "/api/v1/reset"), headers=bearer(CONTROL)) as r:
            body = await r.json()  # refused by the same handler as the socket's
            assert r.status == 409 and "confirm" in body["error"]
        async with http.post(
            url(ops, "/api/v1/resume"), headers=bearer(CONTROL), data=b"[1, 2]"
        ) as r:
            assert r.status == 400
        async with http.post(url(ops, "/api/v1/resume"), headers=bearer(CONTROL)) as r:
            assert r.status == 200 and ops.engine.state == "running"
    # every control action is journaled with its source
    j = Journal(dirs[0], name="api")
    import sqlite3

    conn = sqlite3.connect(j.path)
    rows = conn.execute("SELECT cmd, args, ok FROM control_commands ORDER BY id").fetchall()
    conn.close()
    j.close()
    cmds = [(c, ok) for c, _, ok in rows]
    assert ("pause", 1) in cmds and ("reset", 0) in cmds and ("resume", 1) in cmds
    assert all("http 127.0.0.1 (control token)" in args for _, args, _ in rows)
    assert all(CONTROL not in args for _, args, _ in rows)


async def test_ten_megabyte_body_and_rate_limit(dirs: tuple[Path, Path], tokens: None) -> None:
    cfg = config(*dirs, "api.control_per_minute=5")
    async with running(cfg) as ops, aiohttp.ClientSession() as http:
        big = b"{" + b" " * (10 * 1024 * 1024) + b"}"
        try:
            async with http.post(url(ops, "/api/v1/pause"), headers=bearer(CONTROL), data=big) as r:
                assert r.status == 413
        except aiohttp.ClientOSError:
            pass  # the server may close before the client finished sending
        assert ops.engine.state == "running"
        codes = []
        for _ in range(8):
            async with http.post(url(ops, "/api/v1/resume"), headers=bearer(CONTROL)) as r:
                codes.append(r.status)
                if r.status == 429:
                    assert int(r.headers["Retry-After"]) >= 1
        assert codes.count(429) >= 3  # the big request may or may not have counted
        async with http.get(url(ops, "/api/v1/status"), headers=bearer(READ)) as r:
            assert r.status == 200  # reads are not limited


def test_refuses_non_loopback_without_token(dirs: tuple[Path, Path], monkeypatch: Any) -> None:
    monkeypatch.delenv("FLASHMM_API_TOKEN", raising=False)
    monkeypatch.delenv("FLASHMM_API_READ_TOKEN", raising=False)
    cfg = config(*dirs, "api.host=0.0.0.0")
    engine = engine_from(cfg, SimVenue({s.symbol: s for s in cfg.specs()}))
    ops = OpsServices(cfg, engine, engine.venue, sim_clock=False)
    with pytest.raises(RuntimeFailure, match="not a loopback address"):
        ApiServer(cfg.api, ops).check_security()
    ApiServer(cfg.api, ops, env={"FLASHMM_API_TOKEN": CONTROL}).check_security()


async def test_open_reads_on_loopback_without_token_but_no_control(
    dirs: tuple[Path, Path], monkeypatch: Any
) -> None:
    monkeypatch.delenv("FLASHMM_API_TOKEN", raising=False)
    monkeypatch.delenv("FLASHMM_API_READ_TOKEN", raising=False)
    cfg = config(*dirs)
    async with running(cfg) as ops, aiohttp.ClientSession() as http:
        async with http.get(url(ops, "/api/v1/breakers")) as r:
            assert r.status == 200 and "daily_loss" in (await r.json())["data"]
        async with http.post(url(ops, "/api/v1/emergency-stop")) as r:
            assert r.status == 401
        assert ops.engine.state == "running"
        async with http.get(url(ops, "/api/v1/openapi.json")) as r:
            doc = await r.json()
        registered = {
            res.canonical
            for res in ops.api._runner.app.router.resources()  # type: ignore[union-attr]
        }
        assert registered == set(doc["paths"])
        assert set(CONTROL_ROUTES) <= registered
        async with http.get(url(ops, "/")) as r:
            assert r.status == 200 and "FlashMM" in await r.text()


async def test_fills_tail_is_the_newest(dirs: tuple[Path, Path], tokens: None) -> None:
    """The web page asked for ``limit=30``: the oldest 30 fills held, so after 30 fills
    its "recent fills" showed stale ones after every reload."""
    cfg = config(*dirs)
    async with running(cfg) as ops, aiohttp.ClientSession() as http:
        ops.api.on_events([("fill", _fill(i)) for i in range(40)])

        async def ids(**params: str) -> list[str]:
            async with http.get(
                url(ops, "/api/v1/fills"), params=params, headers=bearer(READ)
            ) as r:
                assert r.status == 200, await r.text()
                return [f["fill_id"] for f in (await r.json())["data"]["fills"]]

        assert await ids(tail="3") == ["t-37", "t-38", "t-39"]
        assert await ids(limit="3") == ["t-0", "t-1", "t-2"]
        assert await ids(since=str(10**18 + 38), tail="5") == ["t-39"]
        # three fills at one instant: a page does not end between them (``since`` is
        # exclusive, so paging by the last ts_ns skipped the rest)
        same = [Fill(SYM, 1, Side.BUY, 1300, 100, 0.0, Liquidity.MAKER, 2 * 10**18, f"s-{i}")
                for i in range(3)]  # fmt: skip
        ops.api.on_events([("fill", f) for f in same])
        page = await ids(since=str(10**18 + 39), limit="2")
        assert page == ["s-0", "s-1", "s-2"]
        async with http.get(url(ops, "/api/v1/fills?tail=x"), headers=bearer(READ)) as r:
            assert r.status == 400 and "tail" in (await r.json())["error"]
    page = (Path(__file__).parents[1] / "flashmm" / "api" / "static" / "index.html").read_text()
    assert "/api/v1/fills?tail=30" in page


async def test_unknown_routes_and_methods_get_the_json_error_body(
    dirs: tuple[Path, Path], tokens: None
) -> None:
    """404 and 405 came as aiohttp's plain text; every answer named Python's and
    aiohttp's versions in its Server header."""
    async with running(config(*dirs)) as ops, aiohttp.ClientSession() as http:
        async with http.get(url(ops, "/api/v1/nope"), headers=bearer(READ)) as r:
            assert r.status == 404 and "/api/v1/nope" in (await r.json())["error"]
            assert "Server" not in r.headers
        async with http.get(url(ops, "/api/v1/pause"), headers=bearer(CONTROL)) as r:
            assert r.status == 405 and "POST" in r.headers["Allow"]
            assert "allowed: POST" in (await r.json())["error"]
        async with http.get(url(ops, "/health")) as r:
            assert r.status == 200 and "Server" not in r.headers


def _fill(i: int) -> Fill:
    return Fill(SYM, 1, Side.BUY, 1200 + i, 100, 0.0, Liquidity.MAKER, 10**18 + i, f"t-{i}")


def _ws_handshake(port: int, token: str) -> socket.socket:
    """A WebSocket client on a raw socket with a tiny receive buffer (it will never read)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /api/v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: flashmm.v1, bearer.{token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"Sec-WebSocket-Protocol: flashmm.v1" in head
    return s


def _drain_until_closed(s: socket.socket) -> bool:
    """Read what the server left in the socket; True once it closed the connection."""
    s.settimeout(30)
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        pass  # aborted while data was still queued for us
    return True


SEQ_HEAD = re.compile(r'\{"seq":(\d+),"type":"(\w+)"')


async def test_stream_200_readers_and_one_that_never_reads(
    dirs: tuple[Path, Path], tokens: None
) -> None:
    # the 200 connect at the same moment: each one's HTTP connection counts against
    # api.max_connections until it is handed to the fan-out
    cfg = config(*dirs, "api.stream_queue=16", "api.max_connections=256")
    async with running(cfg) as ops:
        hub = ops.api.hub
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as http:
            async with http.get(url(ops, "/api/v1/stream"), headers=bearer(READ)) as r:
                assert r.status == 400  # not an upgrade: one line saying so
                assert "WebSocket" in (await r.json())["error"]
            stalled = await asyncio.to_thread(_ws_handshake, ops.api.port, READ)
            wss = await asyncio.gather(
                *(
                    http.ws_connect(
                        url(ops, "/api/v1/stream"), headers=bearer(READ), protocols=("flashmm.v1",)
                    )
                    for _ in range(200)
                )
            )
            assert all(ws.protocol == "flashmm.v1" for ws in wss)
            hellos = [await ws.receive_json(timeout=30) for ws in wss]
            assert all(h["type"] == "hello" and "snapshot" in h["data"] for h in hellos)
            assert hub.clients == 201
            base = max(h["seq"] for h in hellos)
            ops.api.on_events([("fill", _fill(i)) for i in range(3)])  # one message

            async def collect(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
                got: list[dict[str, Any]] = []
                while not any(m["type"] == "snapshot" and m["seq"] > base + 3 for m in got):
                    got.append(await ws.receive_json(timeout=30))
                return got

            results = await asyncio.gather(*(collect(ws) for ws in wss))
            for msgs in results:
                seqs = [m["seq"] for m in msgs]
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap
                fills = [
                    e["data"]
                    for m in msgs
                    if m["type"] == "events"
                    for e in m["data"]
                    if e["type"] == "fill"
                ]
                assert [f["fill_id"] for f in fills][-3:] == ["t-0", "t-1", "t-2"]
                assert fills[-1]["price"] == pytest.approx(1.202)
            last = [max(m["seq"] for m in msgs) for msgs in results]
            gaps = [0] * len(wss)

            async def follow(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
                # only each message's head is parsed (the readers share the CPU with the bot)
                async for msg in ws:
                    m = SEQ_HEAD.match(msg.data[:48])
                    assert m is not None
                    seq = int(m.group(1))
                    gaps[i] += seq != last[i] + 1
                    last[i] = seq

            readers = [asyncio.create_task(follow(i, ws)) for i, ws in enumerate(wss)]
            # the non-reader's socket buffers and its queue fill up; the readers keep up
            pad = {"pad": "x" * 4000}
            for _ in range(100):
                for _ in range(20):
                    seq = hub.publish("state", pad)
                for _ in range(3000):
                    if min(last) >= seq:
                        break
                    await asyncio.sleep(0.01)
                assert min(last) >= seq  # every reader got every message so far
                if hub.drops:
                    break
            assert hub.drops == 1 and hub.lost == 0 and not any(gaps)
            assert await asyncio.to_thread(_drain_until_closed, stalled)
            stalled.close()
            for _ in range(1000):
                if hub.clients == 200:
                    break
                await asyncio.sleep(0.01)
            async with http.get(url(ops, "/health"), headers=bearer(READ)) as r:
                stream = (await r.json())["stream"]
            assert stream["clients"] == 200 and stream["dropped_clients"] == 1
            assert "too slow" in stream["last_drop"]
            async with http.get(
                url(ops, "/api/v1/fills"), params={"since": str(10**18)}, headers=bearer(READ)
            ) as r:
                data = (await r.json())["data"]
                assert [f["fill_id"] for f in data["fills"]] == ["t-1", "t-2"]
            await asyncio.gather(*(ws.close() for ws in wss))
            await asyncio.gather(*readers)
        for _ in range(500):
            if not hub.clients:
                break
            await asyncio.sleep(0.01)
        assert not hub.clients


async def test_metrics_need_a_token_unless_public_and_readiness(
    dirs: tuple[Path, Path], tokens: None
) -> None:
    pytest.importorskip("prometheus_client")
    cfg = config(*dirs)
    async with running(cfg) as ops, aiohttp.ClientSession() as http:
        async with http.get(url(ops, "/metrics")) as r:
            assert r.status == 401
        async with http.get(url(ops, "/metrics"), headers=bearer(READ)) as r:
            text = await r.text()
            assert r.status == 200 and 'flashmm_breaker_tripped{name="daily_loss"} 0.0' in text
        async with http.get(url(ops, "/health/ready"), headers=bearer(READ)) as r:
            body = await r.json()  # replay books are not synced before the feed runs
            assert r.status == (200 if body["ready"] else 503)
            assert set(body["books_synced"]) == {"SEI/USDC", "ETH/USDC"}
    cfg = config(*dirs, "api.metrics_public=true")
    async with running(cfg) as ops, aiohttp.ClientSession() as http:
        r = await http.get(url(ops, "/metrics"))
        assert r.status == 200
        r.release()


async def test_a_stalled_fan_out_loses_messages_and_clients_see_the_gap(
    dirs: tuple[Path, Path], tokens: None
) -> None:
    """The fan-out process stopped (SIGSTOP): the bot goes on, messages are counted lost."""
    cfg = config(*dirs)
    async with running(cfg) as ops, aiohttp.ClientSession() as http:
        hub = ops.api.hub
        ws = await http.ws_connect(url(ops, "/api/v1/stream"), headers=bearer(READ))
        seqs = [(await ws.receive_json(timeout=30))["seq"]]
        pid = hub.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            big = {"pad": "x" * 200_000}
            for _ in range(500):  # publishing never waits: the hand-over buffer fills up
                hub.publish("state", big)
                if hub.lost:
                    break
            assert hub.lost == 1
            lost_seq = hub.seq
        finally:
            os.kill(pid, signal.SIGCONT)
        for _ in range(3000):  # the fan-out catches up and takes messages again
            before = hub.lost
            last = hub.publish("state", {"after": True})
            if hub.lost == before:
                break
            await asyncio.sleep(0.01)
        while seqs[-1] != last:
            seqs.append((await ws.receive_json(timeout=30))["seq"])
        missing = sorted(set(range(seqs[0], last + 1)) - set(seqs))
        assert lost_seq in missing and len(missing) == hub.lost
        async with http.get(url(ops, "/health"), headers=bearer(READ)) as r:
            assert (await r.json())["stream"]["lost"] == hub.lost
        await ws.close()


def _nginx_block() -> str:
    """The nginx example of docs/operations.md ("Behind a reverse proxy (TLS)"), verbatim."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    section = text[text.index("### Behind a reverse proxy (TLS)") :]
    return section[
        section.index("```nginx\n") + 9 : section.index("\n```", section.index("```nginx"))
    ]


async def test_behind_the_documented_nginx_tls_proxy(
    dirs: tuple[Path, Path], tokens: None, tmp_path: Path
) -> None:
    """The docs' nginx server block in front of the API: HTTPS reads and control, WSS stream."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not nginx:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (.ci/run installs Debian's nginx-light)")
        pytest.skip("nginx not installed (apt-get install nginx-light)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        https_port = s.getsockname()[1]
    cfg = config(*dirs)
    async with running(cfg) as ops:
        block = _nginx_block()
        for old, new in (
            ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl;"),
            ("/etc/letsencrypt/live/mm.example.com/fullchain.pem", str(cert)),
            ("/etc/letsencrypt/live/mm.example.com/privkey.pem", str(key)),
            ("proxy_pass http://127.0.0.1:8780;", f"proxy_pass http://127.0.0.1:{ops.api.port};"),
        ):
            assert old in block, old
            block = block.replace(old, new)
        temp = "".join(f"{k}_temp_path {tmp_path}/{k};\n" for k in ("client_body", "proxy"))
        (tmp_path / "nginx.conf").write_text(
            f"daemon off;\nworker_processes 1;\npid {tmp_path}/nginx.pid;\n"
            f"error_log {tmp_path}/error.log;\nevents {{ worker_connections 256; }}\n"
            f"http {{\naccess_log off;\n{temp}{block}\n}}\n"
        )
        proc = subprocess.Popen(
            [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
            stderr=subprocess.PIPE,
        )
        try:
            ctx = ssl.create_default_context(cafile=str(cert))
            base = f"https://127.0.0.1:{https_port}"
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
                for _ in range(500):
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    try:
                        async with http.get(f"{base}/health") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.02)
                async with http.get(f"{base}/api/v1/status", headers=bearer(READ)) as r:
                    assert r.status == 200 and (await r.json())["data"]["mode"] == "paper"
                async with http.post(f"{base}/api/v1/pause", headers=bearer(READ)) as r:
                    assert r.status == 403
                async with http.post(
                    f"{base}/api/v1/pause", headers=bearer(CONTROL), json={"reason": "proxy"}
                ) as r:
                    assert r.status == 200 and (await r.json())["result"]["state"] == "paused"
                ws = await http.ws_connect(
                    f"wss://127.0.0.1:{https_port}/api/v1/stream",
                    headers=bearer(READ),
                    protocols=("flashmm.v1",),
                )
                hello = await ws.receive_json(timeout=30)
                assert hello["type"] == "hello" and ws.protocol == "flashmm.v1"
                nxt = await ws.receive_json(timeout=30)
                assert nxt["seq"] == hello["seq"] + 1
                await ws.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)


async def test_refused_control_requests_do_not_use_up_the_operators(
    dirs: tuple[Path, Path], tokens: None
) -> None:
    """Behind a proxy every client has the proxy's address: requests without the control
    token must not lock the operator out of emergency-stop."""
    cfg = config(*dirs, "api.control_per_minute=5")
    async with running(cfg) as ops, aiohttp.ClientSession() as http:
        codes = []
        for headers in ({}, bearer("x" * 32), bearer(READ)) * 3:
            async with http.post(url(ops, "/api/v1/pause"), headers=headers) as r:
                codes.append(r.status)
        assert codes[:5] == [401, 401, 403, 401, 401] and set(codes[5:]) == {429}
        assert ops.engine.state == "running"
        async with http.post(url(ops, "/api/v1/emergency-stop"), headers=bearer(CONTROL)) as r:
            assert r.status == 200 and (await r.json())["result"]["state"] == "halted"


def test_the_control_rate_limit_forgets_idle_clients() -> None:
    """Clients seen once, a minute ago, are forgotten (a minute of real time: explicit clocks)."""
    from flashmm.api.server import _RATE_CLIENTS, _RateLimit

    rate = _RateLimit(5)
    for i in range(_RATE_CLIENTS + 1):
        assert rate.retry_after(f"10.0.{i // 256}.{i % 256}", float(i) / _RATE_CLIENTS) == 0.0
    assert rate.retry_after("192.0.2.1", 70.0) == 0.0
    assert len(rate._hits) == 1


async def test_a_short_token_is_refused_on_loopback_too(
    dirs: tuple[Path, Path], monkeypatch: Any
) -> None:
    """The documented 16 characters hold on 127.0.0.1, the address a TLS proxy publishes."""
    monkeypatch.setenv("FLASHMM_API_TOKEN", "abc")
    monkeypatch.delenv("FLASHMM_API_READ_TOKEN", raising=False)
    with pytest.raises(RuntimeFailure, match="FLASHMM_API_TOKEN is shorter than 16"):
        async with running(config(*dirs)):
            pass
    monkeypatch.setenv("FLASHMM_API_TOKEN", CONTROL)
    monkeypatch.setenv("FLASHMM_API_READ_TOKEN", "short-read")
    with pytest.raises(RuntimeFailure, match="FLASHMM_API_READ_TOKEN is shorter than 16"):
        async with running(config(*dirs)):
            pass
    # the same token for both granted control to every reader
    monkeypatch.setenv("FLASHMM_API_READ_TOKEN", CONTROL)
    with pytest.raises(RuntimeFailure, match="FLASHMM_API_READ_TOKEN equals FLASHMM_API_TOKEN"):
        async with running(config(*dirs)):
            pass


async def test_a_token_that_is_not_utf8_is_a_wrong_token(
    dirs: tuple[Path, Path], tokens: None
) -> None:
    """Raw header bytes outside UTF-8 got a 500 (a traceback in the log), not a 401."""

    async def raw(request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", ops.api.port)
        writer.write(request)
        answer = await reader.read()
        writer.close()
        return answer

    async with running(config(*dirs)) as ops:
        for route, header in (
            (b"GET /api/v1/status", b"Authorization: Bearer \xff\xfe" + READ.encode()),
            (b"POST /api/v1/pause", b"Authorization: Bearer \xff\xfe" + CONTROL.encode()),
            (b"GET /api/v1/stream", b"Sec-WebSocket-Protocol: flashmm.v1, bearer.\xff\xfe"),
        ):
            answer = await raw(
                route + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header
                + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )  # fmt: skip
            assert answer.startswith(b"HTTP/1.1 401"), answer
            assert answer.endswith(b'{"api_version":1,"error":"invalid token"}')
        assert ops.engine.state == "running"


async def test_without_a_token_no_other_site_reads_the_bot(
    dirs: tuple[Path, Path], monkeypatch: Any
) -> None:
    """Open reads on loopback: a page of another site gets nothing, neither through DNS
    rebinding (its own name pointed at 127.0.0.1) nor with a WebSocket to 127.0.0.1."""
    monkeypatch.delenv("FLASHMM_API_TOKEN", raising=False)
    monkeypatch.delenv("FLASHMM_API_READ_TOKEN", raising=False)
    async with running(config(*dirs)) as ops, aiohttp.ClientSession() as http:
        port = ops.api.port
        for path in ("/api/v1/status", "/api/v1/fills", "/metrics"):
            async with http.get(url(ops, path), headers={"Host": f"evil.example:{port}"}) as r:
                assert r.status == 403 and "loopback name" in (await r.json())["error"]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            async with http.get(url(ops, "/api/v1/status"), headers={"Host": host}) as r:
                assert r.status == 200, host
        stream = url(ops, "/api/v1/stream")
        for origin in ("http://evil.example", f"http://evil.example:{port}", "null"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(stream, origin=origin, protocols=("flashmm.v1",))
            assert err.value.status == 403, origin
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(
                stream, headers={"Host": f"evil.example:{port}"}, origin="http://evil.example"
            )
        assert err.value.status == 403
        assert ops.api.hub.clients == 0
        ws = await http.ws_connect(stream, origin=f"http://127.0.0.1:{port}")  # the web page
        assert (await ws.receive_json(timeout=30))["type"] == "hello"
        await ws.close()


async def test_a_websocket_from_another_site_is_refused_with_a_token(
    dirs: tuple[Path, Path], tokens: None
) -> None:
    async with running(config(*dirs)) as ops, aiohttp.ClientSession() as http:
        stream = url(ops, "/api/v1/stream")
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(stream, headers=bearer(READ), origin="https://evil.example")
        assert err.value.status == 403
        ws = await http.ws_connect(stream, headers=bearer(READ))  # no Origin: not a browser
        assert (await ws.receive_json(timeout=30))["type"] == "hello"
        await ws.close()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _ping_flood(s: socket.socket, pings: int) -> None:
    """Send pings (4000 bytes each) on a stream client's socket; never read the pongs."""
    payload = b"p" * 4000
    ping = struct.pack("!BBH", 0x89, 0x80 | 126, len(payload)) + b"\0\0\0\0" + payload
    s.settimeout(30)
    for _ in range(pings // 100):
        s.sendall(ping * 100)


async def test_a_client_that_pings_and_never_reads_holds_no_memory(
    dirs: tuple[Path, Path], tokens: None
) -> None:
    """The fan-out answered every ping, whether the client read or not: each 4 MB of
    pings left 4 MB of pongs in its memory, for as long as the client kept sending."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc")
    async with running(config(*dirs)) as ops:
        pid = ops.api.hub.pid
        assert pid is not None
        s = await asyncio.to_thread(_ws_handshake, ops.api.port, READ)
        await asyncio.to_thread(_ping_flood, s, 3000)  # the fan-out's buffers at their size
        await asyncio.sleep(0.5)
        before = _rss_kb(pid)
        await asyncio.to_thread(_ping_flood, s, 6000)  # 24 MB more
        await asyncio.sleep(0.5)
        grown = _rss_kb(pid) - before
        s.close()
        assert grown < 4 * 1024, f"fan-out grew {grown} kB"


async def test_health_without_a_token_shows_no_address_or_error_text(
    dirs: tuple[Path, Path], tokens: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/health is for load balancers and container checks, without a token: it showed
    the last dropped stream client's address and the journal's error text to anyone."""
    async with running(config(*dirs)) as ops, aiohttp.ClientSession() as http:
        assert ops.journal is not None
        ops.api.hub.last_drop = "203.0.113.7: too slow: 512 messages behind"
        # a write error the journal's next successful write does not clear during the test
        failure = OSError(28, "No space left on device", "/srv/secret/api.db")
        monkeypatch.setattr(
            type(ops.journal),
            "error",
            property(lambda _: failure, lambda _, v: None),
            raising=False,
        )
        for path in ("/health", "/health/ready"):
            for headers in ({}, bearer("x" * 32)):  # none, or a wrong one: the public part
                async with http.get(url(ops, path), headers=headers) as r:
                    text = await r.text()
                    body = await r.json()
                assert r.status in (200, 503) and body["live"] is True, text
                for secret in ("203.0.113.7", "No space left", "/srv/secret", "too slow"):
                    assert secret not in text, (path, secret)
                assert "stream" not in body and "journal_error" not in body
                assert set(body) == {"live", "ready", "reason", "last_event_age_s"}
                assert (body["reason"] is None) == body["ready"]
            for token in (READ, CONTROL):  # the operator's token: the details
                async with http.get(url(ops, path), headers=bearer(token)) as r:
                    body = await r.json()
                assert "203.0.113.7" in body["stream"]["last_drop"]
                assert "No space left" in body["journal_error"]
                assert set(body["books_synced"]) == {"SEI/USDC", "ETH/USDC"}


def _open_idle(port: int, n: int, half: bool = True) -> list[socket.socket]:
    """``n`` connections that send nothing, or (every other one) half a request."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        if half and i % 2:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0")
        socks.append(s)
    return socks


def _closed_by_server(socks: list[socket.socket], want: int, within: float = 30.0) -> int:
    """How many of ``socks`` the server closed (end of file or reset), waiting until
    ``want`` of them are or ``within`` seconds have passed; what they were sent is read."""
    import select
    import time

    closed: set[socket.socket] = set()
    deadline = time.monotonic() + within
    while len(closed) < want and time.monotonic() < deadline:
        waiting = [s for s in socks if s not in closed]
        ready, _, _ = select.select(waiting, [], [], 0.2)
        for s in ready:
            try:
                if not s.recv(65536):
                    closed.add(s)
            except OSError:
                closed.add(s)
    return len(closed)


def _answer_head(s: socket.socket) -> bytes:
    """What the server sent on ``s`` up to the end of an answer's head (or the close)."""
    s.settimeout(30)
    answer = b""
    while b"\r\n\r\n" not in answer:
        got = s.recv(4096)
        if not got:
            break
        answer += got
    return answer


async def _get(ops: OpsServices, path: str) -> tuple[int, Any]:
    """GET ``path`` with the read token on a connection of its own: status and JSON."""
    async with aiohttp.ClientSession() as http, http.get(url(ops, path), headers=bearer(READ)) as r:
        return r.status, await r.json()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_idle_connections_are_capped_and_the_operator_still_gets_in(
    dirs: tuple[Path, Path], tokens: None
) -> None:
    """Nothing bounded the API's open connections: clients that open sockets and send
    nothing, or half a request, or idle on keep-alive, each held one of the file
    descriptors the bot shares with its journal, feed and chain connections."""
    cap, extra = 64, 16
    async with running(config(*dirs, f"api.max_connections={cap}")) as ops:
        port = ops.api.port
        before = _fds() if Path("/proc/self/fd").exists() else None
        socks = await asyncio.to_thread(_open_idle, port, cap + extra)
        try:
            status, _ = await _get(ops, "/api/v1/status")  # the operator, after them
            assert status == 200
            # the excess (and one for the operator's connection) were closed
            assert await asyncio.to_thread(_closed_by_server, socks, extra + 1) >= extra + 1
            conns = (await _get(ops, "/health"))[1]["connections"]
            assert conns["max"] == cap and conns["open"] <= cap
            # idle ones closed to make room, or (accepted all at once) new ones refused
            assert conns["idle_closed"] + conns["refused"] >= extra + 1
            # and in the metrics, for an alert on a bot shedding connections
            async with (
                aiohttp.ClientSession() as http,
                http.get(url(ops, "/metrics"), headers=bearer(READ)) as r,
            ):
                text = await r.text()
            assert f"flashmm_api_connections_max {cap:.1f}" in text, text[-2000:]
            shed = [
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("flashmm_api_connections_shed_total{")
            ]
            assert sum(shed) >= extra + 1, text[-2000:]
        finally:
            for s in socks:
                s.close()
        # nothing is left behind once the clients are gone
        for _ in range(3000):
            if ops.api.connections.open == 0:
                break
            await asyncio.sleep(0.01)
        assert ops.api.connections.open == 0
        if before is not None:
            for _ in range(3000):
                if _fds() <= before:
                    break
                await asyncio.sleep(0.01)
            assert _fds() <= before


async def test_a_connection_over_the_cap_is_closed_at_once_when_all_are_busy(
    dirs: tuple[Path, Path], tokens: None
) -> None:
    """With every connection in a request (bodies still to come), a new one is not
    served: 503 and closed, counted in /health; once they are gone the API answers."""
    cfg = config(*dirs, "api.max_connections=4", "api.control_per_minute=1000")
    head = (
        b"POST /api/v1/pause HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        + CONTROL.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    async with running(cfg) as ops:
        port = ops.api.port
        busy = await asyncio.to_thread(_open_idle, port, 4, False)
        for s in busy:
            s.sendall(head)
        for _ in range(3000):
            if len(ops.api.connections.busy) == 4:
                break
            await asyncio.sleep(0.01)
        assert len(ops.api.connections.busy) == 4
        late = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 30)
        try:
            assert await asyncio.to_thread(_closed_by_server, [late], 1) == 1
        finally:
            late.close()
        assert ops.api.connections.refused == 1 and ops.engine.state == "running"
        for s in busy:
            s.close()
        for _ in range(3000):
            if ops.api.connections.open == 0:
                break
            await asyncio.sleep(0.01)
        assert ops.api.connections.open == 0 and not ops.api.connections.busy
        conns = (await _get(ops, "/health"))[1]["connections"]
        assert conns["refused"] == 1 and conns["max"] == 4


async def test_idle_and_half_sent_requests_are_closed_after_the_idle_timeout(
    dirs: tuple[Path, Path], tokens: None
) -> None:
    """A connection that sends nothing, half a request's head, or nothing more after an
    answer on keep-alive is closed after api.idle_timeout_s; a body that does not come
    gets 408."""
    cfg = config(*dirs, "api.idle_timeout_s=1")
    async with running(cfg) as ops:
        port = ops.api.port
        socks = await asyncio.to_thread(_open_idle, port, 2)  # nothing; half a head
        kept = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 30)
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # then keep-alive
        body = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 30)
        body.sendall(
            b"POST /api/v1/pause HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + CONTROL.encode()
            + b"\r\nContent-Length: 100\r\n\r\n{"
        )
        try:
            assert await asyncio.to_thread(_closed_by_server, [*socks, kept], 3) == 3
            answer = await asyncio.to_thread(_answer_head, body)
            assert answer.startswith(b"HTTP/1.1 408"), answer
        finally:
            for s in (*socks, kept, body):
                s.close()
        assert ops.engine.state == "running"


def test_a_lost_drop_report_still_names_the_last_dropped_client() -> None:
    """The fan-out's report of a dropped client can be lost to a full buffer (the 200
    readers test met it once): the count came with the next report's totals, the
    "last dropped" did not (/health showed one drop and no name). The totals now
    carry it too."""
    import types

    from flashmm.api.fanout import Fanout
    from flashmm.api.stream import StreamHub

    bot, fan_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with bot, fan_side:
        bot.setblocking(False)
        fan = Fanout(fan_side, 16)
        client = types.SimpleNamespace(cid=3, name="203.0.113.9", sent=40, reason="too slow")
        fan.dropped(client, "too slow: 16 messages behind")  # type: ignore[arg-type]
        assert bot.recv(65536)  # this record is lost: the bot never reads it
        fan.report(event="closed", id=3, name=client.name, sent=40, reason="too slow")
        hub = StreamHub()
        hub._sock = bot
        hub._on_report()
        assert hub.drops == 1
        assert hub.last_drop == "203.0.113.9: too slow: 16 messages behind"
