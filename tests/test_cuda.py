"""The CUDA paths on a real GPU (skipped where there is none; `make gpu-check` runs them).

- the CUDA-graph paths (`compile=auto`: the eager loop captured; `on`: the compiled step
  captured; capture, first-replay check, replays on new batches) and the compiled path
  without graphs give the eager loop's numbers, for BP, PC and PC-ALM, every activation,
  one model and a stack, with no fallback warning;
- the graph follows Adam's (and StackedAdam's) in-place updates over several training steps;
- mixed PC + PC-ALM stacks (Fig. 2's), on the graph and the compiled-graph path;
- `infer()` through a replay; realistic sizes (N = L = 128, T = 256); T < L − 1;
- a stack with a diverging model passes the first-replay check (no fallback);
- a run releases its graphs; float32 matmuls are IEEE during training whatever was set;
- λ_max of a CUDA net; a short training run on the GPU learns and reports its device and
  the path it ran.

On CPU machines the same runner logic is tested with CUDA stubbed out
(tests/test_speed_paths.py: the fake-graph tests).
"""

import warnings
from collections import OrderedDict

import pytest
import torch

from pcalm.core import algorithms
from pcalm.core import graphs as graph_capture
from pcalm.core import paths as path_choice
from pcalm.core.algorithms import make_algorithm, stack_algorithms
from pcalm.core.model import ResidualMLP

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

FALLBACK = "pcalm: the .* inference path failed"  # pcalm.core.paths.disable's warning
CASES = [
    ("bp", {}),
    ("pc", {"budget": 12, "state_lr": 0.2}),
    ("pcalm", {"budget": 12, "state_lr": 0.2}),
    ("pcalm", {"budget": 6, "state_lr": 0.15, "rho": 1.5, "alpha": 0.7, "inner_steps": 2,
               "weight_credit": "post_dual"}),
]


@pytest.fixture(autouse=True)
def fresh_paths(monkeypatch):
    """Each test starts with every path available and an empty graph cache."""
    monkeypatch.setattr(path_choice, "_disabled", set())
    monkeypatch.setattr(graph_capture, "_GRAPHS", OrderedDict())


def _batch(models, seed, batch=32, dim=20, classes=5):
    gen = torch.Generator().manual_seed(seed)
    lead = () if models is None else (models,)
    x = torch.randn(*lead, batch, dim, generator=gen)
    y = torch.nn.functional.one_hot(torch.randint(0, classes, (*lead, batch), generator=gen),
                                    classes).float()
    return x.cuda(), y.cuda()


def _grads(name, options, mode, net, x, y, want_path=None):
    algo = make_algorithm(name, **options)
    algo.compile_mode = mode
    out = algo.stacked_weight_grads(net, x, y)
    if want_path is not None:
        assert algo.last_path == want_path
    return out


def _assert_close(got, want):
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("act", ["identity", "tanh", "relu"])
@pytest.mark.parametrize("models", [None, 3])
@pytest.mark.parametrize("name, options", CASES)
@pytest.mark.parametrize("mode, graphs", [("auto", True), ("on", True), ("on", False)],
                         ids=["graph", "compiled_graph", "compiled"])
def test_gpu_paths_equal_eager(act, models, name, options, mode, graphs, monkeypatch):
    if not graphs:
        monkeypatch.setattr(path_choice, "GRAPH_DEVICE_TYPES", ())
    seeds = 0 if models is None else list(range(models))
    net = ResidualMLP(20, 16, 7, output_dim=5, activation=act, seed=seeds, device="cuda")
    compiled = mode == "on" and name != "bp"
    path = ("compiled_" if compiled else "") + "graph" if graphs else (
        "compiled" if compiled else "eager")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=FALLBACK)  # the path did not run
        for seed in (1, 2, 3):  # the first call captures; the others replay on new data
            x, y = _batch(models, seed)
            _assert_close(_grads(name, options, mode, net, x, y, want_path=path),
                          _grads(name, options, "off", net, x, y))
    assert not path_choice._disabled
    if graphs:
        assert len(graph_capture._GRAPHS) == 1


