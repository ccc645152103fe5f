"""Every kind of bad input: exit status 2, a message naming the file / node / value, no output."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

if importlib.util.find_spec("adpq_onnx.passes") is None:
    pytest.skip("adpq_onnx.passes exists only once installed", allow_module_level=True)

from adpq_onnx import cli

FLOAT = onnx.TensorProto.FLOAT


def _model(w: np.ndarray, opset: int = 17, op: str = "MatMul") -> onnx.ModelProto:
    node = helper.make_node(op, ["x", "W"], ["y"], name="mm")
    graph = helper.make_graph(
        [node],
        "bad",
        [helper.make_tensor_value_info("x", FLOAT, [1, w.shape[0]])],
        [helper.make_tensor_value_info("y", FLOAT, None)],
        [numpy_helper.from_array(w, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.onnx"
    w = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    onnx.save(_model(w), path)
    return path


def _fails(tmp_path: Path, capsys, src: Path, *args: str) -> str:
    out = tmp_path / "out.onnx"
    assert cli.main(["optimize", str(src), "-o", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(("out.", ".out."))]
    assert not leftovers, leftovers
    return err


def test_not_onnx(tmp_path, capsys) -> None:
    src = tmp_path / "notes.onnx"
    src.write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    assert f"{src}: not an ONNX model" in _fails(tmp_path, capsys, src)


def test_truncated(tmp_path, capsys, good) -> None:
    src = tmp_path / "cut.onnx"
    src.write_bytes(good.read_bytes()[:300])
    assert "truncated" in _fails(tmp_path, capsys, src)


def test_missing_external_data(tmp_path, capsys, good) -> None:
    src = tmp_path / "ext.onnx"
    onnx.save(
        onnx.load(good), src, save_as_external_data=True, location="ext.bin", size_threshold=0
    )
    (tmp_path / "ext.bin").unlink()
    err = _fails(tmp_path, capsys, src)
    assert "external data file 'ext.bin' of tensor 'W' is missing" in err


@pytest.mark.parametrize("opset", [1, 99])
def test_unsupported_opset(tmp_path, capsys, opset) -> None:
    src = tmp_path / "old.onnx"
    w = np.ones((64, 16), np.float32)
    onnx.save(_model(w, opset=opset), src)
    assert f"opset {opset} of the default ONNX domain is not supported" in _fails(
        tmp_path, capsys, src
    )


def test_nothing_eligible(tmp_path, capsys) -> None:
    src = tmp_path / "add.onnx"
    onnx.save(_model(np.ones((1, 16), np.float32), op="Add"), src)
    assert "no MatMul" in _fails(tmp_path, capsys, src)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights(tmp_path, capsys, bad) -> None:
    src = tmp_path / "nan.onnx"
    w = np.ones((64, 16), np.float32)
    w[5, 3] = bad
    onnx.save(_model(w), src)
    err = _fails(tmp_path, capsys, src)
    assert "weight 'W' (node 'mm') cannot be quantized: weight contains NaN or Inf" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bits", "5"], "bits=5 is not supported"),
        (["--group-size", "0"], "group_size=0 must be"),
        (["--outlier-ratio", "0.5"], "outlier_ratio=0.5 must be in [0, 0.5)"),
        (["--outlier-ratio", "-0.01"], "outlier_ratio=-0.01 must be in [0, 0.5)"),
    ],
)
def test_impossible_options(tmp_path, capsys, good, args, message) -> None:
    assert message in _fails(tmp_path, capsys, good, *args)


def test_input_is_never_touched(tmp_path, capsys, good) -> None:
    before = good.read_bytes()
    assert cli.main(["optimize", str(good), "-o", str(tmp_path / "q.onnx")]) == 0
    assert good.read_bytes() == before
    assert cli.main(["optimize", str(good), "-o", str(good)]) == 2
    assert "overwrite the input" in capsys.readouterr().err and good.read_bytes() == before
