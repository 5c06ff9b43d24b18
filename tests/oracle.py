"""Independent oracles for the SPEC rules, written from SPEC.md alone.

Nothing here imports pcalm's math (model, energy, algorithms, diagnostics, optim, eta): the
tests compare pcalm against these few lines of plain torch, so a wrong formula in pcalm
cannot also be the expected value. Weights are taken as plain tensors [W_1, …, W_L].
"""

from __future__ import annotations

import math

import torch

PHI = {
    "identity": (lambda z: z, lambda z: torch.ones_like(z)),
    "tanh": (torch.tanh, lambda z: 1 - torch.tanh(z) ** 2),
    "relu": (torch.relu, lambda z: (z > 0).to(z.dtype)),
}


def scales(d: int, n: int, depth: int, gamma0: float = 1.0) -> tuple[float, float, float]:
    """SPEC §1: a_1 = 1/sqrt(D), a_h = 1/sqrt(N L), a_L = 1/(γ0 N)."""
    return 1 / math.sqrt(d), 1 / math.sqrt(n * depth), 1 / (gamma0 * n)


def forward(weights, x, act, a):
    """SPEC §1 forward pass: hidden states [h_1 … h_{L-1}] and ŷ."""
    phi = PHI[act][0]
    a1, ah, aL = a
    h = [a1 * x @ weights[0].T]
    for w in weights[1:-1]:
        h.append(h[-1] + ah * phi(h[-1]) @ w.T)
    return h, aL * phi(h[-1]) @ weights[-1].T


def loss(y_hat, y):
    """ℓ = ½ Σ_c (ŷ_c − y_c)², averaged over the batch."""
    return 0.5 * ((y_hat - y) ** 2).sum(-1).mean()


def lagrangian(weights, x, y, z, lam, rho, act, a):
    """SPEC §2, batch mean: ℓ(a_L W_L φ(z_{L-1})) + Σ_l [λ_l·r_l + ρ/2 ‖r_l‖²]."""
    phi = PHI[act][0]
    a1, ah, aL = a
    r = [z[0] - a1 * x @ weights[0].T]
    for l in range(1, len(z)):
        r.append(z[l] - z[l - 1] - ah * phi(z[l - 1]) @ weights[l].T)
    total = loss(aL * phi(z[-1]) @ weights[-1].T, y)
    batch = x.shape[0]
    for rl, ll in zip(r, lam):
        total = total + ((ll * rl).sum() + 0.5 * rho * (rl**2).sum()) / batch
    return total


def inference(weights, x, y, act, a, *, algo, budget, state_lr, rho=1.0, alpha=1.0,
              inner_steps=1, post_dual=False):
    """SPEC §4 by autograd: PC / PC-ALM inference from the forward pass. Returns the final
    states z and multipliers λ (lists over hidden layers; λ = 0 for PC), the residuals r at
    z, and ℓ at the forward pass."""
    weights = [w.detach() for w in weights]
    h, y_hat = forward(weights, x, act, a)
    forward_loss = loss(y_hat, y)
    z = [t.detach().clone() for t in h]
    lam = [torch.zeros_like(t) for t in z]
    if algo == "pc":
        rho, alpha, inner_steps, post_dual = 1.0, 0.0, 1, False
    batch = x.shape[0]

    def residuals(z):
        phi = PHI[act][0]
        r = [z[0] - a[0] * x @ weights[0].T]
        for l in range(1, len(z)):
            r.append(z[l] - z[l - 1] - a[1] * phi(z[l - 1]) @ weights[l].T)
        return r

    for t in range(budget):
        for _ in range(inner_steps):
            zr = [t_.clone().requires_grad_(True) for t_ in z]
            grads = torch.autograd.grad(lagrangian(weights, x, y, zr, lam, rho, act, a), zr)
            # per-sample step: the batch-mean energy's gradient times B
            z = [zl - state_lr * batch * g for zl, g in zip(z, grads)]
        if algo == "pcalm" and (t < budget - 1 or post_dual):
            lam = [ll + alpha * rl for ll, rl in zip(lam, residuals(z))]
    return z, lam, residuals(z), forward_loss.detach()


def inference_grads(weights, x, y, act, a, *, algo, budget, state_lr, rho=1.0, alpha=1.0,
                    inner_steps=1, post_dual=False):
    """∂𝓛/∂W at the final (z, λ) of `inference` (weights' gradient of the batch-mean
    energy). Returns (grads, ℓ at the forward pass)."""
    z, lam, _, forward_loss = inference(
        weights, x, y, act, a, algo=algo, budget=budget, state_lr=state_lr, rho=rho,
        alpha=alpha, inner_steps=inner_steps, post_dual=post_dual)
    if algo == "pc":
        rho = 1.0
    wr = [w.detach().clone().requires_grad_(True) for w in weights]
    grads = torch.autograd.grad(lagrangian(wr, x, y, z, lam, rho, act, a), wr)
    return [g.detach() for g in grads], forward_loss


def bp_grads(weights, x, y, act, a):
    """Backprop of ℓ by autograd, and ℓ."""
    wr = [w.detach().clone().requires_grad_(True) for w in weights]
    value = loss(forward(wr, x, act, a)[1], y)
    return [g.detach() for g in torch.autograd.grad(value, wr)], value.detach()


def gauss_newton_hessians(weights, x, act, a, rho=1.0):
    """Per-sample inference Hessian at the forward pass, Gauss–Newton form (SPEC §4, §6):
    H = PᵀP + ρ RᵀR, R = ∂r/∂z (identity blocks on the diagonal, −(I + a_h W_l diag φ'(z_{l-1}))
    below it), P = ∂ŷ/∂z = a_L W_L diag φ'(z_{L-1}) on the last block. Returns [B, dim, dim]."""
    dphi = PHI[act][1]
    h, _ = forward(weights, x, act, a)
    layers, n = len(h), h[0].shape[-1]
    batch, dim = x.shape[0], len(h) * n
    eye = torch.eye(n, dtype=x.dtype)
    R = torch.eye(dim, dtype=x.dtype).repeat(batch, 1, 1)
    for l in range(1, layers):
        block = eye + a[1] * weights[l] * dphi(h[l - 1])[:, None, :]  # W diag φ'
        R[:, l * n:(l + 1) * n, (l - 1) * n:l * n] = -block
    P = torch.zeros(batch, weights[-1].shape[0], dim, dtype=x.dtype)
    P[:, :, -n:] = a[2] * weights[-1] * dphi(h[-1])[:, None, :]
    return P.transpose(1, 2) @ P + rho * R.transpose(1, 2) @ R


def adam(params, grads_per_step, lr, betas=(0.9, 0.999), eps=1e-8):
    """Adam written out (bias-corrected moments, no weight decay) over a list of steps."""
    params = [p.detach().clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, g in enumerate(grads):
            m[i] = betas[0] * m[i] + (1 - betas[0]) * g
            v[i] = betas[1] * v[i] + (1 - betas[1]) * g * g
            m_hat = m[i] / (1 - betas[0] ** t)
            v_hat = v[i] / (1 - betas[1] ** t)
            params[i] = params[i] - lr * m_hat / (v_hat.sqrt() + eps)
    return params
