"""Perplexity and KL: the windowing rules, and agreement with PyTorch's loss."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from adpq_onnx.cli import main
from adpq_onnx.errors import UserError
from adpq_onnx.models.evaluate import log_softmax, normalise_text, perplexity, window_spans

# Relative difference allowed between ORT's and PyTorch's mean NLL in float32.
MAX_REL_NLL_DIFF = 1e-4


def test_non_overlapping_windows_score_ctx_minus_one_each():
    assert window_spans(10, 4) == [(0, 4, 1), (4, 8, 5)]
    assert window_spans(10, 4, windows=1) == [(0, 4, 1)]


def test_overlapping_windows_score_each_target_once():
    spans = window_spans(20, 8, stride=3)
    scored = [t for _, end, first in spans for t in range(first, end)]
    assert scored == sorted(set(scored))
    assert scored[0] == 1 and scored == list(range(1, spans[-1][1]))


def test_short_text_is_one_window():
    assert window_spans(3, 512) == [(0, 3, 1)]


@pytest.mark.parametrize("args", [(1, 4), (10, 1), (10, 4, 0), (10, 4, None, 0)])
def test_window_errors(args):
    with pytest.raises(UserError):
        window_spans(*args)


def test_log_softmax_is_normalised_and_stable():
    x = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    lp = log_softmax(x)
    assert np.isfinite(lp).all()
    np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0, rtol=1e-6)


def test_normalise_text_only_fixes_line_endings():
    assert normalise_text("a\r\nb\rc\n") == "a\nb\rc\n"


def test_perplexity_matches_pytorch_loss(stories_export, stories_torch, story_text):
    import torch

    model, tok = stories_torch
    r = perplexity(stories_export.path, story_text, ctx=128, windows=3)
    ids = tok(normalise_text(story_text)).input_ids
    losses = []
    for start, end, _ in window_spans(len(ids), 128, windows=3):
        x = torch.tensor([ids[start:end]])
        with torch.no_grad():
            losses.append(model(input_ids=x, labels=x).loss.item())
    assert (r["windows"], r["tokens"]) == (3, 3 * 127)
    assert math.isfinite(r["perplexity"])
    assert r["nll"] == pytest.approx(np.mean(losses), rel=MAX_REL_NLL_DIFF)


def test_kl_of_a_model_against_itself_is_zero(stories_export, story_text):
    r = perplexity(
        stories_export.path, story_text, ctx=64, windows=2, reference=stories_export.path
    )
    assert abs(r["kl"]) < 1e-6
    assert r["perplexity_change"] == pytest.approx(0.0, abs=1e-9)
    assert r["reference_perplexity"] == pytest.approx(r["perplexity"])


def test_cli_json(stories_export, shared_data, capsys):
    text = shared_data / "tinystories-valid-sample.txt"
    argv = ["eval", str(stories_export.path), "--text", str(text), "--ctx", "64", "--windows", "2"]
    assert main([*argv, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"perplexity", "tokens", "windows", "seconds"} <= set(r)
    assert (r["windows"], r["tokens"]) == (2, 126)


def test_missing_tokenizer_is_a_user_error(stories_export, tmp_path, story_text):
    with pytest.raises(UserError, match="no tokenizer"):
        perplexity(stories_export.path, story_text, tokenizer=tmp_path)
