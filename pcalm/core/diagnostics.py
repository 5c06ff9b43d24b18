"""Diagnostics of SPEC §5–6: gradient alignment to BP, credit traces, the inference
Hessian's top eigenvalue, and the linear iteration matrix M.
"""

from __future__ import annotations

import copy

import torch

from pcalm.core import energy
from pcalm.core.algorithms import BP, PC, Algorithm, InferenceState
from pcalm.core.model import ResidualMLP


# A cosine with a zero vector has two conventions here, each named and pinned by a test
# (tests/test_diagnostics_conventions.py): an alignment with nothing to align is undefined
# (NaN: a table shows it, a mean skips it); credit that has not yet reached a layer has
# cosine 0 (what Figure 3 draws ahead of the credit front).
def gradient_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(a, b) over all entries; NaN when either is zero."""
    denom = a.norm() * b.norm()
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def credit_cosine(eps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """cos(ε_l, target_l) per layer, over the last two dims (batch, units); 0 where ε_l or
    the target is zero (no credit yet)."""
    dot = (eps * target).sum(dim=(-2, -1))
    norms = eps.norm(dim=(-2, -1)) * target.norm(dim=(-2, -1))
    tiny = torch.finfo(norms.dtype).tiny
    return torch.where(norms > 0, dot / norms.clamp_min(tiny), torch.zeros_like(dot))


def credit_cosine_whole(eps: torch.Tensor, target: torch.Tensor) -> float:
    """cos(ε, target) over every layer at once; 0 where either is zero (no credit yet)."""
    denom = float(eps.norm() * target.norm())
    return float((eps * target).sum()) / denom if denom > 0 else 0.0


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm()) if b.norm() > 0 else float("nan")


def grad_alignment(grads: list[torch.Tensor], reference: list[torch.Tensor]) -> dict:
    """Cosine and relative error of `grads` to `reference` (BP), whole network and per layer.

    Report the per-layer numbers too: the whole-network cosine is dominated by the output
    layers and hides slow input layers.
    """
    flat = torch.cat([g.reshape(-1) for g in grads])
    flat_ref = torch.cat([g.reshape(-1) for g in reference])
    return {
        "cosine": gradient_cosine(flat, flat_ref),
        "rel_error": _rel_err(flat, flat_ref),
        "cosine_per_layer": [gradient_cosine(g, r) for g, r in zip(grads, reference)],
        "rel_error_per_layer": [_rel_err(g, r) for g, r in zip(grads, reference)],
    }


def alignment_to_bp(algo: Algorithm, net: ResidualMLP, x, y) -> dict:
    """`grad_alignment` of `algo`'s weight gradients on (x, y) to BP's."""
    return grad_alignment(algo.weight_grads(net, x, y), BP().weight_grads(net, x, y))


def credit_traces(algo: PC, net: ResidualMLP, x, y) -> dict:
    """Per inference step t and hidden layer l: the credit ε_l(t) against the BP adjoint.

    Returns tensors of shape [steps + 1, L − 1] (row 0 = forward pass):
    ``norm_ratio`` = ‖ε_l(t)‖ / ‖δ_l‖ (norms over batch and units) and ``cosine`` between
    ε_l(t) and −δ_l (PC-ALM's fixed point is ε = λ = −δ, SPEC §5).
    """
    _, delta, _ = energy.backprop(net, x, y)
    target = -delta
    norms, cosines = [], []

    def observe(step: int, state: InferenceState) -> None:
        eps = state.eps
        norms.append(eps.norm(dim=(-2, -1)) / target.norm(dim=(-2, -1)))
        cosines.append(credit_cosine(eps, target))

    algo.infer(net, x, y, observer=observe)
    return {"norm_ratio": torch.stack(norms), "cosine": torch.stack(cosines)}


def hessian_vector_product(net: ResidualMLP, h: torch.Tensor, v: torch.Tensor, rho: float = 1.0):
    """Per-sample Gauss–Newton Hessian of the inference energy at states h, times v.

    H = PᵀP + ρ RᵀR, with R = ∂r/∂z (unit block-lower-bidiagonal, −J_l = −∂f_l/∂z_{l-1}
    below the diagonal) and P = ∂ŷ/∂z_{L-1} = a_out W_L diag φ'(z_{L-1}). v, h: [..., L-1, B, N].
    """
    d = net.act.deriv(h)
    w_hidden_t = net.w_hidden.transpose(-1, -2)

    def jvp_below(u):  # J_l u_{l-1} for l = 2..L-1
        return u + net.a_hidden * ((d[..., :-1, :, :] * u) @ w_hidden_t)

    def jtvp_above(u):  # J_{l+1}ᵀ u_{l+1} for l = 1..L-2
        return u + net.a_hidden * d[..., :-1, :, :] * (u @ net.w_hidden)

    rv = torch.cat([v[..., :1, :, :], v[..., 1:, :, :] - jvp_below(v[..., :-1, :, :])], dim=-3)
    rtrv = rv - torch.cat([jtvp_above(rv[..., 1:, :, :]), torch.zeros_like(rv[..., :1, :, :])], -3)
    top = d[..., -1, :, :]
    pv = net.a_out * ((top * v[..., -1, :, :]) @ net.w_out.transpose(-1, -2))
    ptpv = net.a_out * top * (pv @ net.w_out)
    out = rho * rtrv
    out[..., -1, :, :] += ptpv
    return out


LAMBDA_METHODS = ("lanczos", "power")


def hessian_lambda_max(
    net: ResidualMLP, x: torch.Tensor, rho: float = 1.0, iters: int = 60, seed: int = 0,
    method: str = "lanczos",
) -> float:
    """Largest eigenvalue of the per-sample inference Hessian at the forward pass, max over
    the batch (the PC step η_h is per sample, so the stiffest sample sets stability).

    `lanczos` (exact to float64 for the default 60 iterations): batched Lanczos with full
    reorthogonalisation, one Krylov space per sample. `power`: `iters` steps of plain power
    iteration per sample (`hessian_power_trace`) — an under-estimate that converges from below.
    """
    if method == "power":
        return float(hessian_power_trace(net, x, rho, iters, seed)[-1].max())
    if method != "lanczos":
        raise ValueError(f"bad λ_max method {method!r}: allowed: {', '.join(LAMBDA_METHODS)}")
    net64 = _as_float64(net)
    x = x.double()
    with torch.no_grad():
        h, _ = net64.forward_states(x)
        layers, batch, width = h.shape[-3:]
        dim = layers * width
        k = min(iters, dim)

        def matvec(q):  # q: [B, dim] → H q per sample
            v = q.reshape(batch, layers, width).transpose(0, 1)
            hv = hessian_vector_product(net64, h, v, rho)
            return hv.transpose(0, 1).reshape(batch, dim)

        q = _start_vector((batch, dim), seed, h.device)
        q = q / q.norm(dim=1, keepdim=True)
        basis = [q]
        alphas, betas = [], []
        for j in range(k):
            w = matvec(basis[-1])
            alphas.append((w * basis[-1]).sum(1))
            stacked = torch.stack(basis, 1)  # [B, j+1, dim]
            for _ in range(2):  # twice is enough for numerical orthogonality
                w = w - torch.einsum("bj,bjd->bd", torch.einsum("bjd,bd->bj", stacked, w), stacked)
            beta = w.norm(dim=1)
            if j == k - 1 or bool((beta < 1e-10).any()):
                break
            betas.append(beta)
            basis.append(w / beta[:, None])
        m = len(alphas)
        tri = torch.diag_embed(torch.stack(alphas, 1))
        if m > 1:
            off = torch.stack(betas[: m - 1], 1)
            tri = tri + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
        return float(torch.linalg.eigvalsh(tri)[:, -1].max())


def hessian_power_trace(net: ResidualMLP, x: torch.Tensor, rho: float = 1.0, iters: int = 20,
                        seed: int = 0) -> torch.Tensor:
    """Power iteration on each sample's inference Hessian: [iters, B], row k−1 = ‖H v_{k−1}‖
    with v_0 ~ N(0, I) (generator seeded `seed`) and v_k = H v_{k−1}/‖H v_{k−1}‖ — the
    estimate of λ_max after k matrix-vector products, in float64."""
    net64 = _as_float64(net)
    with torch.no_grad():
        h, _ = net64.forward_states(x.double())
        v = _start_vector(h.shape, seed, h.device)
        v = v / v.norm(dim=(-3, -1), keepdim=True)
        trace = []
        for _ in range(iters):
            hv = hessian_vector_product(net64, h, v, rho)
            norm = hv.norm(dim=(-3, -1), keepdim=True)  # per sample: over layers and units
            trace.append(norm.reshape(-1))
            v = hv / norm
    return torch.stack(trace)


def _start_vector(shape, seed: int, device: torch.device) -> torch.Tensor:
    """N(0, I) in float64 on `device`, drawn on the CPU (the same numbers on every device)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float64).to(device)


