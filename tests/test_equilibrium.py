"""The equilibrium mode (pcalm.core.equilibrium) against independently computed fixed points.

Linear nets: PC's fixed point is the minimiser of a quadratic, z* = (PᵀP + ρRᵀR)⁻¹(Pᵀy +
Rᵀ(ρc − λ)), built here from the weights with dense torch.linalg; PC-ALM's is z = h,
λ = −δ with δ from autograd through the forward pass. Nonlinear nets: the plain SPEC §4
iteration run to convergence in float64. Tolerances: 1e-9 (closed forms, float64) and 1e-7
(plain iteration, stopped at a relative change below 1e-13); ReLU nets, whose
plain iteration chatters at kinks, within O(η_h).
"""

from __future__ import annotations

import pytest
import torch

from pcalm.core import energy, equilibrium
from pcalm.core.algorithms import make_algorithm
from pcalm.core.model import ResidualMLP

D, C = 6, 3


def _net(act: str, width: int = 4, depth: int = 5, seed: int = 0) -> ResidualMLP:
    return ResidualMLP(D, width, depth, output_dim=C, activation=act, seed=seed,
                       dtype=torch.float64)


def _batch(b: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, D, generator=g, dtype=torch.float64)
    y = torch.eye(C, dtype=torch.float64)[torch.randint(0, C, (b,), generator=g)]
    return x, y


def _dense_linear_system(net: ResidualMLP):
    """R (unit block-lower-bidiagonal, −(I + a_h W_l) below) and P = a_L W_L on the top block,
    written out from the weights (SPEC §6)."""
    n, layers = net.width, net.depth - 1
    eye = torch.eye(n, dtype=torch.float64)
    r = torch.eye(layers * n, dtype=torch.float64)
    for l in range(1, layers):
        block = eye + net.a_hidden * net.w_hidden[l - 1].detach()
        r[l * n:(l + 1) * n, (l - 1) * n:l * n] = -block
    p = torch.zeros(C, layers * n, dtype=torch.float64)
    p[:, -n:] = net.a_out * net.w_out.detach()
    return r, p


@pytest.mark.parametrize("rho,with_lam", [(1.0, False), (2.5, True)])
def test_linear_pc_equilibrium_is_the_closed_form_linear_solve(rho, with_lam):
    net = _net("identity")
    x, y = _batch()
    r, p = _dense_linear_system(net)
    layers, b, n = net.depth - 1, x.shape[0], net.width
    lam = torch.randn(layers, b, n, generator=torch.Generator().manual_seed(7),
                      dtype=torch.float64) if with_lam else None
    eq = equilibrium.solve_pc(net, x, y, rho=rho, lam=lam)
    assert eq.converged and eq.residual <= 1e-8 and eq.iterations <= 2
    for s in range(b):
        c = torch.zeros(layers * n, dtype=torch.float64)
        c[:n] = net.a_in * (net.w_in.detach() @ x[s])
        shift = rho * c - (lam[:, s].reshape(-1) if with_lam else 0)
        z_star = torch.linalg.solve(p.T @ p + rho * r.T @ r, p.T @ y[s] + r.T @ shift)
        assert torch.allclose(eq.z[:, s].reshape(-1), z_star, atol=1e-9, rtol=0)


def test_linear_pc_takes_few_cg_iterations_at_any_depth():
    """The preconditioned matrix is I + rank C: CG needs about C + 1 iterations, not ~L."""
    net = ResidualMLP(D, 4, 40, output_dim=C, activation="identity", seed=0,
                      dtype=torch.float64)
    x, y = _batch()
    eq = equilibrium.solve_pc(net, x, y)
    assert eq.converged and eq.cg_iterations <= 2 * (C + 1)


def test_pcalm_equilibrium_is_forward_pass_and_minus_the_autograd_adjoint():
    net = _net("tanh")
    x, y = _batch()
    h = [net.bottom_prediction(x).detach().requires_grad_()]
    for l in range(net.depth - 2):  # the forward pass, each state a leaf for autograd
        nxt = h[-1] + net.a_hidden * (torch.tanh(h[-1]) @ net.w_hidden[l].detach().T)
        h.append(nxt)
    y_hat = net.a_out * (torch.tanh(h[-1]) @ net.w_out.detach().T)
    loss = 0.5 * (y_hat - y).pow(2).sum()  # per-sample sum: δ per sample
    for t in h:
        t.retain_grad()
    loss.backward()
    eq = equilibrium.solve_pcalm(net, x, y)
    assert torch.allclose(eq.z, torch.stack([t.detach() for t in h]), atol=1e-12)
    # δ_l = dℓ/dh_l holding the layers above as functions of h_l: autograd's total derivative
    assert torch.allclose(eq.lam, -torch.stack([t.grad for t in h]), atol=1e-12)
    assert eq.converged and eq.residual < 1e-12 and eq.dual_residual < 1e-12


