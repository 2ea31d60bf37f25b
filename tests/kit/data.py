"""Recorded market data for the tests: bundled with FlashMM, or the large shared recordings.

Bundled files (``flashmm/data/``) ship with every clone, so tests that use them always
run. The shared recordings sit in ``../shared/data`` beside the repository on
development machines; tests that need them skip with a one-line reason elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "flashmm" / "data"
SHARED = ROOT.parent / "shared" / "data"

# bundled (byte-identical to the shared 20-minute NEXO file; the ETH slice is a prefix
# of the shared ETH recording)
NEXO_23 = BUNDLED / "nexousdt_20240723.dat.gz"
ETH_SLICE = BUNDLED / "ethusdt_20240808_slice.dat.gz"

# shared only (large)
NEXO_24 = SHARED / "binance_spot_nexousdt_20240724.dat.gz"
ETH = SHARED / "binance_spot_ethusdt_20240808.gz"
FUT_BTC = SHARED / "binance_usdm_btcusdt_20240808.gz"
FUT_ETH = SHARED / "binance_usdm_ethusdt_20240808.gz"


def needs(*paths: Path) -> pytest.MarkDecorator:
    """Skip unless every recording exists (the shared ones are not part of a clone)."""
    missing = [p for p in paths if not p.is_file()]
    reason = (
        f"needs the shared recording {missing[0].name} (../shared/data beside the repository)"
        if missing
        else ""
    )
    return pytest.mark.skipif(bool(missing), reason=reason)


def require(*paths: Path) -> None:
    """Inside a test: skip now unless every recording exists."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        pytest.skip(
            f"needs the shared recording {missing[0].name} (../shared/data beside the repository)"
        )
