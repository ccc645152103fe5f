"""Greedy decoding through the KV cache agrees with recomputation and with PyTorch."""

from __future__ import annotations

import numpy as np

from adpq_onnx.cli import main
from adpq_onnx.models.generate import generate, greedy_tokens
from adpq_onnx.models.runtime import LOGITS, open_model

PROMPT = [1, 403, 407, 261, 378]  # "<s> Once upon a time" in stories260K's vocabulary
STEPS = 12


def _greedy_without_cache(session, info, ids, steps):
    ids = list(ids)
    for _ in range(steps):
        logits = session.run([LOGITS], info.feeds(np.asarray([ids])))[0]
        ids.append(int(np.argmax(logits[0, -1])))
    return ids[-steps:]


def test_cache_decoding_equals_recomputation(stories_export):
    session, info = open_model(stories_export.path)
    cached = greedy_tokens(session, info, PROMPT, STEPS, eos=None)
    assert cached == _greedy_without_cache(session, info, PROMPT, STEPS)


def test_matches_pytorch_greedy(stories_export, stories_torch):
    import torch

    model, _ = stories_torch
    session, info = open_model(stories_export.path)
    with torch.no_grad():
        out = model.generate(
            torch.tensor([PROMPT]), max_new_tokens=STEPS, do_sample=False, eos_token_id=None
        )
    assert greedy_tokens(session, info, PROMPT, STEPS, eos=None) == out[0, len(PROMPT) :].tolist()


def test_generate_text_and_cli(stories_export, capsys):
    text = generate(stories_export.path, "Once upon a time", max_new_tokens=8)
    assert text.strip()
    assert (
        main(["generate", str(stories_export.path), "--prompt", "Lily", "--max-new-tokens", "4"])
        == 0
    )
    assert capsys.readouterr().out.startswith("Lily")