def _plain_pc(net, x, y, state_lr: float, steps: int, stop: float = 0.0):
    """SPEC §4's PC iteration z ← z − η_h ∂F/∂z from the forward pass (energy's gradient)."""
    z, _ = net.forward_states(x)
    bottom = net.bottom_prediction(x)
    with torch.no_grad():
        for _ in range(steps):
            eps = energy.residuals(net, bottom, z)
            step = state_lr * energy.state_grad(net, z, eps, net.readout(z[-1]) - y)
            z = z - step
            if step.norm() <= stop * z.norm():
                break
    return z, float(step.norm() / z.norm())


def test_tanh_pc_equilibrium_matches_the_plain_iteration_run_to_convergence():
    net = _net("tanh", width=5, depth=6, seed=3)
    x, y = _batch(4, seed=2)
    z, change = _plain_pc(net, x, y, 0.2, 100_000, stop=1e-13)
    assert change <= 1e-13, "the plain iteration must converge for this case"
    eq = equilibrium.solve_pc(net, x, y)
    assert eq.converged and eq.residual <= 1e-8 and eq.iterations < 50
    assert torch.allclose(eq.z, z, atol=1e-7, rtol=0)


def test_relu_plain_iteration_chatters_around_the_equilibrium_within_its_step():
    """With ReLU the minimiser has coordinates on a kink (pinned > 0 here), where the plain
    iteration never settles: it chatters within O(η_h) of the kink. So its distance to the
    equilibrium is small and shrinks in proportion to η_h."""
    net = _net("relu", width=5, depth=6, seed=5)
    x, y = _batch(2, seed=5)
    eq = equilibrium.solve_pc(net, x, y)
    assert eq.converged and eq.pinned > 0
    far = float((_plain_pc(net, x, y, 0.2, 3_000)[0] - eq.z).abs().max())
    near = float((_plain_pc(net, x, y, 0.05, 12_000)[0] - eq.z).abs().max())
    assert far < 0.05 and near < 0.4 * far


def test_pc_equilibrium_matches_the_plain_dynamics_of_the_library():
    """The same fixed point as pcalm's own PC loop (the hot path) run long, float64 tanh."""
    net = _net("tanh", width=4, depth=4, seed=5)
    x, y = _batch(2, seed=4)
    final = make_algorithm("pc", budget=20_000, state_lr=0.2).infer(net, x, y)
    eq = equilibrium.solve_pc(net, x, y)
    assert torch.allclose(eq.z, final.z, atol=1e-8, rtol=0)


def test_relu_equilibrium_is_a_local_minimum_checked_by_autograd():
    """Where z_i ≠ 0 the autograd gradient of F vanishes; where a coordinate sits at a kink,
    F's one-sided slopes along it (finite differences of the energy) are ≥ 0 both ways."""
    net = ResidualMLP(D, 6, 8, output_dim=C, activation="relu", seed=11, dtype=torch.float64)
    x, y = _batch(6, seed=12)
    eq = equilibrium.solve_pc(net, x, y)
    assert eq.converged
    b = x.shape[0]
    z = eq.z.clone().requires_grad_()
    (grad,) = torch.autograd.grad(energy.pc_energy(net, x, y, z) * b, z)
    off = eq.z != 0
    assert grad[off].abs().max() < 1e-8 * max(1.0, float(eq.z.abs().max()))
    for idx in (~off).nonzero().tolist():
        for sign in (1.0, -1.0):
            moved = eq.z.clone()
            moved[tuple(idx)] += sign * 1e-7
            with torch.no_grad():
                rise = (energy.pc_energy(net, x, y, moved) - energy.pc_energy(net, x, y, eq.z))
            assert rise * b > -1e-15


def test_equilibrium_records_its_residual_and_iterations():
    net = _net("relu")
    x, y = _batch()
    record = equilibrium.solve_pc(net, x, y, tol=1e-6).record()
    assert set(record) >= {"equilibrium_residual", "equilibrium_iterations",
                           "equilibrium_cg_iterations", "equilibrium_converged"}
    assert record["equilibrium_residual"] <= 1e-6 and record["equilibrium_converged"]
    short = equilibrium.solve_pc(net, x, y, tol=1e-12, max_newton=1)
    assert short.iterations == 1


def test_bad_input_is_one_clear_error():
    net = _net("relu")
    x, y = _batch()
    with pytest.raises(ValueError, match="tol"):
        equilibrium.solve_pc(net, x, y, tol=0)
    with pytest.raises(ValueError, match="allowed: pc, pcalm"):
        equilibrium.solve("bp", net, x, y)
