"""pip builds the library into the package: a wheel holds adpq_onnx/_lib/, and an editable
install's library_path() finds it. Slow (two CMake builds of a copy of the checkout, with the
installed scikit-build-core and no build isolation), so marked `slow`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from adpq_onnx.ops import library

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", "build", "dist", ".pytest_cache", ".ruff_cache", ".mypy_cache", "_lib"}


def _source_files() -> list[str] | None:
    """Files git would put in an sdist (tracked or untracked-not-ignored), or None."""
    try:
        cmd = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
        out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def _pip(python: Path | str, *args: str, cwd: Path) -> None:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop(library.ENV_VAR, None)
    subprocess.run(
        [str(python), "-m", "pip", *args],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the checkout (with .ortdeps/ if present, so nothing is downloaded)."""
    pytest.importorskip("scikit_build_core")
    dest = tmp_path_factory.mktemp("src") / "adpq-onnx"
    files = _source_files()
    if files is None:
        shutil.copytree(
            ROOT, dest, symlinks=True, ignore=lambda d, names: [n for n in names if n in SKIP_DIRS]
        )
    else:
        for f in files:
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
        if (ROOT / ".ortdeps").is_dir():
            shutil.copytree(ROOT / ".ortdeps", dest / ".ortdeps", symlinks=True)
    if not (dest / "README.md").exists():  # the project metadata names it
        (dest / "README.md").write_text("# adpq-onnx\n")
    return dest


def test_wheel_holds_library_and_passes(checkout, tmp_path):
    _pip(
        sys.executable,
        "wheel",
        "--no-build-isolation",
        "--no-deps",
        "-w",
        str(tmp_path),
        ".",
        cwd=checkout,
    )
    (wheel,) = tmp_path.glob("adpq_onnx-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"adpq_onnx/_lib/{library.LIB_NAME}" in names
    assert "adpq_onnx/passes/__init__.py" in names
    assert not [n for n in names if n.startswith("passes/")]


def test_editable_install_finds_library(checkout, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    _pip(python, "install", "--no-build-isolation", "--no-deps", "-e", ".", cwd=checkout)
    code = "import adpq_onnx; print(adpq_onnx.library_path())"
    out = subprocess.run(
        [str(python), "-c", code],
        cwd=tmp_path,
        check=True,
        text=True,
        capture_output=True,
        env={k: v for k, v in os.environ.items() if k != library.ENV_VAR},
    ).stdout.strip()
    assert Path(out).is_file() and Path(out).name == library.LIB_NAME
    assert str(env_dir) in out  # the editable install's copy, not a build tree elsewhere
