"""The fused CPU inference loop (pcalm/core/native: loop.c through ctypes; linear and ReLU
nets, tanh ones run eagerly) against the eager loop it replaces
(pcalm.core.loop.Workspace.loop_eager), which the rest of the suite checks
against autograd and closed forms: the same final state (z, λ, ε, e) and weight gradients,
for every activation, algorithm option, width branch of loop.c (generic and unrolled), lone
nets and mixed stacks; and which path `compile=auto` picks, and what happens without a C
compiler or when the native call fails."""

from __future__ import annotations

import pytest
import torch

from pcalm.core import algorithms
from pcalm.core import paths as path_choice
from pcalm.core.loop import Plan, Workspace
from pcalm.core.model import ResidualMLP
from pcalm.core.native import fused as native
from tests.test_speed_paths import ACTS, CASES, MIXED, _algo, _assert_same_state, _close

needs_compiler = pytest.mark.skipif(native.library() is None,
                                    reason=f"no native loop here: {native.failure()}")


def _pair(name, options, act, depth, width, classes, dtype, models=None, x_scale=1.0):
    """(native, eager): the final state and the weight gradients of each path."""
    seed = 0 if models is None else list(range(models))
    net = ResidualMLP(9, width, depth, output_dim=classes, activation=act, seed=seed,
                      dtype=dtype, gamma0=0.5)
    gen = torch.Generator().manual_seed(5)
    lead = () if models is None else (models,)
    x = x_scale * torch.randn(*lead, 7, 9, generator=gen, dtype=dtype)
    y = torch.nn.functional.one_hot(torch.randint(0, classes, (*lead, 7), generator=gen),
                                    classes).to(dtype)
    out = []
    for mode in ("auto", "off"):
        algo = (_algo(name, options, mode) if isinstance(name, str)
                else _mode(algorithms.stack_algorithms(name), mode))
        state, grads = algo.infer(net, x, y), algo.stacked_weight_grads(net, x, y)
        native_runs = mode == "auto" and act in native.ACT_CODES  # tanh runs eagerly
        assert algo.last_path == ("native" if native_runs else "eager")
        out.append((state, grads))
    return out


def _mode(algo, mode):
    algo.compile_mode = mode
    return algo


@needs_compiler
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("name, options", CASES[1:])
@pytest.mark.parametrize("depth", [2, 5])
def test_the_native_loop_ends_in_the_eager_state(act, name, options, depth):
    """Width 6 with 4 classes runs loop.c's generic matmuls; float64, to rounding."""
    (state, grads), (want_state, want_grads) = _pair(name, options, act, depth, 6, 4,
                                                     torch.float64)
    _assert_same_state(state, want_state, rtol=1e-11, atol=1e-12)
    _close(grads, want_grads, rtol=1e-11, atol=1e-12)


@needs_compiler
@pytest.mark.parametrize("width", [8, 12, 16, 32, 64])
@pytest.mark.parametrize("act", ["identity", "relu"])
def test_the_vector_widths_equal_the_eager_loop(width, act):
    """loop.c's matmuls on vectors of 8 floats (N = 8 … 64: 1 … 8 vectors a row) or 4
    doubles, the readout's 10 columns by the plain loop, N = 12 by the plain loop in float32
    and by 3 vectors in float64; float32 as trained, and float64 to rounding."""
    options = {"budget": 6, "state_lr": 0.2, "rho": 1.3, "alpha": 0.4, "inner_steps": 2}
    (state, grads), (want_state, want_grads) = _pair("pcalm", options, act, 6, width, 10,
                                                     torch.float32)
    # ε = ρ (z − f) + λ is a small difference of states up to ~5: the two paths' float32
    # sums (MKL's blocked order, loop.c's i order) leave ~1e-6 of it, float32's ulp at 5
    _assert_same_state(state, want_state, rtol=2e-5, atol=1e-5)
    _close(grads, want_grads, rtol=2e-5, atol=1e-5)
    (state, grads), (want_state, want_grads) = _pair("pcalm", options, act, 4, width, 10,
                                                     torch.float64)
    _assert_same_state(state, want_state, rtol=1e-11, atol=1e-12)
    _close(grads, want_grads, rtol=1e-11, atol=1e-12)


@needs_compiler
@pytest.mark.parametrize("case", list(MIXED))
def test_a_mixed_stack_on_the_native_loop_equals_the_eager_one(case):
    """Per-model η_h, ρ, α (a PC member as PC-ALM with α = 0), each model on its own batch."""
    members = [_algo(name, opts) for name, opts in MIXED[case]]
    (state, grads), (want_state, want_grads) = _pair(members, None, "relu", 5, 8, 10,
                                                     torch.float64, models=len(members))
    _assert_same_state(state, want_state, rtol=1e-11, atol=1e-12)
    _close(grads, want_grads, rtol=1e-11, atol=1e-12)


