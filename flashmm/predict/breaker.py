"""ML circuit breaker: the model when it is healthy, the rules when not.

:class:`GuardedPredictor` wraps a model (anything with
``predict(x, ts_ns) -> Signal``) and the :class:`RulePredictor`. States:

- ``closed``: the model predicts.
- ``open``: the rules predict; entered on an inference exception,
  non-finite outputs, rolling p99 latency over ``latency_budget_us``,
  sustained feature drift, or a live hit rate on moved samples below
  ``hit_rate_floor``. Also the state when the model file failed to load
  (then it stays open: there is nothing to retry).
- ``half_open``: after ``cooldown_s`` the model is tried again; any failure
  reopens, ``half_open_successes`` good predictions close.
- ``disabled``: no model configured; the rules predict and nothing is
  wrong (quoting should not widen for it).

Time is the ``ts_ns`` passed in (simulated time in backtests). On a wall
clock the latency of each model call is measured (``perf_counter_ns``); on
a simulated clock (backtests, replays) it is a modelled cost
(``latency_us``: ``model.sim_latency_us``, or measured once at load), so
the same input gives the same predictions and fills on any machine and
under any load.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any, Protocol

import numpy as np
from loguru import logger

from flashmm.errors import ModelError
from flashmm.features import FEATURE_NAMES, N_FEATURES
from flashmm.predict.labels import parse_horizon
from flashmm.predict.rules import RulePredictor
from flashmm.predict.settings import ModelSettings
from flashmm.types import Signal

CLOSED, OPEN, HALF_OPEN, DISABLED = "closed", "open", "half_open", "disabled"


class Predictor(Protocol):
    def predict(self, x: np.ndarray, ts_ns: int) -> Signal: ...


class Computed(Protocol):
    """The model's answer for ``x`` worked out ahead (the compiled core computes the
    features, the drift count and the model in one call): :meth:`GuardedPredictor.predict`
    uses it instead of calling the model, with the same checks."""

    #: features beyond ``drift_z_limit`` (as :meth:`GuardedPredictor._drifting` counts)
    drifted: int
    #: the call's latency (wall clock), when the breaker measures one
    lat_us: float

    def commit(self) -> Signal:
        """The model's signal, its state (last probabilities) set as its own call would."""
        ...


