"""The proxies' quadratic forms equal the output errors they stand for (white input)."""

from __future__ import annotations

import numpy as np
import pytest

from adpq_onnx.quant import proxies

D, HD, HEADS, KV, F = 24, 4, 6, 2, 20


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_attention_output_input(rng: np.random.Generator) -> None:
    b_v = rng.standard_normal((D, KV * HD))
    delta = rng.standard_normal((HEADS * HD, D))  # an error of B_o
    h = proxies.attention_output_input(b_v, HEADS, HD)
    rep = HEADS // KV
    # Σ_h ‖B_v[:, g(h)] · ΔB_o[h]‖²: each head's error seen through its value head.
    want = sum(
        np.sum((b_v[:, (i // rep) * HD : (i // rep + 1) * HD] @ delta[i * HD : (i + 1) * HD]) ** 2)
        for i in range(HEADS)
    )
    got = np.einsum("kn,kl,ln->", delta, h, delta)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_attention_value_output(rng: np.random.Generator) -> None:
    b_o = rng.standard_normal((HEADS * HD, D))
    delta = rng.standard_normal((D, KV * HD))  # an error of B_v
    h = proxies.attention_value_output(b_o, KV, HD)
    rep = HEADS // KV
    want = sum(
        np.sum((delta[:, (i // rep) * HD : (i // rep + 1) * HD] @ b_o[i * HD : (i + 1) * HD]) ** 2)
        for i in range(HEADS)
    )
    got = np.einsum("kn,nm,km->", delta, h, delta)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_mlp_proxies_are_psd_and_match_monte_carlo(rng: np.random.Generator) -> None:
    b_g, b_u = rng.standard_normal((D, F)), rng.standard_normal((D, F))
    b_d = rng.standard_normal((F, D))
    for h in (
        proxies.mlp_down_input(b_g, b_u),
        proxies.mlp_up_output(b_d, b_g),
        proxies.mlp_gate_output(b_d, b_u),
    ):
        assert h.shape == (F, F)
        np.testing.assert_allclose(h, h.T, atol=1e-9)
        assert np.linalg.eigvalsh(h).min() > -1e-6 * np.abs(h).max()
    # E[(g ⊙ u)ᵀ(g ⊙ u)] for x ~ N(0, I): Isserlis' theorem, checked by sampling.
    x = rng.standard_normal((200_000, D))
    hidden = (x @ b_g) * (x @ b_u)
    sampled = hidden.T @ hidden / x.shape[0]
    exact = proxies.mlp_down_input(b_g, b_u)
    assert np.abs(sampled - exact).max() < 0.05 * np.abs(exact).max()


def test_bad_head_layout_is_refused(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="not a multiple of head_dim"):
        proxies.attention_output_input(rng.standard_normal((D, 10)), HEADS, HD)
    with pytest.raises(ValueError, match="evenly"):
        proxies.attention_value_output(rng.standard_normal((HEADS * HD, D)), 4, HD)
