"""The cached event source yields exactly ReplayFeed's events."""

from __future__ import annotations

import gzip
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from kit.data import ETH, ETH_SLICE, needs
from kit.data import NEXO_23 as NEXO_20MIN

from flashmm.config import load_config
from flashmm.feeds.cache import EVENT_DTYPE, CachedFeed, load_recording
from flashmm.feeds.replay import ReplayFeed
from flashmm.runner import scales_for


@pytest.fixture
def scales() -> dict:
    return scales_for(load_config("configs/backtest.yaml").specs())


def test_equal_streams_on_nexo_20min(tmp_path: Path, scales: dict) -> None:
    ref = list(ReplayFeed([NEXO_20MIN], scales).events())
    cold = CachedFeed([NEXO_20MIN], scales, cache_dir=tmp_path)
    assert not cold.from_cache
    assert list(cold.events()) == ref
    warm = CachedFeed([NEXO_20MIN], scales, cache_dir=tmp_path)
    assert warm.from_cache
    assert list(warm.events()) == ref
    assert warm.stats.events == len(ref) and warm.stats.bad_lines == 0
    assert len(list(tmp_path.glob("*.npz"))) == 1


def test_window_rules_match_replay(tmp_path: Path, scales: dict) -> None:
    full = list(ReplayFeed([NEXO_20MIN], scales).events())
    lo = full[len(full) // 3].ts_ns
    hi = full[2 * len(full) // 3].ts_ns
    ref = list(ReplayFeed([NEXO_20MIN], scales, start_ns=lo, end_ns=hi).events())
    got = list(
        CachedFeed([NEXO_20MIN], scales, start_ns=lo, end_ns=hi, cache_dir=tmp_path).events()
    )
    assert got == ref
    assert CachedFeed(
        [NEXO_20MIN], scales, start_ns=lo, end_ns=hi, cache_dir=tmp_path
    ).count_in_window() == sum(1 for e in full if lo <= e.ts_ns <= hi)


@needs(ETH)
def test_two_symbols_merged_and_aligned(tmp_path: Path, scales: dict) -> None:
    files = [NEXO_20MIN, ETH]
    ref = list(ReplayFeed(files, scales, align=False).events())
    got = list(CachedFeed(files, scales, align=False, cache_dir=tmp_path).events())
    assert got == ref
    # aligned starts tie on (time, sequence): the symbol breaks the tie
    aligned = list(CachedFeed(files, scales, align=True, cache_dir=tmp_path).events())
    assert len(aligned) == len(ref)
    assert {e.symbol for e in aligned[:2]} == {"nexousdt", "ethusdt"}
    assert aligned[0].ts_ns == aligned[1].ts_ns


def test_arrays_and_corrupt_entry_rebuilt(tmp_path: Path, scales: dict) -> None:
    rec = load_recording(NEXO_20MIN, "nexousdt", scales["nexousdt"], tmp_path)
    assert rec.events.dtype == EVENT_DTYPE
    assert rec.levels.dtype == np.int64 and rec.levels.shape[1] == 2
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(b"not an npz")
    again = load_recording(NEXO_20MIN, "nexousdt", scales["nexousdt"], tmp_path)
    assert not again.from_cache
    assert np.array_equal(again.events, rec.events)
    assert load_recording(NEXO_20MIN, "nexousdt", scales["nexousdt"], tmp_path).from_cache


def test_cache_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scales: dict) -> None:
    monkeypatch.setenv("FLASHMM_CACHE_DIR", str(tmp_path / "env-cache"))
    CachedFeed([NEXO_20MIN], scales)
    assert len(list((tmp_path / "env-cache").glob("*.npz"))) == 1


def coarse_copy(src: Path, dst: Path, lines: int, per_ts: int) -> Path:
    """The first ``lines`` lines of a recording, ``per_ts`` lines sharing each timestamp."""
    with gzip.open(src, "rb") as fh, gzip.open(dst, "wb") as out:
        for i, line in enumerate(fh):
            if i == lines:
                break
            ts = 1_722_000_000_000_000_000 + (i // per_ts) * 1_000_000
            out.write(b"%d %s" % (ts, line.split(b" ", 1)[1]))
    return dst


def test_equal_timestamps_ordered_alike(tmp_path: Path, scales: dict) -> None:
    """Ties within a symbol and across symbols: both feeds share one merge, so the
    event sequence is the same (equal times in symbol order, each symbol in file order)."""
    files = [
        coarse_copy(NEXO_20MIN, tmp_path / "nexo.dat.gz", 400, 7),
        coarse_copy(ETH_SLICE, tmp_path / "eth.dat.gz", 400, 5),
    ]
    for align in (False, True):
        ref = list(ReplayFeed(files, scales, align=align).events())
        got = list(CachedFeed(files, scales, align=align, cache_dir=tmp_path / "c").events())
        assert len(ref) > 700 and got == ref
        ties = sum(a.ts_ns == b.ts_ns and a.symbol != b.symbol for a, b in pairwise(ref))
        assert ties > 0