class GuardedPredictor:
    """Model + rule fallback behind a circuit breaker. One per market."""

    def __init__(
        self,
        model: Predictor | None,
        rules: RulePredictor | None = None,
        settings: ModelSettings | None = None,
        *,
        load_error: str | None = None,
        latency_us: float | None = None,
    ) -> None:
        self.model = model
        #: the modelled cost of one model call (simulated clock); None: measure each call
        self.modelled_latency_us = latency_us
        self.rules = rules or RulePredictor()
        self.settings = s = settings or ModelSettings()
        self.horizon_ns = int(getattr(model, "horizon_ns", 0) or parse_horizon(s.horizon))
        mean = getattr(model, "mean", None)
        std = getattr(model, "std", None)
        self._mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self._inv_std = (
            None if std is None else 1.0 / np.where(np.asarray(std) > 1e-12, np.asarray(std), 1.0)
        )
        self._z = np.zeros(len(self._mean) if self._mean is not None else 0)
        self._cooldown_ns = int(s.cooldown_s * 1e9)
        self._drift_sustain_ns = int(s.drift_sustain_s * 1e9)
        self.transitions: list[dict[str, Any]] = []
        if model is not None:
            self.state, self.reason = CLOSED, "model loaded"
        elif load_error:
            self.state, self.reason = OPEN, f"model not loaded: {load_error}"
        else:
            self.state, self.reason = DISABLED, "no model configured"
        self.opened_ns = 0
        self._lat: deque[float] = deque(maxlen=s.latency_window)
        self._lat_over = 0
        self._drift_since: int | None = None
        self.drift_features = 0
        self.drift_worst = ""
        self._half_ok = 0
        self._mid: float | None = None
        # (ts, mid, lean, up/down confidence, the model's learning token)
        self._pending: deque[tuple[int, float, int, float, Any]] = deque(maxlen=100_000)
        self._hits: deque[int] = deque(maxlen=s.hit_rate_window)
        # (up/down confidence, hit) of the last scored model calls: live calibration
        self._calib: deque[tuple[float, int]] = deque(maxlen=1000)
        self.model_predictions = 0
        self.fallback_predictions = 0

    # --- state ------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """True when the model should be running but is not (quote wider)."""
        return self.state in (OPEN, HALF_OPEN)

    #: market this breaker guards (named in its log lines)
    market = ""
    #: at most one log line per breaker this often (wall clock); the others are counted
    LOG_EVERY_S = 10.0

    def _to(self, state: str, reason: str, ts_ns: int) -> None:
        prev = self.state
        self.state, self.reason = state, reason
        self.transitions.append({"ts_ns": ts_ns, "from": prev, "to": state, "reason": reason})
        now = time.monotonic()
        last = getattr(self, "_logged_at", None)
        if last is not None and now - last < self.LOG_EVERY_S:
            self._unlogged = getattr(self, "_unlogged", 0) + 1
            return
        more = getattr(self, "_unlogged", 0)
        self._logged_at, self._unlogged = now, 0
        log = logger.warning if state == OPEN else logger.info
        log(
            "ML breaker {}{} -> {}: {}{}",
            f"{self.market}: " if self.market else "",
            prev,
            state,
            reason,
            f" ({more} earlier changes not logged)" if more else "",
        )

    def _open(self, reason: str, ts_ns: int) -> None:
        self._to(OPEN, reason, ts_ns)
        self.opened_ns = ts_ns
        self._lat.clear()
        self._lat_over = 0
        self._drift_since = None
        self._half_ok = 0
        self._hits.clear()
        self._calib.clear()
        self._pending.clear()

    # --- prediction -------------------------------------------------------
    def _fallback(self, x: np.ndarray, ts_ns: int) -> Signal:
        self.fallback_predictions += 1
        return self.rules.predict(x, ts_ns)

    def _drifting(self, x: np.ndarray) -> bool:
        if self._mean is None or self._inv_std is None:
            return False
        z = self._z
        np.subtract(x, self._mean, out=z)
        z *= self._inv_std
        np.abs(z, out=z)
        # NaN features count as drifted
        n = int(np.count_nonzero(~(z <= self.settings.drift_z_limit)))
        self.drift_features = n
        if n > self.settings.drift_max_features:
            k = int(np.argmax(np.where(np.isnan(z), np.inf, z)))
            self.drift_worst = f"{FEATURE_NAMES[k]} |z| {z[k]:.1f}" if k < N_FEATURES else ""
            return True
        return False

    def predict(self, x: np.ndarray, ts_ns: int, computed: Computed | None = None) -> Signal:
        """The model's signal for ``x`` behind the breaker (the rules' when it is open or
        trips). ``computed``: the model's answer worked out ahead (see :class:`Computed`)."""
        model = self.model
        if model is None:
            return self._fallback(x, ts_ns)
        s = self.settings
        if self.state == OPEN:
            if ts_ns - self.opened_ns < self._cooldown_ns:
                return self._fallback(x, ts_ns)
            self._to(HALF_OPEN, "cool-down over, trying the model", ts_ns)
            self._half_ok = 0
        half = self.state == HALF_OPEN

        if computed is None or computed.drifted > s.drift_max_features:
            drifting = self._drifting(x)
        else:
            self.drift_features = computed.drifted
            drifting = False
        if drifting:
            if self._drift_since is None:
                self._drift_since = ts_ns
            if half or ts_ns - self._drift_since >= self._drift_sustain_ns:
                self._open(
                    f"feature drift: {self.drift_features} feature(s) beyond |z| > "
                    f"{s.drift_z_limit:g} (worst {self.drift_worst}) for "
                    f"{(ts_ns - self._drift_since) / 1e9:.1f} s",
                    ts_ns,
                )
                return self._fallback(x, ts_ns)
        else:
            self._drift_since = None

        modelled = self.modelled_latency_us
        if computed is not None:
            sig = computed.commit()
            lat_us = computed.lat_us if modelled is None else modelled
        else:
            t0 = time.perf_counter_ns() if modelled is None else 0
            try:
                sig = model.predict(x, ts_ns)
            except Exception as exc:
                self._open(f"inference error: {type(exc).__name__}: {str(exc)[:200]}", ts_ns)
                return self._fallback(x, ts_ns)
            lat_us = (time.perf_counter_ns() - t0) / 1e3 if modelled is None else modelled

        if not (math.isfinite(sig.confidence) and math.isfinite(sig.expected_bps)):
            self._open("model output is NaN or infinite", ts_ns)
            return self._fallback(x, ts_ns)

        budget = s.latency_budget_us
        lat = self._lat
        if len(lat) == lat.maxlen and lat[0] > budget:
            self._lat_over -= 1
        lat.append(lat_us)
        if lat_us > budget:
            self._lat_over += 1
            if half:
                self._open(f"latency {lat_us:.0f} us over budget {budget:g} us", ts_ns)
                return self._fallback(x, ts_ns)
        # the rolling p99 can only be over budget when more than 1 % of the
        # window is: compute it (costly) only then
        if len(lat) >= s.latency_min_samples and self._lat_over > 0.01 * len(lat):
            p99 = float(np.percentile(np.asarray(lat), 99))
            if p99 > budget:
                self._open(f"latency p99 {p99:.0f} us over budget {budget:g} us", ts_ns)
                return self._fallback(x, ts_ns)

        lean_fn = getattr(model, "lean", None)
        lean = int(lean_fn()) if callable(lean_fn) else (sig.direction or _sign(sig.expected_bps))
        if self._mid is not None and lean:
            token = getattr(model, "last_token", None)
            self._pending.append((ts_ns, self._mid, lean, sig.confidence, token))
        self.model_predictions += 1
        if half:
            self._half_ok += 1
            if self._half_ok >= s.half_open_successes:
                self._to(CLOSED, f"{self._half_ok} good predictions after cool-down", ts_ns)
        return sig

    def on_mid(self, mid: float, ts_ns: int) -> None:
        """The current mid (any unit), to score model calls at the horizon.
        A mid <= 0 or not finite (a side of the book empty) is ignored."""
        if not (mid > 0 and math.isfinite(mid)):
            return
        self._mid = mid
        p = self._pending
        if not p:
            return
        h = self.horizon_ns
        hits = self._hits
        learn = getattr(self.model, "learn", None)
        while p and p[0][0] + h <= ts_ns:
            _, m0, lean, conf, token = p.popleft()
            if mid != m0:
                hit = 1 if (mid > m0) == (lean > 0) else 0
                hits.append(hit)
                self._calib.append((conf, hit))
                if learn is not None and token is not None:
                    learn(token, mid > m0)  # an online model learns the realised move
        if (
            self.state == CLOSED
            and len(hits) == hits.maxlen
            and sum(hits) < self.settings.hit_rate_floor * len(hits)
        ):
            rate = sum(hits) / len(hits)
            self._open(
                f"live hit rate {rate:.3f} on the last {len(hits)} moved samples "
                f"below floor {self.settings.hit_rate_floor:g}",
                ts_ns,
            )

    # --- reporting --------------------------------------------------------
    @property
    def hit_rate(self) -> float | None:
        return sum(self._hits) / len(self._hits) if self._hits else None

    def calibration_error_pts(self) -> float | None:
        """Live calibration of the up/down confidence of the last scored model
        calls (bins of 0.05, weighted mean gap, points); None before 50 calls."""
        if len(self._calib) < 50:
            return None
        from flashmm.predict.evaluation import calibration

        a = np.asarray(self._calib, dtype=np.float64)
        return round(calibration(a[:, 0], a[:, 1])[1], 2)

    def latency_us(self) -> tuple[float | None, float | None]:
        if not self._lat:
            return None, None
        a = np.asarray(self._lat)
        return float(np.percentile(a, 50)), float(np.percentile(a, 99))

    def status(self) -> dict[str, Any]:
        p50, p99 = self.latency_us()
        path = getattr(self.model, "path", None)
        online = getattr(self.model, "status", None)  # an online model's weights and updates
        return {
            "state": self.state,
            "reason": self.reason,
            "source": "onnx" if self.state in (CLOSED, HALF_OPEN) else "rules",
            "model": str(path) if path is not None else None,
            "horizon_ns": self.horizon_ns,
            "model_predictions": self.model_predictions,
            "fallback_predictions": self.fallback_predictions,
            "latency_p50_us": p50,
            "latency_p99_us": p99,
            "latency_budget_us": self.settings.latency_budget_us,
            "latency_modelled": self.modelled_latency_us is not None,
            "hit_rate_moved": self.hit_rate,
            "hit_samples": len(self._hits),
            "calibration_error_pts": self.calibration_error_pts(),
            "online": online() if callable(online) else None,
            "hit_rate_floor": self.settings.hit_rate_floor,
            "drift_features": self.drift_features,
            "transitions": len(self.transitions),
            "last_transitions": self.transitions[-5:],
        }


