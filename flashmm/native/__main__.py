"""``python -m flashmm.native``: compile the core's and the simulator's kernels into the
on-disk cache (run at install time so that no user waits for it later)."""

from __future__ import annotations

import sys

from flashmm.native import warm
from flashmm.native.backtest import warm as warm_backtest
from flashmm.native.sim import warm as warm_sim

if __name__ == "__main__":
    core = warm()
    sim = warm_sim()
    loop = warm_backtest()
    sys.stdout.write(
        f"flashmm native core ready in {core:.1f} s (simulator {sim:.1f} s, "
        f"backtest loop {loop:.1f} s)\n"
    )
