"""BP, PC and PC-ALM weight gradients: exact identities of SPEC §4–5."""

import pytest
import torch

from pcalm.core import energy
from pcalm.core.algorithms import make_algorithm, run_inference, stack_algorithms
from pcalm.core.diagnostics import (
    alignment_to_bp,
    hessian_lambda_max,
    iteration_matrix,
    linear_system,
    spectral_radius,
)
from pcalm.core.model import ResidualMLP
from tests import oracle


def _batch(d=12, c=10, batch=5, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, d, generator=gen, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, c, (batch,), generator=gen), c).double()
    return x, y


def _net(act="identity", width=6, depth=5, seed=0):
    return ResidualMLP(12, width, depth, activation=act, seed=seed, dtype=torch.float64)


def test_bp_equals_autograd_of_the_loss():
    net = _net("tanh")
    x, y = _batch()
    auto = torch.autograd.grad(energy.mse_loss(net(x), y), list(net.parameters()))
    grads = make_algorithm("bp").weight_grads(net, x, y)
    assert len(grads) == net.depth == len(net.weights)
    torch.testing.assert_close(grads[0], auto[0])
    torch.testing.assert_close(torch.stack(grads[1:-1]), auto[1])
    torch.testing.assert_close(grads[-1], auto[2])
    for g, w in zip(grads, net.weights):
        assert g.shape == w.shape


def test_linear_pcalm_reaches_bp_and_pc_does_not():
    """SPEC §5: linear PC-ALM's fixed point is BP; PC's is the minimiser of F."""
    net = _net("identity")
    x, y = _batch()
    eta = 1 / hessian_lambda_max(net, x)
    # The iteration converges: spectral radius of M below 1 at η_h = 1/λ_max.
    assert spectral_radius(iteration_matrix(net, eta)) < 1
    pcalm = alignment_to_bp(make_algorithm("pcalm", budget=3000, state_lr=eta), net, x, y)
    pc = alignment_to_bp(make_algorithm("pc", budget=3000, state_lr=eta), net, x, y)
    assert pcalm["cosine"] >= 1 - 1e-9
    assert pcalm["rel_error"] < 1e-5
    assert min(pcalm["cosine_per_layer"]) >= 1 - 1e-9
    # PC converges to the minimiser z* of F instead (SPEC §5): per sample, F is quadratic
    # in the stacked z, F = ½‖Pz − y‖² + ½‖Rz − c‖², so z* solves (PᵀP + RᵀR) z = Pᵀy + Rᵀc.
    sys = linear_system(net)
    R, P = sys["R"], sys["P"]
    c = torch.zeros(x.shape[0], R.shape[0], dtype=torch.float64)
    c[:, : net.width] = net.a_in * x @ net.w_in.detach().T
    z_star = torch.linalg.solve(P.T @ P + R.T @ R, (y @ P + c @ R).T).T  # [B, (L-1) N]
    z = list(z_star.reshape(x.shape[0], net.depth - 1, net.width).transpose(0, 1))
    weights = [w.detach().clone().requires_grad_(True) for w in net.weights]
    energy_at_z_star = oracle.lagrangian(weights, x, y, z, [0 * t for t in z], 1.0, "identity",
                                         (net.a_in, net.a_hidden, net.a_out))
    g_star = torch.cat([g.reshape(-1) for g in torch.autograd.grad(energy_at_z_star, weights)])
    g_bp = torch.cat([g.reshape(-1) for g in make_algorithm("bp").weight_grads(net, x, y)])
    want = {"cosine": float(g_star @ g_bp / (g_star.norm() * g_bp.norm())),
            "rel_error": float((g_star - g_bp).norm() / g_bp.norm())}
    assert pc["cosine"] == pytest.approx(want["cosine"], abs=1e-9)
    assert pc["rel_error"] == pytest.approx(want["rel_error"], rel=1e-6)
    assert pc["cosine"] < 0.99  # and that is clearly not BP


