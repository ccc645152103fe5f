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
class Rule:
    """Per-layer settings: weights whose initializer or node name matches `pattern` use them.

    Attributes:
        pattern: Regex, searched (not fully matched) in the weight's and its nodes' names.
        bits: Bits for the matching weights; None keeps the config's.
        group_size: Group size for them; None keeps the config's.
        outlier_ratio: α for them; None keeps the config's.
    """

    pattern: str
    bits: int | None = None
    group_size: int | None = None
    outlier_ratio: float | None = None

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ConfigError(f"rule {self.pattern!r} is not a valid regex: {exc}") from None

    @classmethod
    def parse(cls, text: str) -> Rule:
        """``REGEX:bits=3,group_size=64,outlier_ratio=0.01`` (the CLI's ``--rule``)."""
        pattern, sep, settings = text.rpartition(":")
        if not sep or not pattern:
            raise ConfigError(f"rule {text!r}: expected REGEX:key=value[,key=value]")
        values: dict[str, Any] = {}
        for item in settings.split(","):
            key, eq, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not eq or key not in ("bits", "group_size", "outlier_ratio"):
                raise ConfigError(
                    f"rule {text!r}: {item!r} is not bits=, group_size= or outlier_ratio="
                )
            try:
                values[key] = float(value) if key == "outlier_ratio" else int(value)
            except ValueError:
                raise ConfigError(f"rule {text!r}: {key}={value!r} is not a number") from None
        return cls(pattern, **values)

    def matches(self, names: list[str]) -> bool:
        return any(re.search(self.pattern, n) for n in names)


@dataclasses.dataclass(frozen=True)
class LayerSettings:
    """The effective bits / group size / α of one weight, after the rules."""

    bits: int
    group_size: int
    outlier_ratio: float


RoundingMethod = Literal["nearest", "paired"]
TransformKind = Literal["norm", "mlp", "attn"]
TransformObjective = Literal["product", "weights"]
_TRANSFORM_KINDS = ("norm", "mlp", "attn")


@dataclasses.dataclass(frozen=True)
class RoundingConfig:
    """Options of the rounding step (`PairWeightsPass` + `QuantizeWeightsPass`).

    Attributes:
        method: ``nearest`` rounds every weight to its closest level; ``paired`` rounds with
            error feedback (GPTQ's update) against a proxy of the output error built from the
            weights the layer meets in the graph (attention value/output, SwiGLU gate/up/down;
            see `adpq_onnx.quant.proxies`). Weights with no partner round to nearest.
        damp: Added to the proxy's diagonal, relative to its mean.
        gain_aware: Build the proxies with the normalization gain γ in front of a block's
            weights (input x̂ ⊙ γ with x̂ white) instead of a white input.
    """

    method: RoundingMethod = "nearest"
    damp: float = 0.01
    gain_aware: bool = False

    def __post_init__(self) -> None:
        _check_choice("rounding.method", self.method, ("nearest", "paired"))
        if not 0.0 < self.damp <= 10.0:
            raise ConfigError(f"rounding.damp={self.damp} must be in (0, 10]")


@dataclasses.dataclass(frozen=True)
class TransformConfig:
    """Options of `LearnTransformsPass`: function-preserving transforms learned from weights.

    Attributes:
        kinds: Which transforms: ``norm`` (a per-channel scale moved from the weights read by
            a normalization into its gain), ``mlp`` (a per-channel scale between SwiGLU's up and
            down projections), ``attn`` (an invertible head_dim × head_dim matrix per key/value
            head between the value and output projections). All fold into existing weights:
            no node is added.
        steps: Optimizer steps per transform.
        lr: Adam's learning rate.
        objective: What ``attn`` and ``mlp`` minimize: ``product``, the quantization error of
            the pair's product (each weight's error weighted by its partner), or
            ``weights`` (default), each weight's own error in the original basis: on SmolLM2
            at 3 bits, with range search, attn gave −23 % perplexity with ``weights`` and −12 %
            with ``product`` (BENCHMARKS.md §5).
    """

    kinds: tuple[TransformKind, ...] = ()
    steps: int = 50
    lr: float = 0.005
    objective: TransformObjective = "weights"

    def __post_init__(self) -> None:
        kinds = tuple(self.kinds)
        object.__setattr__(self, "kinds", kinds)
        for kind in kinds:
            _check_choice("transforms.kinds", kind, _TRANSFORM_KINDS)
        if not isinstance(self.steps, int) or not 1 <= self.steps <= 100000:
            raise ConfigError(f"transforms.steps={self.steps} must be an integer in [1, 100000]")
        if not 0.0 < self.lr < 1.0:
            raise ConfigError(f"transforms.lr={self.lr} must be in (0, 1)")
        _check_choice("transforms.objective", self.objective, ("product", "weights"))


