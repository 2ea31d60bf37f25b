"""Shared fixtures: paths to the recorded data beside the repo and small helpers."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
NEXO_23 = SHARED_DATA / "binance_spot_nexousdt_20240723.dat.gz"
NEXO_24 = SHARED_DATA / "binance_spot_nexousdt_20240724.dat.gz"
ETH = SHARED_DATA / "binance_spot_ethusdt_20240808.gz"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert NEXO_23.exists(), f"recorded data missing: {NEXO_23} (shared/ must sit beside the repo)"
    return SHARED_DATA


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
