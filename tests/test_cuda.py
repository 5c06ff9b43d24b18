"""The CUDA paths on a real GPU (skipped where there is none; `make gpu-check` runs them).

- the CUDA-graph paths (`compile=auto`: the eager loop captured; `on`: the compiled step
  captured; capture, first-replay check, replays on new batches) and the compiled path
  without graphs give the eager loop's numbers, for BP, PC and PC-ALM, every activation,
  one model and a stack, with no fallback warning;
- the graph follows Adam's in-place updates over several training steps;
- a short training run on the GPU learns and reports its device.

On CPU machines the same runner logic is tested with CUDA stubbed out
(tests/test_speed_paths.py: the fake-graph tests).
"""

import warnings

import pytest
import torch

from pcalm import algorithms
from pcalm.algorithms import make_algorithm
from pcalm.model import ResidualMLP

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

FALLBACK = "pcalm: the .* inference path failed"  # pcalm.algorithms._disable's warning
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
    monkeypatch.setattr(algorithms, "_available", {"compiled": True, "graph": True})
    monkeypatch.setattr(algorithms, "_GRAPHS", algorithms.OrderedDict())


def _batch(models, seed, batch=32, dim=20, classes=5):
    gen = torch.Generator().manual_seed(seed)
    lead = () if models is None else (models,)
    x = torch.randn(*lead, batch, dim, generator=gen)
    y = torch.nn.functional.one_hot(torch.randint(0, classes, (*lead, batch), generator=gen),
                                    classes).float()
    return x.cuda(), y.cuda()


def _grads(name, options, mode, net, x, y):
    algo = make_algorithm(name, **options)
    algo.compile_mode = mode
    return algo.stacked_weight_grads(net, x, y)


def _assert_close(got, want):
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("act", ["identity", "tanh", "relu"])
@pytest.mark.parametrize("models", [None, 3])
@pytest.mark.parametrize("name, options", CASES)
@pytest.mark.parametrize("mode, graphs", [("auto", True), ("on", True), ("on", False)],
                         ids=["graph", "compiled_graph", "compiled"])
def test_gpu_paths_equal_eager(act, models, name, options, mode, graphs):
    algorithms._available["graph"] = graphs
    seeds = 0 if models is None else list(range(models))
    net = ResidualMLP(20, 16, 7, output_dim=5, activation=act, seed=seeds, device="cuda")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=FALLBACK)  # the path did not run
        for seed in (1, 2, 3):  # the first call captures; the others replay on new data
            x, y = _batch(models, seed)
            _assert_close(_grads(name, options, mode, net, x, y),
                          _grads(name, options, "off", net, x, y))
    assert algorithms._available == {"compiled": True, "graph": graphs}
    if graphs:
        assert len(algorithms._GRAPHS) == 1


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
    assert len(algorithms._GRAPHS) == 1 and algorithms._available["graph"]


def test_training_on_the_gpu_learns(fake_data_root, results_dir):
    from pcalm.config import resolve_run_config
    from pcalm.runner import execute
    from tests.conftest import PCALM_CONFIG, base_config

    cfg = resolve_run_config(base_config(fake_data_root, results_dir, algo=PCALM_CONFIG,
                                         train={"epochs": 2, "device": "cuda"}))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=FALLBACK)
        summary = execute([cfg], progress=False, say=lambda _: None).trained[0]
    assert summary["device"].startswith("cuda") and not summary["diverged"]
    assert summary["test_acc"] > 0.6  # chance is 0.1; the CPU test asks the same