@dataclasses.dataclass(frozen=True)
class AdpQConfig:
    """How to quantize MatMul weights.

    The defaults (4-bit, groups of 128, α = 1 % int8 outliers per row, exact mode, a range
    search over 8 clippings) were chosen by measurement on SmolLM2-135M (BENCHMARKS.md):
    α = 1 % removed a third of the perplexity rise of plain min-max for 0.25 bits per weight;
    int8 outliers matched float16 ones at 0.06 fewer bits; ``shrink`` and the ``group`` scope
    were worse; γ does not matter in ``exact`` mode; the range search (fitted to the inliers,
    once the outliers are out) lowered perplexity at 3 bits by 16 % and at 4 bits slightly
    (KL by 8 %). Paired rounding and the learned transforms are off (§5 of BENCHMARKS.md).

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
        range_search: Candidate range shrink factors β ∈ [0.5, 1) tried per group; the grid
            with the least squared error over its inliers wins (0 = plain min-max).
        include: Regex; only weights whose initializer or node name matches are quantized.
        exclude: Regex; weights whose initializer or node name matches are left alone.
        min_size: Weights with fewer elements are left alone.
        target: ``adpq`` writes AdpQMatMul nodes (needs the op library); ``matmulnbits``
            writes stock ORT com.microsoft MatMulNBits with outliers folded into the grid.
        accuracy_level: Written on each AdpQMatMul (or, with target ``matmulnbits``,
            MatMulNBits) node, as in ORT's MatMulNBits: 0 computes in float32; 4 lets the CPU
            kernel quantize activations to int8 per group (VNNI).
        quantize_embeddings: Also quantize MatMuls whose weight is shared with a Gather
            (a tied embedding / lm_head). Off by default: embeddings stay at full precision.
        rules: Per-layer overrides; the first `Rule` whose pattern matches a weight (or one
            of its nodes) sets its bits, group size and α. Each result is validated like the
            config's own values.
        rounding: How codes are chosen on the grid (`RoundingConfig`).
        transforms: Learned function-preserving transforms applied before quantization
            (`TransformConfig`); none by default.
    """

    bits: int = 4
    group_size: int = 128
    outlier_ratio: float = 0.01
    gamma: float = 1.0
    lasso_scope: Scope = "row"
    outlier_mode: OutlierMode = "exact"
    outlier_dtype: OutlierDtype = "int8"
    range_search: int = 8
    include: str | None = None
    exclude: str | None = None
    min_size: int = 0
    target: Target = "adpq"
    accuracy_level: int = 0
    quantize_embeddings: bool = False
    rules: tuple[Rule, ...] = ()
    rounding: RoundingConfig = dataclasses.field(default_factory=RoundingConfig)
    transforms: TransformConfig = dataclasses.field(default_factory=TransformConfig)

    def __post_init__(self) -> None:
        rules = tuple(Rule(**r) if isinstance(r, dict) else r for r in self.rules)
        object.__setattr__(self, "rules", rules)
        if isinstance(self.rounding, dict):
            object.__setattr__(self, "rounding", RoundingConfig(**self.rounding))
        if isinstance(self.transforms, dict):
            object.__setattr__(self, "transforms", TransformConfig(**self.transforms))
        self._check_settings(self.bits, self.group_size, self.outlier_ratio)
        for rule in rules:
            where = f" (rule {rule.pattern!r})"
            self._check_settings(
                self.bits if rule.bits is None else rule.bits,
                self.group_size if rule.group_size is None else rule.group_size,
                self.outlier_ratio if rule.outlier_ratio is None else rule.outlier_ratio,
                where,
            )
        self._check_options()

    def _check_settings(self, bits: int, gs: int, ratio: float, where: str = "") -> None:
        if bits not in _BITS:
            raise ConfigError(f"bits={bits}{where} is not supported; choose one of {_BITS}")
        if not isinstance(gs, int) or gs < 32 or gs > 256 or gs % 32:
            raise ConfigError(f"group_size={gs}{where} must be a multiple of 32 in [32, 256]")
        if not 0.0 <= ratio < 0.5:
            raise ConfigError(f"outlier_ratio={ratio}{where} must be in [0, 0.5)")
        if self.target == "matmulnbits":
            if bits not in (2, 4, 8):
                raise ConfigError(f"target=matmulnbits supports bits 2, 4 and 8, not {bits}{where}")
            if gs & (gs - 1):
                raise ConfigError(
                    f"target=matmulnbits needs a power-of-2 group_size, not {gs}{where}"
                )

    def settings_for(self, names: list[str]) -> LayerSettings:
        """The bits / group size / α of a weight known by `names` (the first matching rule)."""
        for rule in self.rules:
            if rule.matches(names):
                return LayerSettings(
                    self.bits if rule.bits is None else rule.bits,
                    self.group_size if rule.group_size is None else rule.group_size,
                    self.outlier_ratio if rule.outlier_ratio is None else rule.outlier_ratio,
                )
        return LayerSettings(self.bits, self.group_size, self.outlier_ratio)

    def _check_options(self) -> None:
        if not self.gamma >= 0.0:
            raise ConfigError(f"gamma={self.gamma} must be >= 0")
        _check_choice("lasso_scope", self.lasso_scope, ("matrix", "row", "group"))
        _check_choice("outlier_mode", self.outlier_mode, ("shrink", "exact"))
        _check_choice("outlier_dtype", self.outlier_dtype, ("float16", "int8"))
        _check_choice("target", self.target, ("adpq", "matmulnbits"))
        if not isinstance(self.range_search, int) or not 0 <= self.range_search <= 64:
            raise ConfigError(f"range_search={self.range_search} must be an integer in [0, 64]")
        for name in ("include", "exclude"):
            pattern = getattr(self, name)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ConfigError(f"{name}={pattern!r} is not a valid regex: {exc}") from None
        if self.accuracy_level not in (0, 4):
            raise ConfigError(f"accuracy_level={self.accuracy_level} must be 0 or 4")
        if self.min_size < 0:
            raise ConfigError(f"min_size={self.min_size} must be >= 0")

    def replace(self, **changes: Any) -> AdpQConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """All fields plus the format ``version`` (rules as a list of dicts)."""
        data = dataclasses.asdict(self)
        data["rules"] = [dataclasses.asdict(r) for r in self.rules]
        data["transforms"]["kinds"] = list(self.transforms.kinds)
        return {"version": CONFIG_VERSION, **data}

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
