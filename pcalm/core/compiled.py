"""The SPEC §4 step as a pure function for torch.compile, and the cache of compiled steps.

`compile=on` (or `auto` where `pcalm.core.paths` says so) runs `loop_compiled`: the loop of
`pcalm.core.loop` with one compiled function per step (its elementwise work fused around the
two matmuls), cached per activation and PC / PC-ALM; dynamo caches one graph per shape, dtype
and device (its limits raised: every grid cell is a new shape).
"""

from __future__ import annotations

import torch

from pcalm.core.loop import Workspace


def functional_step(act: str, has_lam: bool):
    """One primal step and the credit update as a pure function, for torch.compile.

    coef = (η_h, ρ, α (0 when this step has no dual update), a_h, a_out): tensors, so one
    graph serves every value and both kinds of step; η_h, ρ, α are 0-d, or [M, 1, 1] for a
    stack whose models differ in them (`Stacked`).
    """

    def phi(z):
        return torch.relu(z) if act == "relu" else torch.tanh(z) if act == "tanh" else z

    def dphi_times(z, q):  # φ'(z) ⊙ q
        if act == "relu":
            return torch.where(z > 0, q, 0)
        return (1 - torch.tanh(z) ** 2) * q if act == "tanh" else q

    def step(z, eps, lam, e, bottom, W, WT, Wo_neg, WoT, y, coef):
        # No cat of matmul outputs (inductor would copy them): top and hidden layers are
        # updated apart, and the pieces are pointwise results written straight into place.
        eta, rho, alpha, a_h, a_out = coef
        hidden = z.shape[0] > 1
        q_top = dphi_times(z[-1], torch.matmul(e, Wo_neg))
        z_top = (z[-1] + eta * (q_top - eps[-1])).unsqueeze(0)
        if hidden:
            q = dphi_times(z[:-1], torch.matmul(eps[1:], W))
            z = torch.cat([z[:-1] + eta * (q + eps[1:] - eps[:-1]), z_top])
        else:
            z = z_top
        p = phi(z)
        r = (z[0] - bottom).unsqueeze(0)
        if hidden:
            r = torch.cat([r, z[1:] - (z[:-1] + a_h * torch.matmul(p[:-1], WT))])
        e = a_out * torch.matmul(p[-1], WoT) - y
        if has_lam:
            lam = lam + alpha * r
            eps = rho * r + lam
        else:
            eps = rho * r
        return z, eps, lam, e

    return step


_COMPILED: dict = {}
# Shapes one compiled step keeps (dynamo's per-function limit), and all steps together
# (dynamo's accumulated limit, 256 by default): past either, dynamo silently runs the step
# uncompiled. Every grid cell is a new shape (and a mixed stack another, its coefficients
# being [M, 1, 1]); there are 3 activations × PC/PC-ALM = 6 variants.
RECOMPILE_LIMIT = 1024
ACCUMULATED_RECOMPILE_LIMIT = 8 * RECOMPILE_LIMIT


def raise_dynamo_limits() -> None:
    import torch._dynamo.config as dynamo_config

    limits = {"recompile_limit": RECOMPILE_LIMIT, "cache_size_limit": RECOMPILE_LIMIT,
              "accumulated_recompile_limit": ACCUMULATED_RECOMPILE_LIMIT,
              "accumulated_cache_size_limit": ACCUMULATED_RECOMPILE_LIMIT}
    for name, limit in limits.items():  # older / newer torch spell them differently
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), limit))


def compiled_step(act: str, has_lam: bool):
    """torch.compile'd step, one per variant; dynamo caches one graph per shape/dtype/device."""
    key = (act, has_lam)
    if key not in _COMPILED:
        raise_dynamo_limits()
        fn = functional_step(act, has_lam)
        _COMPILED[key] = torch.compile(fn, dynamic=False, fullgraph=True)
    return _COMPILED[key]


def loop_compiled(ws: Workspace) -> None:
    """`Workspace.loop_eager` (without an observer) with the torch.compile'd functional step,
    on the workspace's buffers after its forward pass; the results are copied back."""
    p = ws.plan
    step = compiled_step(ws.act, p.has_lam)
    coef = ws.coef
    z, eps, lam, e = ws.z, ws.R, ws.lam, ws.e
    weights = (ws.F[0], ws.W, ws.WT, ws.Wo_neg, ws.WoT, ws.y3)
    for t in range(p.budget):
        for i in range(p.inner_steps):
            dual = (lam is not None and i == p.inner_steps - 1
                    and (t < p.budget - 1 or p.post_dual))
            z, eps, lam, e = step(z, eps, lam, e, *weights, coef[dual])
    ws.z.copy_(z)
    ws.R.copy_(eps)
    ws.e.copy_(e)
    if lam is not None:
        ws.lam.copy_(lam)
    ws._phi_all()
