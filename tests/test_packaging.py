"""The installed layout: `passes/` ships as `adpq_onnx.passes`, never as a top-level `passes`.

These run in a subprocess from a temporary directory without PYTHONPATH, so that only what
is installed can be imported (not the checkout's top-level folders).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def _python(code: str, cwd, *, keep_path: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if not keep_path:
        env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def installed(tmp_path) -> None:
    done = _python("import adpq_onnx", tmp_path)
    if done.returncode != 0:
        pytest.skip("adpq_onnx is not installed (only importable through PYTHONPATH)")


def test_passes_is_only_a_subpackage(tmp_path, installed) -> None:
    editable = _python("import _editable_skbc_adpq_onnx", tmp_path)
    if editable.returncode == 0:
        # scikit-build-core's editable .pth puts the checkout root on sys.path, which exposes
        # the source folder passes/; a regular install (the README's test command) does not.
        pytest.skip("editable install: the checkout root is on sys.path")
    done = _python(
        """
        import importlib.util
        assert importlib.util.find_spec("passes") is None, "a top-level 'passes' is importable"
        from adpq_onnx.passes import ReplaceMatMulWithAdpQPass, SelectMatMulsPass
        from adpq_onnx.pipeline import build_pipeline
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr


def test_layers_import_one_way(tmp_path) -> None:
    """quant and formats are pure numpy: importing them loads no ONNX package (STYLE C.1)."""
    done = _python(
        """
        import sys
        import adpq_onnx.quant, adpq_onnx.formats
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "onnx_ir",
                       "onnxruntime", "onnxscript"))
        assert not heavy, heavy
        """,
        tmp_path,
        keep_path=True,
    )
    assert done.returncode == 0, done.stderr
