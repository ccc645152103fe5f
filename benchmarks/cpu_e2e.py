"""End-to-end SmolLM2 tokens/s on the CPU: float, MatMulNBits 4-bit and AdpQ models, one run.

Greedy decoding with the KV cache (adpq_onnx.models.generate.greedy_tokens' protocol): a
prefill pass over --prompt-tokens tokens, then --decode-tokens single-token steps. Every
session: CPU EP, intra_op_num_threads = --threads (2), sequential. Rounds are interleaved across
the models (each round runs every model once, in a rotated order) and the median over rounds is
reported, with the min-max spread. Two ways to host the sessions:

    --mode isolated (default)  every (round, model) in a fresh process holding one session with
                  ORT's defaults -- idle pool threads spin between runs, as in a deployment;
                  a warm-up pass, then the timed one
    --mode shared   all sessions in this process, idle threads NOT spinning (with several
                  sessions side by side, spinning threads of idle sessions would take the cores
                  from the timed one); --spinning turns it back on

Models (built into --workdir when missing):
    float         the exported model (`adpq-onnx export smollm2 -o <float>`)
    mnb4_b{B}_acc{L}  onnxruntime MatMulNBitsQuantizer, DEFAULT algorithm, 4-bit, block B,
                  accuracy_level L
    adpq{b}_acc{L}    `adpq-onnx optimize --bits b --group-size G`; accuracy_level 4 set on
                  every AdpQMatMul for the int8-activation variant
  with --lm-head, also the tied lm_head quantized (the float32 lm_head, 576 x 49152, is the
  largest MatMul of the model; ORT's quantizer cannot reach it, as its weight is the embedding
  table behind a Transpose), both written by `adpq-onnx optimize --quantize-embeddings
  --accuracy-level 4`:
    mnb4_b{B}_lm_acc4  `--target matmulnbits --bits 4 --group-size B` (AdpQ's grid, outliers
                  folded in: the same MatMulNBits kernel as ORT's quantizer gives)
    adpq{b}_lm_acc4   `--bits b --group-size G`

    python benchmarks/cpu_e2e.py --float /tmp/smol/model.onnx --lm-head --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def build_adpq(src: Path, dst: Path, bits: int, group_size: int, *extra: str) -> None:
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
            *extra,
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
    # --mode shared: several sessions live side by side; with spinning on, the idle ones' pool
    # threads keep spinning after each run and steal the (few) cores from the one being timed.
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


def worker(path: Path, args: argparse.Namespace) -> None:
    """One isolated run: this process holds one session with ORT's defaults (spinning on)."""
    sess, info = session(path, args.threads, spinning=not args.no_spinning)
    prompt = _prompt(args.prompt_tokens)
    one_round(sess, info, prompt[:16], 4)  # warm-up
    pre, dec, ids = one_round(sess, info, prompt, args.decode_tokens)
    print(json.dumps({"prefill_s": pre, "decode_s": dec, "ids": ids}))


def _prompt(tokens: int) -> np.ndarray:
    return np.random.default_rng(0).integers(100, 20000, size=tokens)


def run_isolated(path: Path, args: argparse.Namespace) -> tuple[float, float, list]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        str(path),
        "--threads",
        str(args.threads),
        "--prompt-tokens",
        str(args.prompt_tokens),
        "--decode-tokens",
        str(args.decode_tokens),
    ]
    if args.no_spinning:
        cmd.append("--no-spinning")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    return res["prefill_s"], res["decode_s"], res["ids"]


