"""The direction model: a calibrated up/down head that starts from the imbalance rule.

Why the earlier model lost to the one-line rule: it was a 3-class
(down/flat/up) regression whose fit is dominated by "flat" and by the one
slow market with most samples (NEXO, 97% of the data); its order-flow and
return weights, learnt there, point the wrong way on the deep markets, so
on ETH and BTC its up/down call fell 4-11 points below ``sign(imb_l1)``.
This model separates the questions and lets the training data decide how
far to move away from the rule:

- **direction head** ``d(x)``: the log-odds of "up" given that the mid moves,
  a binary logistic regression on moved samples only, without intercept or
  centring (the call is odd in the signed features, so a trend in the
  training data does not become a bias). Its inputs are one of nested
  groups (``rule``: ``imb_l1`` alone, i.e. the rule with a fitted
  confidence; ``book``: imbalances and microprice offsets; ``flow``: plus
  order-flow and trade-flow imbalances; ``all``: the 64 features), each
  divided by its RMS (every market weighed alike) and optionally squashed
  by ``tanh(z / 2)`` so a market far out of the pooled range cannot drown
  the others; with an L2 strength ``C`` and a market balance (0: every
  sample alike, 1: every market alike).
- **choice inside the training data**: each market's training part gets
  three inner walk-forward folds (fit before 55%, 70%, 85% of it, validate
  on the next 15%); a candidate's score is the mean over folds of its
  *worst* market's hit-rate gain over the rule. The rule alone is the
  start; a richer group is taken only when it beats that by ``MIN_GAIN``.
- **calibration**: a temperature ``a`` (Platt scale without offset, so no
  direction bias) fitted on the inner folds' validation calls, every market
  weighed alike, folded into the weights.
- **move head** ``m(x)``: the log-odds that the mid moves at all, logistic
  regression on all 64 features (moved and flat samples).
- **bps head**: ridge regression of the move in bps (kept for
  ``use_regressor``; off by default).

Exported as one small dense graph (:func:`export_direction_onnx`):
``features -> Gemm [-> Tanh] -> Gemm`` plus ``features -> Gemm``, added,
``Softmax`` gives ``probabilities`` = softmax(``-d/2``, ``-m + log 2``,
``d/2``), so ``p_up / p_down = exp(d)`` exactly (the up/down confidence the
engine reads is ``sigmoid(|d|)``) and ``p_up + p_down = sigmoid(m + log
cosh(d/2))`` (``sigmoid(m)`` for a weak call); ``features -> Gemm`` gives
``expected_bps``. The native numba evaluator runs it.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flashmm.errors import DataError
from flashmm.features import FEATURE_NAMES, IDX, N_FEATURES
from flashmm.predict.labels import FLAT, UP

MODEL_KIND = "direction+move"

_BOOK = (
    "imb_l1",
    "imb_l3",
    "imb_l5",
    "imb_l10",
    "imb_w5",
    "micro_offset_spread",
    "micro3_offset_spread",
    "micro5_offset_spread",
    "log_ratio_l1",
    "imb_l1_ema_1s",
    "imb_l1_ema_5s",
)
_FLOW = (
    "ofi_l1_1s",
    "ofi_l1_5s",
    "ofi_l1_30s",
    "ofi_l5_5s",
    "ofi_l5_30s",
    "trade_imb_1s",
    "trade_imb_5s",
    "trade_imb_30s",
    "last_trade_sign",
    "last_trade_offset_spread",
    "vwap_30s_offset_spread",
)
#: nested input groups of the direction head, simplest first
GROUPS: dict[str, tuple[str, ...]] = {
    "rule": ("imb_l1",),
    "book": _BOOK,
    "flow": _BOOK + _FLOW,
    "all": FEATURE_NAMES,
}
C_GRID = (0.01, 0.1)
BALANCE_GRID = (0.0, 1.0)
#: a richer candidate must beat the best simpler one by this much (hit rate, mean over markets)
MIN_GAIN = 0.002
#: inner walk-forward folds: fit before each cut, validate on the next INNER_SPAN
INNER_CUTS = (0.55, 0.7, 0.85)
INNER_SPAN = 0.15
SQUASH = 2.0
SQUASH_GRID = (False, True)
MOVE_C = 0.01
MOVE_CAP = 200_000  # samples per market for the move head (uniform subsample)
RIDGE_ALPHA = 10.0


@dataclass
class Part:
    """Training samples of one market, in time order."""

    market: str
    X: np.ndarray
    y: np.ndarray
    bps: np.ndarray
    ts_ns: np.ndarray


@dataclass
class DirectionModel:
    """``h = X @ W1`` (then ``tanh`` when ``squash``), logits (down, flat, up)
    ``= h @ W2 + X @ Wm + b``, softmax; ``expected_bps = X @ wb + bb``."""

    W1: np.ndarray  # (64, k)
    squash: bool
    W2: np.ndarray  # (k, 3)
    Wm: np.ndarray  # (64, 3)
    b: np.ndarray  # (3,)
    wb: np.ndarray  # (64,)
    bb: float
    choice: dict[str, Any] = field(default_factory=dict)
    #: training mean/std of the 64 features (the breaker's drift check)
    mean: np.ndarray = field(default_factory=lambda: np.zeros(N_FEATURES))
    std: np.ndarray = field(default_factory=lambda: np.ones(N_FEATURES))

    def logits(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        h = X @ self.W1
        if self.squash:
            h = np.tanh(h)
        z: np.ndarray = h @ self.W2 + X @ self.Wm + self.b
        return z

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = self.logits(X)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        p: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return p

    def predict_bps(self, X: np.ndarray) -> np.ndarray:
        bps: np.ndarray = np.asarray(X, dtype=np.float64) @ self.wb + self.bb
        return bps


def _weights(markets: np.ndarray, balance: float) -> np.ndarray:
    """Per-sample weights: market k weighs ``n_k ** (1 - balance)``; mean 1."""
    _, inv, cnt = np.unique(markets, return_inverse=True, return_counts=True)
    w = cnt[inv].astype(np.float64) ** -balance
    out: np.ndarray = w / w.mean()
    return out


def _hit(call: np.ndarray, actual: np.ndarray) -> float:
    s = np.sign(call)
    return float(np.where(s == 0, 0.5, s == actual).mean()) if len(actual) else float("nan")


class _Binary:
    """Logistic regression without intercept on a feature subset, each input
    divided by its RMS (``scale``) and, with ``squash``, passed through
    ``tanh(z / SQUASH)`` so that a market whose values sit far out of the pooled
    range cannot drown the others; ``d(X)`` is the log-odds of "up"."""

    def __init__(self, cols: list[int], C: float, squash: bool = False) -> None:
        self.cols, self.C, self.squash = cols, C, squash
        self.sd = np.ones(len(cols))
        self.coef = np.zeros(len(cols))

    def _z(self, X: np.ndarray) -> np.ndarray:
        Z = np.asarray(X[:, self.cols], dtype=np.float64) / self.sd
        return np.tanh(Z / SQUASH) if self.squash else Z

    def fit(self, X: np.ndarray, up: np.ndarray, w: np.ndarray, w_scale: np.ndarray) -> _Binary:
        from sklearn.linear_model import LogisticRegression

        Z = np.asarray(X[:, self.cols], dtype=np.float64)
        # no centring and no intercept: the call is odd in the signed features, so a
        # trend in the training window does not become a bias in the next one. The
        # scale weighs every market alike (w_scale).
        sd = np.sqrt(np.average(Z * Z, axis=0, weights=w_scale))
        self.sd = np.where(sd > 1e-12, sd, 1.0)
        if len(np.unique(up)) >= 2:
            lr = LogisticRegression(C=self.C, max_iter=2000, fit_intercept=False)
            lr.fit(self._z(X), up, sample_weight=w)
            self.coef = lr.coef_[0].astype(np.float64)
        if self.cols == [IDX["imb_l1"]] and not self.coef[0] > 0:
            # the rule group is the rule with a fitted slope: a window where the imbalance
            # pointed the wrong way (or one kind of move only) does not turn it around or
            # off (a zero slope called nothing: -25 pp against the plain rule)
            self.coef = np.ones(1)
        return self

    def d(self, X: np.ndarray) -> np.ndarray:
        return self._z(X) @ self.coef


def _moved(parts: Sequence[Part]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    Xs, ups, mk = [], [], []
    for k, p in enumerate(parts):
        mv = p.y != FLAT
        Xs.append(p.X[mv])
        ups.append((p.y[mv] == UP).astype(np.int64))
        mk.append(np.full(int(mv.sum()), k))
    return np.concatenate(Xs), np.concatenate(ups), np.concatenate(mk)


def _inner_split(
    parts: Sequence[Part], horizon_ns: int, cut_frac: float
) -> tuple[list[Part], list[Part]]:
    """Each market's training part cut in time: fit on ``[0, cut)`` (minus labels that
    reach past the cut), validate on the next ``INNER_SPAN`` of it."""
    fit, val = [], []
    for p in parts:
        n = len(p.y)
        cut, end = int(n * cut_frac), min(n, int(n * (cut_frac + INNER_SPAN)))
        if cut < 10 or end - cut < 10:
            continue
        keep = np.flatnonzero(p.ts_ns[:cut] + horizon_ns < p.ts_ns[cut])
        fit.append(Part(p.market, p.X[keep], p.y[keep], p.bps[keep], p.ts_ns[keep]))
        sl = slice(cut, end)
        val.append(Part(p.market, p.X[sl], p.y[sl], p.bps[sl], p.ts_ns[sl]))
    return fit, val


def _choose(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """The inputs to use, from the inner folds' scores (``gain``: worst market's hit rate
    on moves minus the plain rule's). The rule group is the start; a richer group must
    beat it by ``MIN_GAIN`` and beat the plain rule itself (gain 0): a fitted rule group
    once lost 25 pp to the plain rule (a zero slope; ``_Binary`` now keeps its sign), and
    a group at -23 pp then got in."""
    rule: dict[str, Any] = {"group": "rule", "C": 1.0, "balance": 1.0, "squash": False, "gain": 0.0}
    best = next((s for s in scores if s["group"] == "rule"), rule)
    bar = max(best["gain"], 0.0)
    for g in GROUPS:
        group = [s for s in scores if s["group"] == g]
        if group:
            cand = max(group, key=lambda s: s["gain"])
            if cand["gain"] > bar + MIN_GAIN:
                best, bar = cand, cand["gain"]
    return best


def _candidates() -> list[tuple[str, float, float, bool]]:
    """(group, C, balance, squash), simplest first; the rule alone needs no C or squash."""
    out: list[tuple[str, float, float, bool]] = [("rule", 1.0, 1.0, False)]
    for g in GROUPS:
        if g != "rule":
            out += [(g, *rest) for rest in itertools.product(C_GRID, BALANCE_GRID, SQUASH_GRID)]
    return out


def _platt(d: np.ndarray, up: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """``a, c`` of ``sigmoid(a * d + c)`` fitted to the labels (weighted); ``c`` is
    kept 0 (a temperature only) so the call stays free of a direction bias."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(up)) < 2 or np.std(d) < 1e-12:
        return 1.0, 0.0
    lr = LogisticRegression(C=1e4, max_iter=1000, fit_intercept=False)
    lr.fit(d.reshape(-1, 1), up, sample_weight=w)
    a, c = float(lr.coef_[0, 0]), 0.0
    if not a > 0:  # a direction head that points the wrong way on validation: keep it unscaled
        return 1.0, 0.0
    return a, c