def test_graph_follows_adam_updates():
    net = ResidualMLP(20, 16, 7, output_dim=5, activation="relu", seed=[0, 1], device="cuda")
    twin = ResidualMLP(20, 16, 7, output_dim=5, activation="relu", seed=[0, 1], device="cuda")
    options = {"budget": 14, "state_lr": 0.2}
    nets = {"auto": net, "off": twin}
    opts = {m: torch.optim.Adam(n.parameters(), lr=1e-2) for m, n in nets.items()}
    for step in range(5):
        x, y = _batch(2, step)
        for mode, n in nets.items():
            grads = _grads("pcalm", options, mode, n, x, y)
            for p, g in zip((n.w_in, n.w_hidden, n.w_out), grads[:3]):
                p.grad = g
            opts[mode].step()
    for a, b in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert len(graph_capture._GRAPHS) == 1 and not path_choice._disabled


def test_training_on_the_gpu_learns(fake_data_root, results_dir):
    from pcalm.runs.config import resolve_run_config
    from pcalm.runs.runner import execute
    from tests.conftest import PCALM_CONFIG, base_config

    cfg = resolve_run_config(base_config(fake_data_root, results_dir, algo=PCALM_CONFIG,
                                         train={"epochs": 2, "device": "cuda"}))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=FALLBACK)
        summary = execute([cfg], progress=False, say=lambda _: None).trained[0]
    assert summary["device"].startswith("cuda") and not summary["diverged"]
    assert summary["compute_path"] == "graph" and summary["float32_matmul"] == "ieee"
    assert summary["test_acc"] > 0.6  # chance is 0.1; the CPU test asks the same


def _mixed(budget, mode, m=6, state_lr=0.2):
    """Fig. 2's stack: half PC, half PC-ALM (per-model options)."""
    members = [make_algorithm("pc" if k < m // 2 else "pcalm", budget=budget,
                              state_lr=state_lr * (1 + 0.05 * k)) for k in range(m)]
    algo = stack_algorithms(members)
    algo.compile_mode = mode
    return algo, members


@pytest.mark.parametrize("mode, path", [("auto", "graph"), ("on", "compiled_graph")])
def test_mixed_stack_on_the_gpu_paths(mode, path):
    algo, members = _mixed(12, mode)
    net = ResidualMLP(20, 16, 7, output_dim=5, activation="tanh", seed=list(range(6)),
                      device="cuda")
    eager, _ = _mixed(12, "off")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=FALLBACK)
        for seed in (1, 2):
            x, y = _batch(6, seed)
            _assert_close(algo.stacked_weight_grads(net, x, y),
                          eager.stacked_weight_grads(net, x, y))
            assert algo.last_path == path
            state, want = algo.infer(net, x, y), eager.infer(net, x, y)  # infer via a replay
            assert algo.last_path == path
            _assert_close([state.z, state.eps, state.e], [want.z, want.eps, want.e])


def test_graph_follows_stacked_adam_updates():
    """Models with their own learning rate (StackedAdam) over a mixed stack, graph vs eager."""
    from pcalm.core.optim import StackedAdam, make_adam

    nets = {mode: ResidualMLP(20, 16, 7, output_dim=5, activation="relu", seed=list(range(4)),
                              device="cuda") for mode in ("auto", "off")}
    algos = {mode: _mixed(14, mode, m=4)[0] for mode in nets}
    opts = {mode: make_adam(n.parameters(), [1e-3, 2e-3, 3e-3, 4e-3]) for mode, n in nets.items()}
    assert all(isinstance(o, StackedAdam) for o in opts.values())
    for step in range(5):
        x, y = _batch(4, step)
        for mode, n in nets.items():
            grads = algos[mode].stacked_weight_grads(n, x, y)
            for p, g in zip((n.w_in, n.w_hidden, n.w_out), grads[:3]):
                p.grad = g
            opts[mode].step()
    assert algos["auto"].last_path == "graph"
    for a, b in zip(nets["auto"].parameters(), nets["off"].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["auto", "on"], ids=["graph", "compiled"])