def _as_float64(net: ResidualMLP) -> ResidualMLP:
    return net if net.w_in.dtype == torch.float64 else copy.deepcopy(net).double()


def linear_system(net: ResidualMLP) -> dict:
    """For an identity-activation net and one sample: R (constraint Jacobian) and P (readout).

    Stacked z ∈ R^{(L-1)N}: residuals r = R z − c, readout ŷ = P z (SPEC §6).
    """
    if net.act.name != "identity" or net.num_models is not None:
        raise ValueError("linear_system needs a single identity-activation net")
    n, layers = net.width, net.depth - 1
    eye = torch.eye(n, dtype=torch.float64)
    r = torch.eye(layers * n, dtype=torch.float64)
    for l in range(1, layers):
        block = eye + net.a_hidden * net.w_hidden[l - 1].detach().double()
        r[l * n : (l + 1) * n, (l - 1) * n : l * n] = -block
    p = torch.zeros(net.output_dim, layers * n, dtype=torch.float64)
    p[:, -n:] = net.a_out * net.w_out.detach().double()
    return {"R": r, "P": p}


def linear_hessian(net: ResidualMLP, rho: float = 1.0) -> torch.Tensor:
    """H = PᵀP + ρ RᵀR: the inference Hessian of an identity-activation net (one sample)."""
    sys = linear_system(net)
    return sys["P"].T @ sys["P"] + rho * sys["R"].T @ sys["R"]


def iteration_matrix(net: ResidualMLP, state_lr: float, rho: float = 1.0, alpha: float = 1.0):
    """The linear PC-ALM step s⁺ = M s + b on s = (z, λ) (SPEC §6, k = 1); α = 0 is PC.

    M = [[I − η H, −η Rᵀ], [α R (I − η H), I − α η R Rᵀ]],  H = PᵀP + ρ RᵀR.
    """
    sys = linear_system(net)
    r = sys["R"]
    eye = torch.eye(r.shape[0], dtype=torch.float64)
    hess = linear_hessian(net, rho)
    primal = eye - state_lr * hess
    top = torch.cat([primal, -state_lr * r.T], 1)
    bottom = torch.cat([alpha * r @ primal, eye - alpha * state_lr * r @ r.T], 1)
    return torch.cat([top, bottom], 0)


def spectral_radius(matrix: torch.Tensor) -> float:
    return float(torch.linalg.eigvals(matrix).abs().max())