@needs_compiler
def test_the_native_forward_pass_leaves_zero_credit_and_the_eager_states():
    """The forward pass alone, in C: its residuals are exactly zero, so ε = λ = 0 exactly, as
    the eager forward leaves them; z, φ(z), φ'(z), e and ℓ as the eager pass computes them."""
    net = ResidualMLP(9, 16, 6, output_dim=10, activation="relu", seed=list(range(2)),
                      dtype=torch.float64, gamma0=0.5)
    x = torch.randn(2, 7, 9, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.arange(14).view(2, 7) % 10, 10).double()
    plan = Plan("pcalm", budget=3, state_lr=0.2, rho=1.0, alpha=0.3)
    with torch.no_grad():
        got, want = Workspace(net, x, y, plan), Workspace(net, x, y, plan)
        for ws in (got, want):
            ws.prepare_weights()
            ws.E.fill_(9.0)  # what a reused buffer may hold
            ws.lam.fill_(9.0)
        native.forward_native(got)
        want.forward(None)
    assert not got.E.any() and not got.lam.any() and not want.E.any()
    for name in ("z", "P", "D", "e", "loss"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-12,
                                   atol=1e-13, msg=name)


@needs_compiler
def test_relu_at_exactly_zero_and_a_nan_behave_as_in_the_eager_loop():
    """Zero inputs put ReLU pre-activations at 0, where φ'(0) = 0; a NaN input stays NaN
    through φ (torch.clamp_min keeps it), so divergence shows the same way on both paths."""
    options = {"budget": 4, "state_lr": 0.2}
    (state, grads), (want_state, want_grads) = _pair("pcalm", options, "relu", 5, 8, 10,
                                                     torch.float64, x_scale=0.0)
    _assert_same_state(state, want_state)
    (state, grads), (want_state, want_grads) = _pair("pcalm", options, "relu", 5, 8, 10,
                                                     torch.float64, x_scale=float("nan"))
    assert torch.isnan(state.z).any() and torch.isnan(want_state.z).any()
    for got, want in zip(grads, want_grads):
        assert torch.equal(torch.isnan(got), torch.isnan(want))


def test_auto_picks_the_native_loop_for_narrow_nets_on_a_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(path_choice, "_disabled", set())
    monkeypatch.setattr(native, "library", lambda: object())  # a compiler at hand
    limit = path_choice.NATIVE_MAX_WIDTH
    assert path_choice.resolve_path("auto", cpu, "k", width=limit) == "native"
    assert path_choice.resolve_path("auto", cpu, "k", width=limit + 1) == "eager"
    assert path_choice.resolve_path("off", cpu, "k", width=8) == "eager"
    assert path_choice.resolve_path("on", cpu, "k", width=8) == "compiled"
    assert path_choice.resolve_path("auto", torch.device("cuda"), "k", width=8) == "graph"
    path_choice._disabled.add(("native", "k"))  # a shape whose native call failed
    assert path_choice.resolve_path("auto", cpu, "k", width=8) == "eager"
    monkeypatch.setattr(native, "library", lambda: None)  # no compiler
    assert path_choice.resolve_path("auto", cpu, "other", width=8) == "eager"


def test_without_a_compiler_the_eager_loop_runs_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_failure", None)
    monkeypatch.setenv("PCALM_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert native.library() is None
    assert "no-such-cc" in native.failure()
    assert not list(tmp_path.iterdir())  # nothing half-built is left
    algo = _algo("pcalm", {"budget": 3, "state_lr": 0.2}, mode="auto")
    net = ResidualMLP(9, 8, 4, output_dim=10, activation="relu", seed=0)
    x = torch.randn(5, 9)
    y = torch.nn.functional.one_hot(torch.arange(5), 10).float()
    algo.stacked_weight_grads(net, x, y)
    assert algo.last_path == "eager"


def test_a_failing_compiler_leaves_no_file_and_names_its_error(tmp_path, monkeypatch):
    failing = tmp_path / "cc"
    failing.write_text("#!/bin/sh\necho 'cc: planted failure' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_failure", None)
    monkeypatch.setenv("PCALM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(failing))
    assert native.library() is None
    assert "planted failure" in native.failure()
    assert not list((tmp_path / "cache").iterdir())


@needs_compiler
def test_a_failing_native_call_falls_back_to_eager_once_per_shape(monkeypatch):
    monkeypatch.setattr(path_choice, "_disabled", set())

    def broken(ws):
        ws.z.fill_(7.0)  # half-done work that the fallback must redo from the forward pass
        raise RuntimeError("planted")

    monkeypatch.setattr(native, "loop_native", broken)
    options = {"budget": 4, "state_lr": 0.2}
    net = ResidualMLP(9, 8, 4, output_dim=10, activation="relu", seed=0, dtype=torch.float64)
    x = torch.randn(5, 9, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.arange(5), 10).double()
    algo = _algo("pcalm", options, mode="auto")
    with pytest.warns(UserWarning, match="native inference path failed.*planted"):
        got = algo.stacked_weight_grads(net, x, y)
    assert algo.last_path == "eager"
    _close(got, _algo("pcalm", options).stacked_weight_grads(net, x, y))
    algo.stacked_weight_grads(net, x, y)  # no second warning: the shape runs eager now
    assert algo.last_path == "eager"
