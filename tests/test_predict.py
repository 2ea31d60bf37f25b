"""Prediction: labels, training/export, schema checks, circuit breaker, fallback, skew, CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from kit.data import NEXO_23
from pydantic import ValidationError
from typer.testing import CliRunner

from flashmm.errors import ModelError, UserInputError
from flashmm.features import FEATURE_NAMES, IDX, N_FEATURES
from flashmm.predict import (
    GuardedPredictor,
    ModelSettings,
    RulePredictor,
    load_predictor,
    skew_from_signal,
)
from flashmm.predict.labels import DOWN, FLAT, UP, make_labels, parse_horizon
from flashmm.types import Signal

ROOT = Path(__file__).resolve().parents[1]
S = 1_000_000_000


# --- labels --------------------------------------------------------------------


def test_parse_horizon() -> None:
    assert parse_horizon("1s") == S
    assert parse_horizon("100ms") == S // 10
    assert parse_horizon("5s") == 5 * S
    with pytest.raises(UserInputError):
        parse_horizon("soon")


def test_make_labels() -> None:
    ts = np.arange(6, dtype=np.int64) * (S // 10)
    mid = np.array([100.0, 100.0, 100.5, 100.5, 100.0, 100.0])
    y, bps, valid = make_labels(ts, mid, 2 * S // 10)
    assert valid.tolist() == [True, True, True, True, False, False]
    assert y[:4].tolist() == [UP, UP, DOWN, DOWN]
    assert bps[0] == pytest.approx(0.5 / 100 * 1e4)
    y2, _, _ = make_labels(ts, mid, 2 * S // 10, flat_ticks=1.0)
    assert (y2[:4] == FLAT).all()


# --- training and the ONNX model ------------------------------------------------


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    from flashmm.predict.train import train

    out = tmp_path_factory.mktemp("model") / "small.onnx"
    res = train([NEXO_23], out, "1s")
    return out, res.metrics


def test_training_on_a_small_slice_gives_a_loadable_model(
    small_model: tuple[Path, dict[str, Any]],
) -> None:
    from flashmm.predict.onnx_model import OnnxPredictor

    path, metrics = small_model
    for k in ("hit_rate_moved", "baseline_hit_rate_moved", "moved_samples", "log_loss"):
        assert k in metrics
    assert len(metrics["calibration"]) >= 5
    m = OnnxPredictor(path)
    assert m.horizon == "1s" and m.horizon_ns == S
    assert m.meta["feature_names"] == list(FEATURE_NAMES)
    assert m.meta["train_files"][0]["name"] == NEXO_23.name
    assert len(m.meta["train_files"][0]["sha256"]) == 64
    assert m.meta["metrics"]["moved_samples"] == metrics["moved_samples"]
    x = np.asarray(m.mean, dtype=np.float32)
    sig = m.predict(x, 0)
    assert sig.source == "onnx" and sig.direction in (-1, 0, 1)
    assert 0.0 <= sig.confidence <= 1.0 and np.isfinite(sig.expected_bps)
    probs, bps = m.run_batch(np.tile(x, (5, 1)))
    assert probs.shape == (5, 3) and bps.shape == (5,)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def _ten_input_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [None, 64]) for i in range(10)]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64])
    node = helper.make_node("Sum", [f"x{i}" for i in range(10)], ["y"])
    g = helper.make_graph([node], "bad", ins, [out])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_schema_check_rejects_a_model_with_10_inputs(tmp_path: Path) -> None:
    from flashmm.predict.onnx_model import OnnxPredictor

    p = tmp_path / "ten.onnx"
    _ten_input_model(p)
    with pytest.raises(ModelError, match="10 inputs"):
        OnnxPredictor(p)


def test_schema_check_rejects_corrupt_and_missing_files(tmp_path: Path) -> None:
    from flashmm.predict.onnx_model import OnnxPredictor

    p = tmp_path / "junk.onnx"
    p.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        OnnxPredictor(p)
    with pytest.raises(ModelError, match="not found"):
        OnnxPredictor(tmp_path / "nope.onnx")


def test_schema_check_rejects_other_feature_names(
    small_model: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    import onnx

    from flashmm.predict.onnx_model import OnnxPredictor

    m = onnx.load(str(small_model[0]))
    for prop in m.metadata_props:
        if prop.key == "feature_names":
            names = list(FEATURE_NAMES)
            names[5] = "something_else"
            prop.value = json.dumps(names)
    p = tmp_path / "renamed.onnx"
    onnx.save(m, str(p))
    with pytest.raises(ModelError, match=r"feature names differ.*#5"):
        OnnxPredictor(p)
    # no FlashMM metadata at all
    del m.metadata_props[:]
    onnx.save(m, str(p))
    with pytest.raises(ModelError, match="not a FlashMM model"):
        OnnxPredictor(p)


# --- rules, breaker and fallback ----------------------------------------------


def _x(imb: float = 0.5, micro: float = 1.0) -> np.ndarray:
    x = np.zeros(N_FEATURES, dtype=np.float32)
    x[IDX["imb_l1"]] = imb
    x[IDX["micro_offset_bps"]] = micro
    return x


def test_rule_predictor() -> None:
    r = RulePredictor()
    s = r.predict(_x(0.6, 2.0), 0)
    assert s == Signal(1, pytest.approx(0.65), 2.0, "rules")
    assert r.predict(_x(-0.6, -2.0), 0).direction == -1
    assert r.predict(_x(0.05, 0.1), 0).direction == 0
    assert r.predict(_x(float("nan")), 0) == Signal(0, 0.0, 0.0, "rules")


class FakeModel:
    """A model that misbehaves on demand. The breakers under test get a modelled
    latency (``latency_us``) unless latency is what they test: a loaded machine
    must not open them."""

    horizon_ns = S

    def __init__(self, mode: str = "ok", sleep_s: float = 0.0) -> None:
        self.mode = mode
        self.sleep_s = sleep_s
        self.mean = np.zeros(N_FEATURES)
        self.std = np.ones(N_FEATURES)
        self.calls = 0

    def predict(self, x: np.ndarray, ts_ns: int) -> Signal:
        self.calls += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.mode == "raise":
            raise RuntimeError("boom")
        if self.mode == "nan":
            return Signal(1, float("nan"), 1.0, "onnx")
        return Signal(1, 0.8, 1.5, "onnx")


def _settings(**kw: Any) -> ModelSettings:
    base: dict[str, Any] = {"cooldown_s": 10.0, "half_open_successes": 3}
    base.update(kw)
    return ModelSettings(**base)


def _cool_down_and_close(g: GuardedPredictor, model: FakeModel, t_open: int) -> None:
    """After the cool-down the model is tried (half-open) and closes after 3 good calls."""
    model.mode, model.sleep_s = "ok", 0.0
    assert g.predict(_x(), t_open + 5 * S).source == "rules"  # still cooling down
    sig = g.predict(_x(), t_open + 10 * S)
    assert g.state == "half_open" and sig.source == "onnx"
    g.predict(_x(), t_open + 11 * S)
    g.predict(_x(), t_open + 12 * S)
    assert g.state == "closed"
    assert [t["to"] for t in g.transitions[-3:]] == ["open", "half_open", "closed"]


def test_breaker_opens_on_exception_and_recovers() -> None:
    model = FakeModel("raise")
    g = GuardedPredictor(model, RulePredictor(), _settings(), latency_us=10.0)
    assert g.state == "closed"
    sig = g.predict(_x(), 100 * S)
    assert sig.source == "rules" and g.state == "open"
    assert "RuntimeError: boom" in g.reason
    assert g.is_open
    # fallback keeps producing signals while open
    for i in range(5):
        assert g.predict(_x(-0.7, -1.0), 100 * S + i).direction == -1
    _cool_down_and_close(g, model, 100 * S)
    st = g.status()
    assert st["state"] == "closed" and st["transitions"] == 3 and st["fallback_predictions"] >= 6


def test_breaker_opens_on_nan() -> None:
    model = FakeModel("nan")
    g = GuardedPredictor(model, RulePredictor(), _settings(), latency_us=10.0)
    assert g.predict(_x(), S).source == "rules"
    assert g.state == "open" and "NaN" in g.reason
    _cool_down_and_close(g, model, S)


def test_half_open_failure_reopens() -> None:
    model = FakeModel("raise")
    g = GuardedPredictor(model, RulePredictor(), _settings(), latency_us=10.0)
    g.predict(_x(), S)
    g.predict(_x(), 11 * S)  # half-open try fails
    assert g.state == "open" and g.opened_ns == 11 * S
    assert [t["to"] for t in g.transitions] == ["open", "half_open", "open"]


def test_breaker_opens_on_latency() -> None:
    model = FakeModel("ok", sleep_s=0.002)  # 2 ms per call against a 500 us budget
    g = GuardedPredictor(
        model, RulePredictor(), _settings(latency_budget_us=500, latency_min_samples=10)
    )
    for i in range(10):
        g.predict(_x(), i * S // 100)
    assert g.state == "open" and "latency p99" in g.reason
    _cool_down_and_close(g, model, g.opened_ns)


def test_breaker_opens_on_sustained_drift() -> None:
    model = FakeModel()
    g = GuardedPredictor(
        model,
        RulePredictor(),
        _settings(drift_z_limit=5, drift_max_features=3, drift_sustain_s=2),
        latency_us=10.0,
    )
    far = np.full(N_FEATURES, 50.0, dtype=np.float32)
    assert g.predict(far, 0).source == "onnx"  # drifting, not yet for long
    assert g.predict(_x(), S).source == "onnx"  # back to normal: the clock resets
    assert g.predict(far, 2 * S).source == "onnx"
    assert g.predict(far, 3 * S).source == "onnx"
    assert g.predict(far, 4 * S).source == "rules"
    assert g.state == "open" and "drift" in g.reason and g.drift_features == 64
    _cool_down_and_close(g, model, 4 * S)


def test_breaker_opens_on_low_live_hit_rate() -> None:
    model = FakeModel()  # always calls "up"
    g = GuardedPredictor(
        model, RulePredictor(), _settings(hit_rate_window=20, hit_rate_floor=0.45), latency_us=10.0
    )
    mid = 1000.0
    t = 0
    g.on_mid(mid, t)
    for _ in range(40):
        g.predict(_x(), t)
        t += S // 2
        mid -= 0.5  # the market keeps falling
        g.on_mid(mid, t)
        if g.state == "open":
            break
    assert g.state == "open" and "hit rate" in g.reason
    assert g.status()["hit_rate_moved"] is None  # window cleared at opening


def test_good_hit_rate_keeps_the_breaker_closed() -> None:
    g = GuardedPredictor(
        FakeModel(), RulePredictor(), _settings(hit_rate_window=20), latency_us=10.0
    )
    mid, t = 1000.0, 0
    g.on_mid(mid, t)
    for _ in range(60):
        g.predict(_x(), t)
        t += S // 2
        mid += 0.5
        g.on_mid(mid, t)
    assert g.state == "closed" and g.hit_rate == 1.0


def test_load_predictor_without_or_with_a_bad_model(tmp_path: Path) -> None:
    g = load_predictor(ModelSettings(enabled=False))
    assert g.state == "disabled" and not g.is_open
    assert g.predict(_x(0.5, 1.0), 0).source == "rules"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    g = load_predictor(ModelSettings(enabled=True, path=str(bad)))
    assert g.state == "open" and "not loaded" in g.reason and g.is_open
    for i in range(3):
        assert g.predict(_x(0.5, 1.0), i * 100 * S).source == "rules"
    assert g.state == "open"  # nothing to retry
    assert g.status()["source"] == "rules"


def test_default_model_loads_if_shipped() -> None:
    if not (ROOT / "models" / "flashmm-direction-1s.onnx").exists():
        pytest.skip("default model not built")
    g = load_predictor(ModelSettings(enabled=True))
    assert g.state == "closed", g.reason
    sig = g.predict(np.asarray(g.model.mean, dtype=np.float32), 0)  # type: ignore[union-attr]
    assert sig.source == "onnx"


# --- settings and skew -----------------------------------------------------------


def test_settings() -> None:
    with pytest.raises(ValidationError):
        ModelSettings(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ModelSettings(horizon="later")
    assert ModelSettings(path=None).resolve_path() is None
    p = ModelSettings().resolve_path()
    assert p is not None and p.name == "flashmm-direction-1s.onnx"
    # the model's earlier, NEXO-specific name in an old profile reads the renamed file
    old = ModelSettings(path="models/flashmm-nexo-1s.onnx").resolve_path()
    assert old == p


def test_skew_from_signal() -> None:
    sk, w = skew_from_signal(Signal(1, 0.8, 2.0, "onnx"), 5.0, 0.5, False)
    assert sk == pytest.approx(1.6) and w == 1.0
    sk, w = skew_from_signal(Signal(1, 0.9, 20.0, "onnx"), 5.0, 0.5, False)
    assert sk == 5.0
    sk, w = skew_from_signal(Signal(-1, 0.9, -20.0, "onnx"), 5.0, 0.5, False)
    assert sk == -5.0
    sk, w = skew_from_signal(Signal(1, 0.25, 2.0, "onnx"), 5.0, 0.5, False)
    assert sk == 0.0 and 1.0 < w <= 1.25
    sk, w = skew_from_signal(Signal(1, 0.8, 2.0, "rules"), 5.0, 0.5, True)
    assert w == 1.5
    sk, w = skew_from_signal(Signal(1, float("nan"), 2.0, "onnx"), 5.0, 0.5, False)
    assert sk == 0.0 and w > 1.0


# --- CLI ----------------------------------------------------------------------------


def _cli() -> typer.Typer:
    from flashmm.cli import model as cli_model

    app = typer.Typer()
    app.add_typer(cli_model.app, name="model")
    app.command("train")(cli_model.train_command)
    return app


def test_cli_check_bad_model_is_one_line_exit_2(tmp_path: Path) -> None:
    p = tmp_path / "ten.onnx"
    _ten_input_model(p)
    r = CliRunner().invoke(_cli(), ["model", "check", str(p)])
    assert r.exit_code == 2
    assert "10 inputs" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(_cli(), ["model", "check", str(tmp_path / "missing.onnx")])
    assert r.exit_code == 2 and "not found" in r.output


def test_cli_check_and_eval(small_model: tuple[Path, dict[str, Any]]) -> None:
    path = small_model[0]
    r = CliRunner().invoke(_cli(), ["model", "check", str(path), "--calls", "200", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["latency_us"]["p99"] > 0 and info["horizon"] == "1s"
    r = CliRunner().invoke(_cli(), ["model", "check", str(path), "--calls", "200"])
    assert r.exit_code == 0 and "latency" in r.output
    # bundled:NAME works on the command line as in a profile
    r = CliRunner().invoke(_cli(), ["model", "eval", str(path), "--data", "bundled:nexo", "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)
    assert m["data"] == [NEXO_23.name]
    for k in ("hit_rate_moved", "baseline_hit_rate_moved", "moved_samples", "log_loss"):
        assert k in m
    assert m["moved_samples"] > 50


def test_cli_train_bad_input(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        _cli(), ["train", "--data", str(tmp_path / "none.gz"), "--out", str(tmp_path / "m.onnx")]
    )
    assert r.exit_code == 2 and "not found" in r.output
    r = CliRunner().invoke(
        _cli(), ["train", "--data", "bundled:nosuch", "--out", str(tmp_path / "m.onnx")]
    )
    assert r.exit_code == 2 and "not found" in r.output and "nosuch" in r.output
    (tmp_path / "old.onnx").write_bytes(b"a model one trained for hours")
    r = CliRunner().invoke(
        _cli(), ["train", "--data", "bundled:nexo", "--out", str(tmp_path / "old.onnx")]
    )
    assert r.exit_code == 2 and "exists (pass --force to replace it)" in r.output
    assert (tmp_path / "old.onnx").read_bytes() == b"a model one trained for hours"
    r = CliRunner().invoke(
        _cli(),
        ["train", "--data", "bundled:nexo", "--out", str(tmp_path / "m.onnx"), "--horizon", "x"],
    )
    assert r.exit_code == 2 and "bad horizon" in r.output


# --- signal semantics, drift on one feature, honest evaluation ------------------------


def test_drift_rule_trips_on_a_single_feature_far_out_of_range() -> None:
    model = FakeModel()
    g = GuardedPredictor(model, RulePredictor(), _settings(drift_sustain_s=2), latency_us=10.0)
    x = _x()
    x[IDX["spread_bps"]] = 40.0  # one feature at |z| 40, the others in range
    assert g.predict(x, 0).source == "onnx"
    assert g.predict(x, 2 * S).source == "rules"
    assert g.state == "open" and g.drift_features == 1
    assert "spread_bps" in g.reason


def test_model_signal_is_the_rule_formula_on_the_up_down_probability(
    small_model: tuple[Path, dict[str, Any]],
) -> None:
    from flashmm.predict.onnx_model import OnnxPredictor

    m = OnnxPredictor(small_model[0])
    rng = np.random.default_rng(1)
    X = (m.mean + m.std * rng.normal(size=(200, N_FEATURES))).astype(np.float32)
    probs, _ = m.run_batch(X)
    for x, p in zip(X, probs, strict=True):
        sig = m.predict(x, 0)
        down, up = float(p[0]), float(p[2])
        lean = (up - down) / (up + down)
        assert sig.p_move == pytest.approx(up + down, rel=1e-5)
        # confidence is the up/down confidence, never P(flat)
        assert sig.confidence == pytest.approx(max(up, down) / (up + down), rel=1e-4)
        want = lean * x[IDX["spread_bps"]] / 2
        assert sig.expected_bps == pytest.approx(want, rel=1e-4, abs=1e-5)
        assert sig.direction == (0 if abs(lean) < 0.2 else (1 if lean > 0 else -1))
        assert m.lean() == (1 if lean > 0 else -1)


def test_skew_widens_on_the_probability_of_a_move() -> None:
    calm = Signal(1, 0.8, 2.0, "onnx", 0.02)
    busy = Signal(1, 0.8, 2.0, "onnx", 0.6)
    assert skew_from_signal(calm, 5.0, 0.5, False, move_widen=0.5) == (
        pytest.approx(1.6),
        pytest.approx(1.01),
    )
    sk, w = skew_from_signal(busy, 5.0, 0.5, False, move_widen=0.5)
    assert sk == pytest.approx(1.6) and w == pytest.approx(1.3)
    # the rules know no p_move: no change
    assert skew_from_signal(Signal(1, 0.8, 2.0, "rules"), 5.0, 0.5, False, move_widen=0.5)[1] == 1


def test_distinct_moves_bootstrap_and_calibration() -> None:
    from flashmm.predict.evaluation import bootstrap_rates, calibration, next_change_index

    mid = np.array([10, 10, 10, 11, 11, 12, 12, 12, 12], dtype=float)
    assert next_change_index(mid).tolist() == [3, 3, 3, 5, 5, 9, 9, 9, 9]
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(400), 8)  # 400 moves seen 8 times each
    per_move = (rng.random(400) < 0.7).astype(float)
    a = np.repeat(per_move, 8)
    b = np.repeat((rng.random(400) < 0.6).astype(float), 8)
    (lo, hi), _, (dlo, dhi) = bootstrap_rates(groups, [a, b], n_boot=400)
    assert lo < a.mean() < hi
    # intervals are over 400 moves, not 3,200 samples: about +-4.5 points wide
    assert 0.06 < hi - lo < 0.12
    assert dlo < a.mean() - b.mean() < dhi
    conf = rng.uniform(0.5, 1.0, 20_000)
    hit = (rng.random(20_000) < conf).astype(float)
    rows, err = calibration(conf, hit)
    assert err < 2.0 and sum(r["n"] for r in rows) == 20_000
    _, bad = calibration(np.full(1000, 0.9), np.full(1000, 0.5))
    assert bad == pytest.approx(40.0)


def test_calibration_noise_floor_counts_moves_not_samples() -> None:
    from flashmm.predict.evaluation import calibration, calibration_noise

    def calibration_floor(p: np.ndarray, g: np.ndarray) -> float:
        return float(calibration_noise(p, g).mean())

    rng = np.random.default_rng(1)
    p_move = rng.uniform(0.5, 1.0, 400)
    p_up = np.repeat(np.where(rng.random(400) < 0.5, p_move, 1 - p_move), 8)
    groups = np.repeat(np.arange(400), 8)  # 400 moves seen 8 times each
    per_move = calibration_floor(p_up, groups)
    per_sample = calibration_floor(p_up, np.arange(len(p_up)))
    # 400 moves are as noisy as 400 samples, not 3,200
    assert per_move > 1.8 * per_sample > 0
    assert per_move == pytest.approx(calibration_floor(p_up[::8], np.arange(400)), rel=0.3)
    # a perfectly calibrated forecaster's error on one draw of outcomes sits near its floor
    up = np.repeat(rng.random(400), 8) < p_up
    conf = np.maximum(p_up, 1 - p_up)
    _, err = calibration(conf, ((p_up > 0.5) == up).astype(float))
    assert 0.3 * per_move < err < 2.5 * per_move
    # a forecaster that is 20 points over-confident is far above it
    _, off = calibration(
        conf, ((p_up > 0.5) == (np.repeat(rng.random(400), 8) < 0.5)).astype(float)
    )
    assert off > per_move + 10


def test_cli_eval_reports_moves_intervals_calibration_and_walk_forward(
    small_model: tuple[Path, dict[str, Any]],
) -> None:
    path = small_model[0]
    args = ["model", "eval", str(path), "--data", str(NEXO_23), "-w", "2", "--boot", "100"]
    r = CliRunner().invoke(_cli(), [*args, "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)
    nexo = m["markets"]["nexousdt"]
    assert 0 < nexo["distinct_moves"] < nexo["moved_samples"]
    lo, hi = nexo["hit_rate_moved_ci95"]
    assert lo <= nexo["hit_rate_moved"] <= hi
    assert "updown_calibration_error_pts" in nexo and nexo["updown_calibration"]
    assert nexo["updown_calibration_floor_pts"] > 0 and nexo["rule_calibration_floor_pts"] > 0
    assert 0 <= nexo["updown_calibration_p"] <= 1
    wf = m["walk_forward"]
    assert wf["windows"] == 2 and len(wf["folds"]) == 2
    assert (
        wf["folds"][0]["markets"]["nexousdt"]["to_ns"]
        < (wf["folds"][1]["markets"]["nexousdt"]["from_ns"])
    )
    assert wf["overall"]["nexousdt"]["distinct_moves"] > 0
    r = CliRunner().invoke(_cli(), args)
    assert r.exit_code == 0 and "walk-forward" in r.output and "moves" in r.output


def test_online_model_starts_as_the_shipped_one_and_learns_the_rule_where_it_wins() -> None:
    from flashmm.predict.online import OnlineModel

    class Base:
        """A fixed model that always leans up a little (p_up 0.03, p_down 0.02)."""

        mean, std = np.zeros(N_FEATURES), np.ones(N_FEATURES)
        horizon, horizon_ns, path = "1s", S, Path("base.onnx")
        min_lean, use_regressor, last_bps = 0.2, False, 0.0
        last_probs = np.array([0.02, 0.95, 0.03])

        def predict(self, x: np.ndarray, ts_ns: int) -> Signal:
            return Signal()

    m = OnlineModel(Base(), lr=0.05)
    x = _x(imb=-0.8)
    x[IDX["spread_bps"]] = 8.0
    sig = m.predict(x, 0)
    lean = (0.03 - 0.02) / 0.05
    assert sig.confidence == pytest.approx(0.5 + 0.5 * lean)  # exactly the base model at start
    assert sig.p_move == pytest.approx(0.05) and m.lean() == 1
    # a market where the mid follows the imbalance, against the base model's lean
    g = GuardedPredictor(
        m, RulePredictor(), _settings(hit_rate_window=400, hit_rate_floor=0.0), latency_us=10.0
    )
    mid, t = 1000.0, 0
    g.on_mid(mid, t)
    for i in range(600):
        imb = 0.8 if i % 2 else -0.8
        x = _x(imb=imb)
        g.predict(x, t)
        t += S
        mid += 0.5 if imb > 0 else -0.5
        g.on_mid(mid, t)
    assert m.updates > 500 and m.w[1] > 1.0  # it learned the imbalance
    assert g.predict(_x(imb=-0.8), t).direction == -1
    st = g.status()
    assert st["online"]["updates"] == m.updates
    assert st["hit_rate_moved"] is not None and st["calibration_error_pts"] is not None
    assert (
        load_predictor(ModelSettings(enabled=True, online=True)).status()["online"]["updates"] == 0
    )


def test_online_weights_persist_per_market_beside_the_journal(tmp_path: Path) -> None:
    from flashmm.config import load_config
    from flashmm.predict.online import OnlineModel, OnlineStore
    from flashmm.runner import build_engine

    sets = ["model.enabled=true", "model.online=true"]
    engine = build_engine(load_config(ROOT / "configs" / "paper.yaml", sets))
    store = OnlineStore.for_engine(engine, tmp_path, "paper")
    assert sorted(store.models) == ["ETH/USDC", "SEI/USDC"]  # one per market
    assert store.load() == {"SEI/USDC": "none", "ETH/USDC": "none"}  # first start
    model = store.models["SEI/USDC"]
    assert isinstance(model, OnlineModel) and model.w == [1.0, 0.0]
    for i in range(50):  # realised moves that follow the imbalance
        model.learn((0.1, 0.8 if i % 2 else -0.8), up=bool(i % 2))
    learnt = list(model.w)
    assert store.save() == 1 and store.save() == 0  # only what learnt, once
    path = tmp_path / "paper.online.sei-usdc.json"
    assert path.is_file() and store.path("SEI/USDC") == path
    # a restart continues from the saved weights
    again = OnlineStore.for_engine(
        build_engine(load_config(ROOT / "configs" / "paper.yaml", sets)), tmp_path, "paper"
    )
    assert again.load() == {"SEI/USDC": "loaded", "ETH/USDC": "none"}
    assert again.models["SEI/USDC"].w == learnt and again.models["SEI/USDC"].updates == 50
    # weights saved for another model (or horizon) are ignored, not mixed in
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, "horizon_ns": 5 * S}))
    third = OnlineStore.for_engine(
        build_engine(load_config(ROOT / "configs" / "paper.yaml", sets)), tmp_path, "paper"
    )
    assert third.load()["SEI/USDC"].startswith("ignored: saved for horizon_ns")
    assert third.models["SEI/USDC"].w == [1.0, 0.0]
    path.write_text("{not json")
    assert third.load()["SEI/USDC"].startswith("ignored: unreadable")


def _direction_parts(n: int = 3000, seed: int = 5) -> list[Any]:
    """Two synthetic markets whose moves follow imb_l1 (and nothing else)."""
    from flashmm.predict.direction import Part

    rng = np.random.default_rng(seed)
    parts = []
    for k, market in enumerate(("a", "b")):
        X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
        X[:, IDX["imb_l1"]] = np.tanh(X[:, IDX["imb_l1"]])
        p_up = 1 / (1 + np.exp(-3 * X[:, IDX["imb_l1"]]))
        moved = rng.random(n) < 0.4 + 0.1 * k
        y = np.where(moved, np.where(rng.random(n) < p_up, UP, DOWN), FLAT)
        ts = np.arange(n, dtype=np.int64) * (S // 10)
        parts.append(Part(market, X, y, np.zeros(n), ts))
    return parts


def test_a_richer_group_must_beat_the_plain_rule_not_only_the_fitted_one() -> None:
    from flashmm.predict.direction import _choose

    def sc(group: str, gain: float, C: float = 0.1) -> dict[str, Any]:
        return {"group": group, "C": C, "balance": 1.0, "squash": False, "gain": gain}

    # the fitted rule group lost 25 pp to the plain rule; flow at -22.9 pp is no better
    assert _choose([sc("rule", -0.25), sc("flow", -0.229), sc("book", -0.3)])["group"] == "rule"
    # a real gain over the plain rule wins, the best group's best candidate
    picked = _choose([sc("rule", -0.25), sc("book", 0.01), sc("flow", 0.02), sc("flow", 0.03, 1)])
    assert picked["group"] == "flow" and picked["C"] == 1
    assert _choose([sc("rule", 0.0), sc("book", 0.001)])["group"] == "rule"  # under MIN_GAIN
    assert _choose([])["group"] == "rule"


def test_the_rule_group_keeps_the_rules_calls_on_any_window() -> None:
    """Fitted on a window where the imbalance pointed the wrong way, or with one kind of
    move only, the rule group's slope was negative or zero: calls against the rule, or
    none (the -25 pp seen in the inner folds)."""
    from flashmm.predict.direction import GROUPS, _Binary

    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, N_FEATURES))
    imb = X[:, IDX["imb_l1"]]
    cols = [IDX[n] for n in GROUPS["rule"]]
    w = np.ones(len(X))
    for up in ((imb < 0).astype(np.int64), np.ones(len(X), dtype=np.int64)):
        head = _Binary(cols, 0.1).fit(X, up, w, w)
        assert head.coef[0] > 0
        assert np.array_equal(np.sign(head.d(X)), np.sign(imb))
    richer = _Binary([*cols, IDX["imb_l3"]], 0.1).fit(X, (imb < 0).astype(np.int64), w, w)
    assert richer.coef[0] < 0  # only the rule group is held to the rule's sign


def test_direction_model_starts_from_the_rule_and_exports_a_small_dense_graph(
    tmp_path: Path,
) -> None:
    import onnx

    from flashmm.predict.direction import export_direction_onnx, fit_direction_model
    from flashmm.predict.onnx_model import OnnxPredictor

    parts = _direction_parts()
    meta = {
        "feature_names": list(FEATURE_NAMES),
        "feature_mean": [0.0] * N_FEATURES,
        "feature_std": [1.0] * N_FEATURES,
        "horizon": "1s",
        "horizon_ns": S,
        "flat_ticks": 0.5,
    }
    X = parts[0].X[:300]
    for force in (None, {"group": "flow", "C": 0.1, "balance": 1.0, "squash": True}):
        m = fit_direction_model(parts, S, force=force)
        p = m.predict_proba(X)
        if force is None:
            # nothing beyond the imbalance: the inner folds keep the rule's input alone,
            # so the up/down call is the rule's; the temperature makes it confident
            assert m.choice["group"] == "rule" and m.choice["platt_a"] > 0
            assert np.array_equal(np.sign(p[:, UP] - p[:, DOWN]), np.sign(X[:, IDX["imb_l1"]]))
        # no intercept: a mirrored input gives the mirrored up/down call
        q = m.predict_proba(-X)
        np.testing.assert_allclose(p[:, UP] / p[:, DOWN], q[:, DOWN] / q[:, UP], rtol=1e-9)
        path = tmp_path / f"m{force is None}.onnx"
        onnx.save(export_direction_onnx(m, meta), str(path))
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert ops <= {"Gemm", "Tanh", "Add", "Softmax"} and ("Tanh" in ops) == bool(force)
        pred = OnnxPredictor(path)
        assert pred.engine == "native"  # the numba evaluator runs it
        probs, _ = pred.run_batch(X)
        np.testing.assert_allclose(probs, p, atol=2e-5)