def test_pcalm_fixed_point_multipliers_are_minus_the_adjoint():
    net = _net("identity", depth=4)
    x, y = _batch(batch=3)
    eta = 1 / hessian_lambda_max(net, x)
    state = make_algorithm("pcalm", budget=3000, state_lr=eta).infer(net, x, y)
    h, delta, _ = energy.backprop(net, x, y)
    torch.testing.assert_close(state.z, h, atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(state.lam, -delta, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("act", ["identity", "tanh", "relu"])
def test_pcalm_with_one_step_is_pc_with_one_step(act):
    net = _net(act)
    x, y = _batch()
    a = make_algorithm("pcalm", budget=1, state_lr=0.2, rho=1.0, alpha=0.7).weight_grads(net, x, y)
    b = make_algorithm("pc", budget=1, state_lr=0.2).weight_grads(net, x, y)
    for ga, gb in zip(a, b):
        torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("act", ["identity", "tanh", "relu"])
def test_pcalm_without_multiplier_updates_is_pc(act):
    net = _net(act)
    x, y = _batch()
    a = make_algorithm("pcalm", budget=20, state_lr=0.2, rho=1.0, alpha=0.0).weight_grads(net, x, y)
    b = make_algorithm("pc", budget=20, state_lr=0.2).weight_grads(net, x, y)
    for ga, gb in zip(a, b):
        torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-14)


def test_pc_steps_follow_the_energy_gradient():
    """One PC step is z − η_h · B · ∂F/∂z of the batch-mean energy (a per-sample step)."""
    net = _net("tanh")
    x, y = _batch()
    eta = 0.1
    h, _ = net.forward_states(x)
    h = h + 0.01 * torch.randn_like(h)  # off the forward pass so the step is not trivial
    z = h.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy.pc_energy(net, x, y, z), z)
    expected = h - eta * x.shape[0] * grad
    r = energy.residuals(net, net.bottom_prediction(x), h)
    e = net.readout(h[-1]) - y
    stepped = h - eta * energy.state_grad(net, h, r, e)
    torch.testing.assert_close(stepped, expected)


def test_nonlinear_pcalm_reaches_bp_at_a_large_budget():
    """SPEC §5 holds for any φ: a smooth (tanh) net's PC-ALM gradients converge to BP's."""
    net = _net("tanh", width=16, depth=8)
    x, y = _batch(batch=16)
    eta = 1 / hessian_lambda_max(net, x)
    pcalm = alignment_to_bp(make_algorithm("pcalm", budget=4000, state_lr=eta), net, x, y)
    pc = alignment_to_bp(make_algorithm("pc", budget=4000, state_lr=eta), net, x, y)
    assert min(pcalm["cosine_per_layer"]) > 1 - 1e-5
    assert pc["cosine"] < 0.99


def _spec_options(options: dict) -> dict:
    """An algorithm's options as SPEC §4's inference keywords (oracle and run_inference)."""
    return {"budget": options["budget"], "state_lr": options["state_lr"],
            "rho": options.get("rho", 1.0), "alpha": options.get("alpha", 1.0),
            "inner_steps": options.get("inner_steps", 1),
            "post_dual": options.get("weight_credit") == "post_dual"}


@pytest.mark.parametrize("options", [{}, {"weight_credit": "post_dual"}, {"inner_steps": 2},
                                     {"weight_credit": "post_dual", "inner_steps": 3,
                                      "rho": 1.4, "alpha": 0.6}])
def test_post_dual_and_inner_steps_follow_spec(options):
    """SPEC §4's options against the inference written out with autograd (tests/oracle.py):
    k primal steps per dual update, and the weight credit before / after one more dual
    update."""
    net = _net("relu")
    x, y = _batch()
    got = make_algorithm("pcalm", budget=4, state_lr=0.2, **options).weight_grads(net, x, y)
    want, _ = oracle.inference_grads(
        [w.detach() for w in net.weights], x, y, "relu", (net.a_in, net.a_hidden, net.a_out),
        algo="pcalm", **_spec_options({"budget": 4, "state_lr": 0.2, **options}))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-11, atol=1e-13)


