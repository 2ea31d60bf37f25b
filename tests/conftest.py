"""Fixtures and small helpers; recorded data paths come from ``kit.data``."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit.data import ETH, ETH_SLICE, NEXO_23, NEXO_24, ROOT, SHARED, require

SHARED_DATA = SHARED
__all__ = ["ETH", "ETH_SLICE", "NEXO_23", "NEXO_24", "ROOT", "SHARED_DATA"]


@pytest.fixture(autouse=True)
def _fresh_loguru() -> Iterator[None]:
    """Each test starts with loguru logging everything to the process's own stderr. A
    command run in-process (``main([...])``, CliRunner) sets up logging to the
    sys.stderr it saw, which the runner then swaps back or closes; a later test in the
    same worker whose in-process bot logs would otherwise get that line (or "Logging
    error in Loguru Handler") in the output it checks."""
    from loguru import logger

    logger.remove()
    logger.add(sys.__stderr__ or sys.stderr, level="DEBUG")
    yield


def pytest_sessionstart(session: pytest.Session) -> None:
    """The install step first: ``python -m flashmm.native`` compiles the compiled core's
    kernels into their on-disk cache once (or finds them there), so the test processes
    and the bots they start load them instead of each compiling them at once. In a
    process of its own: this process's kernels still load on their own, as in a bot.
    Not again in pytest-xdist's workers (the run's first process did it)."""
    if hasattr(session.config, "workerinput"):
        return
    r = subprocess.run(
        [sys.executable, "-m", "flashmm.native"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if r.returncode != 0:  # the native tests say what is wrong; the others still run
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        sys.stderr.write(f"conftest: python -m flashmm.native failed: {tail}\n")


def pytest_configure(config: pytest.Config) -> None:
    """With pytest-xdist (``-n 2 --dist loadfile``: each module runs whole on one worker,
    so a module-scoped anvil, bot or image is set up once, as in a plain run) the
    modules go out in the order :func:`pytest_collection_modifyitems` gives them."""
    if getattr(config.option, "dist", "no") == "loadfile":
        config.option.loadscopereorder = False  # (xdist's default: most tests first)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In pytest-xdist's workers: the modules with slow tests first (in their own
    order), so that no long module starts last while the other worker idles. A plain
    run keeps pytest's order."""
    if hasattr(config, "workerinput"):
        slow = {item.path for item in items if item.get_closest_marker("slow") is not None}
        items.sort(key=lambda item: item.path not in slow)  # stable: modules stay whole


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The large shared recordings; the test skips (one line) where they are not present."""
    require(NEXO_24, ETH)
    return SHARED


@pytest.fixture()
def dirs() -> Iterator[tuple[Path, Path]]:
    """A data folder and a short folder for control sockets (AF_UNIX paths are short)."""
    data = Path(tempfile.mkdtemp(prefix="fmmdata"))
    sock = Path(tempfile.mkdtemp(prefix="fmm", dir="/tmp"))
    try:
        yield data, sock
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(sock, ignore_errors=True)


@pytest.fixture()
def nexo_head(tmp_path: Path) -> Path:
    """The first 400 lines of the 20-minute NEXO recording (starts with a snapshot)."""
    out = tmp_path / "nexo_head.dat.gz"
    with gzip.open(NEXO_23, "rb") as src, gzip.open(out, "wb") as dst:
        for i, line in enumerate(src):
            if i >= 400:
                break
            dst.write(line)
    return out


def write_gz(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as fh:
        for line in lines:
            fh.write(line.rstrip(b"\n") + b"\n")
    return path


def read_lines(path: Path) -> list[bytes]:
    with gzip.open(path, "rb") as fh:
        return fh.read().splitlines()
