"""Learned transforms: the torch quantizer mirrors AdpQ's, transforms keep the function, and a
transform is only returned when it lowers its proxy."""

from __future__ import annotations

import numpy as np
import pytest

from adpq_onnx.quant import adpq, transforms

torch = pytest.importorskip("torch")

Q3 = transforms.Quant(bits=3, group_size=64, outlier_ratio=0.02)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_fake_quant_matches_adpq() -> None:
    b = _rng().standard_normal((200, 32))  # B[K, N], K ragged against the groups
    fq = transforms.fake_quant(torch.tensor(b), Q3).numpy()
    qw = adpq.quantize_weight(b.T.astype(np.float32), bits=3, group_size=64, outlier_ratio=0.02)
    ref = qw.dequantize().T
    # Same outliers, grids and levels; AdpQ rounds its scales and outliers to 16 / 8 bits.
    err_fq = np.linalg.norm(fq - b) / np.linalg.norm(b)
    err_ref = np.linalg.norm(ref - b) / np.linalg.norm(b)
    assert abs(err_fq - err_ref) < 0.02 * err_ref
    # Only weights at a rounding boundary may land one level apart.
    assert np.mean(np.abs(fq - ref) > 0.01) < 0.02


def test_attention_mix_keeps_every_head_product() -> None:
    rng = _rng(1)
    b_v, b_o = rng.standard_normal((16, 2 * 4)), rng.standard_normal((4 * 4, 16))
    m = np.eye(4) + 0.3 * rng.standard_normal((2, 4, 4))
    v2, o2 = transforms.apply_attention_mix(b_v, b_o, m)
    for head in range(4):
        g = head // 2
        want = b_v[:, g * 4 : (g + 1) * 4] @ b_o[head * 4 : (head + 1) * 4]
        got = v2[:, g * 4 : (g + 1) * 4] @ o2[head * 4 : (head + 1) * 4]
        np.testing.assert_allclose(got, want, atol=1e-10)


def test_learned_transforms_lower_their_proxy() -> None:
    rng = _rng(2)
    # Heavy-tailed columns of very different scales: room for a transform to help.
    scale = np.exp(rng.standard_normal(64))[:, None]
    a = rng.standard_normal((64, 48)) * scale
    b = rng.standard_normal((64, 32)) * scale
    fit = transforms.learn_norm_scale([a, b], [Q3, Q3], steps=40, lr=0.02)
    assert fit.kept and fit.after < fit.before and fit.value.shape == (64,)
    up, down = rng.standard_normal((32, 64)) * scale.T, rng.standard_normal((64, 32))
    fit = transforms.learn_mlp_scale(up, down, Q3, Q3, steps=40, lr=0.02)
    assert fit.kept and fit.after < fit.before
    b_v, b_o = rng.standard_normal((64, 2 * 8)), rng.standard_normal((4 * 8, 64))
    fit = transforms.learn_attention_mix(b_v, b_o, 8, Q3, Q3, steps=40, lr=0.01)
    assert fit.after <= fit.before and fit.value.shape == (2, 8, 8)


def test_a_transform_that_does_not_help_is_the_identity() -> None:
    rng = _rng(3)
    a = rng.standard_normal((64, 16))
    fit = transforms.learn_norm_scale([a], [Q3], steps=5, lr=0.9)  # wild steps
    if not fit.kept:
        np.testing.assert_array_equal(fit.value, np.ones(64))
        assert fit.after == fit.before
