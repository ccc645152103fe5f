"""Fixtures for the model tests: the shared data, and stories260K exported once per session.

The shared data folder is `../shared/data` beside the repository, or `$ADPQ_SHARED_DATA`;
tests that need it skip, with the reason, where it is absent. Export needs torch and
transformers (the `models` extra); those tests skip without them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

STORIES = "stories260K.gguf"
TINYSTORIES = "tinystories-valid-sample.txt"


def _shared_dir() -> Path | None:
    env = os.environ.get("ADPQ_SHARED_DATA")
    folder = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    return folder if (folder / STORIES).is_file() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = _shared_dir()
    if folder is None:
        pytest.skip("requires_shared: ../shared/data (or $ADPQ_SHARED_DATA) with stories260K")
    return folder


@pytest.fixture(scope="session")
def story_text(shared_data: Path) -> str:
    return (shared_data / TINYSTORIES).read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def stories_export(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """stories260K exported to float32 ONNX (with the parity check), once per session."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from adpq_onnx.models.export import export_model

    out = tmp_path_factory.mktemp("stories") / "model.onnx"
    return export_model(shared_data / STORIES, out)


@pytest.fixture(scope="session")
def stories_torch(shared_data: Path) -> Any:
    """The same model in PyTorch (eval mode, float32) and its tokenizer."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from adpq_onnx.models.export import load_pretrained

    return load_pretrained(shared_data, STORIES, "float32")
