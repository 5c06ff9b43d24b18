"""Straightforward versions of BP, PC and PC-ALM: the bench's baselines and the tests' oracles.

Two reference implementations, both slow on purpose and written to be read against SPEC §3–4:

- ``layerwise_*``: the naive version. Python lists of per-layer weights, a loop over layers
  inside every inference step, SPEC §3's local gradients written out one layer at a time,
  BP by autograd. It imports nothing from ``pcalm.core.energy`` or ``pcalm.core.algorithms``,
  so it is an independent oracle for the fast stacked loop in ``pcalm.core.algorithms``.
- ``stacked_eager_*``: the previous hot path: stacked ``[L-2, N, N]`` hidden weights and a
  few batched matmuls per step (``pcalm.core.energy``), but plain eager ops that allocate new
  tensors (and a ``torch.cat``) every step. The bench reports it as "previous eager";
  ``pcalm.core.algorithms`` falls back to it for input shapes its fast loop does not handle.

Options follow ``make_algorithm``: ``budget``, ``state_lr``, and for PC-ALM ``rho``, ``alpha``,
``inner_steps``, ``weight_credit`` (``pre_dual`` | ``post_dual``).
"""

from __future__ import annotations

import torch

from pcalm.core.model import ResidualMLP

NAMES = ("bp", "pc", "pcalm")


def _relu_deriv(z):
    return (z > 0).to(z.dtype)


def _tanh_deriv(z):
    return 1 - torch.tanh(z) ** 2


_PHI = {
    "identity": (lambda z: z, torch.ones_like),
    "tanh": (torch.tanh, _tanh_deriv),
    "relu": (torch.relu, _relu_deriv),
}


class LayerwiseNet:
    """One model of a ResidualMLP as a plain list of per-layer weights [W_1, …, W_L].

    ``model`` picks one model of a stacked net (required then). The weights are copies.
    """

    def __init__(self, net: ResidualMLP, model: int | None = None):
        if net.num_models is not None and model is None:
            raise ValueError("a stacked net needs model=<index>")
        pick = (lambda w: w[model]) if net.num_models is not None else (lambda w: w)
        self.weights = [pick(w).detach().clone() for w in net.weights]
        self.a_in, self.a_hidden, self.a_out = net.a_in, net.a_hidden, net.a_out
        self.phi, self.dphi = _PHI[net.act.name]
        self.depth = len(self.weights)

    def forward(self, x: torch.Tensor, weights=None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """h_1 … h_{L-1} (a list) and ŷ (SPEC §1)."""
        w = self.weights if weights is None else weights
        h = [self.a_in * x @ w[0].T]
        for l in range(1, self.depth - 1):
            h.append(h[-1] + self.a_hidden * self.phi(h[-1]) @ w[l].T)
        return h, self.a_out * self.phi(h[-1]) @ w[-1].T


def _options(name: str, options: dict) -> dict:
    if name not in NAMES:
        raise ValueError(f"unknown algorithm {name!r}: allowed: {', '.join(NAMES)}")
    opts = {"budget": 64, "state_lr": 0.25, "rho": 1.0, "alpha": 1.0, "inner_steps": 1,
            "weight_credit": "pre_dual"}
    unknown = set(options) - set(opts)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}")
    opts.update(options)
    if name == "pc":  # PC: no multipliers, ρ = 1, one primal step per outer step
        opts.update(rho=1.0, alpha=None, inner_steps=1, weight_credit="pre_dual")
    return opts