def build_models(args: argparse.Namespace) -> dict[str, Path]:
    args.workdir.mkdir(parents=True, exist_ok=True)
    models = {"float": args.float}
    blocks = [int(b) for b in args.nbits_blocks.split(",")]
    for block in blocks:
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
    if args.lm_head:
        lm = ("--quantize-embeddings", "--accuracy-level", "4")
        for block in blocks:
            path = args.workdir / f"mnb4_b{block}_lm_acc4.onnx"
            if not path.exists():
                build_adpq(args.float, path, 4, block, "--target", "matmulnbits", *lm)
            models[path.stem] = path
        path = args.workdir / f"adpq{args.bits}_g{args.group_size}_lm_acc4.onnx"
        if not path.exists():
            build_adpq(args.float, path, args.bits, args.group_size, *lm)
        models[f"adpq{args.bits}_lm_acc4"] = path
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--float", type=Path, default=Path("/tmp/smol/model.onnx"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/adpq_e2e"))
    parser.add_argument("--bits", type=int, default=3)
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--nbits-blocks", default="32,64")
    parser.add_argument("--lm-head", action="store_true", help="also the tied lm_head quantized")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mode", choices=("isolated", "shared"), default="isolated")
    parser.add_argument(
        "--spinning",
        action="store_true",
        help="--mode shared: let idle intra-op threads spin (ORT's default; off there)",
    )
    parser.add_argument(
        "--no-spinning", action="store_true", help="--mode isolated: idle threads do not spin"
    )
    parser.add_argument("--models", help="comma-separated names: time only these")
    parser.add_argument("--json")
    parser.add_argument("--build-only", action="store_true", help="make the models, time nothing")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args)
        return

    models = build_models(args)
    if args.build_only:
        return
    if args.models:
        wanted = args.models.split(",")
        unknown = sorted(set(wanted) - set(models))
        if unknown:
            parser.error(f"--models: unknown {unknown}; known: {sorted(models)}")
        models = {name: models[name] for name in wanted}
    prompt = _prompt(args.prompt_tokens)
    if args.mode == "shared":
        sessions = {name: session(p, args.threads, args.spinning) for name, p in models.items()}
        for sess, info in sessions.values():  # warm-up
            one_round(sess, info, prompt[:16], 4)

        def run(name: str) -> tuple[float, float, list]:
            sess, info = sessions[name]
            return one_round(sess, info, prompt, args.decode_tokens)
    else:

        def run(name: str) -> tuple[float, float, list]:
            return run_isolated(models[name], args)

    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in models}
    agree: dict[str, list] = {}
    ref_ids = None
    names = list(models)
    for rnd in range(args.rounds):
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            pre, dec, ids = run(name)
            times[name][0].append(pre)
            times[name][1].append(dec)
            if name == "float":
                ref_ids = ids
            agree.setdefault(name, ids)
    spinning = args.spinning if args.mode == "shared" else not args.no_spinning
    print(
        f"SmolLM2: prefill {args.prompt_tokens} tokens, decode {args.decode_tokens} tokens, "
        f"{args.threads} threads, {args.mode} sessions, spinning {'on' if spinning else 'off'}, "
        f"median of {args.rounds} interleaved rounds"
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
            "decode_tok_s_rounds": [1 / t for t in dec],
            "greedy_tokens_equal_to_float": same,
            "size_mb": sum(
                f.stat().st_size for f in models[name].parent.glob(models[name].name + "*")
            )
            / 1e6,
        }
        rows.append(row)
        print(
            f"  {name:18s} prefill {row['prefill_tok_s']:7.1f} tok/s "
            f"(±{row['prefill_spread_pct']:.0f}%)  decode {row['decode_tok_s']:6.1f} tok/s "
            f"(±{row['decode_spread_pct']:.0f}%)"
            f"  {row['size_mb']:.0f} MB  greedy = float for {same}/{args.decode_tokens}"
        )
    if args.json:
        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": platform.processor() or platform.machine(),
            "cpu": _cpu_name(),
            "mode": args.mode,
            "spinning": spinning,
            "threads": args.threads,
            "rounds": args.rounds,
            "onnxruntime": ort.__version__,
            "env": {k: v for k, v in os.environ.items() if k.startswith("ADPQ_")},
        }
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    main()
