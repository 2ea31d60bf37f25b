"""Native evaluation of small dense ONNX graphs against onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from flashmm.features import N_FEATURES
from flashmm.predict import ModelSettings, load_predictor
from flashmm.predict.onnx_model import OnnxPredictor

SHIPPED = ModelSettings().resolve_path()


def _probe(model: OnnxPredictor, n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(7)
    z = rng.standard_normal((n, N_FEATURES)) * 3.0
    return (model.mean + z * model.std).astype(np.float32)


def _agree(model: OnnxPredictor, X: np.ndarray) -> float:
    """Max abs difference of probabilities and bps, native predict vs onnxruntime."""
    assert model.engine == "native"
    probs, bps = model.run_batch(X)  # onnxruntime
    worst = 0.0
    for r in range(len(X)):
        model.predict(X[r], r)
        worst = max(worst, float(np.max(np.abs(model.last_probs - probs[r]))))
        worst = max(worst, abs(model.last_bps - float(bps[r])))
    return worst


def _mlp(path: Path, *, act: str = "Relu", meta_from: Path | None = SHIPPED) -> None:
    """A generated MLP: Gemm -> act -> MatMul + Add -> Softmax, and a Tanh/Sigmoid bps head."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    inits = [
        init("w1", 16, N_FEATURES),
        init("b1", 16),
        init("w2", 16, 3),
        init("b2", 3),
        init("w3", 16, 1),
        init("s3", 1),
    ]
    nodes = [
        helper.make_node("Gemm", ["features", "w1", "b1"], ["h0"], transB=1, alpha=0.5),
        helper.make_node(act, ["h0"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["z0"]),
        helper.make_node("Add", ["z0", "b2"], ["z"]),
        helper.make_node("Softmax", ["z"], ["probabilities"], axis=-1),
        helper.make_node("MatMul", ["h", "w3"], ["r0"]),
        helper.make_node("Tanh", ["r0"], ["r1"]),
        helper.make_node("Sigmoid", ["r1"], ["r2"]),
        helper.make_node("Mul", ["r2", "s3"], ["expected_bps"]),
    ]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, N_FEATURES])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info("expected_bps", TensorProto.FLOAT, [None, 1]),
        ],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    assert meta_from is not None
    for p in onnx.load(str(meta_from)).metadata_props:
        m.metadata_props.add(key=p.key, value=p.value)
    onnx.save(m, str(path))


@pytest.mark.skipif(SHIPPED is None or not SHIPPED.exists(), reason="no shipped model")
def test_shipped_model_runs_native_and_agrees_with_onnxruntime() -> None:
    m = OnnxPredictor(SHIPPED)  # type: ignore[arg-type]
    assert m.engine == "native", m.native_note
    assert m.native_max_diff is not None and m.native_max_diff < 1e-4
    assert _agree(m, _probe(m)) < 1e-4
    # the same signal either way
    x = _probe(m, 1)[0]
    a = m.predict(x, 0)
    m.set_engine("onnxruntime")
    b = m.predict(x, 0)
    assert a.direction == b.direction and abs(a.confidence - b.confidence) < 1e-4
    assert m.describe()["engine"] == "onnxruntime"


def test_generated_mlp_agrees_with_onnxruntime(tmp_path: Path) -> None:
    p = tmp_path / "mlp.onnx"
    _mlp(p)
    m = OnnxPredictor(p, use_regressor=True)
    assert m.engine == "native", m.native_note
    assert _agree(m, _probe(m)) < 1e-4


def test_unsupported_graph_or_a_difference_falls_back_to_onnxruntime(tmp_path: Path) -> None:
    p = tmp_path / "leaky.onnx"
    _mlp(p, act="LeakyRelu")
    m = OnnxPredictor(p)
    assert m.engine == "onnxruntime" and "LeakyRelu" in m.native_note
    probs, _ = m.run_batch(_probe(m, 4))
    m.predict(_probe(m, 4)[0], 0)
    np.testing.assert_allclose(m.last_probs, probs[0])
    # a difference above the tolerance (here any difference) keeps onnxruntime too
    m = OnnxPredictor(SHIPPED or p, native_tol=-1.0)
    assert m.engine == "onnxruntime" and "differs" in m.native_note


@pytest.mark.parametrize("native", [True, False])
def test_breaker_works_with_both_paths(native: bool) -> None:
    # a budget no loaded machine reaches: this test is about the paths, not the speed
    g = load_predictor(ModelSettings(enabled=True, native=native, latency_budget_us=1e9))
    assert g.state == "closed", g.reason
    assert g.model is not None and g.model.engine == ("native" if native else "onnxruntime")
    x = np.asarray(g.model.mean, dtype=np.float32)
    for i in range(60):
        assert g.predict(x, i * 1_000_000).source == "onnx"
    st = g.status()
    assert st["latency_p99_us"] is not None and st["state"] == "closed"
    # a NaN output still opens the breaker on the native path
    g.predict(np.full(N_FEATURES, np.nan, dtype=np.float32), 10**9)
    assert g.state == "open"


def test_model_check_prints_the_max_abs_difference() -> None:
    from flashmm.cli import model as cli_model

    app = typer.Typer()
    app.add_typer(cli_model.app, name="model")
    app.command("train")(cli_model.train_command)
    r = CliRunner().invoke(app, ["model", "check", str(SHIPPED), "--calls", "50", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["engine"] == "native" and info["native_max_diff"] < 1e-4
    assert set(info["latency_us_by_engine"]) == {"native", "onnxruntime"}
    r = CliRunner().invoke(app, ["model", "check", str(SHIPPED), "--calls", "50"])
    assert r.exit_code == 0 and "max abs difference vs onnxruntime" in r.output
