"""Calibration-free proxies H of a layer's output error, built from the weights around it.

Every function takes weights in ONNX layout B[K, N] (y = x·B) and returns H for `gptq_round`,
assuming the block's input x is white (E[xᵀx] = I): the only statistics used are those the
neighbouring weights imply. Two sides:

* input side, H[K, K]: the covariance of this layer's input as the layer before it shapes it;
  rows of W = Bᵀ are rounded with error feedback along K.
* output side, H[N, N]: how the layer after this one mixes its outputs; rows of B (one per
  input) are rounded with error feedback along N.

Attention (value → output projection, per head; attention itself mixes positions, not channels):
    o_proj, input side:   H = blockdiag_h( B_v[:, g(h)]ᵀ B_v[:, g(h)] )
    v_proj, output side:  H = blockdiag_g( Σ_{h ∈ g} B_o[h] B_o[h]ᵀ )
where head h reads key/value head g(h) = h // (heads / kv_heads) (grouped-query attention) and
B_o[h] are the head_dim rows of B_o that head h feeds.

SwiGLU MLP, y = (silu(x·B_g) ⊙ x·B_u)·B_d, with silu(g) taken as linear in g (so that products of
Gaussians apply; Isserlis' theorem gives the fourth moments):
    down_proj, input side:   H = G ⊙ U + C ⊙ Cᵀ + diag(C) diag(C)ᵀ
    up_proj, output side:    H = (B_d B_dᵀ) ⊙ G
    gate_proj, output side:  H = (B_d B_dᵀ) ⊙ U
with G = B_gᵀB_g, U = B_uᵀB_u, C = B_gᵀB_u.

Where the block's input is a normalization's output x̂ ⊙ γ, the functions that read the weights
on the input side take `gain` = γ and assume x̂ white instead (each such B becomes diag(γ)·B).
"""

from __future__ import annotations

import numpy as np


def _f64(b: np.ndarray, gain: np.ndarray | None = None) -> np.ndarray:
    """B as float64, its rows (inputs) scaled by the normalization gain when given."""
    out = np.asarray(b, dtype=np.float64)
    if gain is not None:
        out = out * np.asarray(gain, dtype=np.float64).reshape(-1, 1)
    return out


def _check_heads(width: int, head_dim: int, what: str) -> int:
    if head_dim <= 0 or width % head_dim:
        raise ValueError(f"{what} width {width} is not a multiple of head_dim {head_dim}")
    return width // head_dim


def attention_output_input(
    b_v: np.ndarray, heads: int, head_dim: int, gain: np.ndarray | None = None
) -> np.ndarray:
    """H[K_o, K_o] for the output projection from the value projection B_v[d, kv·head_dim]."""
    kv = _check_heads(b_v.shape[1], head_dim, "value projection")
    if heads % kv:
        raise ValueError(f"{heads} heads do not share {kv} key/value heads evenly")
    rep = heads // kv
    v = _f64(b_v, gain)
    h = np.zeros((heads * head_dim, heads * head_dim))
    for head in range(heads):
        g = head // rep
        vg = v[:, g * head_dim : (g + 1) * head_dim]
        sl = slice(head * head_dim, (head + 1) * head_dim)
        h[sl, sl] = vg.T @ vg
    return h


def attention_value_output(b_o: np.ndarray, kv_heads: int, head_dim: int) -> np.ndarray:
    """H[N_v, N_v] for the value projection from the output projection B_o[heads·head_dim, d]."""
    heads = _check_heads(b_o.shape[0], head_dim, "output projection")
    if kv_heads <= 0 or heads % kv_heads:
        raise ValueError(f"{heads} heads do not share {kv_heads} key/value heads evenly")
    rep = heads // kv_heads
    o = _f64(b_o)
    h = np.zeros((kv_heads * head_dim, kv_heads * head_dim))
    for head in range(heads):
        g = head // rep
        oh = o[head * head_dim : (head + 1) * head_dim]
        sl = slice(g * head_dim, (g + 1) * head_dim)
        h[sl, sl] += oh @ oh.T
    return h


def mlp_down_input(
    b_gate: np.ndarray, b_up: np.ndarray, gain: np.ndarray | None = None
) -> np.ndarray:
    """H[F, F] for the down projection, from B_g and B_u [d, F]."""
    g, u = _f64(b_gate, gain), _f64(b_up, gain)
    gg, uu, c = g.T @ g, u.T @ u, g.T @ u
    d = np.diag(c)
    return gg * uu + c * c.T + np.outer(d, d)


def mlp_up_output(
    b_down: np.ndarray, b_gate: np.ndarray, gain: np.ndarray | None = None
) -> np.ndarray:
    """H[F, F] for the up projection, from B_d [F, d] and B_g [d, F]."""
    dn, g = _f64(b_down), _f64(b_gate, gain)
    return (dn @ dn.T) * (g.T @ g)


def mlp_gate_output(
    b_down: np.ndarray, b_up: np.ndarray, gain: np.ndarray | None = None
) -> np.ndarray:
    """H[F, F] for the gate projection, from B_d [F, d] and B_u [d, F]."""
    dn, u = _f64(b_down), _f64(b_up, gain)
    return (dn @ dn.T) * (u.T @ u)
