"""The GPU path's review findings (issue 13), each checked on the CPU with CUDA stubbed out
(tests/fake_cuda.py); tests/test_cuda.py checks the same on a real GPU.

- the first-replay check compares per model in float64 and leaves diverging models out,
  and its probe changes y as well as x;
- a failing path is turned off for its shape only; a run's summary says which path ran;
- a run releases its graphs when it ends and captures no one-off diagnostics;
- a compile that fails in warm-up is cached under what was captured (one capture);
- hessian_lambda_max / hessian_power_trace draw their start vector on the net's device;
- a failed capture leaves the previous stream current;
- training runs with IEEE float32 matmuls whatever the process set, and records it;
- dynamo's accumulated recompile limit is raised with the per-function one.
"""

from __future__ import annotations

import contextlib
import gc
import math
import warnings
import weakref

import pytest
import torch

from pcalm.core import algorithms, diagnostics
from pcalm.core import compiled as compile_cache
from pcalm.core import graphs as graph_capture
from pcalm.core.algorithms import PCALM, make_algorithm, stack_algorithms
from pcalm.core.model import ResidualMLP
from pcalm.core.native import fused
from pcalm.data import Dataset
from pcalm.runs.train import Trainer
from tests import fake_cuda as stubs
from tests.conftest import base_config
from tests.fake_cuda import FakeGraph

FALLBACK = "pcalm: the .* inference path failed"


@pytest.fixture
def fake_cuda(monkeypatch):
    return stubs.install(monkeypatch)


@pytest.fixture
def plain_compiled(monkeypatch):
    return stubs.plain_compiled(monkeypatch)


def _data(models=None, batch=5, seed=3, d=9, c=4, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    lead = () if models is None else (models,)
    x = torch.randn(*lead, batch, d, generator=gen, dtype=dtype)
    labels = torch.randint(0, c, (*lead, batch), generator=gen)
    return x, torch.nn.functional.one_hot(labels, c).to(dtype)


def _eager(algo, net, x, y):
    algo.compile_mode = "off"
    return algo.stacked_weight_grads(net, x, y)


def _close(got, want, rtol=1e-4, atol=1e-6):
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol, equal_nan=True)


# -- 1. the first-replay check ------------------------------------------------------------

def _grads(*rows, stacked=True):
    """Four tensors (w_in, w_hidden, w_out, loss) from one list of floats per model."""
    t = torch.tensor(rows, dtype=torch.float32)  # [M, 4]
    out = [t[:, 0:1], t[:, 1:2].unsqueeze(-1), t[:, 2:3], t[:, 3]]
    return out if stacked else [o[0] for o in out]


def test_replay_errors_are_float64_per_model_and_scale_free():
    big = 1e30  # its float32 square overflows: a float32 norm gives inf / inf = NaN
    want = _grads([big, big, big, 2.0], [1.0, 2.0, 3.0, 0.5])
    got = _grads([big * (1 + 1e-6), big, big, 2.0], [1.0, 2.0, 3.0, 0.5])
    errors = algorithms.replay_errors(got, want, stacked=True)
    assert errors["w_in"] == pytest.approx(1e-6, rel=0.1)  # |Δ| / |want| of model 0
    assert errors["w_hidden"] == errors["w_out"] == errors["loss"] == 0
    # Each model at its own scale: a 1e-2 error of a tiny model beside a huge one counts.
    got = _grads([big, big, big, 2.0], [1.01, 2.0, 3.0, 0.5])
    assert algorithms.replay_errors(got, want, stacked=True)["w_in"] == pytest.approx(1e-2,
                                                                                     rel=1e-3)
    # A lone net: one model, no leading dimension.
    lone_w, lone_g = _grads([3.0, 4.0, 5.0, 1.0], stacked=False), _grads(
        [3.0, 4.0, 5.0, 1.1], stacked=False)
    assert algorithms.replay_errors(lone_g, lone_w, stacked=False)["loss"] == pytest.approx(0.1)


def test_replay_errors_leave_out_diverging_models_only():
    inf, nan = math.inf, math.nan
    healthy = [1.0, 2.0, 3.0, 0.5]
    cases = {  # model 0's (want, got): left out, or its error
        "non-finite on both": ([inf, nan, 1.0, nan], [inf, nan, 1.0, nan], 0),
        "inf masks differ, beyond sqrt(max)": ([3e38, 1.0, 1.0, 1.0], [inf, 1.0, 1.0, 1.0], 0),
        "eager non-finite only": ([nan, 1.0, 1.0, 1.0], [5.0, 1.0, 1.0, 1.0], 0),
        "NaN where eager is moderate": ([1.0, 2.0, 3.0, 0.5], [nan, 2.0, 3.0, 0.5], math.inf),
    }
    for name, (want0, got0, expected) in cases.items():
        errors = algorithms.replay_errors(_grads(got0, healthy), _grads(want0, healthy), True)
        assert max(errors.values()) == expected, name
    # A healthy model's mismatch is caught beside a diverging one.
    errors = algorithms.replay_errors(_grads([inf, 1, 1, 1], [1.1, 2.0, 3.0, 0.5]),
                                      _grads([inf, 1, 1, 1], healthy), True)
    assert errors["w_in"] == pytest.approx(0.1)


