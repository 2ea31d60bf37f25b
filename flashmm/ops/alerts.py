"""Opt-in alerts to webhooks: Telegram, Slack, Discord or plain JSON.

What is sent (``alerts:`` section of the profile):

* a breaker trips (``critical`` when its action halts the bot, e.g. the kill
  switch or ``flashmm emergency-stop``);
* a fill at least ``alerts.fill_usdc`` big;
* a side of a market the venue keeps refusing (no free balance, market paused: 4
  refusals in a row, see :meth:`flashmm.engine.Engine.pump_venue`);
* a daily P&L summary at ``alerts.daily_summary_utc`` (UTC ``HH:MM``).

Nothing here runs on the hot path: the operations loop hands every batch it
drains from ``engine.outbox`` to :meth:`Alerts.on_events`, which only formats
and queues; one task per webhook posts with retry and exponential backoff
(honouring ``Retry-After``). The same alert (same kind and subject) is sent
again only after ``alerts.dedup_s``: the subjects alerted within that window
are remembered, older ones forgotten, and at most :data:`DEDUP_MAX` of them
(the oldest go first); each webhook gets at most
``alerts.per_minute`` messages a minute (critical ones always pass), the
rest are counted and the count is added to the next message. Webhook URLs
and bot tokens come from environment variables named in the profile
(``url_env``) and are never logged; every message is scrubbed of them and of
every secret in the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import aiohttp
from loguru import logger

from flashmm.config import AlertsConfig, WebhookConfig, secret_values
from flashmm.errors import UserInputError
from flashmm.events import OutboxEvent
from flashmm.risk import HALT
from flashmm.snapshot import fill_dict
from flashmm.types import Fill

if TYPE_CHECKING:
    from flashmm.ops.service import OpsServices

__all__ = ["DEDUP_MAX", "Alert", "Alerts", "Webhook", "format_body"]

_QUEUE = 1000
#: a side refused this many times in a row (held 1, 2 and 4 s before the last) is alerted
HOLD_ALERT_REFUSALS = 4
#: alerts remembered for de-duplication at most (each big fill has its own subject)
DEDUP_MAX = 10_000
_MAX_BACKOFF_S = 30.0
_LABEL = {"telegram": "Telegram", "slack": "Slack", "discord": "Discord", "json": "JSON"}


@dataclass
class Alert:
    kind: str  # breaker | halt | fill | hold | summary | test
    subject: str  # what it is about: a breaker name, a market
    title: str
    text: str
    severity: str = "warning"  # info | warning | critical
    data: dict[str, Any] = field(default_factory=dict)
    ts_ns: int = field(default_factory=time.time_ns)


def format_body(kind: str, alert: Alert, profile: str, chat_id: str | None) -> dict[str, Any]:
    """The JSON body for one webhook format."""
    icon = {"critical": "🛑", "warning": "⚠️", "info": "ℹ️"}.get(alert.severity, "")
    line = f"{icon} FlashMM {profile}: {alert.title}\n{alert.text}".strip()
    if kind == "telegram":
        return {"chat_id": chat_id, "text": line[:4096], "disable_web_page_preview": True}
    if kind == "slack":
        return {"text": line}
    if kind == "discord":
        return {"content": line[:2000], "username": "FlashMM"}
    return {
        "source": "flashmm",
        "profile": profile,
        "kind": alert.kind,
        "subject": alert.subject,
        "severity": alert.severity,
        "title": alert.title,
        "text": alert.text,
        "ts_ns": alert.ts_ns,
        "data": alert.data,
    }


class Webhook:
    """One destination: its queue, rate limit and sender task."""

    def __init__(self, cfg: WebhookConfig, secret: str, index: int, per_minute: int) -> None:
        self.cfg = cfg
        self.name = f"{_LABEL[cfg.kind]} webhook #{index}"
        if cfg.kind == "telegram":
            self.url = f"{cfg.api_base.rstrip('/')}/bot{secret}/sendMessage"
        else:
            self.url = secret
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_QUEUE)
        self.per_minute = per_minute
        self.sent_at: deque[float] = deque()
        self.suppressed = 0
        self.dropped = 0
        self.delivered = 0
        self.failed = 0
        self.task: asyncio.Task[None] | None = None

    def allow(self, now: float, critical: bool) -> bool:
        while self.sent_at and now - self.sent_at[0] >= 60.0:
            self.sent_at.popleft()
        if not critical and len(self.sent_at) >= self.per_minute:
            return False
        self.sent_at.append(now)
        return True


class Alerts:
    """Alert routing for one bot (see the module docstring)."""

    def __init__(
        self,
        cfg: AlertsConfig,
        ops: OpsServices | None = None,
        *,
        profile: str | None = None,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = os.environ if env is None else env
        self.cfg = cfg
        self.ops = ops
        self.profile = profile or (ops.cfg.profile if ops is not None else "flashmm")
        self.clock = clock
        self.webhooks: list[Webhook] = []
        secrets: list[str] = []
        for i, wh in enumerate(cfg.webhooks, 1):
            value = (env.get(wh.url_env) or "").strip()
            where = f"alerts.webhooks[{i - 1}]"
            if not value:
                raise UserInputError(f"{where}: environment variable {wh.url_env} is not set")
            if wh.kind == "telegram" and not wh.chat_id:
                raise UserInputError(f"{where}.chat_id: required for Telegram")
            if wh.kind != "telegram" and not value.startswith(("http://", "https://")):
                raise UserInputError(f"{where}: {wh.url_env} must hold an http(s) URL")
            hook = Webhook(wh, value, i, cfg.per_minute)
            secrets += [value, hook.url]
            self.webhooks.append(hook)
        self._secrets = sorted({s for s in secrets + secret_values() if s}, key=len, reverse=True)
        #: (kind, subject) -> when last sent, oldest first; only those within dedup_s
        self._last_sent: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.deduplicated = 0
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)
        for hook in self.webhooks:
            hook.task = asyncio.create_task(self._sender(hook), name=hook.name)
            self._tasks.append(hook.task)
        if self.ops is not None:
            self.ops.listeners.append(self.on_events)
        if self.cfg.daily_summary_utc and self.ops is not None:
            self._tasks.append(asyncio.create_task(self._daily(), name="alerts-daily"))
        logger.info("alerts to {}", ", ".join(h.name for h in self.webhooks) or "no webhook")

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued message was delivered or given up (True if all done)."""
        try:
            async with asyncio.timeout(timeout):
                for hook in self.webhooks:
                    await hook.queue.join()
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        if self.ops is not None:
            with contextlib.suppress(ValueError):
                self.ops.listeners.remove(self.on_events)
        await self.flush(3.0)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- what to alert on ------------------------------------------------------------

    def on_events(self, batch: Sequence[OutboxEvent]) -> None:
        """Called by the operations loop with what it drained from ``engine.outbox``."""
        for kind, payload in batch:
            try:
                if kind == "breaker":
                    self._breaker(dict(payload))
                elif kind == "fill":
                    self._fill(payload)
                elif kind == "hold":
                    self._hold(dict(payload))
            except Exception:
                logger.exception("alerts: cannot handle a {} event", kind)

    def _breaker(self, d: Mapping[str, Any]) -> None:
        name = str(d.get("name", "?"))
        if d.get("state") != "tripped":
            return
        reason = str(d.get("reason", ""))
        action = str(d.get("action", ""))
        if action == HALT:
            title = "EMERGENCY STOP (halted)" if name == "manual_halt" else f"HALT: {name} tripped"
            text = (
                f"{reason}\nOrders cancelled, positions being flattened;"
                " 'flashmm reset --confirm' to clear."
            )
            self.send(Alert("halt", name, title, text, "critical", dict(d)))
        else:
            self.send(
                Alert("breaker", name, f"breaker {name} tripped ({action})", reason, data=dict(d))
            )

    def _hold(self, d: Mapping[str, Any]) -> None:
        """A side the venue keeps refusing (``HOLD_ALERT_REFUSALS`` in a row: held 1, 2
        and 4 s before the 4th):
        the account's funds or the market need a look (one alert per side and
        ``dedup_s``)."""
        if int(d.get("refusals_in_a_row", 0)) < HOLD_ALERT_REFUSALS:
            return
        sym, side = d.get("symbol", "?"), d.get("side", "?")
        what = "bids" if side == "buy" else "asks"
        self.send(
            Alert(
                "hold",
                f"{sym}:{side}",
                f"{sym} {what} refused: {d.get('reason', '')}",
                f"{d.get('refusals_in_a_row')} refusals in a row; {what} held back "
                f"{float(d.get('hold_s', 0)):.0f} s at a time until the venue takes them"
                " (check the account's free balance and the market's status)",
                "warning",
                dict(d),
            )
        )

    def _fill(self, fill: Fill) -> None:
        if self.cfg.fill_usdc is None or self.ops is None:
            return
        spec = self.ops.engine.specs.get(fill.market)
        if spec is None:
            return
        d = fill_dict(fill, spec)
        notional = float(d["price"]) * float(d["size"])
        if notional < self.cfg.fill_usdc:
            return
        self.send(
            Alert(
                "fill",
                fill.fill_id or f"{fill.market}-{fill.ts_ns}",
                f"{fill.market} {d['side']} {d['size']} @ {d['price']} ({notional:,.2f} USDC)",
                f"fee {fill.fee_usdc:+.4f} USDC, {d['liquidity']}",
                "info",
                {**d, "notional_usdc": notional},
            )
        )

    def summary(self) -> Alert:
        """The P&L summary of the bot so far."""
        assert self.ops is not None
        st = self.ops.current(1.0)
        fills = st.fills_shown
        lines = [
            f"P&L {st.pnl_usdc:+,.2f} USDC, fees {st.fees_usdc:,.2f},"
            f" volume {st.volume_usdc:,.0f}, fills {fills},"
            f" drawdown {st.drawdown_usdc:,.2f}, state {st.state}"
        ]
        for sym, m in st.markets.items():
            lines.append(
                f"{sym}: P&L {m.pnl_usdc:+,.2f}, position {m.position}"
                f" ({m.position_usdc:+,.2f} USDC), fills {m.fills}"
            )
        day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        return Alert(
            "summary",
            day,
            f"daily summary {day}",
            "\n".join(lines),
            "info",
            {"pnl_usdc": st.pnl_usdc, "fills": fills, "state": st.state},
        )

    async def _daily(self) -> None:
        assert self.cfg.daily_summary_utc is not None
        hh, mm = (int(x) for x in self.cfg.daily_summary_utc.split(":"))
        while True:
            now = dt.datetime.now(dt.UTC)
            at = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
            if at <= now:
                at += dt.timedelta(days=1)
            await asyncio.sleep((at - now).total_seconds())
            try:
                self.send(self.summary())
            except Exception:
                logger.exception("alerts: daily summary failed")

    # --- delivery ----------------------------------------------------------------------

    def scrub(self, value: Any) -> Any:
        """``value`` with every secret (webhook URLs, tokens, keys) replaced by ``***``."""
        if isinstance(value, str):
            for s in self._secrets:
                value = value.replace(s, "***")
            return value
        if isinstance(value, Mapping):
            return {str(k): self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.scrub(str(value))

    def send(self, alert: Alert) -> bool:
        """Queue ``alert`` for every webhook (never blocks). False if de-duplicated."""
        now = self.clock()
        key = (alert.kind, alert.subject)
        sent = self._last_sent
        while sent and now - next(iter(sent.values())) >= self.cfg.dedup_s:
            sent.popitem(last=False)  # out of the window: would be sent again anyway
        if key in sent:
            self.deduplicated += 1
            return False
        sent[key] = now
        if len(sent) > DEDUP_MAX:
            sent.popitem(last=False)
        critical = alert.severity == "critical"
        for hook in self.webhooks:
            if not hook.allow(now, critical):
                hook.suppressed += 1
                continue
            text = alert.text
            if hook.suppressed:
                text += f"\n({hook.suppressed} more alert(s) held back by the rate limit)"
                hook.suppressed = 0
            a = replace(alert, text=text)
            body = self.scrub(format_body(hook.cfg.kind, a, self.profile, hook.cfg.chat_id))
            try:
                hook.queue.put_nowait(body)
            except asyncio.QueueFull:
                hook.dropped += 1
        return True

    async def _sender(self, hook: Webhook) -> None:
        while True:
            body = await hook.queue.get()
            try:
                await self._post(hook, body)
            finally:
                hook.queue.task_done()

    async def _post(self, hook: Webhook, body: dict[str, Any]) -> None:
        assert self._session is not None
        delay = 0.5
        for attempt in range(self.cfg.retries + 1):
            wait = delay
            try:
                async with self._session.post(hook.url, json=body) as r:
                    if 200 <= r.status < 300:
                        hook.delivered += 1
                        return
                    retry_after = r.headers.get("Retry-After")
                    if r.status == 429 and retry_after is not None:
                        with contextlib.suppress(ValueError):
                            seconds = float(retry_after)
                            # "nan" would be a timer out of order on the bot's event loop
                            if math.isfinite(seconds):
                                wait = min(max(seconds, 0.0), 60.0)
                    problem = f"HTTP {r.status}"
                    if r.status < 500 and r.status not in (408, 429):
                        logger.warning("alert to {} refused: {}", hook.name, problem)
                        hook.failed += 1
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = type(exc).__name__
            if attempt == self.cfg.retries:
                break
            logger.info("alert to {} failed ({}); retrying in {:.1f}s", hook.name, problem, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, _MAX_BACKOFF_S)
        hook.failed += 1
        logger.warning("alert to {} given up after {} attempt(s)", hook.name, self.cfg.retries + 1)
