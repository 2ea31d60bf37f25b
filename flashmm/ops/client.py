"""Control socket, client side: what ``flashmm status|pause|resume|stop|...`` sends.

The protocol (JSON lines over a Unix socket) is described in
:mod:`flashmm.ops.control`, which holds the bot's side. This half needs only the
standard library (no asyncio, no logging), so a ``flashmm status`` starts fast.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flashmm.errors import NotRunningError, RuntimeFailure, UserInputError

__all__ = ["MAX_LINE", "default_socket_path", "send_command", "socket_path_from_config"]

MAX_LINE = 64 * 1024
# sockaddr_un.sun_path is 108 bytes including the trailing NUL.
MAX_PATH_BYTES = 107


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


def check_path_length(path: str) -> None:
    n = len(os.fsencode(path))
    if n > MAX_PATH_BYTES:
        raise UserInputError(
            f"control socket path is too long ({n} > {MAX_PATH_BYTES} bytes): {path};"
            " set control.socket_path to a shorter path"
        )


def is_live(path: str, timeout: float = 1.0) -> bool:
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


def encode_line(obj: Mapping[str, Any]) -> bytes:
    return (json.dumps(obj, default=str, separators=(",", ":")) + "\n").encode()


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
    check_path_length(spath)
    request = encode_line({"cmd": cmd, "args": dict(args or {})})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(spath)
        except (FileNotFoundError, ConnectionRefusedError):
            where = spath
            if not os.path.isabs(spath):  # control.data_dir is relative to the bot's folder
                where += (
                    f" under {os.getcwd()}; run this from the bot's folder or give an absolute path"
                )
            raise NotRunningError(
                f"no FlashMM bot is running (nothing listens on {where})"
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
