"""Greedy decoding with the KV cache: one prefill pass over the prompt, then one token a step.

Each step feeds only the newest token with the previous step's present.* tensors as the
cache, so a step costs one token's compute; this also exercises the cache path of a
quantized model, which perplexity (empty cache only) does not.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from adpq_onnx.models.runtime import LOGITS, ModelInfo, load_tokenizer, open_model


def greedy_tokens(
    session: Any, info: ModelInfo, prompt_ids: list[int], max_new_tokens: int, eos: int | None
) -> list[int]:
    """The argmax continuation of `prompt_ids`: at most `max_new_tokens`, ending at `eos`."""
    names = [LOGITS, *info.present_names()]
    ids = np.asarray([prompt_ids], dtype=np.int64)
    past = None
    out: list[int] = []
    while len(out) < max_new_tokens:
        logits, *past = session.run(names, info.feeds(ids, past))
        token = int(np.argmax(logits[0, -1]))
        out.append(token)
        if token == eos:
            break
        ids = np.asarray([[token]], dtype=np.int64)
    return out


def generate(
    model_path: str | os.PathLike[str],
    prompt: str,
    max_new_tokens: int = 32,
    *,
    tokenizer: str | os.PathLike[str] | None = None,
    chat: bool = False,
) -> str:
    """Greedy continuation of `prompt` (the new text only, special tokens removed).

    Args:
        model_path: A model made by `adpq-onnx export`, possibly optimized since.
        prompt: The text to continue; tokenized as the tokenizer does by default (with BOS
            when it adds one).
        max_new_tokens: Upper bound on generated tokens; generation stops early at EOS.
        tokenizer: Folder of the tokenizer; None: the model's folder.
        chat: Wrap the prompt as one user turn with the tokenizer's chat template, for
            instruction-tuned models (SmolLM2-Instruct); ignored when it has none.
    """
    session, info = open_model(model_path)
    tok = load_tokenizer(model_path, tokenizer)
    if chat and tok.chat_template:
        turn = [{"role": "user", "content": prompt}]
        text = tok.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False).input_ids
    else:
        ids = tok(prompt).input_ids
    eos = info.token_id("eos_token_id")
    new = greedy_tokens(
        session, info, ids, max_new_tokens, tok.eos_token_id if eos is None else eos
    )
    # Decoding the new tokens alone would lose a leading space in SentencePiece vocabularies
    # ("▁there" decodes to "there" at the start of a text), so decode all and cut the prompt.
    head = tok.decode(ids, skip_special_tokens=True)
    full = tok.decode(ids + new, skip_special_tokens=True)
    return full[len(head) :] if full.startswith(head) else tok.decode(new, skip_special_tokens=True)
