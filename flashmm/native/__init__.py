"""The compiled core: book, features, model, strategy and risk checks in numba kernels.

:class:`NativeCore` holds one market's state in a few packed numpy arrays
(see :mod:`flashmm.native.kernels` for the layout) and crosses into compiled
code once per event (:meth:`NativeCore.on_diff`, :meth:`NativeCore.on_trade`,
...) and once per quote decision (:meth:`NativeCore.decide`). Each crossing
passes a handful of arrays, never a long list of scalars.

The kernels are compiled with ``@njit(cache=True)``: the machine code is
written next to the sources (``__pycache__``) the first time and loaded
from there afterwards. :func:`warm` compiles or loads every kernel;
``python -m flashmm.native`` runs it at install time. :func:`start` readies
them for a process: loaded at once when they are in the cache (a fraction of a
second, before the first event), else compiled by :func:`warm_in_background`
on a daemon thread so that a process start is never held up by a compile
(:func:`ready` says when it is done; the Python twins answer until then).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "NativeCore",
    "build_in_background",
    "cached",
    "levels_array",
    "ready",
    "start",
    "warm",
    "warm_in_background",
]

_READY = threading.Event()
_LOCK = threading.Lock()
_WARM_S: float | None = None


def _k() -> Any:
    from flashmm.native import kernels

    return kernels


def levels_array(
    bids: Iterable[tuple[int, int]], asks: Iterable[tuple[int, int]], out: np.ndarray | None = None
) -> np.ndarray:
    """The levels of a snapshot or diff packed for the kernels: ``a[0]`` rows
    ``(side, price_ticks, size_lots)`` (side 0 bid, 1 ask) from ``a[1]`` on.
    ``out``: a buffer to fill when it is large enough (no allocation)."""
    if not isinstance(bids, list):
        bids = list(bids)
    if not isinstance(asks, list):
        asks = list(asks)
    need = 1 + 3 * (len(bids) + len(asks))
    buf = out if out is not None and len(out) >= need else np.empty(need, dtype=np.int64)
    j = 1
    for p, q in bids:
        buf[j] = 0
        buf[j + 1] = p
        buf[j + 2] = q
        j += 3
    for p, q in asks:
        buf[j] = 1
        buf[j + 1] = p
        buf[j + 2] = q
        j += 3
    buf[0] = (j - 1) // 3
    return buf


class NativeCore:
    """One market's compiled core.

    ``strategy``: the Avellaneda-Stoikov params (an ``AvellanedaParams`` or
    anything with its fields); ``risk``: a ``RiskConfig``; ``model``: a
    ``ModelSettings`` (signal, skew and widen settings); ``program``: a checked
    :class:`~flashmm.predict.native.NativeProgram` (None: the rules only).
    """

    def __init__(
        self,
        unit_usdc: float,
        strategy: Any = None,
        risk: Any = None,
        model: Any = None,
        program: Any = None,
        *,
        use_regressor: bool = False,
        vol_interval_ms: int = 1000,
        vol_halflife_s: float = 60.0,
        vol_floor_bps: float = 0.5,
    ) -> None:
        from flashmm.predict.rules import RulePredictor
        from flashmm.predict.settings import ModelSettings
        from flashmm.risk import RiskConfig
        from flashmm.strategy.avellaneda import AvellanedaParams

        k = _k()
        self.k = k
        sp = strategy if strategy is not None else AvellanedaParams()
        rc = risk if risk is not None else RiskConfig()
        ms = model if model is not None else ModelSettings()
        self.ist = np.zeros(k.IST_SIZE, dtype=np.int64)
        self.fst = np.zeros(k.FST_SIZE, dtype=np.float64)
        self.io = np.zeros(k.IO_SIZE, dtype=np.int64)
        self.x = np.zeros(64, dtype=np.float32)
        #: a reused buffer for the levels of one diff (:meth:`on_diff_levels`)
        self.lv = np.zeros(1 + 3 * 512, dtype=np.int64)
        ist, fst = self.ist, self.fst
        ist[k.I_VOL_INTERVAL] = vol_interval_ms * 1_000_000
        n = max(vol_halflife_s * 1000 / vol_interval_ms, 1.0)
        fst[k.F_VOL_ALPHA] = 1 - 0.5 ** (1 / n)
        fst[k.F_VOL_FLOOR] = vol_floor_bps
        fst[k.F_GAMMA] = sp.gamma
        fst[k.F_KAPPA] = sp.kappa
        fst[k.F_HORIZON] = sp.horizon_s
        fst[k.F_SPACING] = sp.level_spacing_bps
        fst[k.F_ORDER_USDC] = sp.order_size_usdc
        fst[k.F_MULT] = sp.size_multiplier
        fst[k.F_MIN_SPREAD] = sp.min_spread_bps
        fst[k.F_MAX_SPREAD] = sp.max_spread_bps
        fst[k.F_INV_TARGET] = sp.inventory_target
        fst[k.F_REFRESH_BPS] = sp.refresh_tolerance_bps
        fst[k.F_REFRESH_SIZE] = sp.refresh_size_tolerance
        ist[k.I_STRAT_LEVELS] = sp.levels
        fst[k.F_UNIT] = unit_usdc
        fst[k.F_MAX_POS_USDC] = rc.max_position_usdc
        fst[k.F_MAX_ORDER_USDC] = rc.max_order_usdc
        fst[k.F_MAX_SKEW] = ms.max_skew_bps
        fst[k.F_MIN_CONF] = ms.min_confidence
        fst[k.F_LOW_CONF_WIDEN] = ms.low_confidence_widen
        fst[k.F_BREAKER_WIDEN] = ms.breaker_widen
        fst[k.F_MOVE_WIDEN] = ms.move_widen
        fst[k.F_MIN_LEAN] = ms.min_lean
        fst[k.F_RULE_MIN_IMB] = RulePredictor.min_imbalance  # the rule's one threshold
        ist[k.I_USE_REG] = int(use_regressor)
        if program is not None:
            self.prog = program.prog
            self.params = program.params
            self.work = np.zeros_like(program.work)
            ist[k.I_POFS] = program.outputs["probabilities"][0]
            ist[k.I_BOFS] = program.outputs["expected_bps"][0]
        else:
            self.prog = np.zeros((0, 8), dtype=np.int64)
            self.params = np.zeros(1, dtype=np.float64)
            self.work = np.zeros(64, dtype=np.float64)
        self.has_model = program is not None

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("k", None)  # a module: found again on load
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self.k = _k()

    # --- events -----------------------------------------------------------
    def on_snapshot(self, lv: np.ndarray, ts_ns: int) -> bool:
        """Load a snapshot (levels as :func:`levels_array`); True when the book is valid."""
        return bool(self.k.on_depth(self.ist, self.fst, lv, ts_ns, True))

    def on_diff(self, lv: np.ndarray, ts_ns: int) -> bool:
        """Apply a diff (already sequenced); True when the book is valid."""
        return bool(self.k.on_depth(self.ist, self.fst, lv, ts_ns, False))

    def on_diff_levels(
        self, bids: list[tuple[int, int]], asks: list[tuple[int, int]], ts_ns: int
    ) -> bool:
        """:meth:`on_diff` from the diff's level lists, packed in a reused buffer."""
        return bool(
            self.k.on_depth(self.ist, self.fst, levels_array(bids, asks, self.lv), ts_ns, False)
        )

    def on_trade(self, ts_ns: int, price_ticks: int, size_lots: int, buyer_is_maker: bool) -> None:
        self.k.features_on_trade(
            self.ist, self.fst, ts_ns, price_ticks, size_lots, int(buyer_is_maker)
        )

    # --- reads --------------------------------------------------------------
    def vector(self, ts_ns: int) -> np.ndarray:
        """The 64 features at ``ts_ns`` (a reused float32 buffer)."""
        self.k.features_vector(self.ist, self.fst, ts_ns, self.x)
        return self.x

    def top(self, side: int, n: int) -> list[tuple[int, int]]:
        """Up to ``n`` best levels of side 0 (bids) or 1 (asks), best first."""
        k = self.k
        base = k.I_BOOK + side * 2 * k.BOOK_CAP
        m = min(n, int(self.ist[side]))
        rows = self.ist[base : base + 2 * m].reshape(-1, 2)
        sign = -1 if side == 0 else 1
        return [(sign * int(p), int(q)) for p, q in rows]

    @property
    def best_bid(self) -> int:
        return int(self.k.best(self.ist, 0))

    @property
    def best_ask(self) -> int:
        return int(self.k.best(self.ist, 1))

    @property
    def ready(self) -> bool:
        return bool(self.ist[self.k.I_READY])

    @property
    def t0(self) -> int:
        return int(self.ist[self.k.I_T0])

    @property
    def sigma_bps(self) -> float:
        return float(self.k.sigma_bps(self.fst))

    def signal(self) -> tuple[int, float, float, float]:
        """The last decision's (direction, confidence, expected_bps, p_move)."""
        k, f = self.k, self.fst
        return int(f[k.F_SIG_DIR]), f[k.F_SIG_CONF], f[k.F_SIG_BPS], f[k.F_SIG_PMOVE]

    def adjust(self) -> tuple[float, float]:
        """The last decision's (skew_bps, widen)."""
        return float(self.fst[self.k.F_SKEW]), float(self.fst[self.k.F_WIDEN])

    # --- decisions ---------------------------------------------------------------
    def set_live(self, live: Iterable[tuple[int, int, int, int, int]]) -> None:
        """Live orders: rows (side +1/-1, price, remaining lots, client id, state)."""
        k, io = self.k, self.io
        n = 0
        for row in live:
            if n == k.MAX_LIVE:
                raise ValueError(f"more than {k.MAX_LIVE} live orders in one market")
            o = k.IO_LIVE + k.LIVE_W * n
            io[o : o + k.LIVE_W] = row
            n += 1
        io[k.IO_NLIVE] = n

    def decide(
        self, ts_ns: int, position_lots: int, *, use_model: bool, breaker_open: bool = False
    ) -> int:
        """One decision over the live orders set by :meth:`set_live`: returns the
        number of places (:meth:`places`); cancels in :meth:`cancels`; -1 when the
        book is not valid."""
        k, io = self.k, self.io
        io[k.IO_TS] = ts_ns
        io[k.IO_POS] = position_lots
        io[k.IO_BREAKER_OPEN] = int(breaker_open)
        io[k.IO_USE_MODEL] = int(use_model and self.has_model)
        return int(k.decide(self.ist, self.fst, self.prog, self.params, self.work, self.x, self.io))

    def places(self) -> list[tuple[int, int, int]]:
        k, io = self.k, self.io
        n = int(io[k.IO_NPLACE])
        return [
            (int(io[k.IO_PLACES + 3 * i]), int(io[k.IO_PLACES + 3 * i + 1]),
             int(io[k.IO_PLACES + 3 * i + 2]))
            for i in range(n)
        ]  # fmt: skip

    def cancels(self) -> list[int]:
        k, io = self.k, self.io
        n = int(io[k.IO_NCANCEL])
        return [int(c) for c in io[k.IO_CANCELS : k.IO_CANCELS + n]]

    def quote(
        self,
        best_bid: int,
        best_ask: int,
        mid: float,
        position_lots: int,
        max_position_lots: int,
        sigma_bps: float,
        skew_bps: float,
        widen: float,
    ) -> list[tuple[int, int, int]]:
        """The strategy alone: (side +1/-1, price, lots) rows, bids then asks."""
        k, io = self.k, self.io
        self.fst[k.F_SKEW] = skew_bps
        self.fst[k.F_WIDEN] = widen
        n = k.strategy_quote(
            self.ist, self.fst, io, best_bid, best_ask, mid, position_lots,
            max_position_lots, sigma_bps,
        )  # fmt: skip
        return [
            (int(io[k.IO_QUOTES + 3 * i]), int(io[k.IO_QUOTES + 3 * i + 1]),
             int(io[k.IO_QUOTES + 3 * i + 2]))
            for i in range(n)
        ]  # fmt: skip

    def check_orders(
        self, position_lots: int, places: list[tuple[int, int, int]]
    ) -> list[tuple[int, int, int]]:
        """The risk check alone over the live orders of :meth:`set_live`."""
        k, io = self.k, self.io
        io[k.IO_POS] = position_lots
        for i, row in enumerate(places):
            io[k.IO_QUOTES + 3 * i : k.IO_QUOTES + 3 * i + 3] = row
        k.check_orders(self.ist, self.fst, io, k.IO_QUOTES, len(places))
        return self.places()