def _sign(v: float) -> int:
    return 1 if v > 0 else (-1 if v < 0 else 0)


def measure_latency_us(model: Predictor, n_features: int, calls: int = 200) -> float:
    """The median wall-clock latency of ``calls`` model calls on a zero vector (µs)."""
    x = np.zeros(n_features, dtype=np.float64)
    lat = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter_ns()
        model.predict(x, 0)
        lat[i] = (time.perf_counter_ns() - t0) / 1e3
    return float(np.median(lat))


def load_predictor(
    settings: ModelSettings | None = None, *, sim_clock: bool = False
) -> GuardedPredictor:
    """The predictor the engine uses. Never raises on a bad model file:
    it logs a warning and runs on the rules.

    ``sim_clock``: the engine runs on recorded time (backtest, replay); each
    model call then costs ``settings.sim_latency_us`` (or its latency measured
    once here when that is null), never the wall clock of the call."""
    s = settings or ModelSettings()
    rules = RulePredictor()
    if not s.enabled or not s.path:
        logger.info("prediction model disabled; using the rule predictor")
        return GuardedPredictor(None, rules, s)
    path = s.resolve_path()
    try:
        try:
            from flashmm.predict.onnx_model import OnnxPredictor
        except ImportError as exc:  # onnxruntime missing
            raise ModelError(f"onnxruntime not available ({exc})") from None
        model = OnnxPredictor(
            path,  # type: ignore[arg-type]
            min_lean=s.min_lean,
            use_regressor=s.use_regressor,
            native=s.native,
        )
    except ModelError as exc:
        logger.warning("prediction model not loaded, running on rules: {}", exc)
        return GuardedPredictor(None, rules, s, load_error=str(exc))
    if model.horizon != s.horizon:
        logger.warning(
            "model {} has horizon {}, config says {}; using the model's",
            path,
            model.horizon,
            s.horizon,
        )
    lat: float | None = None
    if sim_clock:
        lat = s.sim_latency_us
        if lat is None:
            lat = measure_latency_us(model, len(model.mean))
            logger.info("model latency measured once for the simulated clock: {:.0f} us", lat)
    logger.info("prediction model loaded: {} (horizon {}, {})", path, model.horizon, model.engine)
    guarded: Predictor = model
    if s.online:
        from flashmm.predict.online import OnlineModel

        guarded = OnlineModel(model, lr=s.online_lr, l2=s.online_l2)
    return GuardedPredictor(guarded, rules, s, latency_us=lat)
