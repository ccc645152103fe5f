"""Check an exported model against the PyTorch model it came from.

Two steps cover both uses of the graph: a prefill with an empty cache (past = 0), then one
more token fed with the prefill's present.* tensors as the cache. Both are compared with
PyTorch's logits on the whole sequence, so the second also checks the cache layout.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from adpq_onnx.errors import UserError
from adpq_onnx.models.runtime import LOGITS, open_model

# Max |ONNX Runtime - PyTorch| over the logits. float32 differs only by kernel order;
# float16 budgets are relative to the logits' magnitude, since one float16 ulp at 16 is 1/64
# (stories260K: 1e-3 of the largest logit).
MAX_ABS_DIFF_FLOAT32 = 1e-4
MAX_REL_DIFF_FLOAT16 = 1e-2
PREFILL_TOKENS = 7


def check_parity(model: Any, onnx_path: str | os.PathLike[str], seed: int = 0) -> dict[str, float]:
    """Compare logits; returns the max abs differences and the budget used.

    Raises:
        UserError: A difference exceeds the budget of the model's dtype.
    """
    import torch

    session, info = open_model(onnx_path)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, PREFILL_TOKENS + 1), generator=generator)
    with torch.no_grad():
        expected = model(input_ids=ids).logits.float().numpy()
    names = [LOGITS, *info.present_names()]
    prefill = session.run(names, info.feeds(ids[:, :PREFILL_TOKENS].numpy()))
    decode = session.run(names, info.feeds(ids[:, PREFILL_TOKENS:].numpy(), prefill[1:]))
    diffs = {
        "prefill": float(np.abs(prefill[0].astype(np.float32) - expected[:, :-1]).max()),
        "decode": float(np.abs(decode[0].astype(np.float32) - expected[:, -1:]).max()),
    }
    if info.cache_dtype == np.float16:
        budget = MAX_REL_DIFF_FLOAT16 * max(1.0, float(np.abs(expected).max()))
    else:
        budget = MAX_ABS_DIFF_FLOAT32
    worst = max(diffs.values())
    if not worst <= budget:
        raise UserError(
            f"{onnx_path}: ONNX Runtime logits differ from PyTorch's by {worst:.3g} "
            f"(prefill {diffs['prefill']:.3g}, decode {diffs['decode']:.3g}; budget {budget:.3g})"
        )
    return {**diffs, "budget": budget}
