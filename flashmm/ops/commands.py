"""The control commands a running bot answers (socket and HTTP API alike)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from flashmm.engine import HALTED
from flashmm.ops.control import ControlRefused
from flashmm.ops.journal import MODE_COMMANDS
from flashmm.ops.recovery import RECONCILE_BREAKER, Recovery

__all__ = ["Commands"]


class Commands(Recovery):
    """``status``, ``pause``, ``resume``, ``stop``, ``emergency_stop``, ``reset`` and the
    audit record of each (the command job of :class:`flashmm.ops.service.OpsServices`)."""

    stop_event: asyncio.Event
    status: Callable[[], dict[str, Any]]

    async def _handle(self, cmd: str, args: dict[str, Any]) -> Mapping[str, Any]:
        e = self.engine
        now = self._now()
        note = str(args.get("reason") or "").strip()
        who = f"operator: {note}" if note else "operator"
        if cmd == "status":
            return self.status()
        if cmd == "pause":
            if e.state is HALTED:
                return {"state": e.state, "message": "halted: no quotes out ('reset --confirm')"}
            e.pause(who, now)
            return {
                "state": e.state,
                "message": f"quotes pulled ({e.live_orders()} cancel(s) in flight)",
            }
        if cmd == "resume":
            b = e.breaker_status().get(RECONCILE_BREAKER)
            accepted: dict[str, int] = {}
            if b is not None and b["state"] == "tripped" and e.state is not HALTED:
                accepted = self._accept_venue_positions()
                e.clear_breaker(RECONCILE_BREAKER, now)
            refused = e.resume(now)
            if refused is not None:
                raise ControlRefused(refused)
            msg = "quoting"
            if accepted:
                msg += "; accepted the venue's positions " + ", ".join(
                    f"{s} {d:+d} lots" for s, d in accepted.items()
                )
            return {"state": e.state, "message": msg}
        if cmd == "stop":
            asyncio.get_running_loop().call_later(0.1, self.stop_event.set)
            return {"state": "stopping", "message": "cancelling all orders, then exiting"}
        if cmd == "emergency_stop":
            e.emergency_stop(who, now)
            return {
                "state": e.state,
                "message": "orders cancelled, flattening; halted until 'reset --confirm'",
            }
        if cmd == "reset":
            if args.get("confirm") is not True:
                raise ControlRefused(
                    "reset clears the halt and latched breakers: send it with confirm"
                    " (flashmm reset --confirm)"
                )
            cleared = [
                n for n, b in e.breaker_status().items() if b["state"] == "tripped" and b["latched"]
            ]
            rebased = e.reset(now)
            if self._pending_positions:  # a reset does not accept a position mismatch
                self._trip_reconcile("position mismatch still unconfirmed: 'flashmm resume'")
            message = f"cleared {', '.join(cleared) or 'nothing'}"
            if "day_start_pnl_usdc" in rebased:
                message += (
                    f"; today's loss now counts from P&L {rebased['day_start_pnl_usdc']:+.2f} USDC"
                )
            if "peak_equity_usdc" in rebased:
                message += (
                    f"; the drawdown now counts from P&L {rebased['peak_equity_usdc']:+.2f} USDC"
                )
            # the journal keeps the result: a restart re-arms the limits from the same P&L
            return {
                "state": e.state,
                "message": message + "; paused: resume to quote",
                **{k: round(v, 6) for k, v in rebased.items()},
            }
        raise ControlRefused(f"unknown command {cmd!r}")

    def _audit(self, cmd: str, args: dict[str, Any], response: dict[str, Any]) -> None:
        j = self.journal
        if j is None or j.closed or cmd == "status":
            return  # status changes nothing: not journaled
        result = response.get("result") or {}
        if not response.get("ok"):
            result = {"error": response.get("error")}
        # the journal redacts secrets from every text it stores
        seq = j.control(cmd, args, bool(response.get("ok")), result)
        if response.get("ok") and cmd in MODE_COMMANDS:
            # the answer goes out after this returns: a mode change the operator
            # saw acknowledged must survive a crash (rare; a few ms of fsync)
            j.wait_durable(seq, timeout=2.0)