def fit_direction_model(
    parts: Sequence[Part],
    horizon_ns: int,
    *,
    seed: int = 0,
    progress: Any = None,
    force: dict[str, Any] | None = None,
) -> DirectionModel:
    """Fit the direction, move and bps heads on the training parts (see the module doc)."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from threadpoolctl import threadpool_limits

    say = progress or (lambda _m: None)
    X, up, mk = _moved(parts)
    if len(up) < 20 or len(np.unique(up)) < 2:
        raise DataError("training data needs up and down moves; use more data")
    with threadpool_limits(limits=1):
        # 1. choose the inputs, C, balance and squash on inner walk-forward folds
        folds = [_inner_split(parts, horizon_ns, cut) for cut in INNER_CUTS]
        folds = [(f, v) for f, v in folds if f and v]
        prepared = []
        for fit_p, val_p in folds:
            Xf, uf, mf = _moved(fit_p)
            val = [
                (p.X[p.y != FLAT], np.where(p.y[p.y != FLAT] == UP, 1, -1))
                for p in val_p
                if (p.y != FLAT).sum() >= 10
            ]
            if len(np.unique(uf)) == 2 and val:
                prepared.append((Xf, uf, mf, val))
        scores: list[dict[str, Any]] = []
        for g, C, bal, sq in _candidates():
            cols = [IDX[n] for n in GROUPS[g]]
            gains = []
            for Xf, uf, mf, val in prepared:
                m = _Binary(cols, C, sq).fit(Xf, uf, _weights(mf, bal), _weights(mf, 1.0))
                gains.append(
                    min(_hit(m.d(Xv), av) - _hit(Xv[:, IDX["imb_l1"]], av) for Xv, av in val)
                )
            if gains:
                gain = float(np.mean(gains))
                scores.append({"group": g, "C": C, "balance": bal, "squash": sq, "gain": gain})
        best = _choose(scores)
        if force:
            best = {**best, **force}
        say(
            f"direction head: group {best['group']}, C {best['C']}, balance {best['balance']}, "
            f"squash {best['squash']} "
            f"(inner validation: worst market {best['gain'] * 100:+.1f} pp over the rule)"
        )
        cols = [IDX[n] for n in GROUPS[best["group"]]]
        # 2. temperature (Platt scale without offset) from the inner folds' validation calls
        a, c = 1.0, 0.0
        ds_, us_, ms_ = [], [], []
        for fit_p, val_p in folds:
            Xf, uf, mf = _moved(fit_p)
            Xv, uv, mv = _moved(val_p)
            if len(np.unique(uf)) < 2 or not len(uv):
                continue
            inner = _Binary(cols, best["C"], best["squash"])
            inner.fit(Xf, uf, _weights(mf, best["balance"]), _weights(mf, 1.0))
            ds_.append(inner.d(Xv))
            us_.append(uv)
            ms_.append(np.array([val_p[k].market for k in mv]))
        if ds_:
            a, c = _platt(
                np.concatenate(ds_), np.concatenate(us_), _weights(np.concatenate(ms_), 1.0)
            )
        # 3. refit the chosen head on all the training data
        head = _Binary(cols, best["C"], best["squash"])
        head.fit(X, up, _weights(mk, best["balance"]), _weights(mk, 1.0))
        k = len(cols)
        W1 = np.zeros((N_FEATURES, k))
        W1[cols, np.arange(k)] = 1.0 / (head.sd * (SQUASH if head.squash else 1.0))
        wd = head.coef * a
        # 4. move head and bps head
        rng = np.random.default_rng(seed)
        Xm, ym, bm = [], [], []
        for p in parts:
            idx = np.arange(len(p.y))
            if len(idx) > MOVE_CAP:
                idx = np.sort(rng.choice(idx, MOVE_CAP, replace=False))
            Xm.append(p.X[idx])
            ym.append((p.y[idx] != FLAT).astype(np.int64))
            bm.append(p.bps[idx])
        Xa = np.concatenate(Xm).astype(np.float64)
        moved = np.concatenate(ym)
        mu = Xa.mean(axis=0)
        sd = Xa.std(axis=0)
        sd = np.where(sd > 1e-12, sd, 1.0)
        Za = (Xa - mu) / sd
        if len(np.unique(moved)) == 2:
            mlr = LogisticRegression(C=MOVE_C, max_iter=2000).fit(Za, moved)
            wm, bm0 = mlr.coef_[0] / sd, float(mlr.intercept_[0] - np.sum(mlr.coef_[0] * mu / sd))
        else:
            wm, bm0 = np.zeros(N_FEATURES), (8.0 if moved.all() else -8.0)
        ridge = Ridge(alpha=RIDGE_ALPHA).fit(Za, np.concatenate(bm))
        wb = ridge.coef_ / sd
        bb = float(ridge.intercept_ - np.sum(ridge.coef_ * mu / sd))
    W2 = np.stack([-0.5 * wd, np.zeros(k), 0.5 * wd], axis=1)
    Wm = np.stack([np.zeros(N_FEATURES), -wm, np.zeros(N_FEATURES)], axis=1)
    b = np.array([0.0, -bm0 + math.log(2.0), 0.0])
    choice = {**best, "platt_a": a, "platt_c": c, "candidates": scores}
    allx = np.concatenate([p.X for p in parts]).astype(np.float64)
    return DirectionModel(
        W1, head.squash, W2, Wm, b, wb, bb, choice, allx.mean(axis=0), allx.std(axis=0)
    )


def export_direction_onnx(model: DirectionModel, metadata: dict[str, Any]) -> Any:
    """One small dense ONNX graph: ``features -> Gemm [-> Tanh] -> Gemm``, plus
    ``features -> Gemm`` (move head), added, ``Softmax`` -> ``probabilities``;
    ``features -> Gemm`` -> ``expected_bps``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from flashmm.predict.onnx_model import BPS_NAME, INPUT_NAME, PROBS_NAME

    def arr(v: np.ndarray, name: str) -> Any:
        return numpy_helper.from_array(np.asarray(v, dtype=np.float32), name)

    inits = [
        arr(model.W1, "dir_W1"),
        arr(model.W2, "dir_W2"),
        arr(model.b, "dir_b"),
        arr(model.Wm, "move_W"),
        arr(model.wb.reshape(-1, 1), "bps_W"),
        arr(np.array([model.bb]), "bps_b"),
    ]
    nodes = [helper.make_node("Gemm", [INPUT_NAME, "dir_W1"], ["dir_in"], name="dir_inputs")]
    h = "dir_in"
    if model.squash:
        nodes.append(helper.make_node("Tanh", ["dir_in"], ["dir_sq"], name="dir_squash"))
        h = "dir_sq"
    nodes += [
        helper.make_node("Gemm", [h, "dir_W2", "dir_b"], ["dir_logits"], name="dir_head"),
        helper.make_node("Gemm", [INPUT_NAME, "move_W"], ["move_logits"], name="move_head"),
        helper.make_node("Add", ["dir_logits", "move_logits"], ["logits"], name="logits"),
        helper.make_node("Softmax", ["logits"], [PROBS_NAME], axis=1, name="probabilities"),
        helper.make_node("Gemm", [INPUT_NAME, "bps_W", "bps_b"], [BPS_NAME], name="bps_head"),
    ]
    graph = helper.make_graph(
        nodes,
        "flashmm_direction",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, N_FEATURES])],
        [
            helper.make_tensor_value_info(PROBS_NAME, TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info(BPS_NAME, TensorProto.FLOAT, [None, 1]),
        ],
        initializer=inits,
    )
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="flashmm", ir_version=8
    )
    m.doc_string = "FlashMM mid-price direction (up/down given a move), move and bps model"
    helper.set_model_props(m, {k: json.dumps(v) for k, v in metadata.items()})
    onnx.checker.check_model(m)
    return m
