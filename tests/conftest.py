"""Fixtures and small helpers; recorded data paths come from ``kit.data``."""

from __future__ import annotations

import gzip
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit.data import ETH, ETH_SLICE, NEXO_23, NEXO_24, ROOT, SHARED, require

SHARED_DATA = SHARED
__all__ = ["ETH", "ETH_SLICE", "NEXO_23", "NEXO_24", "ROOT", "SHARED_DATA"]


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
