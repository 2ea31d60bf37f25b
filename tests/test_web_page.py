"""The web page in headless Chromium: a paper bot with the API on, a fill and a P&L point.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it); it is
driven over the DevTools protocol on loopback. ``FLASHMM_SCREENSHOT=PATH``
also writes the screenshot there (how docs/web-page.png is made).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websockets
import yaml
from kit.bot import BotProcess, bot_env, short_dir

ROOT = Path(__file__).resolve().parents[1]
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium() -> str:
    binary = shutil.which("chromium")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's package)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def profile(tmp: Path, sock: Path, port: int) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    cfg["markets"] = [m for m in cfg["markets"] if m["reference"] == "nexousdt"]
    cfg["feed"]["files"] = [f for f in cfg["feed"]["files"] if "nexousdt" in f]
    cfg["feed"]["speed"] = 20.0
    cfg["ui"]["panel"] = False
    cfg["logging"]["file"] = str(tmp / "bot.log")
    cfg["risk"]["stale_feed_ms"] = 600_000
    cfg["control"] = {"data_dir": str(tmp / "data"), "socket_path": str(sock / "web.sock")}
    cfg["api"] = {"enabled": True, "port": port}
    path = tmp / "web.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Page:
    """One page over the DevTools protocol."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.n = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.n += 1
        await self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg["result"]  # type: ignore[no-any-return]

    async def eval(self, expr: str) -> Any:
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r["result"].get("value")


def devtools_page(user_dir: Path, proc: subprocess.Popen[bytes]) -> str:
    port_file = user_dir / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "chromium exited"
        if port_file.exists() and port_file.read_text().strip():
            port = port_file.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                targets = json.load(r)
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
        time.sleep(0.2)
    raise AssertionError("chromium DevTools did not come up")


@pytest.mark.slow
async def test_page_shows_a_fill_and_pnl_from_the_stream(tmp_path: Path) -> None:
    binary = chromium()
    sock = short_dir()
    port = free_port()
    bot = BotProcess(profile(tmp_path, sock, port), env=bot_env())
    user_dir = tmp_path / "chromium"
    browser: subprocess.Popen[bytes] | None = None
    try:
        await bot.await_ready(60)
        log = open(tmp_path / "chromium.log", "wb")  # noqa: SIM115
        browser = subprocess.Popen(
            [
                binary,
                *FLAGS,
                f"--user-data-dir={user_dir}",
                "--remote-debugging-port=0",
                "--window-size=1400,1100",
                f"http://127.0.0.1:{port}/",
            ],
            stdout=log,
            stderr=log,
        )
        ws_url = await asyncio.to_thread(devtools_page, user_dir, browser)
        async with websockets.connect(ws_url, max_size=64 * 1024 * 1024) as ws:
            page = Page(ws)
            state: dict[str, Any] = {}
            points = 30 if os.environ.get("FLASHMM_SCREENSHOT") else 2  # a fuller chart for docs
            for _ in range(1200):  # up to ~2 min of replay at 20x
                state = await page.eval("JSON.stringify(window.flashmm || {})") or "{}"
                state = json.loads(state)
                if state.get("fills", 0) >= 1 and state.get("pnlPoints", 0) >= points:
                    break
                await asyncio.sleep(0.1)
            assert state.get("fills", 0) >= 1, (state, bot.stderr()[-2000:])
            assert state.get("pnlPoints", 0) >= 2, state
            assert state.get("lost") == 0
            text = await page.eval("document.body.innerText")
            assert "SEI/USDC" in text and "daily_loss" in text
            shot = await page.call("Page.captureScreenshot", format="png")
        png = base64.b64decode(shot["data"])
        assert png.startswith(b"\x89PNG")
        (tmp_path / "page.png").write_bytes(png)
        if os.environ.get("FLASHMM_SCREENSHOT"):
            Path(os.environ["FLASHMM_SCREENSHOT"]).write_bytes(png)
    finally:
        if browser is not None:
            browser.terminate()
            try:
                browser.wait(15)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()
        bot.terminate()
        bot.close()
        shutil.rmtree(sock, ignore_errors=True)
