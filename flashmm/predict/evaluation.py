"""Honest scoring of direction calls: distinct moves, bootstrap intervals, calibration.

Samples on a 100 ms grid with a 1 s horizon see the same mid move about ten
times, so the number of samples says little about how sure a hit rate is.
Here every moved sample belongs to a *move*: the first grid point after it
where the mid differs from the mid at the sample. Samples that share that
point share the move; hit rates get confidence intervals from a bootstrap
over moves (whole moves are resampled), never over samples.

The model's call is ``sign(p_up - p_down)``; the imbalance rule's call is
``sign(imb_l1)``, on the same samples. A call of 0 counts half a hit.
Calibration is of the *up/down* confidence on moved samples: the model's
``max(p_up, p_down) / (p_up + p_down)`` and the rule's ``0.5 + 0.25 |imb_l1|``
(what :class:`~flashmm.predict.rules.RulePredictor` reports) against the
observed share of right calls, in bins of 0.05; the calibration error is
the sample-weighted mean gap, in points (0-100).

That error is noisy: with a few hundred moves even a perfectly calibrated
forecaster shows several points. Next to each calibration error the report
gives its **noise floor** (:func:`calibration_noise`) and the share of those
simulations with at least the observed error (``..._calibration_p``; above
0.05 the data cannot tell the confidence from a perfectly calibrated one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flashmm.features import IDX
from flashmm.predict.labels import DOWN, FLAT, UP

CAL_EDGES = tuple(round(0.5 + 0.05 * i, 2) for i in range(11))
N_BOOT = 1000
#: simulated outcome sets for the calibration noise floor
N_FLOOR = 200


def next_change_index(mid: np.ndarray) -> np.ndarray:
    """For each sample, the index of the next sample whose mid differs (n if none)."""
    n = len(mid)
    out = np.full(n, n, dtype=np.int64)
    if n < 2:
        return out
    change = np.flatnonzero(mid[1:] != mid[:-1]) + 1  # first index of each new mid
    # sample i: the first change index > i
    pos = np.searchsorted(change, np.arange(n), side="right")
    ok = pos < len(change)
    out[ok] = change[pos[ok]]
    return out


def hits_of(call: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """1 for a right call, 0 for a wrong one, 0.5 for no call (0)."""
    s = np.sign(call)
    return np.where(s == 0, 0.5, (s == actual).astype(np.float64))


def bootstrap_rates(
    groups: np.ndarray,
    series: Sequence[np.ndarray],
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> list[tuple[float, float]]:
    """Percentile intervals of ``mean(s)`` for each hit series (and of the
    difference of the first two), resampling whole groups with replacement."""
    uniq, inv = np.unique(groups, return_inverse=True)
    g = len(uniq)
    if g < 2:
        return [(float("nan"), float("nan"))] * (len(series) + (len(series) >= 2))
    cnt = np.bincount(inv, minlength=g).astype(np.float64)
    sums = [np.bincount(inv, weights=s, minlength=g) for s in series]
    rng = np.random.default_rng(seed)
    draws: list[list[float]] = [[] for _ in range(len(series) + (len(series) >= 2))]
    chunk = max(1, min(n_boot, 2_000_000 // g))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        w = np.zeros((b, g))
        idx = rng.integers(0, g, size=(b, g))
        for j in range(b):
            w[j] = np.bincount(idx[j], minlength=g)
        tot = w @ cnt
        rates = [(w @ s) / tot for s in sums]
        for k, rate in enumerate(rates):
            draws[k].extend(rate.tolist())
        if len(series) >= 2:
            draws[-1].extend((rates[0] - rates[1]).tolist())
        done += b
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return [(float(np.percentile(d, lo)), float(np.percentile(d, hi))) for d in draws]


def calibration(conf: np.ndarray, hit: np.ndarray) -> tuple[list[dict[str, Any]], float]:
    """Bins of up/down confidence vs observed hit share; the weighted mean gap in points."""
    rows = []
    gap = 0.0
    n_all = len(conf)
    for k in range(len(CAL_EDGES) - 1):
        lo, hi = CAL_EDGES[k], CAL_EDGES[k + 1]
        sel = (conf >= lo) & ((conf < hi) if k < len(CAL_EDGES) - 2 else (conf <= hi))
        n = int(sel.sum())
        if not n:
            continue
        mc, ob = float(conf[sel].mean()), float(hit[sel].mean())
        gap += n * abs(mc - ob)
        rows.append({"bin": f"{lo:.2f}-{hi:.2f}", "n": n, "mean_confidence": mc, "observed": ob})
    return rows, (100.0 * gap / n_all if n_all else float("nan"))


def calibration_noise(
    p_up: np.ndarray, groups: np.ndarray, n_sim: int = N_FLOOR, seed: int = 0
) -> np.ndarray:
    """Calibration errors (points) a perfectly calibrated forecaster shows here.

    ``p_up`` is each moved sample's probability of "up" (its call is the side
    above one half, its confidence ``max(p_up, 1 - p_up)``), ``groups`` its move
    (:func:`next_change_index`). Each simulation draws one uniform ``u`` per move;
    a sample's move is "up" when ``u < p_up``, so each sample's outcome has
    exactly its stated probability and samples of one move agree as far as their
    probabilities allow (like the real ones, they are not independent). Returns
    the :func:`calibration` error of each of ``n_sim`` simulations.
    """
    n = len(p_up)
    if n == 0:
        return np.full(n_sim, np.nan)
    p_up = np.asarray(p_up, dtype=np.float64)
    conf = np.maximum(p_up, 1.0 - p_up)
    call = np.sign(p_up - 0.5)
    edges = np.asarray(CAL_EDGES)
    k = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, len(edges) - 2)
    nb = len(edges) - 1
    conf_sum = np.bincount(k, weights=conf, minlength=nb)
    _, inv = np.unique(groups, return_inverse=True)
    n_moves = int(inv.max()) + 1
    rng = np.random.default_rng(seed)
    errs = np.empty(n_sim)
    for j in range(n_sim):
        up = rng.random(n_moves)[inv] < p_up
        hit = np.where(call == 0, 0.5, (call > 0) == up)
        hit_sum = np.bincount(k, weights=hit, minlength=nb)
        errs[j] = np.abs(conf_sum - hit_sum).sum() / n  # = sum_b n_b |mean conf - observed|
    return 100.0 * errs


def score(
    probs: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    mid: np.ndarray,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """Direction scores of a model on labelled samples (one market, one time range).

    ``mid`` is the mid at each sample (any unit), on the sample grid, used to
    tell distinct moves apart. ``y`` are the direction classes.
    """
    moved = y != FLAT
    out: dict[str, Any] = {"samples": len(y), "moved_samples": int(moved.sum())}
    if not moved.any():
        out["distinct_moves"] = 0
        return out
    actual = np.where(y[moved] == UP, 1, -1)
    pu, pd = probs[moved, UP].astype(np.float64), probs[moved, DOWN].astype(np.float64)
    hm = hits_of(pu - pd, actual)
    imb = X[moved, IDX["imb_l1"]].astype(np.float64)
    hr = hits_of(imb, actual)
    groups = next_change_index(mid)[moved]
    ci_m, ci_r, ci_d = bootstrap_rates(groups, [hm, hr], n_boot=n_boot, seed=seed)
    conf_m = np.maximum(pu, pd) / np.maximum(pu + pd, 1e-12)
    conf_r = 0.5 + 0.25 * np.minimum(np.abs(imb), 1.0)
    cal_m, ece_m = calibration(conf_m, hm)
    cal_r, ece_r = calibration(conf_r, hr)
    noise_m = calibration_noise(pu / np.maximum(pu + pd, 1e-12), groups, seed=seed)
    noise_r = calibration_noise(0.5 + 0.25 * np.clip(imb, -1.0, 1.0), groups, seed=seed)
    pmove = probs[:, UP].astype(np.float64) + probs[:, DOWN]
    out.update(
        {
            "distinct_moves": len(np.unique(groups)),
            "hit_rate_moved": float(hm.mean()),
            "hit_rate_moved_ci95": ci_m,
            "rule_hit_rate_moved": float(hr.mean()),
            "rule_hit_rate_moved_ci95": ci_r,
            "rule": "sign(imb_l1)",
            "model_minus_rule": float(hm.mean() - hr.mean()),
            "model_minus_rule_ci95": ci_d,
            "updown_calibration_error_pts": ece_m,
            "updown_calibration": cal_m,
            "updown_calibration_floor_pts": float(noise_m.mean()),
            "updown_calibration_p": float((noise_m >= ece_m).mean()),
            "rule_calibration_error_pts": ece_r,
            "rule_calibration_floor_pts": float(noise_r.mean()),
            "rule_calibration_p": float((noise_r >= ece_r).mean()),
            "rule_calibration": cal_r,
            "p_move_mean": float(pmove.mean()),
            "moved_share": float(moved.mean()),
        }
    )
    return out


def summary_line(name: str, m: dict[str, Any]) -> str:
    """One line of the main figures of :func:`score`."""
    if not m.get("distinct_moves"):
        return f"{name}: {m.get('samples', 0)} samples, no moves"
    lo, hi = m["model_minus_rule_ci95"]
    return (
        f"{name}: {m['distinct_moves']} moves ({m['moved_samples']} moved samples); "
        f"hit rate model {m['hit_rate_moved']:.3f} vs rule {m['rule_hit_rate_moved']:.3f} "
        f"(diff {m['model_minus_rule'] * 100:+.1f} pp, 95% CI {lo * 100:+.1f}..{hi * 100:+.1f}); "
        f"up/down calibration error {m['updown_calibration_error_pts']:.1f} pts "
        f"(noise floor {m['updown_calibration_floor_pts']:.1f}, "
        f"p {m['updown_calibration_p']:.2f}; rule "
        f"{m['rule_calibration_error_pts']:.1f}, floor {m['rule_calibration_floor_pts']:.1f})"
    )


def walk_forward(
    datasets: Sequence[Any],
    horizon_ns: int,
    windows: int = 4,
    *,
    flat_ticks: float = 0.5,
    keep_flat: float = 0.05,
    C: float = 0.01,
    n_boot: int = N_BOOT,
    progress: Any = None,
    kind: str = "direction+move",
    models_out: list[Any] | None = None,
) -> dict[str, Any]:
    """Train on the past, score the next window, for every window.

    Each market's labelled samples are cut in time into ``windows + 1``
    equal parts. Fold ``i`` (1..windows) trains one model on parts
    ``0..i-1`` of every market (pooled, minus samples whose label reaches
    into part ``i``) and scores part ``i`` of each market. ``kind`` is the
    model's ``model_kind``: ``direction+move``
    (:func:`~flashmm.predict.direction.fit_direction_model`, which picks its own
    settings inside the training part) or a 3-class regression
    (:func:`~flashmm.predict.train.fit_classifier` with ``keep_flat`` and ``C``).
    ``models_out``: a list that receives each window's fitted model. ``overall`` pools
    every market's out-of-sample predictions over all folds (each made by a
    model that never saw that time) and scores them with intervals over moves.
    """
    from flashmm.predict.direction import MODEL_KIND, Part, fit_direction_model
    from flashmm.predict.labels import make_labels
    from flashmm.predict.train import fit_classifier

    say = progress or (lambda _m: None)
    if windows < 1:
        raise ValueError("windows must be >= 1")
    prepared = []
    for ds in datasets:
        y, bps, valid = make_labels(ds.ts_ns, ds.mid, horizon_ns, flat_ticks)
        idx = np.flatnonzero(valid)
        last = len(idx) - 1
        edges = [int(idx[min(last, (len(idx) * k) // (windows + 1))]) for k in range(windows + 1)]
        edges.append(len(ds.ts_ns))
        prepared.append((ds, y, valid, edges, bps))
    folds = []
    oos: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {ds.market: [] for ds in datasets}
    for i in range(1, windows + 1):
        parts = []
        for ds, y, valid, edges, bps in prepared:
            start = edges[i]
            tr = np.flatnonzero(valid[:start])
            tr = tr[ds.ts_ns[tr] + horizon_ns < ds.ts_ns[start]]
            parts.append(Part(ds.market, ds.X[tr], y[tr], bps[tr], ds.ts_ns[tr]))
        Xtr, ytr = np.concatenate([p.X for p in parts]), np.concatenate([p.y for p in parts])
        say(f"window {i}/{windows}: fitting on {len(ytr)} samples")
        fold: dict[str, Any] = {"window": i, "train_samples": len(ytr), "markets": {}}
        clf: Any
        if kind == MODEL_KIND:
            clf = fit_direction_model(parts, horizon_ns, progress=say)
            fold["params"] = {k: v for k, v in clf.choice.items() if k != "candidates"}
        else:
            clf = fit_classifier(Xtr, ytr, keep_flat=keep_flat, C=C)
        if models_out is not None:
            models_out.append(clf)
        for ds, y, valid, edges, _ in prepared:
            te = np.arange(edges[i], edges[i + 1])
            te = te[valid[te]]
            if len(te) == 0:
                continue
            probs = clf.predict_proba(ds.X[te])
            oos[ds.market].append((te, probs))
            m = score(probs, ds.X[te], y[te], ds.mid[te], n_boot=n_boot)
            m["from_ns"], m["to_ns"] = int(ds.ts_ns[te[0]]), int(ds.ts_ns[te[-1]])
            fold["markets"][ds.market] = m
        folds.append(fold)
    overall = {}
    for ds, y, _, _, _ in prepared:
        got = oos[ds.market]
        if not got:
            continue
        te = np.concatenate([p[0] for p in got])
        probs = np.concatenate([p[1] for p in got])
        overall[ds.market] = score(probs, ds.X[te], y[te], ds.mid[te], n_boot=n_boot)
    return {"windows": windows, "folds": folds, "overall": overall}
