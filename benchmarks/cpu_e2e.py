"""End-to-end SmolLM2 tokens/s on the CPU: float, MatMulNBits 4-bit and AdpQ models, one run.

Greedy decoding with the KV cache (adpq_onnx.models.generate.greedy_tokens' protocol): a
prefill pass over --prompt-tokens tokens, then --decode-tokens single-token steps. Every
session: CPU EP, intra_op_num_threads = --threads (2), sequential, idle pool threads not
spinning (--spinning: ORT's default, which lets the idle sessions' threads take the cores from
the timed one). Rounds are interleaved across the models (each round runs every model once, in
a rotated order) and the median over rounds is reported, with the min-max spread.

Models (built into --workdir when missing):
    float         the exported model (`adpq-onnx export smollm2 -o <float>`)
    mnb4_b{B}_acc{L}  onnxruntime MatMulNBitsQuantizer, DEFAULT algorithm, 4-bit, block B,
                  accuracy_level L
    adpq{b}_acc{L}    `adpq-onnx optimize --bits b --group-size G`; accuracy_level 4 set on
                  every AdpQMatMul for the int8-activation variant

    python benchmarks/cpu_e2e.py --float /tmp/smol/model.onnx
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from adpq_onnx.models.runtime import LOGITS, ModelInfo
from adpq_onnx.ops import spec
from adpq_onnx.ops.library import make_session


def build_matmulnbits(src: Path, dst: Path, block: int, level: int) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    model = onnx.load(str(src))
    config = DefaultWeightOnlyQuantConfig(
        block_size=block, is_symmetric=False, accuracy_level=level
    )
    quantizer = MatMulNBitsQuantizer(model, algo_config=config)
    quantizer.process()
    out = quantizer.model.model
    out.ir_version = min(out.ir_version, 10)
    onnx.save(out, str(dst), save_as_external_data=True, location=dst.name + ".data")


def build_adpq(src: Path, dst: Path, bits: int, group_size: int) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "adpq_onnx",
            "optimize",
            str(src),
            "-o",
            str(dst),
            "--bits",
            str(bits),
            "--group-size",
            str(group_size),
            "--no-progress",
        ],
        check=True,
    )


def with_accuracy_level(src: Path, dst: Path, level: int) -> None:
    model = onnx.load(str(src))
    for node in model.graph.node:
        if node.domain == spec.DOMAIN and node.op_type == spec.OP_TYPE:
            for a in [a for a in node.attribute if a.name == "accuracy_level"]:
                node.attribute.remove(a)
            node.attribute.append(helper.make_attribute("accuracy_level", level))
    onnx.save(model, str(dst), save_as_external_data=True, location=dst.name + ".data")


def session(path: Path, threads: int, spinning: bool = False):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Several sessions live side by side here; with spinning on, the idle ones' pool threads
    # keep spinning after each run and steal the (few) cores from the one being timed.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = make_session(str(path), session_options=options)
    return sess, ModelInfo.from_session(sess, path)


def one_round(sess, info: ModelInfo, prompt: np.ndarray, decode: int) -> tuple[float, float, list]:
    """(prefill seconds, decode seconds per token, generated ids)."""
    names = [LOGITS, *info.present_names()]
    t0 = time.perf_counter()
    logits, *past = sess.run(names, info.feeds(prompt[None, :], None))
    t1 = time.perf_counter()
    ids = []
    token = int(np.argmax(logits[0, -1]))
    for _ in range(decode):
        ids.append(token)
        logits, *past = sess.run(names, info.feeds(np.asarray([[token]], np.int64), past))
        token = int(np.argmax(logits[0, -1]))
    t2 = time.perf_counter()
    return t1 - t0, (t2 - t1) / decode, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--float", type=Path, default=Path("/tmp/smol/model.onnx"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/adpq_e2e"))
    parser.add_argument("--bits", type=int, default=3)
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--nbits-blocks", default="32,64")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--spinning",
        action="store_true",
        help="let idle intra-op threads spin (ORT's default; off here: see session())",
    )
    parser.add_argument("--json")
    parser.add_argument("--build-only", action="store_true", help="make the models, time nothing")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    models = {"float": args.float}
    for block in (int(b) for b in args.nbits_blocks.split(",")):
        for level in (0, 4):
            path = args.workdir / f"mnb4_b{block}_acc{level}.onnx"
            if not path.exists():
                build_matmulnbits(args.float, path, block, level)
            models[path.stem] = path
    adpq = args.workdir / f"adpq{args.bits}_g{args.group_size}.onnx"
    if not adpq.exists():
        build_adpq(args.float, adpq, args.bits, args.group_size)
    models[f"adpq{args.bits}_acc0"] = adpq
    adpq4 = args.workdir / f"adpq{args.bits}_g{args.group_size}_acc4.onnx"
    if not adpq4.exists():
        with_accuracy_level(adpq, adpq4, 4)
    models[f"adpq{args.bits}_acc4"] = adpq4
    if args.build_only:
        return

    sessions = {name: session(path, args.threads, args.spinning) for name, path in models.items()}
    prompt = np.random.default_rng(0).integers(100, 20000, size=args.prompt_tokens)
    times = {name: ([], []) for name in sessions}
    agree = {}
    for sess, info in sessions.values():  # warm-up
        one_round(sess, info, prompt[:16], 4)
    ref_ids = None
    names = list(sessions)
    for rnd in range(args.rounds):
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            sess, info = sessions[name]
            pre, dec, ids = one_round(sess, info, prompt, args.decode_tokens)
            times[name][0].append(pre)
            times[name][1].append(dec)
            if name == "float":
                ref_ids = ids
            agree.setdefault(name, ids)
    print(
        f"SmolLM2: prefill {args.prompt_tokens} tokens, decode {args.decode_tokens} tokens, "
        f"{args.threads} threads, median of {args.rounds} interleaved rounds"
    )
    rows = []
    for name in names:
        pre, dec = times[name]
        p, d = statistics.median(pre), statistics.median(dec)
        same = sum(a == b for a, b in zip(agree[name], ref_ids or [], strict=False))
        row = {
            "model": name,
            "prefill_tok_s": args.prompt_tokens / p,
            "decode_tok_s": 1 / d,
            "prefill_spread_pct": (max(pre) - min(pre)) / p * 100,
            "decode_spread_pct": (max(dec) - min(dec)) / d * 100,
            "greedy_tokens_equal_to_float": same,
            "size_mb": sum(
                f.stat().st_size for f in models[name].parent.glob(models[name].name + "*")
            )
            / 1e6,
        }
        rows.append(row)
        print(
            f"  {name:16s} prefill {row['prefill_tok_s']:7.1f} tok/s "
            f"(±{row['prefill_spread_pct']:.0f}%)  decode {row['decode_tok_s']:6.1f} tok/s "
            f"(±{row['decode_spread_pct']:.0f}%)"
            f"  {row['size_mb']:.0f} MB  greedy = float for {same}/{args.decode_tokens}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
