"""The muPC residual MLP of SPEC §1, with its hidden weights stacked for speed.

    h_1 = a_in  · W_1 x                          a_in     = 1/sqrt(D)
    h_l = h_{l-1} + a_hidden · W_l φ(h_{l-1})    a_hidden = 1/sqrt(N·L)    l = 2 .. L-1
    ŷ   = a_out · W_L φ(h_{L-1})                 a_out    = 1/(γ0·N)

The L−2 residual blocks share one shape, so they live in one ``[L−2, N, N]`` tensor and
every per-layer operation of the inference loop is one batched matmul. A net can also hold
M independent models (``seed=[s1, …, sM]``): every weight then gets a leading model
dimension and the same code trains all M at once.

Shapes used throughout (``...`` = optional model dimension M):
    x        [..., B, D]        inputs (or [B, D], shared by all models)
    z, h     [..., L-1, B, N]   hidden states z_1 .. z_{L-1}, stacked on the layer axis
    ŷ        [..., B, C]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pcalm.errors import is_int_at_least
from pcalm.names import ACTIVATION_ALIASES, canonical_activation

PARAMETERISATIONS = ("mupc", "sp")


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity φ and its derivative φ' (as a function of the input)."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    deriv: Callable[[torch.Tensor], torch.Tensor]


def _relu_deriv(z: torch.Tensor) -> torch.Tensor:
    return (z > 0).to(z.dtype)  # φ'(0) = 0, as autograd's relu


def _tanh_deriv(z: torch.Tensor) -> torch.Tensor:
    return 1 - torch.tanh(z) ** 2


_ACTIVATIONS = {
    "identity": Activation("identity", lambda z: z, torch.ones_like),
    "tanh": Activation("tanh", torch.tanh, _tanh_deriv),
    "relu": Activation("relu", torch.relu, _relu_deriv),
}
ACTIVATIONS = tuple(_ACTIVATIONS) + tuple(ACTIVATION_ALIASES)


def get_activation(name: str) -> Activation:
    """Look an activation up by name (``identity``/``linear``, ``tanh``, ``relu``)."""
    key = canonical_activation(name)
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: allowed: {', '.join(ACTIVATIONS)}")
    return _ACTIVATIONS[key]


def _check_int(name: str, value, minimum: int) -> int:
    if not is_int_at_least(value, minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class ResidualMLP(nn.Module):
    """muPC-parameterised residual MLP with L weight matrices and no biases (SPEC §1).

    Args:
        input_dim: D. width: N. depth: L (number of weight matrices, ≥ 2).
        output_dim: C. activation: ``identity`` (alias ``linear``), ``tanh`` or ``relu``.
        param: ``mupc`` (W ~ N(0, 1), scales a_in, a_hidden, a_out as above) or ``sp``
            (all scales 1, PyTorch's default Linear init U(±1/sqrt(fan_in))).
        gamma0: output multiplier γ0 of a_out = 1/(γ0 N) (``mupc`` only).
        seed: an int, or a sequence of ints for a stack of independent models; model m
            is then bit-identical to ``ResidualMLP(..., seed=seed[m])``.
    """

    def __init__(
        self,
        input_dim: int,
        width: int,
        depth: int,
        output_dim: int = 10,
        activation: str = "relu",
        param: str = "mupc",
        gamma0: float = 1.0,
        seed: int | Sequence[int] = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.input_dim = _check_int("input_dim", input_dim, 1)
        self.width = _check_int("width", width, 1)
        self.depth = _check_int("depth", depth, 2)
        self.output_dim = _check_int("output_dim", output_dim, 1)
        self.act = get_activation(activation)
        if param not in PARAMETERISATIONS:
            raise ValueError(f"unknown param {param!r}: allowed: {', '.join(PARAMETERISATIONS)}")
        if not (isinstance(gamma0, (int, float)) and gamma0 > 0):
            raise ValueError(f"gamma0 must be a positive number, got {gamma0!r}")
        self.param, self.gamma0 = param, float(gamma0)
        self.seeds = [seed] if isinstance(seed, int) else list(seed)
        self.num_models = None if isinstance(seed, int) else len(self.seeds)
        if self.num_models == 0:
            raise ValueError("seed must be an int or a non-empty sequence of ints")

        n, d, c, k = width, input_dim, output_dim, depth - 2
        if param == "mupc":
            self.a_in, self.a_hidden = 1 / math.sqrt(d), 1 / math.sqrt(n * depth)
            self.a_out = 1 / (self.gamma0 * n)
        else:
            self.a_in = self.a_hidden = self.a_out = 1.0
        shapes = [(n, d), (k, n, n), (c, n)]
        per_model = [self._init_weights(s, shapes) for s in self.seeds]
        stacked = [torch.stack(ws) if self.num_models else ws[0] for ws in zip(*per_model)]
        self.w_in, self.w_hidden, self.w_out = (
            nn.Parameter(w.to(device=device, dtype=dtype)) for w in stacked
        )

    def _init_weights(self, seed: int, shapes) -> list[torch.Tensor]:
        # Drawn on the CPU in float32 from one generator, so a seed gives the same net on
        # every device and dtype (float64 tests see the float32 draws, upcast).
        gen = torch.Generator().manual_seed(seed)
        weights = []
        for shape in shapes:
            if self.param == "sp":  # PyTorch's nn.Linear default: U(-1/sqrt(fan_in), ...)
                bound = 1 / math.sqrt(shape[-1])
                weights.append((torch.rand(shape, generator=gen) * 2 - 1) * bound)
            else:
                weights.append(torch.randn(shape, generator=gen))
        return weights

    @property
    def weights(self) -> list[torch.Tensor]:
        """The L weight matrices [W_1 (N×D), W_2 … W_{L-1} (N×N), W_L (C×N)].

        Hidden ones are views into the stacked tensor; with a model stack each carries the
        leading model dimension.
        """
        hidden = self.w_hidden.unbind(-3)
        return [self.w_in, *hidden, self.w_out]

    def bottom_prediction(self, x: torch.Tensor) -> torch.Tensor:
        """a_in · W_1 x: the first layer's prediction, fixed during inference."""
        return self.a_in * (x @ self.w_in.transpose(-1, -2))

    def residual_predictions(self, z_below: torch.Tensor) -> torch.Tensor:
        """f_l(z_{l-1}) for l = 2..L-1 at once: z_{l-1} + a_hidden · W_l φ(z_{l-1})."""
        return z_below + self.a_hidden * (self.act.fn(z_below) @ self.w_hidden.transpose(-1, -2))

    def readout(self, z_top: torch.Tensor) -> torch.Tensor:
        """ŷ = a_out · W_L φ(z_{L-1})."""
        return self.a_out * (self.act.fn(z_top) @ self.w_out.transpose(-1, -2))

    def forward_states(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward pass: the stacked hidden states h [..., L-1, B, N] and the output ŷ."""
        h = self.bottom_prediction(x)
        states = [h]
        for l in range(self.depth - 2):  # sequential by nature: each layer needs the last
            w = self.w_hidden[..., l, :, :]
            h = h + self.a_hidden * (self.act.fn(h) @ w.transpose(-1, -2))
            states.append(h)
        return torch.stack(states, dim=-3), self.readout(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_states(x)[1]

    def extra_repr(self) -> str:
        models = f", models={self.num_models}" if self.num_models else ""
        return (
            f"D={self.input_dim}, N={self.width}, L={self.depth}, C={self.output_dim}, "
            f"activation={self.act.name}, param={self.param}, gamma0={self.gamma0}{models}"
        )
