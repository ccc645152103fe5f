"""Find the compiled custom-op library and open ONNX Runtime sessions with it registered.

The library (custom_ops/, built by CMake) is looked for, in order, at:

    1. $ADPQ_LIB, a path to the library file; when it is set, nothing else is tried;
    2. _lib/ inside each directory of the `adpq_onnx` package: a wheel install, and an editable
       install, where scikit-build-core lists the install tree beside the sources in __path__;
    3. build/lib/ of the source checkout that `adpq_onnx` was imported from (a plain
       `cmake -S . -B build && cmake --build build`).

onnxruntime is imported only when a session is made, so importing this module is cheap.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adpq_onnx.errors import UserError

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

ENV_VAR = "ADPQ_LIB"
_REGISTERED_KEY = "adpq_onnx.custom_ops_library"  # session config entry marking registration
LIB_NAME = {"darwin": "libadpq_ort_ops.dylib", "win32": "adpq_ort_ops.dll"}.get(
    sys.platform, "libadpq_ort_ops.so"
)


class LibraryNotFoundError(UserError, FileNotFoundError):
    """The custom-op library is not built (or ADPQ_LIB points nowhere)."""


def _package_dirs() -> list[Path]:
    import adpq_onnx

    return [Path(p) for p in getattr(adpq_onnx, "__path__", [])]


def candidates() -> list[Path]:
    """Every place `library_path` looks, in order."""
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(env)]
    found = [d / "_lib" / LIB_NAME for d in _package_dirs()]
    found += [
        d.parent / "build" / "lib" / LIB_NAME
        for d in _package_dirs()
        if (d.parent / "pyproject.toml").is_file()  # a source checkout
    ]
    return list(dict.fromkeys(found))


def library_path() -> str:
    """The absolute path of libadpq_ort_ops.

    Raises:
        LibraryNotFoundError: it is not built; the message lists where it looked.
    """
    looked = candidates()
    for path in looked:
        if path.is_file():
            return str(path.resolve())
    where = "\n  ".join(str(p) for p in looked)
    how = (
        f"{ENV_VAR} is set but names no file"
        if os.environ.get(ENV_VAR)
        else "build it with `pip install .` (or `pip install -e .`), or run "
        f"`cmake -S . -B build && cmake --build build`, or set {ENV_VAR}"
    )
    raise LibraryNotFoundError(
        f"the adpq_onnx custom-op library is not built; looked at:\n  {where}\n{how}"
    )


def register(session_options: ort.SessionOptions) -> ort.SessionOptions:
    """Register the library's ops (domain adpq_onnx) on `session_options`; returns it.

    Idempotent: ORT refuses a session whose options carry the domain twice, so the options
    remember the registration in a session config entry.
    """
    try:
        session_options.get_session_config_entry(_REGISTERED_KEY)
        return session_options
    except RuntimeError:  # the entry is missing: not registered yet
        pass
    path = library_path()
    session_options.register_custom_ops_library(path)
    session_options.add_session_config_entry(_REGISTERED_KEY, path)
    return session_options


def _model_bytes(model: onnx.ModelProto) -> bytes:
    from onnx.external_data_helper import uses_external_data

    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            raise ValueError(
                f"initializer {tensor.name!r} keeps its data in an external file; pass the "
                "model's path to make_session instead of the ModelProto"
            )
    return model.SerializeToString()


def make_session(
    path_or_model: str | os.PathLike[str] | bytes | onnx.ModelProto,
    providers: list[Any] | None = None,
    session_options: ort.SessionOptions | None = None,
) -> ort.InferenceSession:
    """An InferenceSession with the custom ops registered.

    Args:
        path_or_model: a model file path, serialized model bytes, or an onnx.ModelProto (one
            whose tensors live in external files must be given by path).
        providers: ORT execution providers; CPUExecutionProvider by default.
        session_options: options to register the library on (a fresh one by default).

    Raises:
        LibraryNotFoundError: the library is not built.
    """
    import onnxruntime as ort

    options = register(session_options if session_options is not None else ort.SessionOptions())
    if isinstance(path_or_model, (bytes, bytearray)):
        source: str | bytes = bytes(path_or_model)
    elif isinstance(path_or_model, (str, os.PathLike)):
        source = os.fspath(path_or_model)
    else:
        source = _model_bytes(path_or_model)
    return ort.InferenceSession(
        source, sess_options=options, providers=providers or ["CPUExecutionProvider"]
    )