def test_realistic_size_graph_equals_eager(mode):
    """N = L = 128, T = 256, B = 64, a mixed stack of 6 (the largest Fig. 2 cell)."""
    algo, _ = _mixed(256, mode, state_lr=0.05)
    eager, _ = _mixed(256, "off", state_lr=0.05)
    net = ResidualMLP(784, 128, 128, output_dim=10, activation="relu", seed=list(range(6)),
                      device="cuda")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=FALLBACK)
        for seed in (1, 2):
            x, y = _batch(6, seed, batch=64, dim=784, classes=10)
            got, want = algo.stacked_weight_grads(net, x, y), eager.stacked_weight_grads(net, x, y)
            errors = algorithms.replay_errors([*got], [*want], stacked=True)
            assert max(errors.values()) < 1e-3, errors
    assert algo.last_path == ("graph" if mode == "auto" else "compiled_graph")


@pytest.mark.parametrize("mode", ["auto", "on"], ids=["graph", "compiled"])
def test_credit_short_of_the_input_layer(mode):
    """T < L − 1: credit has not reached the first layers, whose gradient is (about) zero;
    rounding noise there on another path must not fail the replay check."""
    net = ResidualMLP(20, 16, 16, output_dim=5, activation="tanh", seed=[0, 1, 2], device="cuda")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=FALLBACK)
        x, y = _batch(3, 1)
        got = _grads("pcalm", {"budget": 4, "state_lr": 0.25}, mode, net, x, y)
    want = _grads("pcalm", {"budget": 4, "state_lr": 0.25}, "off", net, x, y)
    assert want[0].abs().max() < 1e-6 * want[2].abs().max()
    _assert_close(got, want)  # noise in the zero layers is far below atol


@pytest.mark.parametrize("mode", ["auto", "on"], ids=["graph", "compiled"])
def test_a_diverging_model_passes_the_replay_check(mode):
    """η_h far above 2/λ_max for one model of the stack (the η_h sweep does this): its numbers
    overflow, the check leaves it out, and the healthy model runs on the graph."""
    members = [make_algorithm("pcalm", budget=32, state_lr=lr) for lr in (2.5, 0.2)]
    algo = stack_algorithms(members)
    algo.compile_mode = mode
    net = ResidualMLP(784, 32, 16, activation="tanh", seed=[0, 1], device="cuda")
    x, y = _batch(2, 1, batch=32, dim=784, classes=10)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=FALLBACK)
        got = algo.stacked_weight_grads(net, x, y)
    assert algo.last_path == ("graph" if mode == "auto" else "compiled_graph")
    algo.compile_mode = "off"
    want = algo.stacked_weight_grads(net, x, y)
    _assert_close([g[1] for g in got], [w[1] for w in want])


def test_a_run_releases_its_graphs_and_pins_ieee_float32(tmp_path):
    from tests.test_graph_path import _dataset, _stack_configs

    backends = algorithms._matmul_backends()
    saved = [b.fp32_precision for b in backends]
    torch.backends.cuda.matmul.fp32_precision = "tf32"  # what a user might have set
    try:
        from pcalm.runs.train import Trainer

        trainer = Trainer(_stack_configs(tmp_path, device="cuda"), _dataset())
        summaries = trainer.run()
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    finally:
        for b, value in zip(backends, saved):
            b.fp32_precision = value
    assert not graph_capture._GRAPHS
    assert [s["float32_matmul"] for s in summaries] == ["ieee", "ieee"]
    assert [s["compute_path"] for s in summaries] == ["graph", "graph"]


def test_hessian_lambda_max_of_a_cuda_net():
    from pcalm.core.diagnostics import hessian_lambda_max

    cpu = ResidualMLP(20, 16, 6, output_dim=5, activation="tanh", seed=0)
    gpu = ResidualMLP(20, 16, 6, output_dim=5, activation="tanh", seed=0, device="cuda")
    x, _ = _batch(None, 1, batch=8)
    assert hessian_lambda_max(gpu, x) == pytest.approx(hessian_lambda_max(cpu, x.cpu()),
                                                       rel=1e-9)
