"""QuantizeWeightsPass: AdpQ-quantize and pack every weight in the plan, once each."""

from __future__ import annotations

import logging
import time

import numpy as np
import onnx_ir as ir
from adpq_onnx.passes import _match
from adpq_onnx.passes._plan import QuantPlan, WeightPlan, node_label

from adpq_onnx import formats
from adpq_onnx.config import AdpQConfig
from adpq_onnx.quant import adpq
from adpq_onnx.report import LayerReport

logger = logging.getLogger(__name__)

_STAGE = "quantize_weights"


class QuantizeWeightsPass(ir.passes.InPlacePass):
    """Quantize each planned weight B[K, N] and add its packed tensors as initializers.

    Rules:
        1. Each weight in ``plan.weights`` is quantized once with `adpq.quantize_weight` on
           Bᵀ (rows = output channels) and packed with `formats.pack`, however many MatMuls
           read it.
        2. Its packed tensors become initializers ``<weight>.adpq.<tensor>`` (made unique if
           taken), recorded in the plan in the op's input order; they stay unread until
           `ReplaceMatMulWithAdpQPass` wires them, and `CleanupPass` drops any left over.
        3. A weight the quantizer rejects (NaN / Inf) is dropped from the plan and its nodes
           are recorded as skipped with the quantizer's message.
        4. Per weight it records K, N, outliers, bits per weight, the relative Frobenius error
           of the dequantized weight and the time taken.
    """

    def __init__(self, config: AdpQConfig, plan: QuantPlan) -> None:
        super().__init__()
        self.config = config
        self.plan = plan

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.plan.forget(_STAGE)
        names = _match.NameScope(model.graph)
        added = False
        for name, entry in list(self.plan.weights.items()):
            if entry.packed is not None:
                continue  # quantized by an earlier run of this pass
            try:
                self._quantize(entry)
            except ValueError as exc:
                del self.plan.weights[name]
                for node in entry.nodes:
                    self.plan.skip(_STAGE, node, f"weight rejected: {exc}", name)
                continue
            self._add_initializers(model.graph, entry, names)
            added = True
        return ir.passes.PassResult(model, modified=added)

    def _quantize(self, entry: WeightPlan) -> None:
        cfg = self.config
        tensor = entry.weight.const_value
        assert tensor is not None
        start = time.perf_counter()
        b = np.asarray(tensor.numpy()).astype(np.float32)  # [K, N]
        qw = adpq.quantize_weight(
            b.T,
            bits=cfg.bits,
            group_size=cfg.group_size,
            outlier_ratio=cfg.outlier_ratio,
            gamma=cfg.gamma,
            lasso_scope=cfg.lasso_scope,
            outlier_mode=cfg.outlier_mode,
            outlier_dtype=cfg.outlier_dtype,
            range_search=cfg.range_search,
        )
        entry.packed = formats.pack(qw)
        error = _relative_error(qw.dequantize(), b.T)
        k, n = b.shape
        entry.layer = LayerReport(
            name=entry.name,
            nodes=tuple(node_label(node) for node in entry.nodes),
            K=k,
            N=n,
            bits=cfg.bits,
            group_size=cfg.group_size,
            nnz=qw.nnz,
            outlier_fraction=qw.nnz / b.size,
            bits_per_weight=adpq.bits_per_weight(qw),
            weight_rel_error=error,
            seconds=time.perf_counter() - start,
            original_bytes=int(tensor.nbytes),
            packed_bytes=entry.packed.nbytes,
        )
        logger.debug("quantized %s [%d, %d]: rel. error %.4f", entry.name, k, n, error)

    def _add_initializers(
        self, graph: ir.Graph, entry: WeightPlan, names: _match.NameScope
    ) -> None:
        assert entry.packed is not None
        for key, array in entry.packed.tensors().items():
            name = names.fresh(f"{entry.name}.adpq.{key}")
            entry.inputs[key] = _match.add_initializer(graph, name, ir.tensor(array, name=name))


def _relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    norm = float(np.linalg.norm(exact))
    diff = float(np.linalg.norm(approx - exact))
    return diff / norm if norm > 0 else diff
