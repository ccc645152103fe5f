"""Function-preserving transforms learned from the weights alone (no calibration data).

Where two weights meet through ops that commute with a change of basis, an invertible M can be
moved between them, (B₁·M⁻¹)(M·B₂) = B₁B₂, so the float model is unchanged, while the quantized
one is not: M is chosen to minimize a proxy of the quantized layer's error. Three places, all
folded into existing weights (no node added, no inference cost):

    norm   Mul(γ, x̂)·B  =  Mul(γ/s, x̂)·(diag(s)·B)       s > 0 per input channel, shared by
                                                           every weight reading that Mul
           proxy: Σ_B ‖diag(s)⁻¹·Q(diag(s)·B) − B‖² / ‖B‖²
    mlp    (silu(g) ⊙ x·B_u)·B_d  =  (silu(g) ⊙ x·B_u·S⁻¹)·(S·B_d),   S = diag(s)
           proxy: ‖B_u·B_d − Q(B_u·S⁻¹)·Q(S·B_d)‖² / ‖B_u·B_d‖²
    attn   per key/value head g, an invertible M_g [head_dim, head_dim]:
           B_v[:, g] → B_v[:, g]·M_g⁻¹,  B_o[h] → M_g·B_o[h] for every head h reading g
           proxy: Σ_h ‖B_v[:, g]·B_o[h] − Q(B_v')[:, g]·Q(B_o')[h]‖² / Σ_h ‖B_v[:, g]·B_o[h]‖²

Q is AdpQ's quantizer written in torch (top-α outliers per output channel kept exact, min-max
grid of the inliers per group with an integer zero point), with straight-through rounding so
that Adam can follow it (PyTorch for autograd only; arrays in and out are numpy). Products are
compared through fixed random probes (see `PROBES`). A learned transform is kept only if it
lowers the proxy with the exact (non-straight-through) quantizer; else the identity is returned.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Quant:
    """How one weight is quantized: bits, group size along K, outlier fraction α."""

    bits: int
    group_size: int
    outlier_ratio: float


def _torch() -> Any:
    """PyTorch (autograd) for the learning; an optional dependency, asked for by name."""
    try:
        import torch
    except ImportError:
        from adpq_onnx.errors import UserError

        raise UserError(
            "learned transforms need PyTorch: pip install 'adpq-onnx[models]'"
        ) from None
    return torch


def fake_quant(b: Any, q: Quant) -> Any:
    """Q(B) for B[K, N] (groups along K per column), differentiable by straight-through."""
    torch = _torch()
    w = b.T  # [N, K]: rows are output channels, as in adpq.quantize_weight
    n, k = w.shape
    count = int(round(q.outlier_ratio * k))
    if count > 0:
        cut = torch.topk(w.detach().abs(), count, dim=1).values[:, -1:]
        mask = w.detach().abs() >= cut
    else:
        mask = torch.zeros_like(w, dtype=torch.bool)
    pad = -k % q.group_size
    x = torch.nn.functional.pad(w, (0, pad)).view(n, -1, q.group_size)
    m = torch.nn.functional.pad(mask, (0, pad)).view(n, -1, q.group_size)
    # Outliers set to 0 do not move a range that is widened to contain 0 anyway.
    inliers = x.masked_fill(m, 0.0)
    lo = inliers.amin(-1, keepdim=True).clamp(max=0.0)
    hi = inliers.amax(-1, keepdim=True).clamp(min=0.0)
    qmax = float((1 << q.bits) - 1)
    scale = ((hi - lo) / qmax).clamp(min=1e-12)
    z = _round(-lo / scale).clamp(0.0, qmax)
    codes = (_round(x / scale) + z).clamp(0.0, qmax)
    out = torch.where(m, x, (codes - z) * scale).view(n, -1)[:, :k]
    return out.T


def _round(x: Any) -> Any:
    return x + (x.round() - x).detach()


def _fit(params: list[Any], loss_fn: Any, steps: int, lr: float) -> tuple[float, float]:
    """Adam on `params`; (initial, final) proxy loss, evaluated without gradients."""
    torch = _torch()
    with torch.no_grad():
        start = float(loss_fn())
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = float(loss_fn())
    return start, end


def _t(a: np.ndarray) -> Any:
    return _torch().tensor(np.asarray(a, dtype=np.float32))


# Products B₁·B₂ are compared through fixed random probes, ‖x·(B₁B₂ − Q₁Q₂)‖² with x [P, d]
# Gaussian: an unbiased estimate of the Frobenius norm at a fraction of the cost of forming
# B₁B₂ (d × d). The seed keeps the objective, and so the result, the same from run to run.
PROBES = 64


def _sq(t: Any) -> float:
    """‖t‖², or 1 for an all-zero tensor (used as a divisor)."""
    return float((t * t).sum()) or 1.0


def _probes(d: int) -> Any:
    gen = _torch().Generator().manual_seed(0)
    return _torch().randn(PROBES, d, generator=gen)


@dataclasses.dataclass(frozen=True)
class Fitted:
    """A learned transform: its parameter, and the proxy loss before and after."""

    value: np.ndarray
    before: float
    after: float

    @property
    def kept(self) -> bool:
        return self.after < self.before


def learn_norm_scale(
    weights: list[np.ndarray], quants: list[Quant], steps: int, lr: float
) -> Fitted:
    """s[K] for weights B_i[K, N_i] that read the same normalized input (see module doc)."""
    torch = _torch()
    bs = [_t(b) for b in weights]
    norms = [_sq(b) for b in bs]
    theta = torch.zeros(bs[0].shape[0], requires_grad=True)

    def loss() -> Any:
        s = theta.exp()[:, None]
        return sum(
            ((fake_quant(b * s, q) / s - b) ** 2).sum() / nrm
            for b, q, nrm in zip(bs, quants, norms, strict=True)
        )

    before, after = _fit([theta], loss, steps, lr)
    s = theta.detach().double().exp().numpy()
    return _keep(Fitted(s, before, after), np.ones_like(s))


def learn_mlp_scale(
    b_up: np.ndarray,
    b_down: np.ndarray,
    q_up: Quant,
    q_down: Quant,
    steps: int,
    lr: float,
    objective: str = "product",
) -> Fitted:
    """s[F] moved between the up projection's outputs and the down projection's inputs.

    ``objective="weights"``: each weight's own error in the original basis (see
    `learn_attention_mix`).
    """
    torch = _torch()
    u, d = _t(b_up), _t(b_down)
    theta = torch.zeros(u.shape[1], requires_grad=True)
    if objective == "weights":
        nu, nd = _sq(u), _sq(d)
    else:
        x = _probes(u.shape[0])
        ref = (x @ u) @ d
        norm = _sq(ref)

    def loss() -> Any:
        s = theta.exp()
        qu, qd = fake_quant(u / s[None, :], q_up), fake_quant(d * s[:, None], q_down)
        if objective == "weights":
            return ((qu * s[None, :] - u) ** 2).sum() / nu + ((qd / s[:, None] - d) ** 2).sum() / nd
        return (((x @ qu) @ qd - ref) ** 2).sum() / norm

    before, after = _fit([theta], loss, steps, lr)
    s = theta.detach().double().exp().numpy()
    return _keep(Fitted(s, before, after), np.ones_like(s))


def learn_attention_mix(
    b_v: np.ndarray,
    b_o: np.ndarray,
    head_dim: int,
    q_v: Quant,
    q_o: Quant,
    steps: int,
    lr: float,
    objective: str = "product",
) -> Fitted:
    """M[kv_heads, head_dim, head_dim] between value heads and the output rows they feed.

    ``objective="weights"`` replaces the product proxy by each weight's own error in the
    original basis, ‖Q(B_v')·M − B_v‖²/‖B_v‖² + ‖M⁻¹·Q(B_o') − B_o‖²/‖B_o‖²: no partner
    weighting, the assumption plain rounding makes.
    """
    torch = _torch()
    v, o = _t(b_v), _t(b_o)
    kv, heads = v.shape[1] // head_dim, o.shape[0] // head_dim
    rep = heads // kv
    vh = v.view(v.shape[0], kv, head_dim)  # [d, kv, hd]
    oh = o.view(kv, rep, head_dim, o.shape[1])  # [kv, rep, hd, d]
    x = _probes(v.shape[0])

    def heads_out(vv: Any, oo: Any) -> Any:
        # Each head's contribution x·B_v[:, g]·B_o[h], kept apart: [P, kv, rep, d].
        return torch.einsum("pgi,grie->pgre", torch.einsum("pd,dgi->pgi", x, vv), oo)

    ref = heads_out(vh, oh)
    norm, nv, no = _sq(ref), _sq(v), _sq(o)
    delta = torch.zeros(kv, head_dim, head_dim, requires_grad=True)
    eye = torch.eye(head_dim)

    def loss() -> Any:
        m = eye + delta
        inv = torch.linalg.inv(m)
        v2 = torch.einsum("dgi,gij->dgj", vh, inv).reshape(v.shape)
        o2 = torch.einsum("gij,grje->grie", m, oh).reshape(o.shape)
        qv = fake_quant(v2, q_v).view(v.shape[0], kv, head_dim)
        qo = fake_quant(o2, q_o).view(kv, rep, head_dim, o.shape[1])
        if objective == "weights":
            ev = torch.einsum("dgi,gij->dgj", qv, m) - vh
            eo = torch.einsum("gij,grje->grie", inv, qo) - oh
            return (ev * ev).sum() / nv + (eo * eo).sum() / no
        return ((heads_out(qv, qo) - ref) ** 2).sum() / norm

    before, after = _fit([delta], loss, steps, lr)
    m = (eye + delta.detach()).double().numpy()
    return _keep(Fitted(m, before, after), np.broadcast_to(np.eye(head_dim), m.shape).copy())


def _keep(fitted: Fitted, identity: np.ndarray) -> Fitted:
    return fitted if fitted.kept else Fitted(identity, fitted.before, fitted.before)


def apply_attention_mix(
    b_v: np.ndarray, b_o: np.ndarray, m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(B_v·blockdiag(M⁻¹), blockdiag_h(M_g(h))·B_o), in float64."""
    kv, hd, _ = m.shape
    heads = b_o.shape[0] // hd
    rep = heads // kv
    inv = np.linalg.inv(m)
    v = np.einsum("dgi,gij->dgj", b_v.astype(np.float64).reshape(-1, kv, hd), inv)
    o = np.einsum("gij,grje->grie", m, b_o.astype(np.float64).reshape(kv, rep, hd, b_o.shape[1]))
    return v.reshape(b_v.shape), o.reshape(b_o.shape)
