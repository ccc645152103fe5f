"""QuantizeWeightsPass: quantize and pack every weight in the plan, once each."""

from __future__ import annotations

import logging
import multiprocessing
import typing
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

import numpy as np
import onnx_ir as ir

from adpq_onnx.config import AdpQConfig
from adpq_onnx.passes import _match
from adpq_onnx.passes._plan import QuantPlan, WeightPlan, node_label
from adpq_onnx.passes._quantize_job import FileSlice, Job, Proxy, Result, run_job
from adpq_onnx.report import LayerReport

logger = logging.getLogger(__name__)

_STAGE = "quantize_weights"
# Where packed tensors go: (name, array) -> the tensor to register (in memory by default).
Sink = Callable[[str, np.ndarray], ir.TensorProtocol]


class QuantizeWeightsPass(ir.passes.InPlacePass):
    """Quantize each planned weight B[K, N] and add its packed tensors as initializers.

    Rules:
        1. Each weight in ``plan.weights`` is quantized once with `adpq.quantize_weight` on
           Bᵀ (rows = output channels), with the bits / group size / α of the first matching
           ``config.rules`` entry, however many MatMuls read it.
        2. ``target="adpq"`` packs it with `formats.packed` (codes .. outlier_scale);
           ``target="matmulnbits"`` folds the outliers into the inlier grid and packs it with
           `formats.matmulnbits` (B, scales in A's dtype, zero_points).
        3. Its packed tensors become initializers ``<weight>.<target>.<tensor>`` (made unique if
           taken), recorded in the plan in the op's input order; they stay unread until the
           replace pass wires them, and `CleanupPass` drops any left over.
        4. A weight the quantizer rejects (NaN / Inf) is dropped from the plan, its nodes are
           recorded as skipped with the quantizer's message, and it is listed in
           ``plan.rejected``.
        5. A weight held in an external-data file is read from it (not memory-mapped) only
           while it is quantized; with ``jobs > 1`` weights are quantized in that many
           processes. Packed tensors go to `sink` as soon as they exist (e.g. straight into
           the output's data file), so memory stays near the largest weight.
        6. A weight with a proxy in ``plan.proxies`` (`PairWeightsPass`) is rounded against it
           (target ``adpq`` only); its partners are read as they are now (float).
        7. Per weight it records K, N, outliers, bits per weight, the relative Frobenius
           error of what is stored (and of AdpQ with its outliers), the LASSO cut and a
           histogram of the weight.
    """

    def __init__(
        self,
        config: AdpQConfig,
        plan: QuantPlan,
        *,
        jobs: int = 1,
        sink: Sink | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.plan = plan
        self.jobs = max(1, jobs)
        self.sink = sink
        self.progress = progress
        self._inits: typing.Mapping[str, ir.Value] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.plan.forget(_STAGE)
        self._inits = model.graph.initializers  # partners that are not weights (gains)
        names = _match.NameScope(model.graph)
        todo = [e for e in self.plan.weights.values() if not e.inputs]
        added = False
        with _progress_bar(todo, self.progress) as bar:
            for entry, result in self._results(todo):
                bar.update(_size(entry))
                bar.set_postfix_str(entry.name[-40:], refresh=False)
                if isinstance(result, ValueError):
                    self._reject(entry, result)
                    continue
                self._record(entry, result)
                self._add_initializers(model.graph, entry, result, names)
                added = True
        return ir.passes.PassResult(model, modified=added)

    def _results(self, todo: list[WeightPlan]) -> Iterator[tuple[WeightPlan, Result | ValueError]]:
        """(entry, result) as each weight is done; in this process, or in a pool of `jobs`."""
        if self.jobs == 1 or len(todo) < 2:
            for entry in todo:
                yield entry, _try_job(self._job(entry))
            return
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        queue = iter(todo)
        pending: dict[Future[Result | ValueError], WeightPlan] = {}
        with ProcessPoolExecutor(self.jobs, mp_context=ctx) as pool:
            # A bounded window: in-memory weights are copied to the workers only when due.
            for entry in [e for _, e in zip(range(self.jobs + 1), queue, strict=False)]:
                pending[pool.submit(_try_job, self._job(entry))] = entry
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    entry = pending.pop(future)
                    following = next(queue, None)
                    if following is not None:
                        pending[pool.submit(_try_job, self._job(following))] = following
                    yield entry, future.result()

    def _job(self, entry: WeightPlan) -> Job:
        tensor = entry.weight.const_value
        assert tensor is not None
        names = [entry.name, *(n.name for n in entry.nodes if n.name)]
        t = _match.activation_dtype(entry.nodes[0])
        return Job(
            name=entry.name,
            source=_source(tensor),
            settings=self.config.settings_for(names),
            config=self.config,
            scale_dtype="float16" if t == ir.DataType.FLOAT16 else "float32",
            proxy=self._proxy(entry.name),
        )

    def _proxy(self, name: str) -> Proxy | None:
        spec = self.plan.proxies.get(name)
        if spec is None:
            return None
        partners = []
        for arg, partner in spec.partners:
            entry = self.plan.weights.get(partner)
            value = entry.weight if entry is not None else self._inits.get(partner)
            if value is None or value.const_value is None:
                return None  # the partner was rejected: round to nearest
            partners.append((arg, _source(value.const_value)))
        return Proxy(spec.kind, tuple(partners), spec.dims, spec.side)

    def _reject(self, entry: WeightPlan, error: ValueError) -> None:
        del self.plan.weights[entry.name]
        self.plan.rejected.append(entry.name)
        for node in entry.nodes:
            self.plan.skip(_STAGE, node, f"weight rejected: {error}", entry.name)

    def _record(self, entry: WeightPlan, r: Result) -> None:
        tensor = entry.weight.const_value
        assert tensor is not None
        k, n = r.attrs["K"], r.attrs["N"]
        entry.attrs = dict(r.attrs)
        entry.layer = LayerReport(
            name=entry.name,
            nodes=tuple(node_label(node) for node in entry.nodes),
            K=k,
            N=n,
            bits=r.attrs["bits"],
            group_size=r.attrs["block_size"],
            nnz=r.nnz,
            outlier_fraction=r.nnz / (k * n),
            bits_per_weight=r.bits_per_weight,
            weight_rel_error=r.weight_rel_error,
            seconds=r.seconds,
            original_bytes=int(tensor.nbytes),
            packed_bytes=sum(int(a.nbytes) for a in r.tensors.values()),
            adpq_rel_error=r.adpq_rel_error,
            threshold=r.threshold,
            histogram=r.histogram,
        )
        logger.debug("quantized %s [%d, %d]: rel. error %.4f", entry.name, k, n, r.weight_rel_error)

    def _add_initializers(
        self, graph: ir.Graph, entry: WeightPlan, result: Result, names: _match.NameScope
    ) -> None:
        for key, array in result.tensors.items():
            name = names.fresh(f"{entry.name}.{self.config.target}.{key}")
            tensor = self.sink(name, array) if self.sink else ir.tensor(array, name=name)
            entry.inputs[key] = _match.add_initializer(graph, name, tensor)


def _size(entry: WeightPlan) -> int:
    tensor = entry.weight.const_value
    return 0 if tensor is None else int(tensor.size)


def _try_job(job: Job) -> Result | ValueError:
    try:
        return run_job(job)
    except ValueError as exc:
        return exc


def _source(tensor: ir.TensorProtocol) -> np.ndarray | FileSlice:
    """What a worker needs to read a weight: its file range when external, else the array."""
    if isinstance(tensor, ir.ExternalTensor):
        return FileSlice(
            tensor.path, tensor.offset or 0, np.dtype(tensor.dtype.numpy()), tensor.shape.numpy()
        )
    return np.asarray(tensor.numpy())


def _progress_bar(todo: list[WeightPlan], enabled: bool):  # type: ignore[no-untyped-def]
    """One tqdm bar over the parameters to quantize (ETA by size), or a silent stand-in."""
    from tqdm import tqdm

    total = sum(_size(e) for e in todo)
    return tqdm(
        total=total,
        disable=not enabled,
        unit="param",
        unit_scale=True,
        desc="quantize",
        dynamic_ncols=True,
    )
