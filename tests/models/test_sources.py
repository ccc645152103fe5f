"""Locating sources and data; the PyPI fetch is checked without the network."""

from __future__ import annotations

import subprocess

import pytest

from adpq_onnx.errors import UserError
from adpq_onnx.models import sources


def test_resolve_gguf_file_folder_and_hf_folder(tmp_path):
    gguf = tmp_path / "one" / "m.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"")
    assert sources.resolve_source(str(gguf)) == (gguf.parent, "m.gguf")
    assert sources.resolve_source(str(gguf.parent)) == (gguf.parent, "m.gguf")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert sources.resolve_source(str(hf)) == (hf, None)


@pytest.mark.parametrize("name", ["absent", "empty", "text.txt"])
def test_resolve_rejects_non_models(tmp_path, name):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.txt").write_text("x")
    with pytest.raises(UserError):
        sources.resolve_source(str(tmp_path / name))


def test_smollm2_uses_a_verified_cache_without_pip(tmp_path, monkeypatch):
    cached = tmp_path / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    cached.parent.mkdir()
    cached.write_bytes(b"model bytes")
    monkeypatch.setattr(sources, "SMOLLM2_SHA256", sources.sha256(cached))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip was called"))
    assert sources.smollm2_gguf(tmp_path) == cached


def test_smollm2_download_failure_is_a_user_error(tmp_path, monkeypatch):
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(UserError, match="No matching distribution"):
        sources.smollm2_gguf(tmp_path)
    assert not list((tmp_path / "smollm2").iterdir())  # nothing half-written left


def test_evaluation_text_falls_back_without_shared_data(tmp_path, monkeypatch):
    monkeypatch.setenv("ADPQ_SHARED_DATA", str(tmp_path / "nowhere"))
    text, what = sources.evaluation_text()
    assert text == sources.FALLBACK_TEXT and "built-in" in what


def test_read_text_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        sources.read_text(tmp_path / "absent.txt")
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="UTF-8"):
        sources.read_text(tmp_path / "bin")
