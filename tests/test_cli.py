"""`adpq-onnx optimize` / `inspect` end to end, in process and as `python -m adpq_onnx`."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

if importlib.util.find_spec("adpq_onnx.passes") is None:
    pytest.skip(
        "adpq_onnx.passes exists only once installed (the wheel maps passes/ into it)",
        allow_module_level=True,
    )

from adpq_onnx import cli

FLOAT = onnx.TensorProto.FLOAT


def _write_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((96, 32)).astype(np.float32)
    w2 = rng.standard_normal((16, 32)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="up"),
        helper.make_node("Gemm", ["h", "W2"], ["y"], name="down", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cli",
        [helper.make_tensor_value_info("x", FLOAT, [1, 96])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 16])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )
    opsets = [helper.make_opsetid("", 17)]
    onnx.save(helper.make_model(graph, ir_version=10, opset_imports=opsets), path)
    return path


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return _write_model(tmp_path / "float.onnx")


def test_optimize_then_inspect(tmp_path, model_path, capsys) -> None:
    out, report = tmp_path / "q.onnx", tmp_path / "report.json"
    argv = ["optimize", str(model_path), "-o", str(out), "--bits", "3", "--group-size", "32"]
    assert cli.main([*argv, "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "2 weight(s) in 2 node(s)" in printed and f"wrote {out}" in printed
    data = json.loads(report.read_text())
    assert [layer["name"] for layer in data["layers"]] == ["W1", "W2.T"]
    assert data["config"]["bits"] == 3 and data["totals"]["weights_quantized"] == 2

    assert cli.main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [(n["name"], n["K"], n["N"], n["bits"]) for n in info["nodes"]] == [
        ("up", 96, 32, 3),
        ("down", 32, 16, 3),
    ]
    for node, layer in zip(info["nodes"], data["layers"], strict=True):
        assert node["outliers"] == layer["nnz"]
        assert node["bits_per_weight"] == pytest.approx(layer["bits_per_weight"])
    assert info["totals"]["packed_bytes"] == data["totals"]["packed_bytes"]
    assert info["config"]["group_size"] == 32

    assert cli.main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 AdpQMatMul node(s)" in text and '"bits": 3' in text


def test_default_output_name(model_path, capsys) -> None:
    assert cli.main(["optimize", str(model_path)]) == 0
    assert (model_path.parent / "float.adpq.onnx").is_file()


def test_options_reach_the_config(tmp_path, model_path, capsys) -> None:
    out = tmp_path / "q.onnx"
    argv = [
        "optimize",
        str(model_path),
        "-o",
        str(out),
        "--outlier-ratio",
        "0.02",
        "--lasso-scope",
        "group",
        "--outlier-dtype",
        "int8",
        "--exclude",
        "W2",
        "--gamma",
        "2",
        "--outlier-mode",
        "shrink",
    ]
    assert cli.main(argv) == 0
    # the Gemm became MatMul(h, W2.T) first, then the filter saw its weight name
    assert "down (MatMul): excluded by exclude='W2'" in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    config = json.loads(meta["adpq_onnx.config"])
    assert (config["outlier_ratio"], config["lasso_scope"], config["outlier_dtype"]) == (
        0.02,
        "group",
        "int8",
    )
    assert (config["exclude"], config["gamma"], config["outlier_mode"]) == ("W2", 2.0, "shrink")


def test_rounding_and_transform_options_reach_the_config(tmp_path, model_path, capsys) -> None:
    out = tmp_path / "q.onnx"
    argv = ["optimize", str(model_path), "-o", str(out), "--rounding", "paired"]
    argv += ["--transforms", "mlp,norm", "--transform-steps", "3"]
    argv += ["--transform-objective", "product"]
    assert cli.main(argv) == 0
    config = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}["adpq_onnx.config"])
    assert config["rounding"]["method"] == "paired"
    assert config["transforms"]["kinds"] == ["mlp", "norm"] and config["transforms"]["steps"] == 3
    assert config["transforms"]["objective"] == "product"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bits", "5"], "bits=5"),
        (["--group-size", "0"], "group_size=0"),
        (["--outlier-ratio", "0.7"], "outlier_ratio=0.7"),
        (["--lasso-scope", "column"], "lasso_scope='column'"),
        (["--include", "("], "include="),
        (["--target", "matmulnbits", "--bits", "3"], "supports bits 2, 4 and 8"),
        (["--target", "matmulnbits", "--group-size", "96"], "power-of-2 group_size"),
        (["--rule", "down:bits=5"], "bits=5 (rule 'down')"),
        (["--rule", "nonsense"], "expected REGEX:key=value"),
        (["--jobs", "0"], "--jobs=0"),
        (["--rounding", "stochastic"], "rounding.method='stochastic'"),
        (["--transforms", "attn,spin"], "transforms.kinds='spin'"),
        (["--transform-steps", "0"], "transforms.steps=0"),
    ],
)
def test_bad_options_exit_2(tmp_path, model_path, capsys, args, message) -> None:
    out = tmp_path / "q.onnx"
    assert cli.main(["optimize", str(model_path), "-o", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_not_onnx_and_missing_files_exit_2(tmp_path, capsys) -> None:
    bogus = tmp_path / "notes.onnx"
    bogus.write_text("these are not the weights you are looking for\n")
    out = tmp_path / "q.onnx"
    assert cli.main(["optimize", str(bogus), "-o", str(out)]) == 2
    assert "not an ONNX model" in capsys.readouterr().err
    assert cli.main(["optimize", str(tmp_path / "missing.onnx"), "-o", str(out)]) == 2
    assert "missing.onnx: no such file" in capsys.readouterr().err
    assert cli.main(["inspect", str(tmp_path / "missing.onnx")]) == 2
    assert cli.main(["optimize", str(tmp_path), "-o", str(out)]) == 2
    assert "not a file" in capsys.readouterr().err
    assert not out.exists()


def test_truncated_and_missing_external_data_exit_2(tmp_path, model_path, capsys) -> None:
    data = model_path.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    assert cli.main(["optimize", str(cut), "-o", str(tmp_path / "q.onnx")]) == 2
    assert "truncated" in capsys.readouterr().err
    model = onnx.load(model_path)
    ext = tmp_path / "ext.onnx"
    onnx.save(model, ext, save_as_external_data=True, location="ext.data", size_threshold=0)
    data_file = tmp_path / "ext.data"
    data_file.write_bytes(data_file.read_bytes()[:100])
    assert cli.main(["optimize", str(ext), "-o", str(tmp_path / "q.onnx")]) == 2
    assert "external data file 'ext.data' is truncated" in capsys.readouterr().err
    os.remove(data_file)
    assert cli.main(["optimize", str(ext), "-o", str(tmp_path / "q.onnx")]) == 2
    assert "external data file 'ext.data' of tensor 'W1' is missing" in capsys.readouterr().err
    assert not (tmp_path / "q.onnx").exists()


def test_unparsable_number_is_a_usage_error(model_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["optimize", str(model_path), "--bits", "four"])
    assert exc.value.code == 2


def _run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # From a temporary directory, so that the checkout's top-level folders are not importable.
    return subprocess.run(
        [sys.executable, "-m", "adpq_onnx", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
        check=False,
    )


def test_python_dash_m(tmp_path, model_path) -> None:
    out = tmp_path / "q.onnx"
    done = _run_module("optimize", str(model_path), "-o", str(out), "--bits", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 weight(s) in 2 node(s)" in done.stdout
    done = _run_module("inspect", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 AdpQMatMul node(s)" in done.stdout
    bad = _run_module(
        "optimize", str(model_path), "-o", str(tmp_path / "b.onnx"), "--bits", "5", cwd=tmp_path
    )
    assert bad.returncode == 2 and "bits=5" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "b.onnx").exists()


def test_rules_progress_plots_and_verify(tmp_path, model_path, capsys) -> None:
    out, plots = tmp_path / "q.onnx", tmp_path / "plots"
    argv = ["optimize", str(model_path), "-o", str(out), "--group-size", "32"]
    argv += ["--rule", "W2:bits=8", "--plots", str(plots), "--no-progress"]
    assert cli.main([*argv, "--target", "matmulnbits", "--verify", "-j", "2"]) == 0
    printed = capsys.readouterr().out
    assert "8/32" in printed and "4/32" in printed
    assert "verify: ONNX checker passed" in printed and "y: relative error" in printed
    assert (plots / "errors.png").stat().st_size > 0 and (plots / "hist_W1.png").exists()
