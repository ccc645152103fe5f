"""The one configuration object of a quantization run.

`AdpQConfig` is frozen and validated on construction; `to_dict` / `from_dict` carry a format
version so that the copy written into a quantized model's metadata (key `adpq_onnx.config`)
records exactly how the model was made.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Literal

from adpq_onnx.errors import UserError

CONFIG_VERSION = 1
METADATA_KEY = "adpq_onnx.config"

Scope = Literal["matrix", "row", "group"]
OutlierMode = Literal["shrink", "exact"]
OutlierDtype = Literal["float16", "int8"]
Target = Literal["adpq", "matmulnbits"]

_BITS = (2, 3, 4, 8)


class ConfigError(UserError, ValueError):
    """An option value that cannot be used; the message names the option."""


@dataclasses.dataclass(frozen=True)
class AdpQConfig:
    """How to quantize MatMul weights.

    Attributes:
        bits: Bits per inlier code: 2, 3, 4 or 8.
        group_size: Weights along K sharing one scale and zero point; a multiple of 32 in
            [32, 256]. The last group of a column may be shorter when K is not a multiple.
        outlier_ratio: Target fraction α of weights kept apart as outliers, in [0, 0.5).
            0 disables outliers (plain per-group min-max).
        gamma: Exponent γ of the adaptive-LASSO penalty λ/|w|^γ. It does not change which
            weights are outliers at a fixed α (the threshold on |w| is λ^(1/(1+γ))), only how
            much an outlier is shrunk in ``outlier_mode="shrink"``.
        lasso_scope: Where λ is solved for α: over the whole ``matrix``, per output ``row``
            (one column of the ONNX B[K, N]), or per ``group``.
        outlier_mode: ``shrink`` stores the adaptive-LASSO estimate ŵ and quantizes the
            residual w − ŵ with the inliers; ``exact`` stores w itself and gives its slot the
            code of zero.
        outlier_dtype: ``float16`` values, or ``int8`` codes with one float16 scale per column.
        range_search: Candidate range shrink factors β ∈ (0.5, 1) tried per group; the grid
            with the least squared error over its inliers wins (0 = plain min-max).
        include: Regex; only weights whose initializer or node name matches are quantized.
        exclude: Regex; weights whose initializer or node name matches are left alone.
        min_size: Weights with fewer elements are left alone.
        target: ``adpq`` writes AdpQMatMul nodes (needs the op library); ``matmulnbits``
            writes stock ORT com.microsoft MatMulNBits with outliers folded into the grid.
        quantize_embeddings: Also quantize MatMuls whose weight is shared with a Gather
            (a tied embedding / lm_head). Off by default: embeddings stay at full precision.
    """

    bits: int = 4
    group_size: int = 128
    outlier_ratio: float = 0.005
    gamma: float = 1.0
    lasso_scope: Scope = "row"
    outlier_mode: OutlierMode = "exact"
    outlier_dtype: OutlierDtype = "float16"
    range_search: int = 0
    include: str | None = None
    exclude: str | None = None
    min_size: int = 0
    target: Target = "adpq"
    quantize_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.bits not in _BITS:
            raise ConfigError(f"bits={self.bits} is not supported; choose one of {_BITS}")
        gs = self.group_size
        if not isinstance(gs, int) or gs < 32 or gs > 256 or gs % 32:
            raise ConfigError(f"group_size={gs} must be a multiple of 32 in [32, 256]")
        if not 0.0 <= self.outlier_ratio < 0.5:
            raise ConfigError(f"outlier_ratio={self.outlier_ratio} must be in [0, 0.5)")
        if not self.gamma >= 0.0:
            raise ConfigError(f"gamma={self.gamma} must be >= 0")
        _check_choice("lasso_scope", self.lasso_scope, ("matrix", "row", "group"))
        _check_choice("outlier_mode", self.outlier_mode, ("shrink", "exact"))
        _check_choice("outlier_dtype", self.outlier_dtype, ("float16", "int8"))
        _check_choice("target", self.target, ("adpq", "matmulnbits"))
        if self.target == "matmulnbits" and self.bits not in (2, 4, 8):
            raise ConfigError(f"target=matmulnbits supports bits 2, 4 and 8, not {self.bits}")
        if not isinstance(self.range_search, int) or not 0 <= self.range_search <= 64:
            raise ConfigError(f"range_search={self.range_search} must be an integer in [0, 64]")
        for name in ("include", "exclude"):
            pattern = getattr(self, name)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ConfigError(f"{name}={pattern!r} is not a valid regex: {exc}") from None
        if self.min_size < 0:
            raise ConfigError(f"min_size={self.min_size} must be >= 0")

    def replace(self, **changes: Any) -> AdpQConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """All fields plus the format ``version``."""
        return {"version": CONFIG_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdpQConfig:
        """Inverse of `to_dict`; rejects unknown versions and fields."""
        data = dict(data)
        version = data.pop("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ConfigError(f"config version {version} is not supported ({CONFIG_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
