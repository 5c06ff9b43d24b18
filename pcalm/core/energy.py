"""Residuals, energies and the hand-written local gradients of SPEC §2–3.

Notation (per sample; stacked over hidden layers l = 1 .. L-1 on axis -3):
    r_l = z_l − f_l(z_{l-1})         constraint residual (z_0 = x)
    ε_l = ρ r_l + λ_l                multiplier-shifted error ("credit")
    e   = ŷ − y                      output error, ŷ = a_out W_L φ(z_{L-1})

PC energy        F(z)    = ℓ(ŷ, y) + ½ Σ_l ‖r_l‖²
PC-ALM Lagrangian 𝓛_ρ(z) = ℓ(ŷ, y) + Σ_l [λ_l·r_l + (ρ/2)‖r_l‖²]      (PC: λ = 0, ρ = 1)

The energies (batch mean) are the test oracle; the hot path uses only the local
gradients, which touch a layer and its neighbours and are batched over all layers.
`state_grad` is the per-sample gradient (not divided by B), so the inference step η_h
is a per-sample step as SPEC §4 asks; `weight_grads` is the batch mean.
"""

from __future__ import annotations

import torch

from pcalm.core.model import ResidualMLP


def mse_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ℓ = ½ Σ_c (ŷ_c − y_c)², averaged over the batch (per model if stacked)."""
    return 0.5 * (y_hat - y).pow(2).sum(-1).mean(-1)


def residuals(net: ResidualMLP, bottom: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """r_l = z_l − f_l(z_{l-1}) for all hidden layers; `bottom` = a_in W_1 x (fixed)."""
    r_first = z[..., :1, :, :] - bottom.unsqueeze(-3)
    r_rest = z[..., 1:, :, :] - net.residual_predictions(z[..., :-1, :, :])
    return torch.cat([r_first, r_rest], dim=-3)


def lagrangian(
    net: ResidualMLP,
    x: torch.Tensor,
    y: torch.Tensor,
    z: torch.Tensor,
    lam: torch.Tensor | None = None,
    rho: float = 1.0,
) -> torch.Tensor:
    """Batch-mean 𝓛_ρ(z, λ) = ℓ + Σ_l [λ_l·r_l + (ρ/2)‖r_l‖²]; with λ=None, ρ=1: PC's F."""
    r = residuals(net, net.bottom_prediction(x), z)
    constraint = 0.5 * rho * r.pow(2)
    if lam is not None:
        constraint = constraint + lam * r
    per_model = constraint.sum(dim=(-3, -1)).mean(-1)  # sum layers & units, mean batch
    return mse_loss(net.readout(z[..., -1, :, :]), y) + per_model


def pc_energy(net: ResidualMLP, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor):
    """Batch-mean PC energy F(z) = ℓ + ½ Σ_l ‖r_l‖²."""
    return lagrangian(net, x, y, z)


def state_grad(
    net: ResidualMLP, z: torch.Tensor, eps: torch.Tensor, e: torch.Tensor
) -> torch.Tensor:
    """Per-sample ∂𝓛/∂z_l of SPEC §3, all layers at once (one batched matmul)::

        ∂𝓛/∂z_l     = ε_l − ε_{l+1} − a_hidden φ'(z_l) ⊙ (W_{l+1}ᵀ ε_{l+1})   l < L-1
        ∂𝓛/∂z_{L-1} = ε_{L-1} + a_out φ'(z_{L-1}) ⊙ (W_Lᵀ e)
    """
    act = net.act
    from_above = eps[..., 1:, :, :]
    back = from_above + net.a_hidden * act.deriv(z[..., :-1, :, :]) * (from_above @ net.w_hidden)
    top = z[..., -1, :, :]
    readout_back = net.a_out * act.deriv(top) * (e @ net.w_out)
    return eps - torch.cat([back, -readout_back.unsqueeze(-3)], dim=-3)


def weight_grads(
    net: ResidualMLP, x: torch.Tensor, z: torch.Tensor, eps: torch.Tensor, e: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-mean ∂𝓛/∂W of SPEC §3 at fixed (z, ε, e), shaped like (w_in, w_hidden, w_out)::

        ∂𝓛/∂W_1 = −a_in ε_1 xᵀ
        ∂𝓛/∂W_l = −a_hidden ε_l φ(z_{l-1})ᵀ        2 ≤ l ≤ L-1
        ∂𝓛/∂W_L =  a_out e φ(z_{L-1})ᵀ
    """
    batch = z.shape[-2]
    phi_below = net.act.fn(z[..., :-1, :, :])
    g_in = -net.a_in / batch * (eps[..., 0, :, :].transpose(-1, -2) @ x)
    g_hidden = -net.a_hidden / batch * (eps[..., 1:, :, :].transpose(-1, -2) @ phi_below)
    g_out = net.a_out / batch * (e.transpose(-1, -2) @ net.act.fn(z[..., -1, :, :]))
    return g_in, g_hidden, g_out


def backprop(net: ResidualMLP, x: torch.Tensor, y: torch.Tensor):
    """Exact backprop of ℓ by hand: forward states h, adjoints δ_l = ∂ℓ/∂h_l (per sample), e.

    δ_{L-1} = a_out φ'(h_{L-1}) ⊙ W_Lᵀ e;  δ_l = δ_{l+1} + a_hidden φ'(h_l) ⊙ W_{l+1}ᵀ δ_{l+1}.
    At PC-ALM's fixed point λ = −δ (SPEC §5), so BP's weight gradients are
    `weight_grads(net, x, h, -δ, e)`.
    """
    h, y_hat = net.forward_states(x)
    e = y_hat - y
    act = net.act
    delta = net.a_out * act.deriv(h[..., -1, :, :]) * (e @ net.w_out)
    deltas = [delta]
    for l in range(net.depth - 3, -1, -1):  # sequential by nature, as the forward pass
        w = net.w_hidden[..., l, :, :]
        delta = delta + net.a_hidden * act.deriv(h[..., l, :, :]) * (delta @ w)
        deltas.append(delta)
    return h, torch.stack(deltas[::-1], dim=-3), e
