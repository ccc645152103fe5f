"""adpq-onnx: calibration-free AdpQ low-bit weight quantization of LLMs, as an ONNX compiler.

Public API (imported lazily, so that `import adpq_onnx` stays cheap):

    AdpQConfig                    the frozen, validated configuration
    optimize(model_or_path, config) -> onnx.ModelProto
    library_path() -> str         the compiled ONNX Runtime custom-op library
    make_session(path_or_model, providers=None) -> onnxruntime.InferenceSession
"""

from __future__ import annotations

from typing import Any

from adpq_onnx.config import AdpQConfig, ConfigError

__version__ = "0.2.0"

_LAZY = {
    "optimize": "adpq_onnx.pipeline",
    "library_path": "adpq_onnx.ops.library",
    "make_session": "adpq_onnx.ops.library",
}

__all__ = ["AdpQConfig", "ConfigError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adpq_onnx' has no attribute {name!r}")