def warm() -> float:
    """Compile (or load from the on-disk cache) every kernel; returns the seconds taken."""
    global _WARM_S
    with _LOCK:
        if _WARM_S is not None:
            return _WARM_S
        t0 = time.perf_counter()
        core = NativeCore(1e-4)
        core.vector(0)
        lv = levels_array([(100, 5), (99, 3)], [(101, 4), (102, 2)])
        core.on_snapshot(lv, 1)
        core.on_diff(levels_array([(100, 6)], []), 2)
        core.on_trade(3, 100, 1, True)
        core.k.features_on_top(core.ist, core.fst, lv, 4)  # the model signal's features
        core.set_live([(1, 99, 1, 1, 0)])
        core.decide(4, 0, use_model=False)
        k = core.k
        k.quote_and_sync(core.ist, core.fst, core.io, 100, 101, 100.5, 0, 10, 1.0)
        k.live_remaining(core.io, 1, 1)
        k.live_cancel_all(core.io)
        k.live_remove(core.io, 1)
        k.apply_levels(core.ist, lv, True)  # the model signal's book, followed change by change
        k.features_on_book(core.ist, core.fst, 5)
        z = np.zeros(64)
        k.model_step(core.ist, core.fst, core.prog, core.params, core.work, core.x, z, z, core.io)
        core.check_orders(0, [(1, 99, 1)])
        core.quote(100, 101, 100.5, 0, 10, 1.0, 0.0, 1.0)
        _WARM_S = time.perf_counter() - t0
        _READY.set()
        return _WARM_S


