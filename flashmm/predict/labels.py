"""Prediction targets: mid-price direction and move at a horizon.

Samples come from :func:`flashmm.predict.batch.batch_features` on a regular time
grid. For a sample at ``t`` the target is the mid at ``t + horizon`` (the
first grid sample at or after it, within one grid step) against the mid at
``t``:

- direction class ``0`` down, ``1`` flat, ``2`` up; flat when
  ``|move| < flat_ticks`` ticks. The default ``flat_ticks = 0.5`` means any
  change of the mid is a move (the mid moves in half ticks), which is what
  "the mid actually moved" means when we score hit rates.
- ``bps``: the signed move in basis points of the mid at ``t``.
"""

from __future__ import annotations

import re

import numpy as np

from flashmm.errors import UserInputError

DOWN, FLAT, UP = 0, 1, 2
DEFAULT_FLAT_TICKS = 0.5

_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000}
_HORIZON_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m)\s*$")


def parse_horizon(text: str) -> int:
    """``"100ms"``, ``"1s"``, ``"5s"`` ... to nanoseconds."""
    m = _HORIZON_RE.match(str(text))
    if not m:
        raise UserInputError(f"bad horizon {text!r}: use a number and a unit, e.g. 100ms, 1s, 5s")
    ns = int(float(m.group(1)) * _UNITS[m.group(2)])
    if ns <= 0:
        raise UserInputError(f"bad horizon {text!r}: must be > 0")
    return ns


def make_labels(
    ts_ns: np.ndarray, mid: np.ndarray, horizon_ns: int, flat_ticks: float = DEFAULT_FLAT_TICKS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Direction classes, moves in bps and a validity mask for each sample.

    ``mid`` is in ticks. A sample is valid when a sample exists at or after
    ``t + horizon`` within one grid step (the median gap between samples).
    """
    n = len(ts_ns)
    if n < 2:
        return np.full(n, FLAT, dtype=np.int64), np.zeros(n), np.zeros(n, dtype=bool)
    max_gap_ns = int(np.median(np.diff(ts_ns)))
    target = ts_ns + horizon_ns
    j = np.searchsorted(ts_ns, target, side="left")
    valid = j < n
    jj = np.minimum(j, n - 1)
    valid &= (ts_ns[jj] - target) <= max_gap_ns
    move = mid[jj] - mid
    bps = np.where(valid, move / mid * 1e4, 0.0)
    y = np.where(move >= flat_ticks, UP, np.where(move <= -flat_ticks, DOWN, FLAT))
    return y.astype(np.int64), bps, valid
