"""The online model (``model.online: true``) replayed on walk-forward windows.

Each market's recording is cut into ``windows + 1`` parts; window ``i`` is
predicted by a direction model fitted on parts ``0..i-1`` of every market (as
in ``flashmm model eval --walk-forward``, which makes its own choices inside
those parts). The per-market
:class:`~flashmm.predict.online.OnlineModel` runs over the windows in time
order on top of those predictions, starting from the fixed model and learning
each moved sample's label one horizon later (the 100 ms sample grid stands in
for the quote calls). Prints the hit rate on moved samples and the up/down
calibration of the fixed model, the online one and the rule, per market::

    python benchmarks/online_replay.py --data <recording> [--data <recording> ...]
"""

from __future__ import annotations

import argparse
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from flashmm.features import N_FEATURES
from flashmm.predict.direction import Part, fit_direction_model
from flashmm.predict.evaluation import score, summary_line
from flashmm.predict.labels import DOWN, FLAT, UP, make_labels, parse_horizon
from flashmm.predict.online import OnlineModel
from flashmm.predict.train import load_datasets


class _Stub:
    """Stands in for the ONNX predictor: the window model's probabilities, set per sample."""

    mean, std = np.zeros(N_FEATURES), np.ones(N_FEATURES)
    horizon, horizon_ns, path = "1s", 1_000_000_000, Path("walk-forward")
    min_lean, use_regressor, last_bps = 0.2, False, 0.0
    last_probs = np.array([0.0, 1.0, 0.0])

    def predict(self, x: np.ndarray, ts_ns: int) -> Any:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--l2", type=float, default=0.001)
    a = ap.parse_args()
    h = parse_horizon("1s")
    k = a.windows
    datasets = load_datasets(a.data)
    prepared = []
    for ds in datasets:
        y, _, valid = make_labels(ds.ts_ns, ds.mid, h)
        idx = np.flatnonzero(valid)
        last = len(idx) - 1
        edges = [int(idx[min(last, (len(idx) * j) // (k + 1))]) for j in range(k + 1)]
        prepared.append((ds, y, valid, [*edges, len(ds.ts_ns)]))
    oos: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {ds.market: [] for ds in datasets}
    for i in range(1, k + 1):
        parts = []
        for ds, y, valid, edges in prepared:
            tr = np.flatnonzero(valid[: edges[i]])
            tr = tr[ds.ts_ns[tr] + h < ds.ts_ns[edges[i]]]
            parts.append(Part(ds.market, ds.X[tr], y[tr], np.zeros(len(tr)), ds.ts_ns[tr]))
        clf = fit_direction_model(parts, h)
        for ds, _, valid, edges in prepared:
            te = np.arange(edges[i], edges[i + 1])
            te = te[valid[te]]
            oos[ds.market].append((te, clf.predict_proba(ds.X[te])))
    for ds, y, _, _ in prepared:
        te = np.concatenate([p[0] for p in oos[ds.market]])
        P = np.concatenate([p[1] for p in oos[ds.market]])
        ts, yy, X = ds.ts_ns[te], y[te], ds.X[te]
        stub = _Stub()
        om = OnlineModel(stub, lr=a.lr, l2=a.l2)
        q = np.empty(len(te))
        pending: deque[tuple[int, tuple[float, float], bool]] = deque()
        for n in range(len(te)):
            while pending and pending[0][0] + h <= ts[n]:
                _, token, up = pending.popleft()
                om.learn(token, up)
            stub.last_probs = P[n]
            sig = om.predict(X[n], int(ts[n]))
            lean = (sig.confidence - 0.5) * 2 * om.lean()
            q[n] = (1 + lean) / 2
            if yy[n] != FLAT and om.last_token is not None:
                pending.append((int(ts[n]), om.last_token, bool(yy[n] == UP)))
        P2 = P.copy()
        pm = P[:, UP] + P[:, DOWN]
        P2[:, UP], P2[:, DOWN] = q * pm, (1 - q) * pm
        for name, probs in (("fixed", P), ("online", P2)):
            m = score(probs, X, yy, ds.mid[te], n_boot=300)
            print(summary_line(f"{ds.market} {name}", m), flush=True)
        print(f"  final weights {om.status()['weights']}, {om.updates} updates", flush=True)


if __name__ == "__main__":
    main()
