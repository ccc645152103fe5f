"""CUDA op benchmark: AdpQMatMul (2/3/4-bit) against ORT's MatMulNBits and the float16 MatMul.

Written without a GPU at hand: the models build and run on the CPU (--device cpu, small shapes)
to check the script, but no CUDA number in this repository comes from it yet (docs/CUDA.md).

Shapes K×N and the model built for each (every layer has its own copy of the weight tensors,
so the weights stream from HBM, not from L2):

    4096x4096      a chain of --layers (32) MatMuls, Y_i = Y_{i-1} · W_i: a 7B model's depth
    4096x11008     --parallel (8) MatMuls that all read the same A (Llama-7B's MLP up/gate and
    11008x4096     down projections); every output stays on the GPU

Variants, all float16 activations: fp16 (MatMul, cuBLAS), mnb4 (com.microsoft.MatMulNBits,
4-bit, block 128, asymmetric: the AdpQ 4-bit grid without outliers), adpq{b} (AdpQMatMul, b-bit,
group --group-size, α = --outlier-ratio int8 outliers).

Timing: A and every output bound to device memory (IOBinding); the whole model captured as a
CUDA graph and replayed (--no-cuda-graph: plain runs, which at M = 1 time ORT's per-node launch
overhead more than the kernels). Warm-up, then --rounds rounds, each replaying every variant
--inner times (interleaved, rotated). Reported per layer: the median µs over rounds, the spread
(min-max, % of median), and GB/s of bytes read (the layer's weight tensors + A). The relative
error of each variant's output against fp16's is printed as a sanity check.

    python benchmarks/gpu_ops.py                                  # all shapes, M = 1, 16, 512
    python benchmarks/gpu_ops.py --shapes 4096x4096 --m 1 --bits 4
    python benchmarks/gpu_ops.py --device cpu --shapes 256x512 --m 1,3 --layers 2 --parallel 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from adpq_onnx.formats import PackedWeight, matmulnbits, pack
from adpq_onnx.ops import spec
from adpq_onnx.ops.library import make_session
from adpq_onnx.quant import quantize_weight

IR_VERSION = 10
OPSET = 21
MNB_BLOCK = 128
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Weights:
    """One K×N weight in every form the variants read."""

    k: int
    n: int
    fp16: np.ndarray  # [K, N]
    nbits: matmulnbits.NBitsWeight
    packed: dict[int, PackedWeight]


@dataclass
class Variant:
    name: str
    model: bytes
    layer_bytes: int  # bytes of one layer's weight tensors
    session: ort.InferenceSession | None = None
    binding: object = None
    keep: list = field(default_factory=list)  # OrtValues the binding points at
    times: list[float] = field(default_factory=list)  # seconds per layer, one per round
    cuda_graph: bool = False


def _cache_file(cache: Path, k: int, n: int, args: argparse.Namespace) -> Path:
    return (
        cache / f"w{k}x{n}_b{args.bits}_g{args.group_size}_a{args.outlier_ratio}_s{args.seed}.npz"
    )


def make_weights(k: int, n: int, args: argparse.Namespace) -> Weights:
    """Heavy-tailed random W (rows = output channels, gain ~1 per layer), quantized once."""
    bits_list = [int(b) for b in args.bits.split(",")]
    path = _cache_file(Path(args.cache), k, n, args) if args.cache else None
    if path is not None and path.exists():
        z = np.load(path)
        packed = {}
        for b in bits_list:
            t = {name.split("/", 1)[1]: z[name] for name in z.files if name.startswith(f"{b}/")}
            packed[b] = PackedWeight(k=k, n=n, bits=b, group_size=args.group_size, **t)
        nb = matmulnbits.NBitsWeight(
            k=k,
            n=n,
            bits=4,
            block_size=MNB_BLOCK,
            b=z["mnb/B"],
            scales=z["mnb/scales"],
            zero_points=z["mnb/zero_points"],
        )
        return Weights(k, n, z["fp16"], nb, packed)
    rng = np.random.default_rng(args.seed)
    w = (rng.standard_t(df=4, size=(n, k)) / np.sqrt(2.0 * k)).astype(np.float32)
    packed = {
        b: pack(
            quantize_weight(
                w,
                bits=b,
                group_size=args.group_size,
                outlier_ratio=args.outlier_ratio,
                outlier_dtype="int8",
            )
        )
        for b in bits_list
    }
    q4 = quantize_weight(w, bits=4, group_size=MNB_BLOCK, outlier_ratio=0.0)
    nb = matmulnbits.pack(q4.codes, q4.scales, q4.zeros, 4, MNB_BLOCK)
    out = Weights(k, n, np.ascontiguousarray(w.T.astype(np.float16)), nb, packed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"fp16": out.fp16, **{f"mnb/{key}": v for key, v in nb.tensors().items()}}
        for b, pw in packed.items():
            arrays.update({f"{b}/{key}": v for key, v in pw.tensors().items()})
        np.savez(path, **arrays)
    return out


def _layer(variant: str, i: int, x: str, y: str, w: Weights) -> tuple[onnx.NodeProto, list]:
    """The node of layer i (input x, output y) and its initializers (fresh copies)."""
    if variant == "fp16":
        return helper.make_node("MatMul", [x, f"W{i}"], [y]), [
            numpy_helper.from_array(w.fp16, f"W{i}")
        ]
    if variant == "mnb4":
        inits = [numpy_helper.from_array(v, f"{key}{i}") for key, v in w.nbits.tensors().items()]
        node = helper.make_node(
            "MatMulNBits",
            [x, *(t.name for t in inits)],
            [y],
            domain="com.microsoft",
            K=w.k,
            N=w.n,
            bits=4,
            block_size=MNB_BLOCK,
        )
        return node, inits
    pw = w.packed[int(variant.removeprefix("adpq"))]
    inits = [numpy_helper.from_array(v, f"{key}{i}") for key, v in pw.tensors().items()]
    names = [x, *(t.name for t in inits)]
    if pw.outlier_scale is not None:  # outlier_scale comes after the (absent) bias
        names.insert(len(names) - 1, "")
    node = helper.make_node(
        spec.OP_TYPE,
        names,
        [y],
        domain=spec.DOMAIN,
        K=w.k,
        N=w.n,
        bits=pw.bits,
        block_size=pw.group_size,
        **spec.layout_attrs(pw.bits),
    )
    return node, inits


def build_model(variant: str, w: Weights, layers: int, chain: bool) -> onnx.ModelProto:
    f16 = onnx.TensorProto.FLOAT16
    nodes, inits, outputs = [], [], []
    for i in range(layers):
        x = ("A" if i == 0 else f"Y{i - 1}") if chain else "A"
        node, t = _layer(variant, i, x, f"Y{i}", w)
        nodes.append(node)
        inits += t
        if not chain or i == layers - 1:
            outputs.append(helper.make_tensor_value_info(f"Y{i}", f16, ["M", w.n]))
    graph = helper.make_graph(
        nodes, variant, [helper.make_tensor_value_info("A", f16, ["M", w.k])], outputs, inits
    )
    return helper.make_model(
        graph,
        ir_version=IR_VERSION,
        opset_imports=[
            helper.make_opsetid("", OPSET),
            helper.make_opsetid("com.microsoft", 1),
            helper.make_opsetid(spec.DOMAIN, spec.DOMAIN_VERSION),
        ],
    )


def layer_bytes(variant: str, w: Weights) -> int:
    if variant == "fp16":
        return int(w.fp16.nbytes)
    if variant == "mnb4":
        return w.nbits.nbytes
    return w.packed[int(variant.removeprefix("adpq"))].nbytes


def open_session(v: Variant, device: str, cuda_graph: bool) -> None:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if device == "cuda":
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        providers: list = [
            ("CUDAExecutionProvider", {"enable_cuda_graph": "1" if cuda_graph else "0"})
        ]
    else:
        providers = ["CPUExecutionProvider"]
    v.session = make_session(v.model, providers=providers, session_options=options)
    v.cuda_graph = cuda_graph


def bind(v: Variant, a: np.ndarray, n: int, device: str) -> None:
    """Binds A and every output to fixed buffers on the device (a CUDA graph needs both)."""
    assert v.session is not None
    binding = v.session.io_binding()
    a_value = ort.OrtValue.ortvalue_from_numpy(a, device, 0)
    binding.bind_ortvalue_input("A", a_value)
    v.keep = [a_value]
    for out in v.session.get_outputs():
        value = ort.OrtValue.ortvalue_from_shape_and_type([a.shape[0], n], np.float16, device, 0)
        binding.bind_ortvalue_output(out.name, value)
        v.keep.append(value)
    v.binding = binding


def prepare(v: Variant, a: np.ndarray, n: int, args: argparse.Namespace) -> None:
    """A session for this M with bound buffers, warmed up (and its CUDA graph captured)."""
    graph = args.device == "cuda" and args.cuda_graph
    try:
        open_session(v, args.device, graph)
        bind(v, a, n, args.device)
        for _ in range(3):
            v.session.run_with_iobinding(v.binding)  # type: ignore[union-attr]
    except Exception as e:  # a failed capture: measure plain runs instead, and say so
        if not graph:
            raise
        print(f"  {v.name}: CUDA graph failed ({str(e).splitlines()[0]}); timing plain runs")
        open_session(v, args.device, False)
        bind(v, a, n, args.device)
        for _ in range(3):
            v.session.run_with_iobinding(v.binding)  # type: ignore[union-attr]


def time_round(variants: list[Variant], rnd: int, inner: int, layers: int) -> None:
    for v in variants[rnd % len(variants) :] + variants[: rnd % len(variants)]:
        t0 = time.perf_counter()
        for _ in range(inner):
            v.session.run_with_iobinding(v.binding)  # type: ignore[union-attr]
        v.times.append((time.perf_counter() - t0) / inner / layers)


def rel_errors(variants: list[Variant]) -> dict[str, float]:
    """Frobenius error of each variant's first output against fp16's (same A)."""
    outs = {v.name: v.keep[1].numpy().astype(np.float32) for v in variants}
    ref = outs.get("fp16")
    if ref is None:
        return {}
    norm = float(np.linalg.norm(ref)) or 1.0
    return {name: float(np.linalg.norm(o - ref)) / norm for name, o in outs.items()}


def gpu_name() -> str:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="4096x4096,4096x11008,11008x4096")
    parser.add_argument("--m", default="1,16,512")
    parser.add_argument("--bits", default="2,3,4", help="AdpQ code widths")
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--outlier-ratio", type=float, default=0.01)
    parser.add_argument("--layers", type=int, default=32, help="chain length (square shapes)")
    parser.add_argument("--parallel", type=int, default=8, help="MatMuls per model (others)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--target-s", type=float, default=0.1, help="time per variant per round")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument(
        "--no-cuda-graph", dest="cuda_graph", action="store_false", help="plain runs"
    )
    parser.add_argument("--cache", help="folder to keep quantized weights in between runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--build-only", action="store_true", help="make the models, time nothing")
    parser.add_argument(
        "--json",
        default=str(RESULTS / f"gpu_ops_{datetime.date.today().isoformat()}.json"),
        help="results file ('' to skip)",
    )
    args = parser.parse_args()
    if args.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        parser.error(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider")

    results: dict = {
        "device": gpu_name() if args.device == "cuda" else platform.processor(),
        "ort": ort.__version__,
        "cuda_graph": args.cuda_graph and args.device == "cuda",
        "group_size": args.group_size,
        "outlier_ratio": args.outlier_ratio,
        "rows": [],
        "rel_err": {},
    }
    names = ["fp16", "mnb4"] + [f"adpq{b}" for b in args.bits.split(",")]
    for shape in args.shapes.split(","):
        k, n = (int(s) for s in shape.lower().split("x"))
        chain = k == n
        layers = args.layers if chain else args.parallel
        t0 = time.perf_counter()
        w = make_weights(k, n, args)
        variants = [
            Variant(
                name, build_model(name, w, layers, chain).SerializeToString(), layer_bytes(name, w)
            )
            for name in names
        ]
        print(f"K={k} N={n}: weights and models in {time.perf_counter() - t0:.1f} s")
        if args.build_only:
            continue
        for m in (int(s) for s in args.m.split(",")):
            a = np.random.default_rng(args.seed + m).standard_normal((m, k)).astype(np.float16)
            for v in variants:
                v.times = []
                prepare(v, a, n, args)
            # Inner repetitions from one probe of the slowest variant.
            time_round(variants, 0, 1, layers)
            slowest = max(v.times[0] for v in variants) * layers
            inner = max(1, int(args.target_s / max(slowest, 1e-7)))
            for v in variants:
                v.times = []
            for rnd in range(args.rounds):
                time_round(variants, rnd, inner, layers)
            err = rel_errors(variants)
            results["rel_err"][f"{shape}_m{m}"] = err
            kind = f"chain of {layers}" if chain else f"{layers} in parallel"
            print(f"\nK={k} N={n} M={m} ({kind}; {args.rounds} rounds x {inner}; per layer)")
            fp16 = statistics.median(variants[0].times)
            for v in variants:
                med = statistics.median(v.times)
                read = v.layer_bytes + a.nbytes
                row = {
                    "k": k,
                    "n": n,
                    "m": m,
                    "variant": v.name,
                    "us": med * 1e6,
                    "spread_pct": (max(v.times) - min(v.times)) / med * 100,
                    "vs_fp16": fp16 / med,
                    "weight_mb": v.layer_bytes / 1e6,
                    "read_gbps": read / med / 1e9,
                    "cuda_graph": v.cuda_graph,
                    "rel_err_vs_fp16": err.get(v.name),
                }
                results["rows"].append(row)
                print(
                    f"  {v.name:6s} {row['us']:9.2f} us  ±{row['spread_pct']:4.0f}%  "
                    f"{row['vs_fp16']:5.2f}x fp16  {row['read_gbps']:7.1f} GB/s read  "
                    f"err {err.get(v.name, float('nan')):.4f}"
                )
            for v in variants:
                v.session, v.binding, v.keep = None, None, []
    if args.json and not args.build_only:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