INFERENCE_OPTIONS = [
    ("pc", {"budget": 5, "state_lr": 0.2}),
    ("pcalm", {"budget": 4, "state_lr": 0.2, "rho": 1.4, "alpha": 0.6, "inner_steps": 2}),
    ("pcalm", {"budget": 4, "state_lr": 0.15, "rho": 0.8, "weight_credit": "post_dual"}),
]


def _oracle_state(net, x, y, act, name, options):
    """z, λ, ε = ρ r + λ, e and ℓ at the forward pass, by autograd (tests/oracle.py)."""
    rho = options.get("rho", 1.0) if name == "pcalm" else 1.0
    weights = [w.detach() for w in net.weights]
    a = (net.a_in, net.a_hidden, net.a_out)
    z, lam, r, forward_loss = oracle.inference(weights, x, y, act, a, algo=name,
                                               **_spec_options(options))
    e = a[2] * oracle.PHI[act][0](z[-1]) @ weights[-1].T - y
    eps = [rho * rl + ll for rl, ll in zip(r, lam)]
    return torch.stack(z), torch.stack(lam), torch.stack(eps), e, forward_loss


def _run_inference(net, x, y, name, options):
    """The public run_inference, its keywords from an algorithm's options."""
    kwargs = _spec_options(options)
    if name == "pc":  # PC: no multipliers (alpha=None), ρ = 1, one step per update
        kwargs = {"budget": kwargs["budget"], "state_lr": kwargs["state_lr"], "alpha": None}
    return run_inference(net, x, y, compile="off", **kwargs)


@pytest.mark.parametrize("name, options", INFERENCE_OPTIONS)
def test_run_inference_ends_in_the_oracle_state(name, options):
    """The public run_inference (README) ends where SPEC §4's inference written out with
    autograd ends: z, λ (None for PC), the credit ε = ρr + λ, e = ŷ(z) − y, ℓ at the
    forward pass."""
    net = _net("tanh")
    x, y = _batch()
    state = _run_inference(net, x, y, name, options)
    z, lam, eps, e, forward_loss = _oracle_state(net, x, y, "tanh", name, options)
    close = {"rtol": 1e-11, "atol": 1e-13}
    torch.testing.assert_close(state.z, z, **close)
    if name == "pc":
        assert state.lam is None
    else:
        torch.testing.assert_close(state.lam, lam, **close)
    torch.testing.assert_close(state.eps, eps, **close)
    torch.testing.assert_close(state.e, e, **close)
    torch.testing.assert_close(state.forward_loss, forward_loss, **close)


def test_run_inference_defaults_to_spec_pcalm():
    """Without options beyond α, run_inference is SPEC §4's PC-ALM: ρ = 1, one primal step
    per dual update, the credit before the last dual update (pre-dual)."""
    net = _net("tanh")
    x, y = _batch()
    state = run_inference(net, x, y, budget=4, state_lr=0.2, alpha=1.0)
    z, lam, eps, _, _ = _oracle_state(net, x, y, "tanh", "pcalm", {"budget": 4, "state_lr": 0.2})
    torch.testing.assert_close(state.z, z, rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(state.lam, lam, rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(state.eps, eps, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name, options", [("bp", {}), *INFERENCE_OPTIONS])
def test_a_batch_of_batches_takes_the_reference_path_and_computes_each_batch(name, options):
    """x of shape [K, B, D] for one net is K independent batches (the fast loop declines it;
    the reference path runs): each batch's weight gradients, loss and final state are its
    own oracle's."""
    net = _net("relu")
    batches = [_batch(seed=s) for s in (1, 2)]
    x, y = torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])
    algo = make_algorithm(name, **options)
    g_in, g_hidden, g_out, loss = algo.stacked_weight_grads(net, x, y)
    assert algo.last_path == "eager"
    state = None if name == "bp" else _run_inference(net, x, y, name, options)
    weights = [w.detach() for w in net.weights]
    a = (net.a_in, net.a_hidden, net.a_out)
    for k, (xk, yk) in enumerate(batches):
        if name == "bp":
            want, want_loss = oracle.bp_grads(weights, xk, yk, "relu", a)
        else:
            want, want_loss = oracle.inference_grads(weights, xk, yk, "relu", a, algo=name,
                                                     **_spec_options(options))
        got = [g_in[k], *g_hidden[k].unbind(0), g_out[k]]
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-11, atol=1e-13)
        torch.testing.assert_close(loss[k], want_loss, rtol=1e-12, atol=0)
        if name != "bp":
            z, lam, eps, e, _ = _oracle_state(net, xk, yk, "relu", name, options)
            torch.testing.assert_close(state.z[k], z, rtol=1e-11, atol=1e-13)
            torch.testing.assert_close(state.eps[k], eps, rtol=1e-11, atol=1e-13)
            torch.testing.assert_close(state.e[k], e, rtol=1e-11, atol=1e-13)
            torch.testing.assert_close(state.forward_loss[k], want_loss, rtol=1e-12, atol=0)
            if name == "pc":
                assert state.lam is None
            else:
                torch.testing.assert_close(state.lam[k], lam, rtol=1e-11, atol=1e-13)


