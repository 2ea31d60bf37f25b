"""Crash-safe journal of everything the bot did: orders, fills, positions, breakers, commands.

One SQLite file in WAL mode per bot, written by :class:`Journal`
(:mod:`~flashmm.ops.journal.writer`: the hot path appends to a queue, a
writer thread commits in batches) and read by :func:`read_state`
(:mod:`~flashmm.ops.journal.reader`: what to recover after a crash or
``kill -9``).
"""

from flashmm.ops.journal.reader import (
    MODE_COMMANDS,
    BreakerRecord,
    ControlRecord,
    PositionSnapshot,
    RecoveredState,
    read_state,
)
from flashmm.ops.journal.writer import Journal

__all__ = [
    "MODE_COMMANDS",
    "BreakerRecord",
    "ControlRecord",
    "Journal",
    "PositionSnapshot",
    "RecoveredState",
    "read_state",
]
