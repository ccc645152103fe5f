"""The large-model path at toy sizes: external data in and out, weights streamed, processes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

if importlib.util.find_spec("adpq_onnx.passes") is None:
    pytest.skip("adpq_onnx.passes exists only once installed", allow_module_level=True)

from adpq_onnx import io, pipeline
from adpq_onnx.config import AdpQConfig

GENERATOR = Path(__file__).parents[1] / "benchmarks" / "make_llama7b_shaped.py"


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("llama")
    args = ["--layers", "2", "--hidden", "128", "--intermediate", "352", "--vocab", "500"]
    subprocess.run([sys.executable, str(GENERATOR), str(out), *args], check=True)
    return out / "model.onnx"


def _logits(path: Path, config: AdpQConfig) -> np.ndarray:
    import onnxruntime as ort

    from adpq_onnx.ops import library

    if config.target == "adpq":
        sess = library.make_session(path)
    else:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = np.array([[1, 7, 42, 3]], dtype=np.int64)
    return sess.run(None, {"input_ids": ids})[0].astype(np.float32)


@pytest.mark.parametrize("jobs", [1, 2])
def test_streamed_external_output(tmp_path, small_llama, jobs) -> None:
    config = AdpQConfig(target="matmulnbits", bits=8, group_size=32, outlier_ratio=0.0)
    out = tmp_path / "q.onnx"
    report = pipeline.optimize_file(small_llama, out, config, jobs=jobs)
    assert len(report.layers) == 2 * 7 + 1  # every projection and lm_head; embeddings kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx", "q.onnx.data"]
    proto = onnx.load(out, load_external_data=False)
    external = [t.name for t in proto.graph.initializer if t.data_location == 1]
    assert "embed_tokens.weight" in external and "layers.0.q_proj.weight.matmulnbits.B" in external
    assert io.external_files(proto) == {"q.onnx.data"}
    onnx.checker.check_model(str(out))
    ref, got = _logits(small_llama, config), _logits(out, config)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.05


def test_verify_reports_the_logits_error(tmp_path, small_llama) -> None:
    config = AdpQConfig(target="matmulnbits", bits=4, group_size=32, outlier_ratio=0.0)
    out = tmp_path / "q.onnx"
    pipeline.optimize_file(small_llama, out, config, jobs=1)
    result = pipeline.verify(small_llama, out, config)
    assert 0 < result.outputs["logits"]["rel_error"] < 0.5


def test_weights_are_read_not_mapped(small_llama) -> None:
    """Reading a weight leaves no memory map open on the input's data file."""
    model = io.load_model(small_llama)
    tensor = model.graph.initializers["layers.0.q_proj.weight"].const_value
    array = io.read_array(tensor)
    assert array.shape == (128, 128) and array.dtype == np.float16
    assert tensor.raw is None  # type: ignore[union-attr]