def test_the_reference_path_shows_the_observer_every_primal_step():
    """An observer on the reference path sees step 0 (the forward pass) and each of the
    budget × inner_steps primal steps, each a copy of the state then: the state after step
    s is the oracle's after s primal steps (here budget 3, inner_steps 1: T steps)."""
    net = _net("tanh")
    batches = [_batch(seed=s) for s in (1, 2)]
    x, y = torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])
    seen = []
    algo = make_algorithm("pc", budget=3, state_lr=0.2)
    algo.infer(net, x, y, observer=lambda step, s: seen.append((step, s.z.clone())))
    assert [step for step, _ in seen] == [0, 1, 2, 3]
    for step, z in seen:
        for k, (xk, yk) in enumerate(batches):
            if step == 0:
                want = net.forward_states(xk)[0]
            else:
                want = _oracle_state(net, xk, yk, "tanh", "pc",
                                     {"budget": step, "state_lr": 0.2})[0]
            torch.testing.assert_close(z[k], want, rtol=1e-11, atol=1e-13)


def test_a_stack_with_per_model_options_refuses_a_batch_it_cannot_split():
    net = ResidualMLP(12, 6, 4, seed=(0, 1), dtype=torch.float64)
    x, y = _batch()
    algo = stack_algorithms([make_algorithm("pc", budget=2, state_lr=0.1),
                             make_algorithm("pc", budget=2, state_lr=0.2)])
    with pytest.raises(ValueError, match=r"^a stack with per-model options takes x of shape "
                                         r"\[M, B, 12\] or \[B, 12\], not \[3, 5, 12\]$"):
        algo.stacked_weight_grads(net, x.expand(3, -1, -1), y.expand(3, -1, -1))


def test_linear_system_matches_the_residuals():
    net = _net("identity", width=3, depth=4)
    x, _ = _batch(batch=1)
    sys = linear_system(net)
    z = torch.randn(net.depth - 1, 1, net.width, dtype=torch.float64)
    flat = z.reshape(-1)
    c = torch.zeros_like(flat)
    c[: net.width] = net.bottom_prediction(x).reshape(-1)
    r = energy.residuals(net, net.bottom_prediction(x), z).reshape(-1)
    torch.testing.assert_close(sys["R"] @ flat - c, r)
    torch.testing.assert_close(sys["P"] @ flat, net.readout(z[-1]).reshape(-1))


