"""CPU op benchmark: AdpQMatMul against ORT's MatMulNBits and the float32 MatMul, in one run.

For each weight shape K×N and each M, four or more models each run 8 MatMuls that all read the
same A[M, K] with 8 different weights (so that the weights stream from memory as in a real
model, not from cache):

    fp32        MatMul, float32 weights
    mnb4_acc0   com.microsoft.MatMulNBits, 4-bit, block 128, accuracy_level 0
    mnb4_acc4   the same with accuracy_level 4 (int8 activations)
    adpq{b}_acc0  adpq_onnx.AdpQMatMul, b-bit, group G, α outliers, float activations
    adpq{b}_acc4  the same with accuracy_level 4 (int8 activations)

All sessions: CPU EP, intra_op_num_threads = --threads (2), sequential. Timing: warm-up, then
--rounds rounds; in each round every model runs --inner times back to back, and the models'
order rotates between rounds (interleaved, so that noise from other work on the machine hits
all of them alike). Reported: the median over rounds of the time per MatMul, and the spread
(min-max over rounds, in % of the median). Weight-streaming rate at M = 1 is the bytes of one
weight over its time; the fraction is relative to the float32 MatMul's rate, which is the
streaming bandwidth the machine reaches.

    python benchmarks/cpu_ops.py                          # all shapes, M = 1, 16, 128
    python benchmarks/cpu_ops.py --shapes 4096x4096 --m 1 --json /tmp/ops.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from adpq_onnx.formats import pack
from adpq_onnx.ops import spec
from adpq_onnx.ops.library import make_session
from adpq_onnx.quant import quantize_weight

IR_VERSION = 10
OPSET = 21
CHAIN = 8  # MatMuls per model


@dataclass
class Variant:
    name: str
    model: onnx.ModelProto
    weight_bytes: int  # bytes of one weight's tensors
    session: ort.InferenceSession | None = None
    times: list[float] = field(default_factory=list)  # seconds per MatMul, one per round


def _chain(nodes: list, inits: list, k: int, n: int, opsets: list) -> onnx.ModelProto:
    """The benchmark graph: every node reads A[M, K] and writes its own Y{i}[M, N]."""
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("A", onnx.TensorProto.FLOAT, ["M", k])],
        [
            helper.make_tensor_value_info(f"Y{i}", onnx.TensorProto.FLOAT, ["M", n])
            for i in range(len(nodes))
        ],
        inits,
    )
    return helper.make_model(graph, ir_version=IR_VERSION, opset_imports=opsets)


def _float_model(weights: list[np.ndarray]) -> onnx.ModelProto:
    k, n = weights[0].shape
    inits = [numpy_helper.from_array(w, f"W{i}") for i, w in enumerate(weights)]
    nodes = [helper.make_node("MatMul", ["A", f"W{i}"], [f"Y{i}"]) for i in range(len(weights))]
    return _chain(nodes, inits, k, n, [helper.make_opsetid("", OPSET)])


def _matmulnbits_model(fp32: onnx.ModelProto, accuracy_level: int) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(
        block_size=128, is_symmetric=False, accuracy_level=accuracy_level
    )
    quantizer = MatMulNBitsQuantizer(
        onnx.ModelProto.FromString(fp32.SerializeToString()), algo_config=config
    )
    quantizer.process()
    model = quantizer.model.model
    model.ir_version = IR_VERSION
    return model


def _adpq_model(packed: list, accuracy_level: int) -> onnx.ModelProto:
    k, n = packed[0].k, packed[0].n
    nodes, inits = [], []
    for i, pw in enumerate(packed):
        names = ["A"]
        for name, arr in pw.tensors().items():
            inits.append(numpy_helper.from_array(arr, f"{name}{i}"))
            names.append(f"{name}{i}")
        if pw.outlier_scale is not None:  # outlier_scale comes after the (absent) bias
            names.insert(len(names) - 1, "")
        nodes.append(
            helper.make_node(
                spec.OP_TYPE,
                names,
                [f"Y{i}"],
                domain=spec.DOMAIN,
                K=k,
                N=n,
                bits=pw.bits,
                block_size=pw.group_size,
                accuracy_level=accuracy_level,
                **spec.layout_attrs(pw.bits),
            )
        )
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(spec.DOMAIN, spec.DOMAIN_VERSION)]
    return _chain(nodes, inits, k, n, opsets)


def _nbits_weight_bytes(model: onnx.ModelProto) -> int:
    return (
        sum(
            int(np.prod(t.dims)) * (1 if t.data_type == onnx.TensorProto.UINT8 else 4)
            for t in model.graph.initializer
        )
        // CHAIN
    )


def build_variants(
    k: int, n: int, bits: int, group_size: int, outlier_ratio: float, seed: int
) -> list[Variant]:
    rng = np.random.default_rng(seed)
    # Heavy-tailed weights, like LLM layers (and like the op tests).
    weights = [(rng.standard_t(df=4, size=(k, n)) * 0.02).astype(np.float32) for _ in range(CHAIN)]
    fp32 = _float_model(weights)
    packed = [
        pack(
            quantize_weight(
                np.ascontiguousarray(w.T),
                bits=bits,
                group_size=group_size,
                outlier_ratio=outlier_ratio,
            )
        )
        for w in weights
    ]
    out = [Variant("fp32", fp32, k * n * 4)]
    for level in (0, 4):
        model = _matmulnbits_model(fp32, level)
        out.append(Variant(f"mnb4_acc{level}", model, _nbits_weight_bytes(model)))
    for level in (0, 4):
        out.append(Variant(f"adpq{bits}_acc{level}", _adpq_model(packed, level), packed[0].nbytes))
    return out


def _session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # All variants' sessions live in this process: with ORT's default spinning, the idle
    # sessions' pool threads keep spinning after each run and take the two cores from the one
    # being timed (seen as ~30 % of profile samples and ±100 % spreads). Off for all alike.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return make_session(model, session_options=options)


def time_variants(
    variants: list[Variant], m: int, k: int, rounds: int, inner: int, threads: int, seed: int
) -> None:
    a = np.random.default_rng(seed + m).standard_normal((m, k)).astype(np.float32)
    for v in variants:
        v.times = []
        if v.session is None:
            v.session = _session(v.model, threads)
        for _ in range(3):
            v.session.run(None, {"A": a})
    for rnd in range(rounds):
        order = variants[rnd % len(variants) :] + variants[: rnd % len(variants)]
        for v in order:
            t0 = time.perf_counter()
            for _ in range(inner):
                v.session.run(None, {"A": a})
            v.times.append((time.perf_counter() - t0) / inner / CHAIN)


def accuracy(variants: list[Variant], k: int, seed: int) -> dict[str, float]:
    """Relative error (Frobenius) of each variant against the float32 MatMul at M = 16."""
    a = np.random.default_rng(seed).standard_normal((16, k)).astype(np.float32)
    ref = np.stack(variants[0].session.run(None, {"A": a}))
    return {
        v.name: float(
            np.linalg.norm(np.stack(v.session.run(None, {"A": a})) - ref) / np.linalg.norm(ref)
        )
        for v in variants
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="576x1536,1536x576,4096x4096")
    parser.add_argument("--m", default="1,16,128")
    parser.add_argument("--bits", type=int, default=3)
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--outlier-ratio", type=float, default=0.005)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--target-s",
        type=float,
        default=0.15,
        help="time per model per round (sets the inner repetitions)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    results = {
        "machine": platform.processor() or platform.machine(),
        "ort": ort.__version__,
        "threads": args.threads,
        "bits": args.bits,
        "group_size": args.group_size,
        "outlier_ratio": args.outlier_ratio,
        "rows": [],
    }
    for shape in args.shapes.split(","):
        k, n = (int(s) for s in shape.lower().split("x"))
        variants = build_variants(k, n, args.bits, args.group_size, args.outlier_ratio, args.seed)
        for m in (int(s) for s in args.m.split(",")):
            # Inner repetitions from a quick probe of the slowest model.
            time_variants(variants, m, k, 1, 1, args.threads, args.seed)
            slowest = max(v.times[0] for v in variants) * CHAIN
            inner = max(1, int(args.target_s / max(slowest, 1e-6)))
            time_variants(variants, m, k, args.rounds, inner, args.threads, args.seed)
            fp32 = statistics.median(variants[0].times)
            print(f"\nK={k} N={n} M={m}  ({args.rounds} rounds x {inner} runs, ms per MatMul)")
            for v in variants:
                med = statistics.median(v.times)
                spread = (max(v.times) - min(v.times)) / med * 100
                rate = v.weight_bytes / med / 1e9
                row = {
                    "k": k,
                    "n": n,
                    "m": m,
                    "variant": v.name,
                    "ms": med * 1e3,
                    "spread_pct": spread,
                    "vs_fp32": fp32 / med,
                    "weight_mb": v.weight_bytes / 1e6,
                    "weight_gbps": rate,
                }
                results["rows"].append(row)
                print(
                    f"  {v.name:12s} {med * 1e3:8.3f} ms  ±{spread:4.0f}%  "
                    f"{fp32 / med:5.2f}x fp32  {rate:6.1f} GB/s of weights"
                )
        err = accuracy(variants, k, args.seed)
        results.setdefault("rel_err", {})[shape] = err
        print(
            "  rel. error vs fp32 (M=16): "
            + ", ".join(f"{name} {e:.4f}" for name, e in err.items())
        )
        for v in variants:
            v.session = None
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
