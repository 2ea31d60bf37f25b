"""Alerts against a loopback HTTP server standing in for Telegram, Slack, Discord and a JSON hook."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from flashmm.config import AlertsConfig
from flashmm.errors import UserInputError
from flashmm.events import FillEvent
from flashmm.ops.alerts import Alert, Alerts

TG_TOKEN = "123456:tg-secret-token-abcdef"
KEY = "0x" + "ab12" * 16


class FakeServices:
    """Records every request; ``fail`` answers per path (status codes) before succeeding."""

    def __init__(self) -> None:
        self.got: dict[str, list[dict[str, Any]]] = {}
        self.fail: dict[str, list[int]] = {}
        self.raw: list[bytes] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.raw.append(body + request.path.encode())
        codes = self.fail.get(request.path, [])
        if codes:
            code = codes.pop(0)
            return web.Response(status=code, headers={"Retry-After": "0"} if code == 429 else {})
        self.got.setdefault(request.path, []).append(json.loads(body))
        return web.json_response({"ok": True})


@pytest.fixture()
async def services() -> AsyncIterator[tuple[FakeServices, str]]:
    fake = FakeServices()
    app = web.Application()
    app.router.add_post("/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def make(base: str, **kw: Any) -> tuple[AlertsConfig, dict[str, str]]:
    env = {
        "TG": TG_TOKEN,
        "SLACK": f"{base}/slack/T000/B000/slack-secret",
        "DISCORD": f"{base}/discord/api/webhooks/1/discord-secret",
        "HOOK": f"{base}/json?key=json-secret",
    }
    cfg = AlertsConfig.model_validate(
        {
            "enabled": True,
            "webhooks": [
                {"kind": "telegram", "url_env": "TG", "chat_id": "-100200", "api_base": base},
                {"kind": "slack", "url_env": "SLACK"},
                {"kind": "discord", "url_env": "DISCORD"},
                {"kind": "json", "url_env": "HOOK"},
            ],
            **kw,
        }
    )
    return cfg, env


async def test_every_format_retry_dedup_and_no_secret(
    services: tuple[FakeServices, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, base = services
    monkeypatch.setenv("FLASHMM_PRIVATE_KEY", KEY)
    fake.fail["/json"] = [500, 503]  # retried with backoff
    fake.fail["/slack/T000/B000/slack-secret"] = [429]  # Retry-After honoured
    cfg, env = make(base, retries=3)
    alerts = Alerts(cfg, profile="desk", env=env)
    await alerts.start()
    try:
        breaker = {
            "name": "kill_switch",
            "state": "tripped",
            "action": "halt",
            "reason": f"mid moved 9 sigma; operator pasted {KEY} and {env['SLACK']}",
            "latched": True,
        }
        alerts.on_events([("breaker", breaker)])
        alerts.on_events([("breaker", breaker)])  # same alert again: de-duplicated
        assert alerts.deduplicated == 1
        assert await alerts.flush(30)
    finally:
        await alerts.aclose()
    tg = fake.got[f"/bot{TG_TOKEN}/sendMessage"]
    assert len(tg) == 1 and tg[0]["chat_id"] == "-100200"
    assert "HALT: kill_switch tripped" in tg[0]["text"] and "desk" in tg[0]["text"]
    assert len(fake.got["/slack/T000/B000/slack-secret"]) == 1
    assert "kill_switch" in fake.got["/slack/T000/B000/slack-secret"][0]["text"]
    assert fake.got["/discord/api/webhooks/1/discord-secret"][0]["username"] == "FlashMM"
    hook = fake.got["/json"][0]
    assert hook["kind"] == "halt" and hook["severity"] == "critical"
    assert hook["data"]["name"] == "kill_switch"
    # no secret in any message body: key, webhook URLs, bot token
    for raw in fake.raw:
        text = raw.decode(errors="replace")
        payload = text[: text.rfind("}") + 1]  # the body, without the request path
        for secret in (KEY, TG_TOKEN, "slack-secret", "discord-secret", "json-secret"):
            assert secret not in payload
    assert "***" in tg[0]["text"]


async def test_rate_limit_holds_back_and_reports_critical_passes(
    services: tuple[FakeServices, str],
) -> None:
    fake, base = services
    now = [1000.0]
    cfg, env = make(base, per_minute=2)
    cfg = cfg.model_copy(update={"webhooks": cfg.webhooks[3:]})  # the JSON hook only
    alerts = Alerts(cfg, profile="desk", env=env, clock=lambda: now[0])
    await alerts.start()
    try:
        for i in range(4):
            alerts.send(Alert("breaker", f"b{i}", f"b{i} tripped", "x"))
        hook = alerts.webhooks[0]
        assert hook.suppressed == 2
        alerts.send(Alert("halt", "manual_halt", "EMERGENCY STOP", "x", "critical"))
        now[0] += 61.0
        alerts.send(Alert("breaker", "b9", "b9 tripped", "x"))
        assert await alerts.flush(30)
    finally:
        await alerts.aclose()
    got = fake.got["/json"]
    assert [g["subject"] for g in got] == ["b0", "b1", "manual_halt", "b9"]
    assert "2 more alert(s) held back" in got[2]["text"]  # told with the next one sent


async def test_gives_up_after_retries_and_refused_is_not_retried(
    services: tuple[FakeServices, str],
) -> None:
    fake, base = services
    cfg, env = make(base, retries=1)
    cfg = cfg.model_copy(update={"webhooks": cfg.webhooks[1:2]})  # Slack
    path = "/slack/T000/B000/slack-secret"
    fake.fail[path] = [500, 500, 404]
    alerts = Alerts(cfg, profile="desk", env=env)
    await alerts.start()
    try:
        alerts.send(Alert("breaker", "a", "a", "x"))
        assert await alerts.flush(30)
        alerts.send(Alert("breaker", "b", "b", "x"))  # 404: not retried
        assert await alerts.flush(30)
        hook = alerts.webhooks[0]
        assert hook.failed == 2 and hook.delivered == 0
        assert fake.fail[path] == []
    finally:
        await alerts.aclose()


def test_missing_env_and_chat_id_are_one_line_errors() -> None:
    cfg, env = make("http://127.0.0.1:9")
    with pytest.raises(UserInputError, match=r"alerts.webhooks\[1\]: environment variable SLACK"):
        Alerts(cfg, env={k: v for k, v in env.items() if k != "SLACK"})
    bad = AlertsConfig.model_validate(
        {"enabled": True, "webhooks": [{"kind": "telegram", "url_env": "TG"}]}
    )
    with pytest.raises(UserInputError, match="chat_id"):
        Alerts(bad, env=env)


async def test_bot_alerts_on_emergency_stop_big_fill_and_summary(
    services: tuple[FakeServices, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_api import config, running

    from flashmm.types import Fill, Liquidity, Side

    fake, base = services
    monkeypatch.setenv("HOOK", f"{base}/json")
    data = Path(tempfile.mkdtemp(prefix="fmmalert"))
    sock = Path(tempfile.mkdtemp(prefix="fmm", dir="/tmp"))
    try:
        cfg = config(
            data,
            sock,
            "api.enabled=false",
            "alerts.enabled=true",
            "alerts.fill_usdc=100",
            "alerts.webhooks=[{kind: json, url_env: HOOK}]",
        )
        async with running(cfg) as ops:
            alerts = ops.alerts
            big = Fill("SEI/USDC", 1, Side.SELL, 1250, 10_000, 0.01, Liquidity.MAKER, 5, "f-big")
            small = Fill("SEI/USDC", 2, Side.SELL, 1250, 100, 0.0, Liquidity.MAKER, 6, "f-small")
            ops.engine.outbox.extend([FillEvent(big), FillEvent(small)])
            assert ops.control is not None
            r = await ops.control.execute("emergency_stop", {}, source="test")
            assert r["ok"]
            for _ in range(300):
                if len(fake.got.get("/json", [])) >= 2:
                    break
                await asyncio.sleep(0.05)
            alerts.send(alerts.summary())
            assert await alerts.flush(30)
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(sock, ignore_errors=True)
    got = fake.got["/json"]
    kinds = [g["kind"] for g in got]
    assert (
        kinds.count("fill") == 1
        and "125.00 USDC" in next(g for g in got if g["kind"] == "fill")["title"]
    )
    halt = next(g for g in got if g["kind"] == "halt")
    assert halt["title"] == "EMERGENCY STOP (halted)"
    summary = next(g for g in got if g["kind"] == "summary")
    assert "P&L" in summary["text"] and "SEI/USDC" in summary["text"]


async def test_a_retry_after_that_is_not_a_number_leaves_the_event_loop_in_order() -> None:
    """``Retry-After: nan`` from a webhook became ``asyncio.sleep(nan)``: a timer that
    compares false with every other one, so the bot's event loop (the engine's) ran
    its timers out of order."""
    answers = ["nan", "-5", None]

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        retry_after = answers.pop(0) if answers else None
        if retry_after is None:
            return web.json_response({"ok": True})
        return web.Response(status=429, headers={"Retry-After": retry_after})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    cfg = AlertsConfig.model_validate(
        {"enabled": True, "retries": 3, "webhooks": [{"kind": "json", "url_env": "HOOK"}]}
    )
    alerts = Alerts(cfg, profile="desk", env={"HOOK": f"{base}/hook"})
    await alerts.start()
    fired: list[int] = []

    async def timer(i: int) -> None:
        await asyncio.sleep(0.01 * i)
        fired.append(i)

    try:
        alerts.send(Alert("test", "x", "title", "text"))
        await asyncio.sleep(0.05)  # the first answer (nan) is in
        await asyncio.gather(*(timer(i) for i in range(1, 21)))
        assert fired == list(range(1, 21))
        assert await alerts.flush(30) and alerts.webhooks[0].delivered == 1
    finally:
        await alerts.aclose()
        await runner.cleanup()


def test_dedup_memory_is_bounded_and_a_repeat_within_the_window_is_still_suppressed() -> None:
    """Every big fill left an entry in the de-duplication map for the life of the process:
    a bot that alerts on fills grew it by one per fill, forever."""
    now = [0.0]
    cfg = AlertsConfig.model_validate({"enabled": True, "dedup_s": 60})
    alerts = Alerts(cfg, profile="desk", env={}, clock=lambda: now[0])

    def fill(i: int) -> Alert:
        return Alert("fill", f"f-{i}", f"fill {i}", "big")

    for i in range(5_000):  # one big fill a second for well over an hour
        assert alerts.send(fill(i))
        now[0] += 1.0
    assert len(alerts._last_sent) <= 61  # the window's alerts only
    # the same fill again within its window: suppressed; after it: sent
    assert not alerts.send(fill(4_990)) and alerts.deduplicated == 1
    now[0] += 60.0
    assert alerts.send(fill(4_990))
    # a burst of distinct fills within one window: held to DEDUP_MAX, the newest kept
    from flashmm.ops.alerts import DEDUP_MAX

    for i in range(DEDUP_MAX + 500):
        alerts.send(fill(10_000 + i))
    assert len(alerts._last_sent) <= DEDUP_MAX
    assert not alerts.send(fill(10_000 + DEDUP_MAX + 499))
    # no de-duplication window: nothing is remembered
    off = Alerts(cfg.model_copy(update={"dedup_s": 0.0}), env={}, clock=lambda: now[0])
    for i in range(100):
        assert off.send(fill(i)) and off.send(fill(i))
    assert len(off._last_sent) <= 1


async def test_a_side_the_venue_keeps_refusing_is_alerted_once(
    services: tuple[FakeServices, str],
) -> None:
    """Refusals for lack of funds held the bids back quietly (a log line a minute): the
    operator learnt of an empty account from the P&L. The 4th refusal in a row (held 1, 2,
    4, then 8 s) is alerted, once per side within dedup_s; the first three are not."""
    from flashmm.events import SideHeld

    fake, base = services
    cfg, env = make(base)
    cfg = cfg.model_copy(update={"webhooks": cfg.webhooks[3:]})  # the JSON hook only
    alerts = Alerts(cfg, profile="desk", env=env)
    await alerts.start()
    try:
        why = "insufficient free balance"
        alerts.on_events(
            [SideHeld("SEI/USDC", "buy", why, n, float(2 ** (n - 1))) for n in range(1, 7)]
        )
        alerts.on_events([SideHeld("SEI/USDC", "sell", why, 1, 1.0)])
        assert await alerts.flush(30)
    finally:
        await alerts.aclose()
    got = fake.got["/json"]
    assert [(g["kind"], g["subject"]) for g in got] == [("hold", "SEI/USDC:buy")]
    assert got[0]["title"] == "SEI/USDC bids refused: insufficient free balance"
    assert "4 refusals in a row" in got[0]["text"]
