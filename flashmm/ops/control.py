"""Control socket: how ``flashmm pause|resume|status|stop|...`` talks to a running bot.

The bot listens on a Unix domain socket (mode 0600, parent dir 0700 when we
create it). Protocol: JSON lines. Each request line
``{"cmd": "status", "args": {...}}`` gets one response line
``{"ok": true, "result": {...}, "error": null}`` (or ``ok: false`` with an
``error`` message). A connection may carry several requests.

Several bots side by side use several socket paths (one per profile).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from loguru import logger

from flashmm.errors import RuntimeFailure
from flashmm.ops.client import (
    MAX_LINE,
    check_path_length,
    default_socket_path,
    encode_line,
    is_live,
    send_command,
    socket_path_from_config,
)

__all__ = [
    "COMMANDS",
    "ControlRefused",
    "ControlServer",
    "default_socket_path",
    "send_command",
    "socket_path_from_config",
]

#: Commands the server accepts.
COMMANDS = frozenset({"status", "pause", "resume", "stop", "emergency_stop", "reset"})

Handler = Callable[[str, dict[str, Any]], Awaitable[Mapping[str, Any] | None]]
Audit = Callable[[str, dict[str, Any], dict[str, Any]], None]


class ControlRefused(Exception):
    """Raised by a handler to refuse a command; the client gets ``ok: false`` and the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ControlServer:
    """Serve control commands on a Unix socket.

    ``handler(cmd, args)`` is awaited for each valid request and returns the
    ``result`` dict; raising :class:`ControlRefused` answers ``ok: false``
    with its reason, any other exception answers ``ok: false`` with
    ``internal error: ...`` (and is logged). ``audit(cmd, args, response)``,
    if given, is called after every answered command (e.g. to journal it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        handler: Handler,
        *,
        audit: Audit | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._handler = handler
        self._audit = audit
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._conns: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Bind and listen. Refuses if another live bot holds the socket; removes a stale one."""
        if self._server is not None:
            return
        path = self.path
        check_path_length(path)
        parent = Path(path).parent
        if not parent.exists():
            try:
                parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise RuntimeFailure(f"cannot create control socket dir {parent}: {exc}") from exc
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise RuntimeFailure(
                    f"control socket path {path} exists and is not a socket; remove it or"
                    " choose another control.socket_path"
                )
            if is_live(path):
                raise RuntimeFailure(
                    f"another bot is already running on control socket {path};"
                    " stop it first or use another profile / control.socket_path"
                )
            logger.info("removing stale control socket {}", path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=path, limit=MAX_LINE)
        except OSError as exc:
            raise RuntimeFailure(f"cannot listen on control socket {path}: {exc}") from exc
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        st = os.stat(path)
        self._inode = (st.st_dev, st.st_ino)
        logger.info("control socket listening on {}", path)

    async def aclose(self) -> None:
        """Stop listening, drop open connections and remove the socket file (if still ours)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2.0)
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        self._inode = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # line longer than MAX_LINE
                    writer.write(encode_line(self._error("request line too long")))
                    await writer.drain()
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                response = await self._answer(line)
                writer.write(encode_line(response))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    def _error(message: str) -> dict[str, Any]:
        return {"ok": False, "result": {}, "error": message}

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error("request is not valid JSON")
        if not isinstance(req, dict):
            return self._error('request must be a JSON object {"cmd": ..., "args": {...}}')
        return await self.execute(req.get("cmd"), req.get("args"), source="socket")

    async def execute(self, cmd: Any, args: Any, *, source: str) -> dict[str, Any]:
        """Run one command through the handler and the audit; the socket and the HTTP API
        both come here. ``source`` (who sent it) is journaled with the arguments."""
        if args is None:
            args = {}
        if not isinstance(cmd, str) or cmd not in COMMANDS:
            known = ", ".join(sorted(COMMANDS))
            return self._error(f"unknown command {cmd!r}; known: {known}")
        if not isinstance(args, dict):
            return self._error("args must be a JSON object")
        try:
            result = await self._handler(cmd, args)
            response: dict[str, Any] = {"ok": True, "result": dict(result or {}), "error": None}
        except ControlRefused as exc:
            response = self._error(exc.reason)
        except Exception as exc:
            logger.exception("control command {} failed", cmd)
            response = self._error(f"internal error: {type(exc).__name__}: {exc}")
        audited = {**args, "source": source}
        if cmd != "status":
            logger.info(
                "control: {} {} -> {}", cmd, audited, "ok" if response["ok"] else response["error"]
            )
        if self._audit is not None:
            try:
                self._audit(cmd, audited, response)
            except Exception:
                logger.exception("control audit callback failed")
        return response