_THREAD: threading.Thread | None = None
_THREAD_LOCK = threading.Lock()  # not _LOCK: that one is held for the whole compile


def warm_in_background() -> threading.Thread:
    """Kernels for this process without holding it up, started once per process: a
    daemon thread has :func:`build_in_background` compile them in a process of its
    own, waits for it, then loads them (the native parts answer in Python until
    :func:`ready`). Compiling on the thread itself would starve beside a busy engine
    (it needs the GIL back after every one of thousands of small foreign calls): a
    backtest could end before it did, and the next one start over."""
    global _THREAD
    with _THREAD_LOCK:
        if _THREAD is None:
            _THREAD = threading.Thread(
                target=_warm_when_built, name="flashmm-native-warm", daemon=True
            )
            _THREAD.start()
        return _THREAD


def _warm_when_built() -> None:
    from flashmm.native.cachedir import usable

    if usable() and not cached():  # no disk cache: a builder's work would be lost
        build_in_background()
        deadline = time.monotonic() + 3600.0
        while not cached() and time.monotonic() < deadline and _build_running():
            time.sleep(1.0)
    warm()  # loads what the builder wrote (or compiles, if it could not)


BUILD_STALE_S = 900.0  # a builder's lock older than this is a dead builder's
_BUILDER: Any = None


