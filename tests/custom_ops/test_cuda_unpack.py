"""The CUDA kernels' bit unpacking (custom_ops/cuda/unpack.cuh) against the scalar reference.

unpack.cuh is __host__ __device__ code that compiles as plain C++ too, so this runs without a
GPU or nvcc: it builds custom_ops/cuda/test/unpack_test.cc with the C++ compiler and runs it
(every bit width on random blocks; the code-to-float trick for every code and zero point).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "custom_ops" / "cuda" / "test" / "unpack_test.cc"


def test_unpack_matches_reference(tmp_path: Path) -> None:
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler (CXX, c++ or g++)")
    if not SOURCE.is_file():
        pytest.skip(f"{SOURCE} is not in this checkout (installed package)")
    exe = tmp_path / "unpack_test"
    include = ROOT / "custom_ops"
    build = subprocess.run(
        [cxx, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{include / 'include'}",
         f"-I{include}", str(SOURCE), "-o", str(exe)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
