"""Adam for a model stack: one optimiser over parameters with a leading model dimension.

A stack whose models share a learning rate uses `torch.optim.Adam` itself. Models that differ
in their learning rate (e.g. η0 of a learning-rate sweep trained as one stack) get
`StackedAdam`: the same update, with lr a per-model tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

BETAS = (0.9, 0.999)
EPS = 1e-8


def make_adam(params: Iterable[torch.Tensor], lrs: Sequence[float]) -> torch.optim.Optimizer:
    """Adam with learning rate ``lrs[m]`` for model m of every (stacked) parameter."""
    if len(set(lrs)) == 1:
        return torch.optim.Adam(params, lr=lrs[0], betas=BETAS, eps=EPS)
    return StackedAdam(params, lrs)


class StackedAdam(torch.optim.Optimizer):
    """torch.optim.Adam's update (bias-corrected moments, no weight decay, no amsgrad) with a
    learning rate per model: parameter p[m] moves by −lr[m] · m̂ / (√v̂ + ε)."""

    def __init__(self, params, lrs: Sequence[float], betas=BETAS, eps: float = EPS):
        super().__init__(params, {"lrs": [float(v) for v in lrs], "betas": betas, "eps": eps})
        for group in self.param_groups:
            for p in group["params"]:
                if p.shape[0] != len(group["lrs"]):
                    raise ValueError(f"{len(group['lrs'])} learning rates for a stack of "
                                     f"{p.shape[0]} models")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # torch.optim's contract: re-evaluate the loss first
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    # made once: no host-to-device copy per step
                    state["lr"] = torch.tensor(group["lrs"], dtype=p.dtype, device=p.device)
                state["step"] += 1
                t, grad = state["step"], p.grad
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
                lr = state["lr"].view(-1, *([1] * (p.dim() - 1))) / (1 - beta1**t)
                p.sub_(m / denom * lr)
        return loss
