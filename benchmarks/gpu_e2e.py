"""End-to-end decode tokens/s on the CUDA EP: float16, MatMulNBits 4-bit and AdpQ SmolLM2 models.

Written without a GPU at hand: the whole flow runs on the CPU (--device cpu, e.g. with
--source stories260k) to check the script, but no CUDA number in this repository comes from it
yet (docs/CUDA.md).

Models (built into --workdir when missing, all float16 activations and cache):
    float16      `adpq-onnx export SOURCE --dtype float16` (needs the `models` extra; on a
                 machine without network, put the SmolLM2 GGUF in the cache first, see
                 tools/gpu_session.sh), or --float PATH
    mnb4_g128    `adpq-onnx optimize --target matmulnbits --bits 4 --group-size 128
                 --outlier-ratio 0`: stock com.microsoft.MatMulNBits (ORT's CUDA kernel)
    adpq{b}_g{G} `adpq-onnx optimize --bits b --group-size G` for each b:G of --adpq

Greedy decoding with the KV cache kept on the device: every step binds the previous step's
present.* outputs (device OrtValues) as the next past_key_values.* inputs (IOBinding) and
copies only the logits back. A prefill pass over --prompt-tokens tokens, then --decode-tokens
single-token steps. Rounds are interleaved across the models (rotated order); the median over
rounds is reported, with the min-max spread, and how many greedy tokens equal float16's.

    python benchmarks/gpu_e2e.py                                   # SmolLM2, CUDA EP
    python benchmarks/gpu_e2e.py --device cpu --source stories260k --decode-tokens 8 --rounds 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from adpq_onnx.models.runtime import ATTENTION_MASK, INPUT_IDS, LOGITS, ModelInfo, past_name
from adpq_onnx.ops.library import make_session

RESULTS = Path(__file__).resolve().parent / "results"


def adpq_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "adpq_onnx", *args], check=True)


def build_models(args: argparse.Namespace) -> dict[str, Path]:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    src = Path(args.float) if args.float else work / "float16" / "model.onnx"
    if not src.exists():
        src.parent.mkdir(parents=True, exist_ok=True)
        adpq_cli("export", args.source, "--dtype", "float16", "-o", str(src))
    models = {"float16": src}
    mnb = work / "mnb4_g128" / "model.onnx"
    if not mnb.exists():
        mnb.parent.mkdir(parents=True, exist_ok=True)
        adpq_cli(
            "optimize", str(src), "-o", str(mnb), "--target", "matmulnbits", "--bits", "4",
            "--group-size", "128", "--outlier-ratio", "0", "--no-progress",
        )  # fmt: skip
    models["mnb4_g128"] = mnb
    for spec_ in args.adpq.split(","):
        bits, group = spec_.split(":")
        dst = work / f"adpq{bits}_g{group}" / "model.onnx"
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            adpq_cli(
                "optimize", str(src), "-o", str(dst), "--bits", bits, "--group-size", group,
                "--no-progress",
            )  # fmt: skip
        models[dst.parent.name] = dst
    return models


def open_session(path: Path, device: str) -> tuple[ort.InferenceSession, ModelInfo]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers: list = ["CPUExecutionProvider"]
    if device == "cuda":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    sess = make_session(str(path), providers=providers, session_options=options)
    return sess, ModelInfo.from_session(sess, path)


class Decoder:
    """Greedy decoding of one model with its cache on `device` (IOBinding)."""

    def __init__(self, sess: ort.InferenceSession, info: ModelInfo, device: str) -> None:
        self.sess, self.info, self.device = sess, info, device
        self.past_names = [
            past_name(i, kind) for i in range(info.num_layers) for kind in ("key", "value")
        ]
        self.present_names = info.present_names()

    def step(self, ids: np.ndarray, past: list | None, past_len: int) -> tuple[np.ndarray, list]:
        binding = self.sess.io_binding()
        binding.bind_cpu_input(INPUT_IDS, ids.astype(np.int64))
        binding.bind_cpu_input(ATTENTION_MASK, np.ones((1, past_len + ids.shape[1]), np.int64))
        for i, name in enumerate(self.past_names):
            if past is None:
                shape = (1, self.info.kv_heads, 0, self.info.head_dim)
                binding.bind_cpu_input(name, np.zeros(shape, self.info.cache_dtype))
            else:
                binding.bind_ortvalue_input(name, past[i])
        binding.bind_output(LOGITS, "cpu")
        for name in self.present_names:
            binding.bind_output(name, self.device)
        self.sess.run_with_iobinding(binding)
        outs = binding.get_outputs()
        return outs[0].numpy(), list(outs[1:])

    def run(self, prompt: np.ndarray, decode: int) -> tuple[float, float, list[int]]:
        """(prefill seconds, decode seconds per token, generated ids)."""
        t0 = time.perf_counter()
        logits, past = self.step(prompt[None, :], None, 0)
        t1 = time.perf_counter()
        length = len(prompt)
        token = int(np.argmax(logits[0, -1]))
        ids = []
        for _ in range(decode):
            ids.append(token)
            logits, past = self.step(np.asarray([[token]]), past, length)
            length += 1
            token = int(np.argmax(logits[0, -1]))
        t2 = time.perf_counter()
        return t1 - t0, (t2 - t1) / max(decode, 1), ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="smollm2", help="export SOURCE (smollm2, a GGUF..)")
    parser.add_argument("--float", help="a float16 model made by `adpq-onnx export`")
    parser.add_argument("--workdir", default="/tmp/adpq_gpu_e2e")
    parser.add_argument("--adpq", default="4:128,3:64", help="AdpQ variants as bits:group,...")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--build-only", action="store_true", help="make the models, time nothing")
    parser.add_argument(
        "--json",
        default=str(RESULTS / f"gpu_e2e_{datetime.date.today().isoformat()}.json"),
        help="results file ('' to skip)",
    )
    args = parser.parse_args()
    if args.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        parser.error(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider")

    models = build_models(args)
    if args.build_only:
        return
    decoders = {}
    for name, path in models.items():
        sess, info = open_session(path, args.device)
        if args.device == "cuda" and sess.get_providers()[0] != "CUDAExecutionProvider":
            raise SystemExit(f"{name}: the CUDA EP did not start ({sess.get_providers()})")
        decoders[name] = Decoder(sess, info, args.device)
    vocab = next(iter(decoders.values())).info.vocab_size or 100
    prompt = np.random.default_rng(0).integers(3, min(vocab, 20000), size=args.prompt_tokens)
    for dec in decoders.values():  # warm-up (and CUDA kernel loading)
        dec.run(prompt[:16], 4)
    times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in decoders}
    generated: dict[str, list[int]] = {}
    names = list(decoders)
    for rnd in range(args.rounds):
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            pre, dec, ids = decoders[name].run(prompt, args.decode_tokens)
            times[name][0].append(pre)
            times[name][1].append(dec)
            generated.setdefault(name, ids)
    print(
        f"{args.source} on {args.device}: prefill {args.prompt_tokens} tokens, decode "
        f"{args.decode_tokens} tokens, median of {args.rounds} interleaved rounds"
    )
    rows = []
    ref = generated.get("float16", [])
    for name in names:
        pre, dec = times[name]
        p, d = statistics.median(pre), statistics.median(dec)
        same = sum(a == b for a, b in zip(generated[name], ref, strict=False))
        row = {
            "model": name,
            "device": args.device,
            "prefill_tok_s": args.prompt_tokens / p,
            "decode_tok_s": 1 / d,
            "decode_ms_per_token": d * 1e3,
            "prefill_spread_pct": (max(pre) - min(pre)) / p * 100,
            "decode_spread_pct": (max(dec) - min(dec)) / d * 100,
            "greedy_tokens_equal_to_float16": same,
            "size_mb": sum(f.stat().st_size for f in models[name].parent.iterdir()) / 1e6,
        }
        rows.append(row)
        print(
            f"  {name:10s} prefill {row['prefill_tok_s']:8.1f} tok/s "
            f"(±{row['prefill_spread_pct']:.0f}%)  decode {row['decode_tok_s']:7.1f} tok/s "
            f"(±{row['decode_spread_pct']:.0f}%)  {row['size_mb']:6.1f} MB  "
            f"greedy = float16 for {same}/{args.decode_tokens}"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"ort": ort.__version__, "rows": rows}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
