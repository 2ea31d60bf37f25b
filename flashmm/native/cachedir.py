"""Where numba keeps the compiled kernels: a folder this process may write.

numba loads and saves its on-disk cache only in a folder it can write (it tries a
temporary file there first): ``NUMBA_CACHE_DIR`` when set, else the package's own
``__pycache__``, else ``~/.cache/numba``. A folder it cannot write is skipped even
when it holds every kernel compiled, and a process with no such folder at all cannot
even define a cached kernel (numba raises "no locator available" at import): a
container with a read-only root file system, the image's cache read-only and ``HOME``
empty (``podman exec`` gives an empty one) met both.

:func:`usable` runs before the first kernel is defined. When numba's own choice works
it changes nothing. When ``NUMBA_CACHE_DIR`` names a folder this process cannot write
(the image's cache under a read-only root), or numba has no folder at all, it points
numba at the first writable one of ``$XDG_CACHE_HOME/flashmm/numba`` (or
``~/.cache/flashmm/numba``) and ``$TMPDIR/flashmm-numba-UID``, first copying the
read-only cache into it (a few MB; files newer there than here), so that the kernels
compiled at build load at once instead of being compiled again. The new folder goes
into the environment, so the background builder (a child process) uses it too. With
no writable folder anywhere the kernels are compiled without a disk cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_DONE = False
_USABLE = True
_CHOSEN: str | None = None
_SEEDED_FROM: str | None = None


def writable(path: Path) -> bool:
    """numba's own test: the folder exists or can be made, and takes a temporary file."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError:
        return False
    return True


def candidates() -> list[Path]:
    """Writable places to try, in order: the user's cache folder (only when the home or
    XDG_CACHE_HOME is an absolute path), then the temporary folder."""
    out: list[Path] = []
    xdg = Path(os.environ.get("XDG_CACHE_HOME", ""))
    try:  # HOME when set (an empty one would mean "/"), else the password database
        home = Path.home() if os.environ.get("HOME", "-") else Path()
    except RuntimeError:
        home = Path()
    base = xdg if xdg.is_absolute() else home / ".cache"
    if base.is_absolute():
        out.append(base / "flashmm" / "numba")
    out.append(Path(tempfile.gettempdir()) / f"flashmm-numba-{os.getuid()}")
    return out


def seed(source: Path, target: Path) -> int:
    """Copy the compiled cache at ``source`` into ``target``: every file missing there or
    older there than here (a newer image's kernels replace an older image's; what numba
    wrote later in ``target`` stays). Returns the number of files copied."""
    copied = 0
    for src in source.rglob("*"):
        if not src.is_file():
            continue
        dst = target / src.relative_to(source)
        try:
            if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            # whole files only: another process may be loading this cache right now
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
            shutil.copy2(src, tmp)
            os.replace(tmp, dst)
            copied += 1
        except OSError:
            continue  # a file that cannot be copied is compiled again
    return copied


def _numba_has_a_place() -> bool:
    """True when numba's own locators find a writable cache folder for a kernel of
    this package (the test numba runs when a cached kernel is defined)."""
    from numba.core.caching import FunctionCache

    try:
        FunctionCache(_probe)  # type: ignore[no-untyped-call]
    except RuntimeError:
        return False
    return True


def _probe() -> None:  # a function of this package for numba's locators
    return None


def usable() -> bool:
    """Make sure numba has a writable cache folder (see the module's text); True when
    kernels can be cached on disk. Runs once per process; later calls are free."""
    global _DONE, _USABLE, _CHOSEN, _SEEDED_FROM
    if _DONE:
        return _USABLE
    _DONE = True
    from numba.core import config

    given = str(getattr(config, "CACHE_DIR", "") or "")
    if given and writable(Path(given)):
        return True
    if not given and _numba_has_a_place():
        return True
    for place in candidates():
        if writable(place):
            if given and Path(given).is_dir():
                seed(Path(given), place)
                _SEEDED_FROM = given
            os.environ["NUMBA_CACHE_DIR"] = str(place)
            setattr(config, "CACHE_DIR", str(place))  # noqa: B010 (numba reads it at each locator)
            _CHOSEN = str(place)
            return True
    _USABLE = False
    return False


def describe() -> str:
    """One line for the logs: where the kernels' cache is."""
    usable()
    if not _USABLE:
        return "no writable folder: kernels compiled in each process"
    if _CHOSEN is None:
        return "numba's default"
    if _SEEDED_FROM:
        return f"{_CHOSEN} (copied from read-only {_SEEDED_FROM})"
    return _CHOSEN
