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
import socket
import stat
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from loguru import logger

from flashmm.errors import NotRunningError, RuntimeFailure, UserInputError

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

MAX_LINE = 64 * 1024
# sockaddr_un.sun_path is 108 bytes including the trailing NUL.
MAX_PATH_BYTES = 107

Handler = Callable[[str, dict[str, Any]], Awaitable[Mapping[str, Any] | None]]
Audit = Callable[[str, dict[str, Any], dict[str, Any]], None]


class ControlRefused(Exception):
    """Raised by a handler to refuse a command; the client gets ``ok: false`` and the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def default_socket_path(
    profile: str,
    data_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """``$XDG_RUNTIME_DIR/flashmm/<profile>.sock``, else ``<data_dir>/<profile>.sock``.

    ``data_dir`` defaults to ``var`` (relative to the working directory).
    """
    env = os.environ if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime:
        return str(Path(runtime) / "flashmm" / f"{profile}.sock")
    return str(Path(data_dir if data_dir is not None else "var") / f"{profile}.sock")


def socket_path_from_config(cfg: Any, fallback_profile: str = "flashmm") -> str:
    """The control socket of a loaded config: ``control.socket_path``, else the default.

    Duck-typed on ``cfg.control.socket_path``, ``cfg.control.data_dir`` and
    the profile name (``cfg.profile_name`` or ``cfg.profile``). The bot and
    the CLI both use this, so they always agree.
    """
    control = getattr(cfg, "control", None)
    explicit = getattr(control, "socket_path", None)
    if explicit:
        return os.path.expanduser(str(explicit))
    profile = (
        getattr(cfg, "profile_name", None) or getattr(cfg, "profile", None) or fallback_profile
    )
    data_dir = getattr(control, "data_dir", None)
    return default_socket_path(str(profile), data_dir)


def _check_path_length(path: str) -> None:
    n = len(os.fsencode(path))
    if n > MAX_PATH_BYTES:
        raise UserInputError(
            f"control socket path is too long ({n} > {MAX_PATH_BYTES} bytes): {path};"
            " set control.socket_path to a shorter path"
        )


def _is_live(path: str, timeout: float = 1.0) -> bool:
    """True if something accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except TimeoutError:
            return True  # backlog full: somebody is there
        except OSError:  # refused, gone, ...
            return False
        return True


def _encode(obj: Mapping[str, Any]) -> bytes:
    return (json.dumps(obj, default=str, separators=(",", ":")) + "\n").encode()


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
        _check_path_length(path)
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
            if _is_live(path):
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
                    writer.write(_encode(self._error("request line too long")))
                    await writer.drain()
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                response = await self._answer(line)
                writer.write(_encode(response))
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


def send_command(
    path: str | os.PathLike[str],
    cmd: str,
    args: Mapping[str, Any] | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Send one command to the bot on ``path`` and return its response.

    The response is ``{"ok": bool, "result": dict, "error": str | None}``.
    Raises :class:`NotRunningError` when no bot listens there, and
    :class:`RuntimeFailure` on a timeout, a permission problem or a garbled answer.
    """
    spath = os.fspath(path)
    _check_path_length(spath)
    request = _encode({"cmd": cmd, "args": dict(args or {})})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(spath)
        except (FileNotFoundError, ConnectionRefusedError):
            raise NotRunningError(
                f"no FlashMM bot is running (nothing listens on {spath})"
            ) from None
        except PermissionError:
            raise RuntimeFailure(
                f"permission denied on control socket {spath}; run as the bot's user"
                " (e.g. sudo -u flashmm flashmm ...)"
            ) from None
        except TimeoutError:
            raise RuntimeFailure(f"bot on {spath} did not accept within {timeout:g}s") from None
        except OSError as exc:
            raise RuntimeFailure(f"cannot connect to control socket {spath}: {exc}") from None
        try:
            s.sendall(request)
            buf = bytearray()
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > 16 * MAX_LINE:
                    break
        except TimeoutError:
            raise RuntimeFailure(
                f"bot on {spath} did not answer {cmd!r} within {timeout:g}s"
            ) from None
        except OSError as exc:
            raise RuntimeFailure(f"control socket {spath}: {exc}") from None
    line, _, _ = bytes(buf).partition(b"\n")
    if not line:
        raise RuntimeFailure(f"bot on {spath} closed the connection without answering {cmd!r}")
    try:
        response = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        response = None
    if not isinstance(response, dict) or "ok" not in response:
        raise RuntimeFailure(f"bot on {spath} sent an invalid answer to {cmd!r}")
    response.setdefault("result", {})
    response.setdefault("error", None)
    return response