def test_replay_errors_of_a_zero_layer_are_relative_to_the_model():
    """A layer's gradient that is exactly 0 on the eager loop (T < L-1) and rounding noise
    on another path: the noise is measured against 1 % of the model's whole gradient."""
    want = _grads([0.0, 3.0, 4.0, 1.0])  # whole gradient norm 5
    got = _grads([5e-6, 3.0, 4.0, 1.0])
    assert algorithms.replay_errors(got, want, True)["w_in"] == pytest.approx(1e-4)


def test_replay_errors_judge_each_model_and_tensor_by_its_own_rule():
    """Divergence is judged per model: beside a huge model (its own excuse), a moderate
    model's NaN still counts, and a huge-but-finite model's real mismatch counts. "Huge" is
    beyond √max of the dtype (1.8e19 in float32), not max / 2. The 1 % floor of the whole
    gradient applies to each weight gradient (w_out too), not to the loss."""
    inf, nan = math.inf, math.nan
    huge_finite = [1e25, 1.0, 1.0, 1.0]
    errors = algorithms.replay_errors(_grads(huge_finite, [nan, 2.0, 3.0, 0.5]),
                                      _grads(huge_finite, [1.0, 2.0, 3.0, 0.5]), True)
    assert errors["w_in"] == math.inf
    errors = algorithms.replay_errors(_grads([inf, 1.0, 1.0, 1.0], [1.1e25, 1.0, 1.0, 1.0]),
                                      _grads([1e25, 1.0, 1.0, 1.0], [1e25, 1.0, 1.0, 1.0]),
                                      True)
    assert errors["w_in"] == pytest.approx(0.1, rel=1e-6)  # model 0 left out, model 1 not
    errors = algorithms.replay_errors(_grads([inf, 1.0, 1.0, 1.0]),
                                      _grads([1e25, 1.0, 1.0, 1.0]), True)
    assert max(errors.values()) == 0  # beyond √max, overflowing on the other path
    want = _grads([3.0, 4.0, 0.0, 1e-6])  # whole gradient norm 5; w_out exactly 0
    got = _grads([3.0, 4.0, 5e-6, 2e-6])
    errors = algorithms.replay_errors(got, want, True)
    assert errors["w_out"] == pytest.approx(1e-4, rel=1e-3)  # 5e-6 against 1 % of 5
    assert errors["loss"] == pytest.approx(1.0, rel=1e-3)  # the loss at its own scale


def test_the_graph_cache_keeps_the_four_most_recently_used_captures(fake_cuda):
    """Captures are kept per (weights, shape) up to GRAPH_CACHE_SIZE = 4; a new one evicts
    the least recently *used* (a replay counts as a use), and a kept one replays without a
    new capture."""
    algo = make_algorithm("pc", budget=2, state_lr=0.2)
    net = ResidualMLP(9, 6, 3, output_dim=4, seed=[0, 1])

    def batches_cached():
        return [key[1][7][1] for key in graph_capture._GRAPHS]  # x's batch size, oldest first

    for batch in (1, 2, 3, 4):
        algo.stacked_weight_grads(net, *_data(models=2, batch=batch))
    assert batches_cached() == [1, 2, 3, 4] and len(fake_cuda) == 4
    algo.stacked_weight_grads(net, *_data(models=2, batch=1))  # a use: no new capture
    assert batches_cached() == [2, 3, 4, 1] and len(fake_cuda) == 4
    algo.stacked_weight_grads(net, *_data(models=2, batch=5))
    assert batches_cached() == [3, 4, 1, 5] and len(fake_cuda) == 5
    assert algo.last_path == "graph"


def _diverging_stack():
    """Model 0 at η_h = 2 (far above 2/λ_max) for 12 steps: finite gradients ~1e20–1e26,
    whose float32 squared norms overflow; model 1 healthy."""
    members = [PCALM(budget=12, state_lr=2.0), PCALM(budget=12, state_lr=0.2)]
    net = ResidualMLP(9, 6, 5, output_dim=4, activation="identity", seed=[0, 1])
    return stack_algorithms(members), net


