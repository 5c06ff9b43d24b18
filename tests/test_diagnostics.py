"""pcalm/core/diagnostics.py beyond the SPEC rules of tests/test_spec_rules.py: the λ_max solvers
step by step, their defaults, stacked nets, and the linear system's guard. Every expected
value comes from the dense per-sample Hessian built by tests/oracle.py.

A Lanczos run of k steps from q returns the Ritz values of the Krylov space
K_k(H, q) = span{q, Hq, …, H^{k−1}q}: the test builds that space with a QR factorisation
and takes the top eigenvalue of QᵀHQ, a computation that shares nothing with the solver's
three-term recurrence.
"""

from __future__ import annotations

import pytest
import torch

from pcalm.core.diagnostics import (
    hessian_lambda_max,
    hessian_power_trace,
    hessian_vector_product,
    iteration_matrix,
    linear_hessian,
    linear_system,
)
from pcalm.core.model import ResidualMLP
from tests import oracle


def _net(act="tanh", width=3, depth=4, d=5, seed=0, **kw):
    return ResidualMLP(d, width, depth, output_dim=3, activation=act, gamma0=0.7, seed=seed,
                       dtype=torch.float64, **kw)


def _x(batch=4, d=5, seed=7):
    return torch.randn(batch, d, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def _hessians(net, x, rho=1.0):
    a = (net.a_in, net.a_hidden, net.a_out)
    return oracle.gauss_newton_hessians([w.detach() for w in net.weights], x, net.act.name, a,
                                        rho)


def _start(batch, dim, seed=0):
    """The solvers' start vector: N(0, I) of shape [B, (L−1)·N] from Generator(seed)."""
    q = torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64)
    return q / q.norm(dim=1, keepdim=True)


def _krylov_ritz_max(hess, q, k):
    """Top Ritz value of K_k(H_b, q_b) per sample, max over the batch."""
    tops = []
    for h, v in zip(hess, q):
        columns = [v]
        for _ in range(k - 1):
            columns.append(h @ columns[-1])
        basis, _ = torch.linalg.qr(torch.stack(columns, 1))
        tops.append(torch.linalg.eigvalsh(basis.T @ h @ basis)[-1])
    return max(tops).item()


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_lanczos_of_k_steps_gives_the_top_ritz_value_of_the_krylov_space(k):
    """Catches a step more or fewer, a lost off-diagonal, and k = 1 (the Rayleigh quotient)."""
    net, x = _net(), _x()
    hess = _hessians(net, x, rho=1.3)
    q = _start(4, hess.shape[-1], seed=5)
    want = _krylov_ritz_max(hess, q, k)
    got = hessian_lambda_max(net, x, rho=1.3, iters=k, seed=5)
    assert got == pytest.approx(want, rel=1e-10)
    if k < 5:  # each step moves the estimate: the step count is visible
        assert abs(got - _krylov_ritz_max(hess, q, k + 1)) > 1e-8 * want


def test_lanczos_stops_cleanly_where_the_krylov_space_is_exhausted():
    """A net with zero hidden and readout weights has H = ρ T ⊗ I_N: its Krylov spaces have
    dimension L−1, far below (L−1)·N, so the recurrence meets β ≈ 0 early. The solver must
    still return the exact λ_max of T (a lower-bidiagonal R: T = RᵀR with R = I − shift)."""
    net = _net(act="identity", width=8, depth=6)
    with torch.no_grad():
        net.w_hidden.zero_()
        net.w_out.zero_()
    layers = 5
    r = torch.eye(layers, dtype=torch.float64) - torch.diag(torch.ones(layers - 1,
                                                                       dtype=torch.float64), -1)
    want = 1.5 * torch.linalg.eigvalsh(r.T @ r)[-1].item()
    assert hessian_lambda_max(net, _x(), rho=1.5) == pytest.approx(want, rel=1e-12)


def test_power_trace_is_plain_power_iteration():
    """Row k−1 is ‖H v_{k−1}‖ per sample from v_0 ~ N(0, I); default 20 rows from seed 0 and
    ρ = 1; ρ enters."""
    net, x = _net(act="relu", width=4, depth=5), _x(batch=3)
    for rho, kwargs, rows in ((1.0, {}, 20), (2.2, {"rho": 2.2, "iters": 6, "seed": 3}, 6)):
        hess = _hessians(net, x, rho)
        # v_0 is drawn in the states' layout [L−1, B, N], then flattened per sample
        gen = torch.Generator().manual_seed(kwargs.get("seed", 0))
        v = torch.randn(4, 3, 4, generator=gen, dtype=torch.float64).transpose(0, 1)
        v = v.reshape(3, -1) / v.reshape(3, -1).norm(dim=1, keepdim=True)
        want = []
        for _ in range(rows):
            hv = (hess @ v[..., None])[..., 0]
            want.append(hv.norm(dim=1))
            v = hv / want[-1][:, None]
        got = hessian_power_trace(net, x, **kwargs)
        torch.testing.assert_close(got, torch.stack(want), rtol=1e-11, atol=0)
        if "iters" in kwargs:  # hessian_lambda_max's own default is 60 steps
            assert hessian_lambda_max(net, x, method="power", **kwargs) == pytest.approx(
                want[-1].max().item(), rel=1e-11)


def test_defaults_are_rho_one_alpha_one():
    net, x = _net(), _x(batch=2)
    h, _ = net.forward_states(x)
    v = torch.randn(h.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    hess = _hessians(net, x)
    want = (hess @ v.transpose(0, 1).reshape(2, -1)[..., None])[..., 0]
    torch.testing.assert_close(hessian_vector_product(net, h, v).transpose(0, 1).reshape(2, -1),
                               want, rtol=1e-12, atol=1e-12)
    linear = _net(act="identity")
    one = _hessians(linear, _x(batch=1))[0]
    torch.testing.assert_close(linear_hessian(linear), one, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(iteration_matrix(linear, 0.3),
                               iteration_matrix(linear, 0.3, rho=1.0, alpha=1.0), rtol=0, atol=0)
    assert not torch.equal(iteration_matrix(linear, 0.3),
                           iteration_matrix(linear, 0.3, rho=1.0, alpha=0.5))


def test_hessian_vector_product_of_a_stack_is_each_models_own():
    """Stacked nets (the training loop's [S, L−1, B, N] states): model s's product uses
    model s's weights only."""
    seeds = [0, 1, 2]
    stack, x = _net(act="tanh", width=4, depth=5, seed=seeds), _x(batch=3)
    h, _ = stack.forward_states(x)
    v = torch.randn(h.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = hessian_vector_product(stack, h, v, rho=1.4)
    for s, seed in enumerate(seeds):
        hess = _hessians(_net(act="tanh", width=4, depth=5, seed=seed), x, rho=1.4)
        want = (hess @ v[s].transpose(0, 1).reshape(3, -1)[..., None])[..., 0]
        torch.testing.assert_close(got[s].transpose(0, 1).reshape(3, -1), want, rtol=1e-12,
                                   atol=1e-12)


@pytest.mark.parametrize("net", [_net(act="tanh"), _net(act="identity", seed=[0, 1])],
                         ids=["tanh", "stack"])
def test_the_linear_system_is_only_for_one_identity_net(net):
    with pytest.raises(ValueError, match="^linear_system needs a single identity-activation "
                                         "net$"):
        linear_system(net)
