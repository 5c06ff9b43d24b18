"""The hand-written local gradients equal autograd of the SPEC energies (float64)."""

import pytest
import torch

from pcalm.core import energy
from pcalm.core.model import ResidualMLP

ACTS = ["identity", "tanh", "relu"]


def _grads(scalar, net):
    """Autograd of `scalar` w.r.t. (w_in, w_hidden, w_out); unused (L = 2) → zeros."""
    params = list(net.parameters())
    grads = torch.autograd.grad(scalar, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _setup(act, depth, rho_lam=True, seed=0, width=5, batch=4, models=None):
    seeds = 0 if models is None else list(range(models))
    net = ResidualMLP(
        7, width, depth, output_dim=3, activation=act, seed=seeds, dtype=torch.float64
    )
    gen = torch.Generator().manual_seed(seed + 100)
    lead = () if models is None else (models,)
    x = torch.randn(*lead, batch, 7, generator=gen, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (*lead, batch), generator=gen), 3).double()
    # Random states away from the forward pass, so residuals and all terms are non-zero.
    z = torch.randn(*lead, depth - 1, batch, width, generator=gen, dtype=torch.float64)
    lam = torch.randn_like(z) if rho_lam else None
    return net, x, y, z, lam


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("depth", [2, 3, 6])
def test_state_grad_matches_autograd(act, depth):
    net, x, y, z, lam = _setup(act, depth)
    rho = 1.7
    z_req = z.clone().requires_grad_(True)
    batch = x.shape[0]
    (auto,) = torch.autograd.grad(energy.lagrangian(net, x, y, z_req, lam, rho) * batch, z_req)
    r = energy.residuals(net, net.bottom_prediction(x), z)
    e = net.readout(z[-1]) - y
    local = energy.state_grad(net, z, rho * r + lam, e)
    torch.testing.assert_close(local, auto, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("depth", [2, 3, 6])
def test_weight_grads_match_autograd(act, depth):
    net, x, y, z, lam = _setup(act, depth)
    rho = 0.6
    auto = _grads(energy.lagrangian(net, x, y, z, lam, rho), net)
    r = energy.residuals(net, net.bottom_prediction(x), z)
    e = net.readout(z[-1]) - y
    local = energy.weight_grads(net, x, z, rho * r + lam, e)
    for a, b in zip(local, auto):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("act", ACTS)
def test_pc_energy_is_lagrangian_without_multipliers(act):
    net, x, y, z, lam = _setup(act, 4)
    f = energy.pc_energy(net, x, y, z)
    r = energy.residuals(net, net.bottom_prediction(x), z)
    by_hand = energy.mse_loss(net.readout(z[-1]), y) + 0.5 * r.pow(2).sum() / x.shape[0]
    torch.testing.assert_close(f, by_hand)
    # The shifted form ℓ + Σ (ρ/2)‖r + λ/ρ‖² differs from 𝓛_ρ by a z-free constant.
    rho = 2.0
    shifted = energy.mse_loss(net.readout(z[-1]), y) + (
        rho / 2 * (r + lam / rho).pow(2).sum() / x.shape[0]
    )
    const = (lam.pow(2).sum() / (2 * rho)) / x.shape[0]
    torch.testing.assert_close(energy.lagrangian(net, x, y, z, lam, rho), shifted - const)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("depth", [2, 3, 5])
def test_backprop_matches_autograd(act, depth):
    net, x, y, _, _ = _setup(act, depth)
    auto = _grads(energy.mse_loss(net(x), y), net)
    h, delta, e = energy.backprop(net, x, y)
    local = energy.weight_grads(net, x, h, -delta, e)
    for a, b in zip(local, auto):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # δ_l is the adjoint ∂ℓ/∂h_l per sample.
    h_req = h.clone().requires_grad_(True)
    y_hat = net.readout(h_req[-1])
    (d_top,) = torch.autograd.grad(0.5 * (y_hat - y).pow(2).sum(), h_req)
    torch.testing.assert_close(delta[-1], d_top[-1])


def test_forward_residuals_vanish_at_forward_pass():
    net, x, _, _, _ = _setup("tanh", 6)
    h, _ = net.forward_states(x)
    r = energy.residuals(net, net.bottom_prediction(x), h)
    assert r.abs().max() < 1e-12


def test_stacked_models_match_single_models():
    net, x, y, z, lam = _setup("relu", 5, models=3)
    r = energy.residuals(net, net.bottom_prediction(x), z)
    e = net.readout(z[..., -1, :, :]) - y
    g_stack = energy.weight_grads(net, x, z, r + lam, e)
    for m in range(3):
        single = ResidualMLP(7, 5, 5, output_dim=3, activation="relu", seed=m, dtype=torch.float64)
        torch.testing.assert_close(single.w_hidden, net.w_hidden[m])
        r1 = energy.residuals(single, single.bottom_prediction(x[m]), z[m])
        e1 = single.readout(z[m, -1]) - y[m]
        for a, b in zip(energy.weight_grads(single, x[m], z[m], r1 + lam[m], e1), g_stack):
            torch.testing.assert_close(a, b[m])


@pytest.mark.parametrize("act", ACTS)
def test_stacked_energies_state_grads_and_adjoints_are_per_model(act):
    """With a model dimension every energy is one number per model and every per-sample
    quantity is that model's own: loss, 𝓛, ∂𝓛/∂z and the BP adjoints of a stack equal those
    of each model alone."""
    net, x, y, z, lam = _setup(act, 5, models=3)
    rho = 1.3
    loss = energy.mse_loss(net.readout(z[..., -1, :, :]), y)
    lag = energy.lagrangian(net, x, y, z, lam, rho)
    assert loss.shape == lag.shape == (3,)
    r = energy.residuals(net, net.bottom_prediction(x), z)
    e = net.readout(z[..., -1, :, :]) - y
    grad = energy.state_grad(net, z, rho * r + lam, e)
    h, delta, e_bp = energy.backprop(net, x, y)
    for m in range(3):
        one = ResidualMLP(7, 5, 5, output_dim=3, activation=act, seed=m, dtype=torch.float64)
        torch.testing.assert_close(loss[m], energy.mse_loss(one.readout(z[m, -1]), y[m]))
        torch.testing.assert_close(lag[m], energy.lagrangian(one, x[m], y[m], z[m], lam[m], rho))
        r1 = energy.residuals(one, one.bottom_prediction(x[m]), z[m])
        e1 = one.readout(z[m, -1]) - y[m]
        torch.testing.assert_close(grad[m], energy.state_grad(one, z[m], rho * r1 + lam[m], e1))
        h1, d1, _ = energy.backprop(one, x[m], y[m])
        torch.testing.assert_close(h[m], h1)
        torch.testing.assert_close(delta[m], d1)
