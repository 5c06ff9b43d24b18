"""The fast paths compute what the straightforward ones do (SPEC §3–4).

- the fast in-place loop of pcalm.core.algorithms == pcalm.core.naive's per-layer version (float64),
  for BP, PC and PC-ALM, all activations, L = 2 and L ≥ 3, inner steps, post_dual, ρ ≠ 1;
- a stack of M models == M single-model runs (float64, tight);
- the torch.compile'd step == the eager loop (float32 tolerance).
"""

import pytest
import torch

from pcalm.core import algorithms, loop, naive
from pcalm.core import compiled as compile_cache
from pcalm.core import graphs as graph_capture
from pcalm.core import paths as path_choice
from pcalm.core.algorithms import make_algorithm
from pcalm.core.model import ResidualMLP
from pcalm.core.native import fused as native
from tests import fake_cuda as stubs
from tests.fake_cuda import FakeGraph

ACTS = ["identity", "tanh", "relu"]


@pytest.fixture
def fake_cuda(monkeypatch):
    return stubs.install(monkeypatch)


@pytest.fixture
def plain_compiled(monkeypatch):
    return stubs.plain_compiled(monkeypatch)
CASES = [
    ("bp", {}),
    ("pc", {"budget": 7, "state_lr": 0.2}),
    ("pcalm", {"budget": 7, "state_lr": 0.2}),
    ("pcalm", {"budget": 5, "state_lr": 0.15, "rho": 1.7, "alpha": 0.6, "inner_steps": 2}),
    ("pcalm", {"budget": 6, "state_lr": 0.2, "rho": 0.8, "weight_credit": "post_dual"}),
]


