"""``python -m flashmm.native``: compile the core's and the simulator's kernels and the
backtest loop into the on-disk cache (run at install time so that no user waits for it
later; :func:`flashmm.native.build_in_background` runs it too, with ``--lock``)."""

from __future__ import annotations

import sys
from pathlib import Path

from flashmm.native import warm
from flashmm.native.backtest import warm as warm_backtest
from flashmm.native.sim import warm as warm_sim


def main(argv: list[str]) -> None:
    lock = Path(argv[argv.index("--lock") + 1]) if "--lock" in argv else None
    try:
        core = warm()
        sim = warm_sim()
        loop = warm_backtest()
    finally:
        if lock is not None:  # the builder's lock: the next process may build again
            lock.unlink(missing_ok=True)
    sys.stdout.write(
        f"flashmm native core ready in {core:.1f} s (simulator {sim:.1f} s, "
        f"backtest loop {loop:.1f} s)\n"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
