"""adpq_onnx.ops.library: finding the compiled library and opening sessions with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from adpq_onnx.ops import library


def test_missing_library_names_where_it_looked(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / library.LIB_NAME
    monkeypatch.setenv(library.ENV_VAR, str(missing))
    with pytest.raises(library.LibraryNotFoundError, match="ADPQ_LIB is set") as info:
        library.library_path()
    assert str(missing) in str(info.value)


def test_importing_does_not_load_onnxruntime():
    code = (
        "import sys, adpq_onnx, adpq_onnx.ops.library; "
        "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.requires_custom_ops
def test_library_path_is_the_built_library():
    path = Path(library.library_path())
    assert path.is_file() and path.name == library.LIB_NAME and path.is_absolute()


@pytest.mark.requires_custom_ops
def test_adpq_lib_overrides(monkeypatch):
    path = library.library_path()
    monkeypatch.setenv(library.ENV_VAR, path)
    assert library.library_path() == path


@pytest.mark.requires_custom_ops
def test_make_session_accepts_path_bytes_and_proto(adpq, rng, tmp_path):
    pw = adpq.quantized(rng, 96, 5, 4, 32)
    model, _ = adpq.one_node_model(np.float32, adpq.node_inputs(pw, None), adpq.attrs_of(pw))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    a = rng.standard_normal((2, 96)).astype(np.float32)
    ys = [
        library.make_session(src).run(None, {"A": a})[0]
        for src in (path, str(path), model.SerializeToString(), model)
    ]
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])


@pytest.mark.requires_custom_ops
def test_make_session_refuses_proto_with_external_data(adpq, rng, tmp_path):
    pw = adpq.quantized(rng, 96, 5, 4, 32)
    model, _ = adpq.one_node_model(np.float32, adpq.node_inputs(pw, None), adpq.attrs_of(pw))
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, size_threshold=0)
    external = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    with pytest.raises(ValueError, match="pass the model's path"):
        library.make_session(external)
    assert library.make_session(tmp_path / "m.onnx") is not None


@pytest.mark.requires_custom_ops
def test_register_is_idempotent(adpq, rng):
    import onnxruntime as ort

    pw = adpq.quantized(rng, 64, 3, 2, 32)
    model, _ = adpq.one_node_model(np.float32, adpq.node_inputs(pw, None), adpq.attrs_of(pw))
    options = library.register(library.register(ort.SessionOptions()))
    session = library.make_session(model, session_options=options)  # registers a third time
    a = rng.standard_normal((1, 64)).astype(np.float32)
    assert session.run(None, {"A": a})[0].shape == (1, 3)
