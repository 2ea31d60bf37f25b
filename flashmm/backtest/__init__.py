"""Backtests: the paper-mode engine on a simulated clock over cached recordings.

See ``docs/backtest.md``. Entry points: :func:`flashmm.backtest.runner.run_backtest`
(one run), :mod:`flashmm.backtest.sweep` (parameter grids) and the
``flashmm backtest`` command (:mod:`flashmm.cli.backtest`).
"""

from __future__ import annotations

__all__ = ["compare", "compiled", "outputs", "plots", "recorder", "report", "runner", "sweep"]