def test_a_diverging_model_does_not_fail_the_replay_check(fake_cuda, monkeypatch):
    monkeypatch.setattr(FakeGraph, "noise", 1e-6)  # another path's rounding
    algo, net = _diverging_stack()
    x, y = _data(models=2)
    want = _eager(algo, net, x, y)
    assert want[1][0].abs().max() > 1e20 and torch.isfinite(want[1]).all()
    algo.compile_mode = "auto"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=FALLBACK)
        got = algo.stacked_weight_grads(net, x, y)
    assert algo.last_path == "graph"
    _close([g[1] for g in got], [w[1] for w in want])


def test_a_healthy_models_mismatch_beside_a_diverging_one_is_caught(fake_cuda, monkeypatch):
    monkeypatch.setattr(FakeGraph, "noise", 1e-2)  # beyond REPLAY_TOLERANCE
    algo, net = _diverging_stack()
    algo.compile_mode = "auto"
    with pytest.warns(UserWarning, match="graph inference path failed.*ReplayMismatch"):
        algo.stacked_weight_grads(net, *_data(models=2))
    assert algo.last_path == "eager"


def test_the_probe_changes_y_too(fake_cuda, monkeypatch):
    """A capture whose replay reads the targets it was captured with is caught by the
    first-replay check: the numbers are eager's, on every later batch."""
    monkeypatch.setattr(FakeGraph, "ignores_y", True)
    algo = make_algorithm("pcalm", budget=5, state_lr=0.2)
    net = ResidualMLP(9, 6, 5, output_dim=4, activation="tanh", seed=[0, 1])
    with pytest.warns(UserWarning, match="ReplayMismatch"):
        algo.stacked_weight_grads(net, *_data(models=2, seed=1))
    x, y = _data(models=2, seed=1)
    y = y.roll(1, -1)  # new targets for the same inputs
    algo.compile_mode = "auto"
    got = algo.stacked_weight_grads(net, x, y)
    _close(got, _eager(make_algorithm("pcalm", budget=5, state_lr=0.2), net, x, y))


# -- 2. a failure turns off its shape only; the summary records the path ------------------

def test_a_failing_shape_leaves_other_shapes_on_the_graph_path(fake_cuda, monkeypatch):
    real_init = graph_capture.GraphRunner.__init__

    def out_of_memory_for_batch_7(self, net, x, y, *args):
        if x.shape[-2] == 7:
            raise torch.OutOfMemoryError("CUDA out of memory (planted)")
        real_init(self, net, x, y, *args)

    monkeypatch.setattr(graph_capture.GraphRunner, "__init__", out_of_memory_for_batch_7)
    algo = make_algorithm("pc", budget=4, state_lr=0.2)
    net = ResidualMLP(9, 6, 4, output_dim=4, seed=[0, 1])
    with pytest.warns(UserWarning) as caught:
        algo.stacked_weight_grads(net, *_data(models=2, batch=7))
    assert [str(w.message) for w in caught] == [
        "pcalm: the graph inference path failed for pc w_hidden [2, 2, 6, 6] relu x [2, 7, 9] "
        "(OutOfMemoryError: CUDA out of memory (planted)); this shape runs without it from now on"]
    assert algo.last_path == "eager"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=FALLBACK)
        algo.stacked_weight_grads(net, *_data(models=2, batch=5))
        assert algo.last_path == "graph"
        algo.stacked_weight_grads(net, *_data(models=2, batch=7))  # no second warning
        assert algo.last_path == "eager"
    assert len(fake_cuda) == 1