@pytest.mark.parametrize(
    "name, options, fragment",
    [
        ("adam", {}, "unknown algorithm 'adam': allowed: bp, pc, pcalm"),
        ("pc", {"rho": 2.0}, "unknown option(s) rho for algorithm 'pc'"),
        ("bp", {"budget": 3}, "allowed: none"),
        ("pcalm", {"budget": 0}, "budget must be an integer >= 1, got 0"),
        ("pcalm", {"state_lr": -1.0}, "state_lr must be a number > 0"),
        ("pcalm", {"weight_credit": "later"}, "allowed: pre_dual, post_dual"),
        ("pcalm", {"alpha": -0.5}, "alpha must be a number >= 0"),
        ("pcalm", {"alpha": float("nan")}, "alpha must be a number >= 0, got nan"),
        ("pcalm", {"alpha": "1"}, "alpha must be a number >= 0, got '1'"),
        ("pc", {"state_lr": 0.0}, "state_lr must be a number > 0, got 0.0"),
        ("pc", {"state_lr": float("inf")}, "state_lr must be a number > 0, got inf"),
        ("pc", {"state_lr": True}, "state_lr must be a number > 0, got True"),
        ("pcalm", {"rho": 0.0}, "rho must be a number > 0, got 0.0"),
        ("pcalm", {"inner_steps": 0}, "inner_steps must be an integer >= 1, got 0"),
        ("pcalm", {"inner_steps": 2.0}, "inner_steps must be an integer >= 1, got 2.0"),
        ("pc", {"budget": True}, "budget must be an integer >= 1, got True"),
        ("pc", {"budget": 2.5}, "budget must be an integer >= 1, got 2.5"),
        ("pc", {"bogus": 1, "rho": 2}, "unknown option(s) bogus, rho for algorithm 'pc': "
                                       "allowed: budget, state_lr"),
    ],
)
def test_bad_algorithm_input_is_one_clear_line(name, options, fragment):
    with pytest.raises(ValueError) as err:
        make_algorithm(name, **options)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"depth": 1}, "depth must be an integer >= 2, got 1"),
        ({"width": 0}, "width must be an integer >= 1, got 0"),
        ({"activation": "gelu"}, "unknown activation 'gelu': allowed: identity, tanh, relu"),
        ({"param": "ntk"}, "unknown param 'ntk': allowed: mupc, sp"),
        ({"input_dim": 0}, "input_dim must be an integer >= 1, got 0"),
        ({"output_dim": 0}, "output_dim must be an integer >= 1, got 0"),
        ({"width": True}, "width must be an integer >= 1, got True"),
        ({"width": 2.0}, "width must be an integer >= 1, got 2.0"),
        ({"gamma0": 0.0}, "gamma0 must be a positive number, got 0.0"),
        ({"gamma0": -1.0}, "gamma0 must be a positive number, got -1.0"),
        ({"gamma0": "1"}, "gamma0 must be a positive number, got '1'"),
        ({"seed": []}, "seed must be an int or a non-empty sequence of ints"),
    ],
)
def test_bad_model_input_is_one_clear_line(kwargs, fragment):
    args = {"input_dim": 4, "width": 3, "depth": 3, **kwargs}
    with pytest.raises(ValueError) as err:
        ResidualMLP(**args)
    assert fragment in str(err.value)


def test_linear_alias_and_weights_layout():
    net = ResidualMLP(7, 4, 5, output_dim=3, activation="linear")
    assert net.act.name == "identity"
    shapes = [tuple(w.shape) for w in net.weights]
    assert shapes == [(4, 7), (4, 4), (4, 4), (4, 4), (3, 4)]
    # muPC scales (SPEC §1)
    assert net.a_in == pytest.approx(7**-0.5)
    assert net.a_hidden == pytest.approx((4 * 5) ** -0.5)
    assert net.a_out == pytest.approx(1 / 4)
    assert net.weights[1].data_ptr() == net.w_hidden[0].data_ptr()  # a view, not a copy


def test_the_scalar_net_of_figure_1_builds():
    """D = N = C = 1, L = 2 (SPEC §7, Fig. 1): the smallest sizes are allowed."""
    net = ResidualMLP(1, 1, 2, output_dim=1, activation="identity", param="sp")
    assert [tuple(w.shape) for w in net.weights] == [(1, 1), (1, 1)]