def _data(d=9, c=4, batch=5, models=None, seed=3, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    lead = () if models is None else (models,)
    x = torch.randn(*lead, batch, d, generator=gen, dtype=dtype)
    labels = torch.randint(0, c, (*lead, batch), generator=gen)
    return x, torch.nn.functional.one_hot(labels, c).to(dtype)


def _net(act, depth, width=6, seed=0, dtype=torch.float64, gamma0=1.0):
    return ResidualMLP(9, width, depth, output_dim=4, activation=act, seed=seed, dtype=dtype,
                       gamma0=gamma0)


def _algo(name, options, mode="off"):
    algo = make_algorithm(name, **options)
    algo.compile_mode = mode
    return algo


def _close(got, want, rtol=1e-10, atol=1e-12):
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("depth", [2, 3, 6])
@pytest.mark.parametrize("name, options", CASES)
def test_fast_loop_equals_naive_layerwise(act, depth, name, options):
    # γ0 = 0.3 makes the output error large, so every term of the gradients matters.
    net = _net(act, depth, gamma0=0.3)
    x, y = _data()
    grads = _algo(name, options).weight_grads(net, x, y)
    want, want_loss = naive.layerwise_weight_grads(name, net, x, y, **options)
    _close(grads, want)
    loss = _algo(name, options).stacked_weight_grads(net, x, y)[3]
    torch.testing.assert_close(loss, want_loss, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name, options", CASES)
def test_fast_loop_equals_previous_stacked_path(name, options):
    net = _net("tanh", 5)
    x, y = _data()
    got = _algo(name, options).stacked_weight_grads(net, x, y)
    _close(got, naive.stacked_eager_weight_grads(name, net, x, y, **options))


@pytest.mark.parametrize("name, options", CASES)
@pytest.mark.parametrize("shared_x", [False, True])
def test_stacked_models_equal_single_models(name, options, shared_x):
    m, depth = 3, 5
    stack = ResidualMLP(9, 6, depth, output_dim=4, activation="relu", seed=[4, 5, 6],
                        dtype=torch.float64)
    x, y = _data(batch=6) if shared_x else _data(batch=6, models=m)
    got = _algo(name, options).stacked_weight_grads(stack, x, y)
    assert got[1].shape == stack.w_hidden.shape and got[3].shape == (m,)
    state = _algo(name, options).infer(stack, x, y) if name != "bp" else None
    for i, seed in enumerate([4, 5, 6]):
        single = _net("relu", depth, seed=seed)
        xi, yi = (x, y) if shared_x else (x[i], y[i])
        want = _algo(name, options).stacked_weight_grads(single, xi, yi)
        _close([g[i] for g in got], want, rtol=1e-12, atol=1e-14)
        if state is not None:
            s = _algo(name, options).infer(single, xi, yi)
            _close([state.z[i], state.eps[i], state.e[i]], [s.z, s.eps, s.e])
    if state is not None:
        assert state.z.shape == (m, depth - 1, 6, 6) and state.z.is_contiguous()


MIXED = {  # stacks whose models differ in η_h, ρ, α, or PC vs PC-ALM (one entry per model)
    "pc and pcalm twins": [("pc", {"budget": 6, "state_lr": 0.2}),
                           ("pcalm", {"budget": 6, "state_lr": 0.2})],
    "state_lr, rho, alpha": [("pcalm", {"budget": 5, "state_lr": 0.1, "rho": 1.4}),
                             ("pcalm", {"budget": 5, "state_lr": 0.25, "alpha": 0.5}),
                             ("pc", {"budget": 5, "state_lr": 0.15})],
    "post_dual, inner steps": [
        ("pcalm", {"budget": 4, "state_lr": 0.2, "inner_steps": 2, "weight_credit": "post_dual"}),
        ("pcalm", {"budget": 4, "state_lr": 0.1, "alpha": 0.3, "inner_steps": 2,
                   "weight_credit": "post_dual"})],
}


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("case", list(MIXED))
def test_mixed_stack_equals_single_models(act, case):
    """A stack of models with their own η_h, ρ, α (PC as PC-ALM with α = 0) computes what
    each model computes alone: gradients, loss and final state, float64."""
    members = [_algo(name, opts) for name, opts in MIXED[case]]
    stacked = algorithms.stack_algorithms(members)
    assert isinstance(stacked, algorithms.Stacked)
    stacked.compile_mode = "off"
    seeds = list(range(len(members)))
    net = ResidualMLP(9, 6, 5, output_dim=4, activation=act, seed=seeds, dtype=torch.float64,
                      gamma0=0.3)
    x, y = _data(batch=6, models=len(members))
    got = stacked.stacked_weight_grads(net, x, y)
    state = stacked.infer(net, x, y)
    for i, (seed, algo) in enumerate(zip(seeds, members)):
        single = _net(act, 5, seed=seed, gamma0=0.3)
        _close([g[i] for g in got], algo.stacked_weight_grads(single, x[i], y[i]),
               rtol=1e-12, atol=1e-14)
        alone = algo.infer(single, x[i], y[i])
        _close([state.z[i], state.eps[i]], [alone.z, alone.eps], rtol=1e-12, atol=1e-14)
        if alone.lam is None:  # a PC member: its multipliers stay exactly zero
            assert not state.lam[i].any()


def test_stack_algorithms_rules():
    pc = make_algorithm("pc", budget=4, state_lr=0.2)
    assert algorithms.stack_algorithms([pc, make_algorithm("pc", budget=4, state_lr=0.2)]) == pc
    bad = {
        "bp beside pc": ([make_algorithm("bp"), pc], "'bp' cannot share a stack"),
        "budgets": ([pc, make_algorithm("pcalm", budget=5, state_lr=0.2)],
                    "must share budget, got 4, 5"),
        "inner steps": ([pc, make_algorithm("pcalm", budget=4, state_lr=0.2, inner_steps=2)],
                        "must share inner_steps, got 1, 2"),
        "weight credit": ([make_algorithm("pcalm", budget=4, weight_credit="post_dual"), pc],
                          "must share weight_credit, got post_dual, pre_dual"),
    }
    for members, message in bad.values():
        with pytest.raises(ValueError, match=message):
            algorithms.stack_algorithms(members)
    mixed = algorithms.stack_algorithms([pc, make_algorithm("pc", budget=4, state_lr=0.3)])
    net = ResidualMLP(9, 6, 4, output_dim=4, seed=[0, 1, 2], dtype=torch.float64)
    with pytest.raises(ValueError, match="options for 2 models, but the net is a stack of 3"):
        mixed.weight_grads(net, *_data())


def test_forward_residuals_are_exactly_zero():
    """Credit that has not arrived is exactly 0 (not rounding noise) on the fast path."""
    net = ResidualMLP(9, 6, 12, output_dim=4, activation="relu", seed=0)
    x, y = _data(dtype=torch.float32)
    state = _algo("pcalm", {"budget": 3, "state_lr": 0.2}).infer(net, x, y)
    assert torch.all(state.eps[:-4] == 0)
    assert state.eps[-1].abs().max() > 0


def test_observer_sees_copies_of_every_step():
    net = _net("tanh", 4)
    x, y = _data()
    seen = []
    algo = _algo("pcalm", {"budget": 3, "state_lr": 0.2, "inner_steps": 2})
    final = algo.infer(net, x, y, observer=lambda step, s: seen.append((step, s)))
    assert [s for s, _ in seen] == list(range(7))
    assert seen[0][1].lam.abs().max() == 0  # forward pass: λ = 0, ε = r = 0
    torch.testing.assert_close(seen[-1][1].z, final.z)
    torch.testing.assert_close(seen[-1][1].eps, final.eps)
    assert not torch.equal(seen[1][1].z, seen[2][1].z)  # copies, not one reused buffer
    # The observed state is the naive loop's state at that step.
    want = naive.layerwise_inference(naive.LayerwiseNet(net), x, y, budget=1, state_lr=0.2,
                                     alpha=1.0, inner_steps=2)
    torch.testing.assert_close(seen[2][1].z, torch.stack(want["z"]))
    torch.testing.assert_close(seen[2][1].eps, torch.stack(want["eps"]))


def test_unusual_input_shapes_take_the_reference_path():
    net = _net("relu", 4)
    x, y = _data(models=2)  # a batch of batches for a lone net: the fast loop declines
    assert not path_choice.fast_shapes_ok(net, x, y)
    got = _algo("pc", {"budget": 3}).stacked_weight_grads(net, x, y)
    _close(got, naive.stacked_eager_weight_grads("pc", net, x, y, budget=3))


def test_compile_mode_is_checked():
    net = _net("relu", 3)
    x, y = _data()
    with pytest.raises(ValueError, match="allowed: auto, on, off"):
        _algo("pc", {"budget": 2}, mode="fast").weight_grads(net, x, y)


def test_cpu_paths_never_pick_cuda_graphs():
    cpu = torch.device("cpu")
    assert path_choice.resolve_path("off", cpu) == "eager"
    assert path_choice.resolve_path("on", cpu) == "compiled"
    assert path_choice.resolve_path("auto", cpu) in ("eager", "compiled")


def test_cuda_paths(monkeypatch):
    """On CUDA: auto = the eager loop in a CUDA graph, on = the compiled step in one; what is
    left for a shape whose paths have failed, while other shapes keep theirs."""
    cuda = torch.device("cuda")  # a device name: nothing here touches CUDA
    monkeypatch.setattr(path_choice, "_disabled", set())
    failing, other = ("shape", 1), ("shape", 2)
    paths = {mode: path_choice.resolve_path(mode, cuda, failing) for mode in ("auto", "on", "off")}
    assert paths == {"auto": "graph", "on": "compiled_graph", "off": "eager"}
    path_choice._disabled.add(("graph", failing))
    assert [path_choice.resolve_path(m, cuda, failing) for m in ("auto", "on")] == [
        "eager", "compiled"]
    path_choice._disabled.add(("compiled", failing))
    assert path_choice.resolve_path("on", cuda, failing) == "eager"
    assert [path_choice.resolve_path(m, cuda, other) for m in ("auto", "on")] == [
        "graph", "compiled_graph"]


def _compiled_equals_eager(act, depth, name, options, width=6, models=None):
    net = ResidualMLP(9, width, depth, output_dim=4, activation=act, dtype=torch.float32,
                      seed=0 if models is None else list(range(models)))
    x, y = _data(dtype=torch.float32, models=models)
    eager = _algo(name, options, "off").stacked_weight_grads(net, x, y)
    algo = _algo(name, options, "on")
    compiled = algo.stacked_weight_grads(net, x, y)
    assert algo.last_path == "compiled", "the compiled path fell back to eager"
    _close(compiled, eager, rtol=1e-4, atol=1e-6)


def test_compiled_step_equals_eager_tiny():
    _compiled_equals_eager("relu", 4, "pcalm", {"budget": 4, "state_lr": 0.2, "rho": 1.3})


@pytest.mark.slow
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("name, options", CASES[1:])
def test_compiled_step_equals_eager(act, name, options):
    _compiled_equals_eager(act, 5, name, options, models=2)
    _compiled_equals_eager(act, 2, name, options)


def test_functional_step_equals_eager_step():
    """The function torch.compile traces, run eagerly, matches the in-place loop (float64)."""
    for act in ACTS:
        for name, options in CASES[1:]:
            net = _net(act, 5)
            x, y = _data()
            want = _algo(name, options, "off").stacked_weight_grads(net, x, y)
            saved = dict(compile_cache._COMPILED)
            try:  # swap the compiled steps for their plain Python functions
                for has_lam in (False, True):
                    step = compile_cache.functional_step(act, has_lam)
                    compile_cache._COMPILED[(act, has_lam)] = step
                got = _algo(name, options, "on").stacked_weight_grads(net, x, y)
            finally:
                compile_cache._COMPILED.clear()
                compile_cache._COMPILED.update(saved)
            _close(got, want)


GRAPH_OPTIONS = {"budget": 5, "state_lr": 0.2, "rho": 1.2, "alpha": 0.8,
                 "weight_credit": "post_dual"}


def _stack_net():
    return ResidualMLP(9, 6, 5, output_dim=4, activation="tanh", seed=[0, 1],
                       dtype=torch.float32)


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_graph_runner_flow_on_cpu(fake_cuda, compiled):
    """The CUDA-graph runner's logic, with CUDA stubbed out: the captured body makes no host
    round-trip and no host-to-device copy, and replays on new (x, y) give eager's numbers."""
    net = _stack_net()
    for name, opts, plan in [
        ("pcalm", GRAPH_OPTIONS, _algo("pcalm", GRAPH_OPTIONS)._plan()),
        ("bp", {}, loop.Plan("bp")),
    ]:
        x0, y0 = _data(models=2, dtype=torch.float32)
        key = path_choice.shape_key(net, x0, y0, plan)
        runner = graph_capture.graph_runner(net, x0, y0, plan, compiled, key)
        assert fake_cuda[-1] is runner.graph and runner.compiled == (compiled and name != "bp")
        assert graph_capture.graph_runner(net, x0, y0, plan, compiled, key) is runner
        for seed in (5, 6):  # new data each call, through the static input buffers
            x, y = _data(models=2, seed=seed, dtype=torch.float32)
            out = runner.run(x, y, want_state=name != "bp")
            want = _algo(name, opts).stacked_weight_grads(net, x, y)
            _close([*out.grads, out.loss], want, rtol=1e-4, atol=1e-6)
            if name != "bp":
                state = _algo(name, opts).infer(net, x, y)
                torch.testing.assert_close(out.state.eps, state.eps, rtol=1e-4, atol=1e-6)
        first = out.grads[1].clone()
        runner.run(*_data(models=2, seed=9, dtype=torch.float32), want_state=False)
        torch.testing.assert_close(out.grads[1], first)  # returned grads are copies
    assert not path_choice._disabled


@pytest.mark.parametrize("mode, path", [("auto", "graph"), ("on", "compiled_graph")])
def test_mixed_stack_through_the_graph_path(fake_cuda, plain_compiled, mode, path):
    """A mixed PC + PC-ALM stack (Fig. 2's) is captured with the eager loop (auto) or with
    the compiled step, which takes per-model coefficients (on): each model's numbers are
    what it computes alone."""
    members = [_algo(name, opts) for name, opts in MIXED["state_lr, rho, alpha"]]
    stacked = algorithms.stack_algorithms(members)
    stacked.compile_mode = mode
    net = ResidualMLP(9, 6, 5, output_dim=4, activation="tanh", seed=[0, 1, 2],
                      dtype=torch.float32)
    for seed in (1, 2):
        x, y = _data(models=3, seed=seed, dtype=torch.float32)
        got = stacked.stacked_weight_grads(net, x, y)
        assert stacked.last_path == path
        for i, algo in enumerate(members):
            want = algo.stacked_weight_grads(_single_of(net, i), x[i], y[i])
            _close([g[i] for g in got], want, rtol=1e-4, atol=1e-6)
    (runner,) = graph_capture._GRAPHS.values()
    assert runner.compiled == (mode == "on") and not path_choice._disabled


@pytest.mark.parametrize("act", ACTS)
def test_compiled_step_takes_a_mixed_stack(plain_compiled, act):
    """`compile=on` reaches a mixed stack (Fig. 2's default): the compiled step with
    per-model η_h, ρ, α gives each model its own numbers (float64, the step traced by
    torch.compile run as plain Python)."""
    members = [_algo(name, opts) for name, opts in MIXED["state_lr, rho, alpha"]]
    stacked = algorithms.stack_algorithms(members)
    stacked.compile_mode = "on"
    net = ResidualMLP(9, 6, 5, output_dim=4, activation=act, seed=[0, 1, 2],
                      dtype=torch.float64, gamma0=0.3)
    x, y = _data(models=3)
    g_in, g_hidden, g_out, loss = stacked.stacked_weight_grads(net, x, y)
    assert stacked.last_path == "compiled"
    for i, algo in enumerate(members):
        want, want_loss = naive.layerwise_weight_grads(
            algo.name, _net(act, 5, seed=i, gamma0=0.3), x[i], y[i], **algo.options())
        _close([g_in[i], *g_hidden[i].unbind(0), g_out[i], loss[i]], [*want, want_loss])


def _assert_same_state(got, want, rtol=1e-12, atol=1e-13):
    for field in ("z", "lam", "eps", "e", "forward_loss"):
        g, w = getattr(got, field), getattr(want, field)
        assert (g is None) == (w is None), field
        if w is not None:
            torch.testing.assert_close(g, w, rtol=rtol, atol=atol, msg=field)


@pytest.mark.parametrize("depth", [2, 5])
@pytest.mark.parametrize("inputs", ["random", "zero"])
@pytest.mark.parametrize("name, options", CASES[1:])
def test_the_compiled_step_ends_in_the_eager_state(plain_compiled, name, options, inputs,
                                                   depth):
    """compile=on (the step torch.compile traces, run as plain Python) ends in the eager
    loop's state: z, λ (None for PC), ε, e, ℓ and the weight grads, for L = 2 (no hidden
    block) and L = 5. Zero inputs put every ReLU pre-activation at exactly 0, where φ'(0) = 0
    (autograd's) must hold in the compiled step too."""
    net = _net("relu", depth)
    x, y = _data()
    if inputs == "zero":
        x = torch.zeros_like(x)
    compiled = _algo(name, options, mode="on")
    state = compiled.infer(net, x, y)
    assert compiled.last_path == "compiled"
    _assert_same_state(state, _algo(name, options).infer(net, x, y))
    _close(compiled.stacked_weight_grads(net, x, y),
           _algo(name, options).stacked_weight_grads(net, x, y))


def test_the_observer_sees_the_credit_and_loss_of_every_kind_of_loop():
    """The observed state after the last primal step is the returned one (ε, λ, ℓ), for
    PC with ρ ≠ 1 (run_inference without α: ε = ρ r) and for a mixed stack (per-model ρ)."""
    net = _net("tanh", 4)
    x, y = _data()
    seen = []
    final = algorithms.run_inference(net, x, y, budget=3, state_lr=0.2, rho=1.7,
                                     observer=lambda step, s: seen.append((step, s)))
    assert [step for step, _ in seen] == [0, 1, 2, 3]
    _assert_same_state(seen[-1][1], final)
    _assert_same_state(final, algorithms.run_inference(net, x, y, budget=3, state_lr=0.2,
                                                       rho=1.7))
    members = [_algo(n, o) for n, o in MIXED["state_lr, rho, alpha"]]
    stacked = algorithms.stack_algorithms(members)
    stack = ResidualMLP(9, 6, 4, output_dim=4, activation="tanh", seed=[0, 1, 2],
                        dtype=torch.float64)
    xs, ys = _data(models=3)
    seen.clear()
    final = stacked.infer(stack, xs, ys, observer=lambda step, s: seen.append((step, s)))
    assert [step for step, _ in seen] == list(range(6))
    _assert_same_state(seen[-1][1], final)
    _assert_same_state(final, stacked.infer(stack, xs, ys))


def test_the_compiled_step_is_one_whole_graph_per_variant_and_lifts_dynamos_limits(
        monkeypatch):
    """_compiled_step asks torch.compile for the functional step of its (activation, λ)
    variant as one whole graph (fullgraph: a graph break would run Python between kernels)
    specialised to its shapes (dynamic=False), once per variant; first it lifts dynamo's
    per-function and accumulated recompile limits (past them dynamo silently runs the step
    uncompiled), never lowering a limit the user raised further."""
    import torch._dynamo.config as dynamo_config

    monkeypatch.setattr(compile_cache, "_COMPILED", {})
    monkeypatch.setattr(dynamo_config, "recompile_limit", 8)
    monkeypatch.setattr(dynamo_config, "accumulated_recompile_limit", 10**9)
    built, compiled = [], []
    monkeypatch.setattr(compile_cache, "functional_step",
                        lambda act, has_lam: built.append((act, has_lam)) or (act, has_lam))
    monkeypatch.setattr(torch, "compile",
                        lambda fn, **kwargs: compiled.append((fn, kwargs)) or ("compiled", fn))
    assert compile_cache.compiled_step("tanh", True) == ("compiled", ("tanh", True))
    assert compile_cache.compiled_step("tanh", True) == ("compiled", ("tanh", True))
    assert compile_cache.compiled_step("relu", False) == ("compiled", ("relu", False))
    assert built == [("tanh", True), ("relu", False)]
    assert compiled == [(("tanh", True), {"dynamic": False, "fullgraph": True}),
                        (("relu", False), {"dynamic": False, "fullgraph": True})]
    assert dynamo_config.recompile_limit == compile_cache.RECOMPILE_LIMIT == 1024
    assert dynamo_config.accumulated_recompile_limit == 10**9
    monkeypatch.setattr(dynamo_config, "accumulated_recompile_limit", 256)
    compile_cache.raise_dynamo_limits()
    assert dynamo_config.accumulated_recompile_limit == 8 * 1024


def _single_of(stack: ResidualMLP, i: int) -> ResidualMLP:
    """Model i of a stack as a lone net with the same weights."""
    single = ResidualMLP(stack.input_dim, stack.width, stack.depth, output_dim=stack.output_dim,
                         activation=stack.act.name, seed=0, dtype=stack.w_in.dtype)
    with torch.no_grad():
        for name in ("w_in", "w_hidden", "w_out"):
            getattr(single, name).copy_(getattr(stack, name)[i])
    return single


def test_graph_runner_follows_in_place_weight_updates(fake_cuda):
    """The graph reads the parameters where they live: after an in-place update (Adam's),
    a replay without a new capture uses the new weights; new storage means a new capture."""
    algo = _algo("pcalm", GRAPH_OPTIONS, mode="auto")
    net = _stack_net()
    x, y = _data(models=2, dtype=torch.float32)
    algo.stacked_weight_grads(net, x, y)
    with torch.no_grad():
        net.w_hidden.mul_(1.5)
    got = algo.stacked_weight_grads(net, x, y)
    assert len(fake_cuda) == 1
    _close(got, _algo("pcalm", GRAPH_OPTIONS).stacked_weight_grads(net, x, y), 1e-4, 1e-6)
    net.w_hidden = torch.nn.Parameter(net.w_hidden.detach() * 0.5)
    got = algo.stacked_weight_grads(net, x, y)
    assert len(fake_cuda) == 2
    _close(got, _algo("pcalm", GRAPH_OPTIONS).stacked_weight_grads(net, x, y), 1e-4, 1e-6)


def test_faulty_capture_falls_back_to_eager(fake_cuda, monkeypatch):
    """A capture whose replay disagrees with the eager loop is caught by its first-replay
    check: one warning naming the mismatch, the eager numbers, graphs and compile off."""
    monkeypatch.setattr(FakeGraph, "stale", True)
    algo = _algo("pcalm", GRAPH_OPTIONS, mode="auto")
    net = _stack_net()
    x, y = _data(models=2, dtype=torch.float32)
    with pytest.warns(UserWarning, match="graph inference path failed.*ReplayMismatch.*w_in"):
        got = algo.stacked_weight_grads(net, x, y)
    _close(got, _algo("pcalm", GRAPH_OPTIONS).stacked_weight_grads(net, x, y), 1e-5, 1e-7)
    key = path_choice.shape_key(net, x, y, algo._plan())
    assert path_choice._disabled == {("graph", key), ("compiled", key)}
    assert algo.last_path == "eager" and not graph_capture._GRAPHS  # the faulty capture is gone


def test_bench_script_writes_its_table(tmp_path, monkeypatch, capsys):
    """`make bench` end to end at toy sizes: the columns the issue asks for, atomically written."""
    import csv

    from pcalm.sweeps import bench
    monkeypatch.setattr(bench, "GRID", [4, 6])
    monkeypatch.setattr(bench, "GRID_SHORT_T", 2)
    monkeypatch.setattr(bench, "GRID_MID", (4, 4))
    out = tmp_path / "bench.csv"
    threads = torch.get_num_threads()
    try:
        bench.main(["--widths", "8", "--depths", "3", "5", "--budget", "3", "--models", "1,2",
                    "--repeats", "1", "--min-time", "0", "--no-compiled", "--threads", "1",
                    "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    rows = list(csv.DictReader(out.open()))
    assert [(r["N"], r["L"], r["T"]) for r in rows] == [("8", "3", "3"), ("8", "5", "3")]
    for column in ("device", "B", "bp_ms", "pc_ms", "pcalm_ms", "pcalm_over_bp",
                   "pcalm_over_T_bp", "naive_pcalm_ms", "prev_eager_pcalm_ms", "eager_pcalm_ms",
                   "pcalm_model_steps_per_s_m1", "pcalm_model_steps_per_s_m2",
                   "mixed_model_steps_per_s_m2", "fig2_grid_projected_s", "fig2_grid_method"):
        assert rows[0][column], column
    # on the CPU, compile=auto runs BP eagerly and PC / PC-ALM on the native loop (eager
    # without a C compiler), and every row says so; IEEE float32
    cpu_loop = "native" if native.library() is not None else "eager"
    assert rows[0]["bp_path"] == "eager"
    assert {rows[0][c] for c in ("pc_path", "pcalm_path", "mixed_path_m2")} == {cpu_loop}
    assert rows[0]["float32_matmul"] == "ieee" and "mixed_model_steps_per_s_m1" not in rows[0]
    assert float(rows[0]["pcalm_over_T_bp"]) == pytest.approx(
        float(rows[0]["pcalm_ms"]) / (3 * float(rows[0]["bp_ms"])), rel=1e-3)
    grid = list(csv.DictReader((tmp_path / "bench_grid.csv").open()))
    assert len(grid) == 4 and {r["T"] for r in grid} == {"8", "12"}
    # the sweep's stacks: BP's 3 seeds, and PC's + PC-ALM's 3 seeds as one mixed stack of 6
    assert {(r["models"], r["pc_pcalm_models"], r["pc_pcalm_path"]) for r in grid} == {
        ("3", "6", cpu_loop)}
    assert "projected Fig. 2 grid" in capsys.readouterr().out


def test_bench_labels_each_row_with_the_path_that_ran(tmp_path, monkeypatch, fake_cuda,
                                                      plain_compiled):
    """A capture that fails (here: PC-ALM's) falls back to eager, and the rows measured
    after it say eager, not the path that was asked for."""
    import csv

    real_init = graph_capture.GraphRunner.__init__

    def pcalm_capture_fails(self, net, x, y, plan, *args):
        if plan.kind == "pcalm" and not plan.per_model:
            raise RuntimeError("capture failed (planted)")
        real_init(self, net, x, y, plan, *args)

    monkeypatch.setattr(graph_capture.GraphRunner, "__init__", pcalm_capture_fails)
    monkeypatch.setenv("PCALM_RESULTS", str(tmp_path))
    from pcalm.sweeps import bench
    out = tmp_path / "bench.csv"
    threads = torch.get_num_threads()
    try:
        with pytest.warns(UserWarning, match="capture failed"):
            bench.main(["--widths", "8", "--depths", "3", "--budget", "3", "--models", "2",
                        "--repeats", "1", "--min-time", "0", "--threads", "1", "--no-naive",
                        "--no-grid", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    (row,) = csv.DictReader(out.open())
    assert (row["bp_path"], row["pc_path"], row["pcalm_path"]) == ("graph", "graph", "eager")
    assert row["compiled_pcalm_path"] == "compiled"  # graph off for this shape: compiled alone
    assert (row["mixed_path_m2"], row["compiled_mixed_path_m2"]) == ("graph", "compiled_graph")


@pytest.mark.parametrize("device, message", [
    ("tpu", "error: bad value --device='tpu': allowed: auto, cpu, cuda"),
    pytest.param("cuda",
                 "error: bad value --device='cuda': no CUDA device here; allowed: auto, cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA")),
])
def test_bench_rejects_a_bad_device_in_one_line(device, message):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"
    done = subprocess.run([sys.executable, str(script), "--device", device],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == message and not done.stdout