def _dataset(n_train=96, n_test=40, dim=784, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Dataset("synthetic", torch.randn(n_train, dim, generator=gen),
                   torch.randint(0, 10, (n_train,), generator=gen),
                   torch.randn(n_test, dim, generator=gen),
                   torch.randint(0, 10, (n_test,), generator=gen))


def _stack_configs(tmp_path, **train):
    """A mixed PC + PC-ALM stack (as Fig. 2 trains them), tiny."""
    cfgs = []
    for seed, name in [(0, "pc"), (1, "pcalm")]:
        algo = {"name": name, "budget": 4, "state_lr": 0.2}
        if name == "pcalm":
            algo.update(rho=1.0, alpha=1.0, inner_steps=1, weight_credit="pre_dual")
        cfgs.append(base_config(tmp_path, tmp_path, algo=algo,
                                model={"width": 8, "depth": 4},
                                train={"seed": seed, "evals_per_epoch": 1, **train}))
    return cfgs


def test_the_summary_records_the_path_that_ran(tmp_path, fake_cuda, one_thread):
    summaries = Trainer(_stack_configs(tmp_path), _dataset()).run()
    steps = 96 // 32
    for s in summaries:
        assert s["compute_path"] == "graph" and s["compute_path_steps"] == {"graph": steps}


def test_the_summary_records_a_fallback(tmp_path, fake_cuda, monkeypatch, one_thread):
    """A replay that fails mid-run: the run goes on eager, and its summary names both
    paths, the most used first, with their step counts."""
    real_replay, replays = FakeGraph.replay, []

    def replay_fails_from_the_third(self):  # 1: the first-replay check, 2: step 1
        replays.append(1)
        if len(replays) >= 3:
            raise RuntimeError("replay failed (planted)")
        real_replay(self)

    monkeypatch.setattr(FakeGraph, "replay", replay_fails_from_the_third)
    with pytest.warns(UserWarning, match="replay failed"):
        (s, _) = Trainer(_stack_configs(tmp_path), _dataset()).run()
    assert s["compute_path"] == "eager+graph"
    assert s["compute_path_steps"] == {"graph": 1, "eager": 2}
    assert not graph_capture._GRAPHS  # the failed shape's capture is dropped at once


def test_a_failed_replay_drops_its_capture_at_once(fake_cuda, monkeypatch):
    algo = make_algorithm("pc", budget=3, state_lr=0.2)
    net = ResidualMLP(9, 6, 4, output_dim=4, seed=[0, 1])
    x, y = _data(models=2)
    algo.stacked_weight_grads(net, x, y)
    assert len(graph_capture._GRAPHS) == 1

    def fails(self):
        raise RuntimeError("replay failed (planted)")

    monkeypatch.setattr(FakeGraph, "replay", fails)
    with pytest.warns(UserWarning, match="replay failed"):
        algo.stacked_weight_grads(net, x, y)
    assert algo.last_path == "eager" and not graph_capture._GRAPHS


def test_a_cpu_run_records_the_path_it_ran(tmp_path, one_thread):
    """A narrow ReLU stack on a CPU: the native loop where a C compiler built it, else eager."""
    (s, _) = Trainer(_stack_configs(tmp_path), _dataset()).run()
    ran = "native" if fused.library() is not None else "eager"
    assert s["compute_path"] == ran and s["compute_path_steps"] == {ran: 3}


# -- 3. graphs are released; one-off diagnostics are not captured -------------------------

def test_a_run_releases_its_graphs_and_captures_only_its_training_step(
        tmp_path, fake_cuda, one_thread):
    trainer = Trainer(_stack_configs(tmp_path), _dataset())
    net = weakref.ref(trainer.net)
    trainer.run()
    assert len(fake_cuda) == 1  # the training step; not the post-training alignment's shapes
    assert not graph_capture._GRAPHS
    fake_cuda.clear()  # the stubs' own record of the capture
    del trainer
    gc.collect()
    assert net() is None  # nothing keeps the finished run's net (and its buffers) alive


def test_a_failed_run_releases_its_graphs_too(tmp_path, fake_cuda, one_thread):
    trainer = Trainer(_stack_configs(tmp_path), _dataset())

    def stop(m, row):
        if row["step"] > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.run(on_eval=stop)
    assert len(fake_cuda) == 1 and not graph_capture._GRAPHS


def test_release_graphs_drops_one_nets_captures(fake_cuda):
    nets = [ResidualMLP(9, 6, 4, output_dim=4, seed=[s, s + 1]) for s in (0, 2)]
    algo = make_algorithm("pc", budget=3, state_lr=0.2)
    algo.compile_mode = "auto"
    for net in nets:
        algo.stacked_weight_grads(net, *_data(models=2))
    assert len(graph_capture._GRAPHS) == 2
    assert algorithms.release_graphs(nets[0]) == 1
    (runner,) = graph_capture._GRAPHS.values()
    assert runner.ws.net is nets[1]


# -- 7. a compile failure in warm-up ------------------------------------------------------

def test_a_compile_failure_in_warm_up_is_captured_once(fake_cuda, monkeypatch):
    def broken(act, has_lam):
        def step(*args):
            raise RuntimeError("inductor failed (planted)")
        return step

    monkeypatch.setattr(compile_cache, "compiled_step", broken)
    algo = make_algorithm("pcalm", budget=3, state_lr=0.2)
    algo.compile_mode = "on"
    net = ResidualMLP(9, 6, 4, output_dim=4, seed=[0, 1])
    x, y = _data(models=2)
    with pytest.warns(UserWarning, match="compiled inference path failed.*planted"):
        algo.stacked_weight_grads(net, x, y)
    got = algo.stacked_weight_grads(net, x, y)
    assert len(fake_cuda) == 1 and algo.last_path == "graph"
    _close(got, _eager(make_algorithm("pcalm", budget=3, state_lr=0.2), net, x, y))


# -- 8. λ_max on the net's device ---------------------------------------------------------

def test_hessian_start_vectors_live_on_the_nets_device():
    """A net on another device (`meta`: shapes only, on any machine): every tensor of the
    recipe lives there. A CPU start vector fails at the first matrix-vector product."""
    net = ResidualMLP(9, 6, 4, output_dim=4, seed=0, device="meta")
    x = torch.empty(5, 9, device="meta")
    assert diagnostics.hessian_power_trace(net, x, iters=3).device.type == "meta"
    with pytest.raises(RuntimeError, match="meta tensors"):  # float() of the result, at the end
        diagnostics.hessian_lambda_max(net, x, iters=4)
    # The start vector is the CPU draw, moved: the same numbers on every device.
    v = diagnostics._start_vector((3, 4), 7, torch.device("cpu"))
    torch.testing.assert_close(v, torch.randn(3, 4, generator=torch.Generator().manual_seed(7),
                                              dtype=torch.float64))


# -- 9. a failed capture restores the stream ----------------------------------------------

def test_a_failed_capture_leaves_the_previous_stream_current(fake_cuda, monkeypatch):
    streams = fake_cuda.streams

    @contextlib.contextmanager
    def capture_whose_end_fails(graph):  # torch's order: capture_end, then the stream's exit
        streams.current = type(streams.default)("capture")
        yield
        raise RuntimeError("capture_end failed (planted)")

    monkeypatch.setattr(torch.cuda, "graph", capture_whose_end_fails)
    algo = make_algorithm("pc", budget=3, state_lr=0.2)
    algo.compile_mode = "auto"
    net = ResidualMLP(9, 6, 4, output_dim=4, seed=[0, 1])
    with pytest.warns(UserWarning, match="capture_end failed"):
        algo.stacked_weight_grads(net, *_data(models=2))
    assert streams.current is streams.default and algo.last_path == "eager"


# -- 10. IEEE float32 matmuls -------------------------------------------------------------

@pytest.fixture
def user_set_tf32():
    """A user's process that asked for TF32 / bf16 matmuls (torch's per-backend API)."""
    backends = algorithms._matmul_backends()
    if not backends:
        pytest.skip("torch < 2.9: no per-backend float32 precision")
    saved = [b.fp32_precision for b in backends]
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    yield
    for b, value in zip(backends, saved):
        b.fp32_precision = value


def test_training_pins_ieee_float32_and_restores_the_users_setting(
        tmp_path, user_set_tf32, monkeypatch, one_thread):
    seen = []
    real = algorithms.Stacked.stacked_weight_grads

    def spy(self, net, x, y):
        seen.append((torch.backends.cuda.matmul.fp32_precision,
                     torch.backends.mkldnn.matmul.fp32_precision))
        return real(self, net, x, y)

    monkeypatch.setattr(algorithms.Stacked, "stacked_weight_grads", spy)
    summaries = Trainer(_stack_configs(tmp_path), _dataset()).run()
    assert seen and set(seen) == {("ieee", "ieee")}
    assert [s["float32_matmul"] for s in summaries] == ["ieee", "ieee"]
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"


def test_the_recorded_precision_is_the_one_in_force(user_set_tf32):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert algorithms.float32_matmul_precision(cuda) == "tf32"
    assert algorithms.float32_matmul_precision(cpu) == "bf16"
    with algorithms.ieee_float32():
        assert algorithms.float32_matmul_precision(cuda) == "ieee"
        assert algorithms.float32_matmul_precision(cpu) == "ieee"


# -- 11. dynamo's limits ------------------------------------------------------------------

def test_dynamo_keeps_every_shape_of_every_compiled_step(monkeypatch):
    import torch._dynamo.config as dynamo_config

    monkeypatch.setattr(compile_cache, "_COMPILED", {})
    # dynamo's own patch: its config names are aliases that monkeypatch would delete on undo
    with dynamo_config.patch(recompile_limit=8, accumulated_recompile_limit=256):
        compile_cache.compiled_step("relu", True)
        # 25 Fig. 2 cells × 3 activations × lone / stacked shapes in one long job, at least;
        # and all 6 compiled variants (3 activations × PC / PC-ALM) at that many each.
        assert dynamo_config.recompile_limit >= 256
        assert dynamo_config.accumulated_recompile_limit >= 6 * dynamo_config.recompile_limit
