"""Shared test fixtures and markers (registered in pyproject.toml).

requires_custom_ops   skipped, with the reason, when the compiled op library is not found
ADPQ_SHARED_DATA      set to ../shared/data beside the checkout when that folder exists
rng                   a numpy Generator seeded per test, so failures reproduce
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest

# Tests run against the installed package, whose location says nothing about the checkout:
# point it at ../shared/data beside this checkout (where CI puts the real data).
_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if _SHARED.is_dir():
    os.environ.setdefault("ADPQ_SHARED_DATA", str(_SHARED))


def _custom_ops_missing() -> str | None:
    """Why the op library cannot be used, or None when it can."""
    from adpq_onnx.ops.library import LibraryNotFoundError, library_path

    try:
        library_path()
    except LibraryNotFoundError as e:
        return str(e)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("requires_custom_ops") for item in items):
        return
    reason = _custom_ops_missing()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"requires_custom_ops: {reason}")
    for item in items:
        if item.get_closest_marker("requires_custom_ops"):
            item.add_marker(skip)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A Generator seeded from the test's id: stable across runs, different across tests."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
