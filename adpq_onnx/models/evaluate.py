"""Perplexity of an exported model on a text, and its KL divergence from a reference model.

Preprocessing and windowing, fixed so that numbers compare across runs:

1. Line endings are normalised with ``text.replace("\\r\\n", "\\n")`` (WikiText-2's raw files
   have Windows line endings); nothing else is changed.
2. The whole text is tokenized once, as the tokenizer does by default: a tokenizer that adds
   BOS (Llama / stories260K) puts one at the very start, none that does not (SmolLM2). This
   is the usual GPTQ / AWQ evaluation protocol.
3. Window k covers tokens [k·stride, k·stride + ctx); stride defaults to ctx
   (non-overlapping windows). Only complete windows are used, the first `windows` of them
   (all when None); a text shorter than ctx is one window.
4. Each window is one forward pass with an empty cache, batch 1. The first window scores its
   ctx − 1 next-token predictions; a later one scores its last min(stride, ctx − 1), so
   overlapping windows never score a token twice and each scored token sees at least
   ctx − stride tokens of context.

perplexity = exp(mean NLL over scored tokens). With a reference model, both run on the same
windows and kl = mean over the same tokens of KL(P_ref || P_model) in nats.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np

from adpq_onnx.errors import UserError
from adpq_onnx.models.runtime import LOGITS, ModelInfo, load_tokenizer, open_model


def normalise_text(text: str) -> str:
    """The one preprocessing step (see the module docstring)."""
    return text.replace("\r\n", "\n")


def window_spans(
    n_tokens: int, ctx: int, stride: int | None = None, windows: int | None = None
) -> list[tuple[int, int, int]]:
    """(start, end, first_scored) per window: tokens [start, end), targets [first_scored, end).

    Raises:
        UserError: ctx, stride or windows out of range, or fewer than two tokens.
    """
    stride = ctx if stride is None else stride
    if ctx < 2 or stride < 1 or (windows is not None and windows < 1):
        raise UserError(
            f"need ctx >= 2, stride >= 1, windows >= 1 (got {ctx}, {stride}, {windows})"
        )
    if n_tokens < 2:
        raise UserError(f"the text has {n_tokens} token(s); perplexity needs at least 2")
    if n_tokens <= ctx:
        return [(0, n_tokens, 1)]
    starts = range(0, n_tokens - ctx + 1, stride)
    if windows is not None:
        starts = starts[:windows]
    # The first window scores everything it can; later ones only targets not yet scored.
    return [(s, s + ctx, s + 1 if s == 0 else max(s + 1, s + ctx - stride)) for s in starts]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32 (the shift by the max keeps exp from overflowing)."""
    x = logits.astype(np.float32, copy=False)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class _Scorer:
    """One model's session, running a window and keeping its time."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.session, self.info = open_model(path)
        self.seconds = 0.0

    def log_probs(self, ids: np.ndarray, rows: slice) -> np.ndarray:
        start = time.perf_counter()
        logits = self.session.run([LOGITS], self.info.feeds(ids[None]))[0][0]
        self.seconds += time.perf_counter() - start
        return log_softmax(logits[rows])


def perplexity(
    model_path: str | os.PathLike[str],
    text: str,
    ctx: int = 512,
    windows: int | None = None,
    reference: str | os.PathLike[str] | None = None,
    *,
    stride: int | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    reference_cache: dict[Any, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Perplexity of `model_path` on `text` (and KL from `reference`), per the module docstring.

    Args:
        model_path: A model made by `adpq-onnx export`, possibly optimized since.
        text: Raw text; normalised here.
        ctx: Tokens per window.
        windows: Use the first N windows; None: all.
        reference: Another model with the same tokenizer (typically the float one).
        stride: Start-to-start distance of windows; None: ctx.
        tokenizer: Folder of the tokenizer; None: the model's folder.
        reference_cache: A dict the caller keeps across calls: the reference's log-probs of
            each window are stored there and reused (a benchmark scoring many models against
            one float model runs it once). Entries are ~4·ctx·vocab bytes each.

    Returns:
        perplexity, nll, tokens (scored), windows, ctx, stride, text_tokens, seconds (all of
        it), seconds_per_window (the model's forward passes); with a reference also kl,
        reference_perplexity, perplexity_change (relative) and
        reference_seconds_per_window.
    """
    begin = time.perf_counter()
    # Models first: a wrong path is then reported as such, not as a missing tokenizer.
    model = _Scorer(model_path)
    ref = _Scorer(reference) if reference is not None else None
    if ref is not None:
        _check_same_vocab(model.info, ref.info, model_path, reference)
    tok = load_tokenizer(model_path, tokenizer)
    ids = np.asarray(tok(normalise_text(text), verbose=False).input_ids, dtype=np.int64)
    spans = window_spans(len(ids), ctx, stride, windows)
    nll = ref_nll = kl = 0.0
    scored = 0
    for start, end, first in spans:
        window, targets = ids[start:end], ids[first:end]
        # Logit row i predicts token start + i + 1.
        rows = slice(first - start - 1, end - start - 1)
        picks = np.arange(len(targets))
        lp = model.log_probs(window, rows)
        nll -= float(lp[picks, targets].sum(dtype=np.float64))
        if ref is not None:
            key = (str(reference), start, end, first, window.tobytes())
            if reference_cache is not None and key in reference_cache:
                lp_ref = reference_cache[key]
            else:
                lp_ref = ref.log_probs(window, rows)
                if reference_cache is not None:
                    reference_cache[key] = lp_ref
            ref_nll -= float(lp_ref[picks, targets].sum(dtype=np.float64))
            kl += float((np.exp(lp_ref) * (lp_ref - lp)).sum(dtype=np.float64))
        scored += len(targets)
    result: dict[str, Any] = {
        "model": str(model_path),
        "perplexity": math.exp(nll / scored),
        "nll": nll / scored,
        "tokens": scored,
        "windows": len(spans),
        "ctx": ctx,
        "stride": ctx if stride is None else stride,
        "text_tokens": len(ids),
        "seconds_per_window": model.seconds / len(spans),
    }
    if ref is not None:
        result["reference"] = str(reference)
        result["reference_perplexity"] = math.exp(ref_nll / scored)
        result["perplexity_change"] = result["perplexity"] / result["reference_perplexity"] - 1
        result["kl"] = kl / scored
        result["reference_seconds_per_window"] = ref.seconds / len(spans)
    result["seconds"] = time.perf_counter() - begin
    return result


def _check_same_vocab(a: ModelInfo, b: ModelInfo, path_a: Any, path_b: Any) -> None:
    if a.vocab_size is not None and b.vocab_size is not None and a.vocab_size != b.vocab_size:
        raise UserError(
            f"{path_b}: vocabulary {b.vocab_size} differs from {path_a}'s {a.vocab_size}; "
            "KL needs the same tokenizer"
        )