def layerwise_inference(net: LayerwiseNet, x, y, *, budget: int, state_lr: float,
                        rho: float = 1.0, alpha: float | None = None, inner_steps: int = 1,
                        post_dual: bool = False) -> dict:
    """SPEC §4 inference, one layer at a time. alpha=None is PC (no multipliers).

    Returns lists z, lam, eps (per hidden layer), the output error e and ℓ at the forward pass.
    """
    w, a_h, a_out = net.weights, net.a_hidden, net.a_out
    n_hidden = net.depth - 1
    bottom = net.a_in * x @ w[0].T
    z, y_hat = net.forward(x)
    forward_loss = 0.5 * (y_hat - y).pow(2).sum(-1).mean(-1)
    lam = [torch.zeros_like(zl) for zl in z] if alpha is not None else None

    def errors(z):
        r = [z[0] - bottom]
        for l in range(1, n_hidden):
            r.append(z[l] - (z[l - 1] + a_h * net.phi(z[l - 1]) @ w[l].T))
        e = a_out * net.phi(z[-1]) @ w[-1].T - y
        return r, e

    def credit(r):
        return [rho * rl + (lam[l] if lam is not None else 0) for l, rl in enumerate(r)]

    r, e = errors(z)
    for t in range(budget):
        for _ in range(inner_steps):
            eps = credit(r)
            new_z = []
            for l in range(n_hidden):
                g = eps[l].clone()
                if l < n_hidden - 1:
                    g = g - eps[l + 1] - a_h * net.dphi(z[l]) * (eps[l + 1] @ w[l + 1])
                else:
                    g = g + a_out * net.dphi(z[l]) * (e @ w[-1])
                new_z.append(z[l] - state_lr * g)
            z = new_z
            r, e = errors(z)
        if lam is not None and (t < budget - 1 or post_dual):
            lam = [lam[l] + alpha * r[l] for l in range(n_hidden)]
    return {"z": z, "lam": lam, "eps": credit(r), "e": e, "forward_loss": forward_loss}


def layerwise_weight_grads(name: str, net: ResidualMLP, x, y, model: int | None = None,
                           **options) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(per-layer weight gradients [dW_1, …, dW_L], forward loss) of BP, PC or PC-ALM."""
    opts = _options(name, options)
    lnet = LayerwiseNet(net, model)
    if name == "bp":  # the straightforward way: autograd of the batch-mean loss
        with torch.enable_grad():
            weights = [w.clone().requires_grad_(True) for w in lnet.weights]
            _, y_hat = lnet.forward(x, weights)
            loss = 0.5 * (y_hat - y).pow(2).sum(-1).mean(-1)
            grads = torch.autograd.grad(loss, weights)
        return list(grads), loss.detach()
    with torch.no_grad():
        s = layerwise_inference(
            lnet, x, y, budget=opts["budget"], state_lr=opts["state_lr"], rho=opts["rho"],
            alpha=opts["alpha"], inner_steps=opts["inner_steps"],
            post_dual=opts["weight_credit"] == "post_dual",
        )
        z, eps, e, batch = s["z"], s["eps"], s["e"], x.shape[-2]
        grads = [-lnet.a_in / batch * eps[0].T @ x]
        for l in range(1, lnet.depth - 1):
            grads.append(-lnet.a_hidden / batch * eps[l].T @ lnet.phi(z[l - 1]))
        grads.append(lnet.a_out / batch * e.T @ lnet.phi(z[-1]))
    return grads, s["forward_loss"]


# -- the previous stacked eager hot path ---------------------------------------------------

def stacked_eager_inference(net: ResidualMLP, x, y, *, budget: int, state_lr: float,
                            rho: float = 1.0, alpha: float | None = None, inner_steps: int = 1,
                            post_dual: bool = False, observer=None) -> tuple:
    """The stacked eager loop as it was before the fast path (pcalm.core.energy's functions).

    Returns (z, lam, eps, e, forward_loss); ``observer(step, (z, lam, eps, e, loss))``.
    """
    from pcalm.core import energy

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
            observer(0, (z, lam, credit(), e, forward_loss))
        step = 0
        for t in range(budget):
            for _ in range(inner_steps):
                z = z - state_lr * energy.state_grad(net, z, credit(), e)
                r = energy.residuals(net, bottom, z)
                e = net.readout(z[..., -1, :, :]) - y
                step += 1
                if observer is not None:
                    observer(step, (z, lam, credit(), e, forward_loss))
            if lam is not None and (t < budget - 1 or post_dual):
                lam = lam + alpha * r
        return z, lam, credit(), e, forward_loss


def stacked_eager_weight_grads(name: str, net: ResidualMLP, x, y, **options) -> tuple:
    """(g_in, g_hidden, g_out, forward_loss) by the previous stacked eager path."""
    from pcalm.core import energy

    opts = _options(name, options)
    with torch.no_grad():
        if name == "bp":
            h, delta, e = energy.backprop(net, x, y)
            return (*energy.weight_grads(net, x, h, -delta, e), energy.mse_loss(e + y, y))
        z, _, eps, e, loss = stacked_eager_inference(
            net, x, y, budget=opts["budget"], state_lr=opts["state_lr"], rho=opts["rho"],
            alpha=opts["alpha"], inner_steps=opts["inner_steps"],
            post_dual=opts["weight_credit"] == "post_dual",
        )
        return (*energy.weight_grads(net, x, z, eps, e), loss)
