"""LearnTransformsPass: fold learned function-preserving transforms into the float weights."""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from adpq_onnx.config import AdpQConfig
from adpq_onnx.passes import _pairs
from adpq_onnx.passes._plan import QuantPlan, WeightPlan
from adpq_onnx.quant import transforms

logger = logging.getLogger(__name__)


class LearnTransformsPass(ir.passes.InPlacePass):
    """Learn and fold the transforms of ``config.transforms.kinds`` (none by default).

    Rules:
        1. ``attn``: for each value/output pair (`_pairs.attention_pairs`) an invertible
           head_dim × head_dim matrix per key/value head, ``mlp``: for each SwiGLU
           (`_pairs.swiglus`) a positive scale per hidden channel between up and down,
           ``norm``: for each normalization gain read only by planned MatMuls
           (`_pairs.norm_groups`) a positive scale per channel moved into the gain. Learned by
           `adpq_onnx.quant.transforms` against each weight's own bits / group size / α.
        2. The kinds run in that order; a weight in two places (v in a pair and a norm group)
           gets both, the second learned on the result of the first.
        3. The float function is unchanged (up to float rounding): only initializers change,
           each keeps its name, dtype and shape. The attention transform changes what the
           model stores in its KV cache (values are in the new basis), consistently for
           every step of the same model.
        4. A transform that does not lower its proxy is not applied. One line per applied
           transform goes to ``plan.transforms`` (proxy before → after).
    """

    def __init__(self, config: AdpQConfig, plan: QuantPlan) -> None:
        super().__init__()
        self.config = config
        self.plan = plan

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.plan.transforms.clear()
        kinds = self.config.transforms.kinds
        if not kinds:
            return ir.passes.PassResult(model, modified=False)
        modified = False
        if "attn" in kinds:
            for pair in _pairs.attention_pairs(self.plan):
                modified |= self._attention(pair)
        if "mlp" in kinds:
            for mlp in _pairs.swiglus(self.plan):
                modified |= self._mlp(mlp)
        if "norm" in kinds:
            for group in _pairs.norm_groups(self.plan):
                modified |= self._norm(group)
        return ir.passes.PassResult(model, modified=modified)

    def _quant(self, entry: WeightPlan) -> transforms.Quant:
        names = [entry.name, *(n.name for n in entry.nodes if n.name)]
        s = self.config.settings_for(names)
        return transforms.Quant(s.bits, s.group_size, s.outlier_ratio)

    def _attention(self, pair: _pairs.AttentionPair) -> bool:
        t = self.config.transforms
        b_v, b_o = _array(pair.v.weight), _array(pair.o.weight)
        fit = transforms.learn_attention_mix(
            b_v,
            b_o,
            pair.head_dim,
            self._quant(pair.v),
            self._quant(pair.o),
            t.steps,
            t.lr,
            t.objective,
        )
        if not self._note("attn", pair.v.name, fit):
            return False
        v, o = transforms.apply_attention_mix(b_v, b_o, fit.value)
        _store(pair.v.weight, v)
        _store(pair.o.weight, o)
        return True

    def _mlp(self, mlp: _pairs.SwiGLU) -> bool:
        t = self.config.transforms
        b_u, b_d = _array(mlp.up.weight), _array(mlp.down.weight)
        fit = transforms.learn_mlp_scale(
            b_u, b_d, self._quant(mlp.up), self._quant(mlp.down), t.steps, t.lr, t.objective
        )
        if not self._note("mlp", mlp.up.name, fit):
            return False
        s = fit.value
        _store(mlp.up.weight, b_u.astype(np.float64) / s[None, :])
        _store(mlp.down.weight, b_d.astype(np.float64) * s[:, None])
        return True

    def _norm(self, group: _pairs.NormGroup) -> bool:
        t = self.config.transforms
        arrays = [_array(e.weight) for e in group.weights]
        fit = transforms.learn_norm_scale(
            arrays, [self._quant(e) for e in group.weights], t.steps, t.lr
        )
        if not self._note("norm", str(group.gain.name), fit):
            return False
        s = fit.value
        _store(group.gain, _array(group.gain).astype(np.float64) / s)
        for entry, b in zip(group.weights, arrays, strict=True):
            _store(entry.weight, b.astype(np.float64) * s[:, None])
        return True

    def _note(self, kind: str, where: str, fit: transforms.Fitted) -> bool:
        if not fit.kept:
            logger.info("transform %s at %s not applied (proxy %.4g)", kind, where, fit.before)
            return False
        self.plan.transforms.append(f"{kind} {where}: proxy {fit.before:.4g} -> {fit.after:.4g}")
        return True


def _array(value: ir.Value) -> np.ndarray:
    assert value.const_value is not None
    return np.asarray(value.const_value.numpy())


def _store(value: ir.Value, data: np.ndarray) -> None:
    """Replace an initializer's data, keeping its name and dtype."""
    assert value.const_value is not None
    dtype = value.const_value.numpy().dtype
    value.const_value = ir.tensor(np.ascontiguousarray(data.astype(dtype)), name=value.name)