def build_lock() -> Path:
    """The lock file of this installation's builder (one builder at a time)."""
    import hashlib
    import os
    import tempfile

    from numba.core import config

    key = f"{Path(__file__).resolve().parent}|{getattr(config, 'CACHE_DIR', '')}|{os.getuid()}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"flashmm-native-build-{digest}.lock"


def _build_running() -> bool:
    try:
        return time.time() - build_lock().stat().st_mtime < BUILD_STALE_S
    except OSError:  # no lock, or no usable temp folder
        return False


def build_in_background() -> bool:
    """Start ``python -m flashmm.native`` (every kernel and the backtest loop into
    numba's on-disk cache) as a detached process of its own, unless one is building
    already; it outlives this process, so the next one finds the kernels compiled.
    True when a builder runs (this one's or another's)."""
    import os
    import subprocess
    import sys

    global _BUILDER
    if _BUILDER is not None or _build_running():
        return True
    try:
        lock = build_lock()
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:  # a stale lock (the live one returned above): take it over
            lock.unlink(missing_ok=True)
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                return True
        os.close(fd)
    except OSError:  # no writable temp folder: no builder (the thread compiles instead)
        return False
    try:
        _BUILDER = subprocess.Popen(
            [sys.executable, "-m", "flashmm.native", "--lock", str(lock)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        lock.unlink(missing_ok=True)
        return False
    return True


def ready() -> bool:
    """True once :func:`warm` has finished in this process."""
    return _READY.is_set()


def in_disk_cache(kernels: Iterable[Any], unknown: bool) -> bool:
    """True when every one of these numba dispatchers has machine code for its current
    source in numba's on-disk cache (loading it takes a fraction of a second;
    compiling, tens of seconds); ``unknown`` when numba's cache layout is not the one
    read here."""
    try:
        return all(bool(f._cache._cache_file._load_index()) for f in kernels)
    except Exception:
        return unknown


def cached() -> bool:
    """True when the kernels :func:`warm` runs are in numba's on-disk cache (not
    knowing counts as not cached: they are then built in the background)."""
    from flashmm.native import kernels as k

    return in_disk_cache((k.features_on_book, k.features_vector, k.decide, k.model_step), False)


_STARTED = False


def start() -> bool:
    """Ready the kernels for this process (the first call decides how); True when they
    run. Cached kernels load at once: loading them on a thread beside a busy engine
    would take the GIL from it at every one of thousands of small foreign calls and
    could last minutes. Kernels not compiled yet are built in the background (never
    while a user waits); later calls only ask :func:`ready`, so a caller on a hot
    path, such as a quote desk asked for at every quote cycle, reads no cache files."""
    global _STARTED
    if not _STARTED and not ready():
        _STARTED = True
        from loguru import logger

        from flashmm.native.cachedir import describe

        if cached():
            warm()
            logger.debug("compiled kernels loaded (cache: {})", describe())
        else:
            logger.info(
                "compiled kernels not in the cache ({}): building them in the background, "
                "the Python path answers meanwhile",
                describe(),
            )
            warm_in_background()
    return ready()
