"""BP, PC and PC-ALM: how each turns a batch into weight gradients (SPEC §4).

    algo = make_algorithm("pcalm", budget=64, state_lr=0.25)
    grads = algo.weight_grads(net, x, y)      # list shaped like net.weights

PC and PC-ALM share one inference loop. Each primal step is two batched matmuls over all
hidden layers: one for the residuals r (which are at once the dual update of the step
before and the errors of this one) and one for ∂𝓛/∂z. No autograd, no loop over layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from pcalm import energy
from pcalm.model import ResidualMLP

WEIGHT_CREDITS = ("pre_dual", "post_dual")


@dataclass
class InferenceState:
    """Where inference ended: states z, multipliers λ, credit ε = ρr + λ, output error e."""

    z: torch.Tensor
    lam: torch.Tensor | None
    eps: torch.Tensor
    e: torch.Tensor
    forward_loss: torch.Tensor  # ℓ at the forward pass, per model: the training loss


# observer(step, state) sees the state after every primal step (step 0 = forward pass);
# diagnostics use it for credit traces. None on the hot path.
Observer = Callable[[int, InferenceState], None]


class Algorithm:
    """Base class: one rule for the weight gradient of a batch."""

    name = ""

    def stacked_weight_grads(self, net: ResidualMLP, x, y):
        """(g_in, g_hidden, g_out, forward_loss): grads shaped like the stacked parameters."""
        raise NotImplementedError

    def weight_grads(self, net: ResidualMLP, x: torch.Tensor, y: torch.Tensor):
        """Batch-mean weight gradients, a list shaped like `net.weights`."""
        g_in, g_hidden, g_out, _ = self.stacked_weight_grads(net, x, y)
        return [g_in, *g_hidden.unbind(-3), g_out]

    def options(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass
class BP(Algorithm):
    """Backprop of ℓ = ½‖ŷ − y‖² (batch mean) at the forward pass."""

    name = "bp"

    def stacked_weight_grads(self, net, x, y):
        with torch.no_grad():
            h, delta, e = energy.backprop(net, x, y)
            loss = energy.mse_loss(e + y, y)
            return (*energy.weight_grads(net, x, h, -delta, e), loss)


@dataclass
class PC(Algorithm):
    """Predictive coding: z ← forward pass, then `budget` steps z ← z − η_h ∂F/∂z."""

    budget: int = 64
    state_lr: float = 0.25
    name = "pc"

    def __post_init__(self):
        _check_positive_int("budget", self.budget)
        _check_positive_float("state_lr", self.state_lr)

    def infer(self, net, x, y, observer: Observer | None = None) -> InferenceState:
        return run_inference(
            net, x, y, budget=self.budget, state_lr=self.state_lr, observer=observer
        )

    def stacked_weight_grads(self, net, x, y):
        s = self.infer(net, x, y)
        return (*energy.weight_grads(net, x, s.z, s.eps, s.e), s.forward_loss)


@dataclass
class PCALM(PC):
    """PC-ALM: PC plus layer-local multipliers λ with dual ascent λ ← λ + α r (SPEC §4).

    `inner_steps` primal steps per dual update (primal budget = budget × inner_steps);
    `weight_credit`: the λ of the last primal step (`pre_dual`) or one more dual update
    first (`post_dual`).
    """

    rho: float = 1.0
    alpha: float = 1.0
    inner_steps: int = 1
    weight_credit: str = "pre_dual"
    name = "pcalm"

    def __post_init__(self):
        super().__post_init__()
        _check_positive_float("rho", self.rho)
        if not _is_number(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha must be a number >= 0, got {self.alpha!r}")
        _check_positive_int("inner_steps", self.inner_steps)
        if self.weight_credit not in WEIGHT_CREDITS:
            allowed = ", ".join(WEIGHT_CREDITS)
            raise ValueError(f"unknown weight_credit {self.weight_credit!r}: allowed: {allowed}")

    def infer(self, net, x, y, observer: Observer | None = None) -> InferenceState:
        return run_inference(
            net, x, y, budget=self.budget, state_lr=self.state_lr, rho=self.rho,
            alpha=self.alpha, inner_steps=self.inner_steps,
            post_dual=self.weight_credit == "post_dual", observer=observer,
        )


def run_inference(
    net: ResidualMLP,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    budget: int,
    state_lr: float,
    rho: float = 1.0,
    alpha: float | None = None,
    inner_steps: int = 1,
    post_dual: bool = False,
    observer: Observer | None = None,
) -> InferenceState:
    """Inference from the forward pass. alpha=None is PC (no multipliers at all).

    PC-ALM: λ ← 0; for t = 1..T: `inner_steps` primal steps z ← z − η_h ∂𝓛/∂z, then
    (except after the last, unless post_dual) λ ← λ + α r with r after the primal step.
    """
    with torch.no_grad():
        bottom = net.bottom_prediction(x)
        z, y_hat = net.forward_states(x)
        forward_loss = energy.mse_loss(y_hat, y)
        lam = torch.zeros_like(z) if alpha is not None else None
        r = energy.residuals(net, bottom, z)
        e = y_hat - y

        def credit():
            return rho * r + lam if lam is not None else (r if rho == 1 else rho * r)

        if observer is not None:
            observer(0, InferenceState(z, lam, credit(), e, forward_loss))
        step = 0
        for t in range(budget):
            for _ in range(inner_steps):
                z = z - state_lr * energy.state_grad(net, z, credit(), e)
                r = energy.residuals(net, bottom, z)
                e = net.readout(z[..., -1, :, :]) - y
                step += 1
                if observer is not None:
                    observer(step, InferenceState(z, lam, credit(), e, forward_loss))
            if lam is not None and (t < budget - 1 or post_dual):
                lam = lam + alpha * r
        return InferenceState(z, lam, credit(), e, forward_loss)


ALGORITHMS: dict[str, type[Algorithm]] = {"bp": BP, "pc": PC, "pcalm": PCALM}


def algorithm_options(name: str) -> list[str]:
    """The option names `make_algorithm(name, ...)` accepts."""
    return [f.name for f in fields(_lookup(name))]  # type: ignore[arg-type]


def make_algorithm(name: str, **options) -> Algorithm:
    """Build `bp`, `pc` or `pcalm` with SPEC §4 defaults; bad names/options → ValueError."""
    cls = _lookup(name)
    allowed = algorithm_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for algorithm {name!r}: "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    return cls(**options)


def _lookup(name: str) -> type[Algorithm]:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}: allowed: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_positive_float(name: str, value) -> None:
    if not _is_number(value) or value <= 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
