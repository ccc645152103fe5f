"""End to end: a small model with every supported weight form, optimized and run."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

if importlib.util.find_spec("adpq_onnx.passes") is None:
    pytest.skip(
        "adpq_onnx.passes exists only once installed (the wheel maps passes/ into it)",
        allow_module_level=True,
    )

from adpq_onnx import io, pipeline
from adpq_onnx.config import METADATA_KEY, AdpQConfig
from adpq_onnx.errors import UserError
from adpq_onnx.ops import spec
from adpq_onnx.ops.reference import AdpQMatMul
from adpq_onnx.report import SUMMARY_KEY, Report

FLOAT = onnx.TensorProto.FLOAT
K, H = 576, 64  # K is not a multiple of the group size 128
# Output relative error at 8 bits, and the bytes a saved model may add to its tensors.
MAX_REL_ERROR_8BIT = 0.01
FILE_OVERHEAD_BYTES = 5120  # graph, names and metadata (config + summary JSON)
OUTPUTS = ["y_gemm", "y_transposed", "y_shared_a", "y_shared_b"]


def _weights(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """LLM-like weights: Gaussian plus a few large outliers."""
    w = rng.standard_normal(shape).astype(np.float32) * 0.02
    idx = rng.choice(w.size, size=max(1, w.size // 500), replace=False)
    w.flat[idx] *= 20
    return w


def make_model(seed: int = 0) -> onnx.ModelProto:
    """MatMul(K=576) → Gemm(transB=1, bias); MatMul on Transpose(W); one weight, two MatMuls."""
    rng = np.random.default_rng(seed)
    inits = {
        "W1": _weights(rng, (K, H)),
        "W2": _weights(rng, (H, H)),  # Gemm B with transB=1: [N, K]
        "b2": rng.standard_normal(H).astype(np.float32) * 0.1,
        "W3": _weights(rng, (H, K)),  # Transpose-fed: stored [N, K]
        "Ws": _weights(rng, (K, H)),  # shared by two MatMuls
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h1"], name="mm_k576"),
        helper.make_node("Gemm", ["h1", "W2", "b2"], ["y_gemm"], name="gemm", transB=1),
        helper.make_node("Transpose", ["W3"], ["W3t"], name="tr", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "W3t"], ["y_transposed"], name="mm_transposed"),
        helper.make_node("MatMul", ["x", "Ws"], ["y_shared_a"], name="mm_shared_a"),
        helper.make_node("Relu", ["x"], ["xr"], name="relu"),
        helper.make_node("MatMul", ["xr", "Ws"], ["y_shared_b"], name="mm_shared_b"),
    ]
    graph = helper.make_graph(
        nodes,
        "pipeline_test",
        [helper.make_tensor_value_info("x", FLOAT, ["batch", K])],
        [helper.make_tensor_value_info(name, FLOAT, ["batch", H]) for name in OUTPUTS],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    # IR 10: what the ONNX Runtime in use reads (onnx 1.23 would write 14)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def float_model() -> onnx.ModelProto:
    return make_model()


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((8, K)).astype(np.float32)


def _outputs(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ReferenceEvaluator(model, new_ops=[AdpQMatMul]).run(OUTPUTS, {"x": x})


def _rel_errors(model, reference, x) -> list[float]:
    return [
        float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
        for got, ref in zip(_outputs(model, x), reference, strict=True)
    ]


@pytest.fixture(scope="module")
def optimized(float_model) -> dict[int, tuple[onnx.ModelProto, Report]]:
    out = {}
    for bits in (2, 3, 4, 8):
        report = Report()
        out[bits] = (pipeline.optimize(float_model, AdpQConfig(bits=bits), report=report), report)
    return out


def test_every_eligible_weight_is_replaced(optimized) -> None:
    model, report = optimized[4]
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    # five MatMuls (the Gemm's bias Add fused in), the Relu untouched, Transpose gone
    assert sorted(ops) == [spec.OP_TYPE] * 5 + ["Relu"]
    assert {layer.name for layer in report.layers} == {"W1", "W2.T", "W3.T", "Ws"}
    assert not report.skipped
    shared = next(layer for layer in report.layers if layer.name == "Ws")
    assert shared.nodes == ("mm_shared_a", "mm_shared_b")
    names = {t.name for t in model.graph.initializer}
    assert not names & {"W1", "W2", "W3", "Ws", "W2.T", "W3.T"}
    assert sum(name.endswith(".adpq.codes") for name in names) == 4
    assert any(op.domain == spec.DOMAIN for op in model.opset_import)


def test_output_error_falls_with_bits(optimized, float_model, x) -> None:
    reference = _outputs(float_model, x)
    errors = {bits: _rel_errors(model, reference, x) for bits, (model, _) in optimized.items()}
    for out in range(len(OUTPUTS)):
        per_bits = [errors[b][out] for b in (2, 3, 4, 8)]
        assert per_bits == sorted(per_bits, reverse=True), (OUTPUTS[out], per_bits)
    assert max(errors[8]) < MAX_REL_ERROR_8BIT, errors[8]


def test_excluded_weights_keep_their_values(float_model, x) -> None:
    """Canonicalized but not quantized (W2, W3 become W2.T, W3.T): outputs stay exact."""
    model = pipeline.optimize(float_model, AdpQConfig(exclude="W2|W3"))
    names = {t.name for t in model.graph.initializer if ".adpq." not in t.name}
    assert names == {"W2.T", "W3.T", "b2"}
    got = dict(zip(OUTPUTS, _outputs(model, x), strict=True))
    ref = dict(zip(OUTPUTS, _outputs(float_model, x), strict=True))
    np.testing.assert_allclose(got["y_transposed"], ref["y_transposed"], rtol=1e-6, atol=1e-6)


def test_metadata_records_config_and_summary(optimized) -> None:
    model, report = optimized[3]
    meta = {p.key: p.value for p in model.metadata_props}
    assert AdpQConfig.from_dict(json.loads(meta[METADATA_KEY])) == AdpQConfig(bits=3)
    assert json.loads(meta[SUMMARY_KEY]) == json.loads(json.dumps(report.totals()))


def test_report_totals(optimized) -> None:
    _, report = optimized[4]
    totals = report.totals()
    assert totals["weights_quantized"] == 4 and totals["nodes_replaced"] == 5
    assert totals["parameters"] == 2 * K * H + H * H + H * K
    assert totals["original_bytes"] == 4 * totals["parameters"]
    assert totals["packed_bytes"] * 8 == pytest.approx(
        totals["bits_per_weight"] * totals["parameters"]
    )
    assert 4.0 < totals["bits_per_weight"] < 5.0
    assert "4 weight(s) in 5 node(s)" in report.summary()


def test_saved_size_matches_report(tmp_path, float_model) -> None:
    src, dst = tmp_path / "float.onnx", tmp_path / "q.onnx"
    onnx.save(float_model, src)
    report = pipeline.optimize_file(src, dst, AdpQConfig(bits=3, group_size=64))
    other = H * 4  # the fused bias stays float32
    overhead = dst.stat().st_size - report.totals()["packed_bytes"] - other
    assert 0 <= overhead < FILE_OVERHEAD_BYTES
    assert sorted(os.listdir(tmp_path)) == ["float.onnx", "q.onnx"]


def test_inputs_are_not_modified(tmp_path, float_model) -> None:
    before = float_model.SerializeToString()
    pipeline.optimize(float_model)
    assert float_model.SerializeToString() == before
    model = ir.from_proto(float_model)
    ops = [n.op_type for n in model.graph]
    pipeline.optimize(model)
    assert [n.op_type for n in model.graph] == ops
    src = tmp_path / "float.onnx"
    onnx.save(float_model, src)
    data = src.read_bytes()
    pipeline.optimize_file(src, tmp_path / "q.onnx")
    assert src.read_bytes() == data


def test_accepts_path_proto_and_ir_model(tmp_path, float_model, x) -> None:
    src = tmp_path / "float.onnx"
    onnx.save(float_model, src)
    results = [
        pipeline.optimize(src),
        pipeline.optimize(str(src)),
        pipeline.optimize(float_model),
        pipeline.optimize(ir.from_proto(float_model)),
    ]
    first = _outputs(results[0], x)
    for model in results[1:]:
        for a, b in zip(first, _outputs(model, x), strict=True):
            np.testing.assert_array_equal(a, b)


def test_external_data_in_and_out(tmp_path, float_model, x) -> None:
    src = tmp_path / "ext.onnx"
    copy = onnx.ModelProto()
    copy.CopyFrom(float_model)  # onnx.save with external data rewrites the proto it saves
    onnx.save(copy, src, save_as_external_data=True, location="ext.weights")
    inline = pipeline.optimize(src)
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in inline.graph.initializer)
    dst = tmp_path / "q.onnx"
    pipeline.optimize_file(src, dst, external_data=True)
    assert (tmp_path / "q.onnx.data").is_file()
    saved = onnx.load(dst)
    for a, b in zip(_outputs(saved, x), _outputs(inline, x), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_nothing_eligible_is_a_user_error(tmp_path) -> None:
    node = helper.make_node("MatMul", ["a", "b"], ["y"], name="runtime")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, FLOAT, [2, 2]) for n in "ab"],
        [helper.make_tensor_value_info("y", FLOAT, None)],
    )
    src = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), src)
    with pytest.raises(UserError, match=r"no MatMul with a constant 2-D float weight in .*m\.onnx"):
        pipeline.optimize_file(src, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
    with pytest.raises(UserError, match="runtime: B is not a constant initializer"):
        pipeline.optimize(src)


def test_excluding_everything_is_a_user_error(float_model) -> None:
    with pytest.raises(UserError, match="excluded by exclude"):
        pipeline.optimize(float_model, AdpQConfig(exclude="."))


# Output error of MatMulNBits at 4 bits with a plain min-max grid (outlier_ratio 0); folding
# AdpQ's outliers into the inlier grid clamps them, which these ×20 outliers make expensive.
MAX_REL_ERROR_NBITS_4BIT = 0.2
MAX_REL_ERROR_NBITS_FOLDED = 1.0


@pytest.mark.parametrize("ratio", [0.0, 0.005])
def test_matmulnbits_target_runs_on_stock_ort(float_model, x, ratio) -> None:
    import onnxruntime as ort

    report = Report()
    config = AdpQConfig(target="matmulnbits", outlier_ratio=ratio)
    model = pipeline.optimize(float_model, config, report=report)
    limit = MAX_REL_ERROR_NBITS_FOLDED if ratio else MAX_REL_ERROR_NBITS_4BIT
    onnx.checker.check_model(model)
    assert sorted(n.op_type for n in model.graph.node) == ["MatMulNBits"] * 5 + ["Relu"]
    assert not any(op.domain == spec.DOMAIN for op in model.opset_import)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(OUTPUTS, {"x": x})
    for g, ref in zip(got, _outputs(float_model, x), strict=True):
        assert np.linalg.norm(g - ref) / np.linalg.norm(ref) < limit
    for layer in report.layers:  # folding outliers costs weight error, never gains
        assert layer.weight_rel_error >= layer.adpq_rel_error * (1 - 1e-6)
        assert layer.bits_per_weight == pytest.approx(layer.packed_bytes * 8 / (layer.K * layer.N))


def test_matmulnbits_target_carries_accuracy_level(float_model, x) -> None:
    import onnxruntime as ort

    model = pipeline.optimize(float_model, AdpQConfig(target="matmulnbits", accuracy_level=4))
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            levels = [a.i for a in node.attribute if a.name == "accuracy_level"]
            assert levels == [4], node.name
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(OUTPUTS, {"x": x})
    for g, ref in zip(got, _outputs(float_model, x), strict=True):
        assert np.linalg.norm(g - ref) / np.linalg.norm(ref) < MAX_REL_ERROR_NBITS_FOLDED


def test_rules_set_bits_per_layer(float_model) -> None:
    from adpq_onnx.config import Rule

    report = Report()
    rules = (Rule("W1", bits=8, group_size=64), Rule("mm_shared", bits=2))
    pipeline.optimize(float_model, AdpQConfig(bits=4, rules=rules), report=report)
    got = {layer.name: (layer.bits, layer.group_size) for layer in report.layers}
    assert got == {"W1": (8, 64), "Ws": (2, 128), "W2.T": (4, 128), "W3.T": (4, 128)}


def test_jobs_give_the_same_model(tmp_path, float_model) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(float_model, src)
    one = pipeline.optimize_file(src, tmp_path / "a.onnx", AdpQConfig(), jobs=1)
    two = pipeline.optimize_file(src, tmp_path / "b.onnx", AdpQConfig(), jobs=2)
    assert [la.weight_rel_error for la in one.layers] == [lb.weight_rel_error for lb in two.layers]
    a, b = onnx.load(tmp_path / "a.onnx"), onnx.load(tmp_path / "b.onnx")
    assert {t.name: t.raw_data for t in a.graph.initializer} == {
        t.name: t.raw_data for t in b.graph.initializer
    }


def test_output_never_overwrites_input(tmp_path, float_model) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(float_model, src)
    with pytest.raises(UserError, match="overwrite the input"):
        pipeline.optimize_file(src, tmp_path / "." / "m.onnx")


def test_failed_save_leaves_nothing(tmp_path, float_model, monkeypatch) -> None:
    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(float_model, src)
    dst.write_bytes(b"previous")

    def broken_save(model, path, final, external=None):
        path.write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(io, "_save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        pipeline.optimize_file(src, dst)
    assert dst.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "q.onnx"]


def test_pipeline_order() -> None:
    names = [type(p).__name__ for p in pipeline.build_pipeline(AdpQConfig()).passes]
    assert names == [
        "GemmToMatMulPass",
        "FoldTransposedWeightsPass",
        "SelectMatMulsPass",
        "LearnTransformsPass",
        "PairWeightsPass",
        "QuantizeWeightsPass",
        "ReplaceMatMulWithAdpQPass",
        "CleanupPass",
    ]


@pytest.mark.requires_custom_ops
@pytest.mark.parametrize(
    "config",
    [AdpQConfig(bits=4), AdpQConfig(bits=2, group_size=32, outlier_dtype="int8")],
    ids=["4bit", "2bit-int8-outliers"],
)
def test_ort_session_matches_reference(tmp_path, float_model, x, config) -> None:
    # tests/conftest.py skips this (with the reason) when the library is not built.
    from adpq_onnx.ops import library

    src, dst = tmp_path / "float.onnx", tmp_path / "q.onnx"
    onnx.save(float_model, src)
    pipeline.optimize_file(src, dst, config, external_data=True)
    got = library.make_session(str(dst)).run(OUTPUTS, {"x": x})
    for a, b in zip(got, _outputs(onnx.load(dst), x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.requires_custom_ops
def test_accuracy_level_is_written_and_stays_close(float_model, x) -> None:
    """accuracy_level=4 (int8 activations in the CPU kernel) is recorded on every node and
    costs little: within 3 % of the float32-compute result, relative to the output's range."""
    from adpq_onnx.ops import library

    exact = pipeline.optimize(float_model, AdpQConfig())
    fast = pipeline.optimize(float_model, AdpQConfig(accuracy_level=4))
    levels = [
        {a.name: a.i for a in n.attribute}.get("accuracy_level")
        for n in fast.graph.node
        if n.op_type == spec.OP_TYPE
    ]
    assert levels and set(levels) == {4}
    want = library.make_session(exact).run(OUTPUTS, {"x": x})
    got = library.make_session(fast).run(OUTPUTS, {"x": x})
    for a, b in zip(got, want, strict=True):
        assert np.abs(a - b).max() <= 0.03 * np.abs(b).max()
