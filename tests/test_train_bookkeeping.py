"""What the Trainer records around the math (pcalm/runs/train.py): when it evaluates, which net it
builds from the config, how it keeps time across ticks. Expected values are written out."""

from __future__ import annotations

import io
import json
import math
import sys
from types import SimpleNamespace

import pytest
import torch

from pcalm.data import Dataset
from pcalm.runs import build, train
from pcalm.runs.train import Trainer, evaluation_steps
from tests import oracle
from tests.conftest import base_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("steps_per_epoch, epochs, evals, want", [
    (10, 2, 3, {0, 3, 7, 10, 13, 17, 20}),  # round(10/3) = 3, round(20/3) = 7
    (8, 1, 4, {0, 2, 4, 6, 8}),
    (5, 3, 1, {0, 5, 10, 15}),
    (4, 1, 8, {0, 1, 2, 3, 4}),  # more evaluations than steps: each step once
])
def test_evaluation_steps_are_step_zero_and_evenly_spaced_per_epoch(steps_per_epoch, epochs,
                                                                    evals, want):
    assert evaluation_steps(steps_per_epoch, epochs, evals) == want


def _dataset(classes: int = 10, n_train: int = 40, n_test: int = 12, dim: int = 9):
    gen = torch.Generator().manual_seed(3)
    return Dataset("synthetic", torch.randn(n_train, dim, generator=gen),
                   torch.arange(n_train) % classes, torch.randn(n_test, dim, generator=gen),
                   torch.arange(n_test) % classes, num_classes=classes)


def _configs(tmp_path, seeds=(0,), **model):
    return [base_config(tmp_path, tmp_path, algo={"name": "bp"},
                        model={"width": 6, "depth": 3, **model},
                        train={"seed": s, "batch_size": 8, "evals_per_epoch": 1,
                               "checkpoint_every": 1})
            for s in seeds]


def test_the_net_is_built_from_the_config(tmp_path):
    """Parameterisation, γ0, width, depth, the dataset's input size and class count, one
    model per seed; SP means unit scales and PyTorch's U(±1/√fan_in) init."""
    trainer = Trainer(_configs(tmp_path, seeds=(4, 5), param="sp", gamma0=2.0),
                      _dataset(classes=3))
    net = trainer.net
    assert (net.param, net.gamma0, net.num_models) == ("sp", 2.0, 2)
    assert (net.a_in, net.a_hidden, net.a_out) == (1.0, 1.0, 1.0)
    assert [tuple(w.shape) for w in net.weights] == [(2, 6, 9), (2, 6, 6), (2, 3, 6)]
    gen = torch.Generator().manual_seed(5)
    want = [(torch.rand(shape, generator=gen) * 2 - 1) / math.sqrt(shape[-1])
            for shape in ((6, 9), (1, 6, 6), (3, 6))]
    for got, w in zip((net.w_in[1], net.w_hidden[1], net.w_out[1]), want):
        torch.testing.assert_close(got.detach(), w, rtol=1e-6, atol=1e-7)
    mupc = Trainer(_configs(tmp_path, gamma0=2.0), _dataset()).net
    assert (mupc.param, mupc.a_out) == ("mupc", 1 / (2.0 * 6))
    assert mupc.w_out.shape == (1, 10, 6)  # a stack of one


def test_wall_time_adds_every_tick(tmp_path, monkeypatch):
    """`wall_time_s` is the sum of the intervals between ticks (one per checkpoint, kept
    across resumes), so with a clock that moves 1.5 s per reading it is the last reading
    minus the first: 5 steps, a checkpoint after each but the last."""
    readings = []

    def clock():
        readings.append(100.0 + 1.5 * len(readings))
        return readings[-1]

    monkeypatch.setattr(train, "time", SimpleNamespace(time=clock))  # this module's clock
    (summary,) = Trainer(_configs(tmp_path), _dataset()).run(save_checkpoint=lambda _: None)
    assert len(readings) == 6  # the start, a tick at each of 4 checkpoints, the end
    assert summary["wall_time_s"] == pytest.approx(readings[-1] - readings[0])


def test_one_batch_per_epoch_trains_and_a_stack_all_diverged_stops(tmp_path):
    """train_size = batch_size is one step per epoch, not an error; once every model of a
    stack has diverged (η_h = 1e30 overflows float32 states at once) training stops at the
    next evaluation (the losses reach the host only there): evaluating every step, 1 step of
    the 5 planned."""
    (summary,) = Trainer([dict(c, train={**c["train"], "batch_size": 40, "epochs": 2})
                          for c in _configs(tmp_path)], _dataset()).run()
    assert (summary["status"], summary["steps"]) == ("complete", 2)
    blow_up = [dict(c, algo={"name": "pc", "budget": 5, "state_lr": 1e30},
                    model={**c["model"], "activation": "tanh"},
                    train={**c["train"], "evals_per_epoch": 5})
               for c in _configs(tmp_path, seeds=(0, 1))]
    trainer = Trainer(blow_up, _dataset())
    assert trainer.total_steps == 5
    summaries = trainer.run()
    assert [(s["status"], s["steps"], s["diverged_step"]) for s in summaries] == [
        ("diverged", 1, 1), ("diverged", 1, 1)]


PCALM = {"name": "pcalm", "budget": 8, "state_lr": 0.25, "rho": 1.0, "alpha": 1.0,
         "inner_steps": 1, "weight_credit": "pre_dual"}


@pytest.mark.parametrize("change, stacks", [
    ({"train": {"seed": 3}}, True),
    ({"train": {"eta0": 0.01}}, True),
    ({"algo": {**PCALM, "state_lr": 0.1, "rho": 2.0, "alpha": 0.5}}, True),
    ({"algo": {"name": "pc", "budget": 8, "state_lr": 0.1}}, True),  # PC = PC-ALM, α = 0
    ({"name": "other", "results_dir": "elsewhere", "logger": {"mode": "offline"}}, True),
    ({"algo": {"name": "pc", "budget": 4, "state_lr": 0.25}}, False),
    ({"algo": {**PCALM, "inner_steps": 2}}, False),
    ({"algo": {**PCALM, "weight_credit": "post_dual"}}, False),
    ({"algo": {"name": "bp"}}, False),
    ({"model": {"width": 32}}, False),
    ({"model": {"gamma0": 0.5}}, False),
    ({"data": {"train_size": 100}}, False),
    ({"train": {"batch_size": 16}}, False),
    ({"train": {"epochs": 2}}, False),
    ({"train": {"dtype": "float64"}}, False),
    ({"task": {"name": "eta_sweep"}}, False),
])
def test_runs_stack_when_they_differ_only_in_what_a_stack_holds_per_model(tmp_path, change,
                                                                         stacks):
    """One stack trains models that differ only in seed, η0, η_h, ρ, α or PC vs PC-ALM (and
    in where their results go); anything else that changes the numbers — the budget, inner
    steps, weight credit, BP, the net, the data, the loop — is another stack."""
    base = base_config(tmp_path, tmp_path / "results", algo=PCALM)
    other = base_config(tmp_path, tmp_path / "results", algo=PCALM)
    for section, values in change.items():
        if isinstance(values, dict) and section not in ("algo", "task"):
            other[section] = {**other[section], **values}
        else:
            other[section] = values
    assert (build.stack_key(base) == build.stack_key(other)) is stacks


def _through_disk(payload: dict) -> dict:
    """A checkpoint as a resumed run reads it: saved, then loaded with weights_only."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_a_run_resumed_from_its_checkpoint_ends_as_the_uninterrupted_run(tmp_path):
    """Restoring step 3's checkpoint (weights, Adam's moments, rows, losses, the clock and
    the start time) into a fresh Trainer and training on ends in the uninterrupted run's
    weights and summaries exactly; the summary counts the 2 attempts, says where it ran and
    how many models the stack held. A checkpoint of other seeds is refused."""
    configs = [dict(c, algo={"name": "pcalm", "budget": 3, "state_lr": 0.2})
               for c in _configs(tmp_path, seeds=(0, 1))]
    configs = [dict(c, train={**c["train"], "dtype": "float64", "evals_per_epoch": 2})
               for c in configs]
    whole = Trainer(configs, _dataset())
    checkpoints = {}
    want = whole.run(save_checkpoint=lambda p: checkpoints.setdefault(
        p["state"]["step"], _through_disk(p)))
    assert sorted(checkpoints) == [1, 2, 3, 4]
    resumed = Trainer(configs, _dataset())
    checkpoints[3]["state"]["started"] = "2026-01-01T00:00:00+00:00"  # an earlier attempt's
    resumed.restore(checkpoints[3])
    got = resumed.run()
    for a, b in zip(resumed.net.weights, whole.net.weights):
        assert torch.equal(a, b)
    timing = ("wall_time_s", "attempts")
    assert [{k: v for k, v in s.items() if k not in timing} for s in got] == [
        {k: v for k, v in s.items() if k not in timing} for s in want]
    assert [(s["attempts"], s["device"], s["models_in_stack"]) for s in got] == [
        (2, "cpu", 2), (2, "cpu", 2)]
    assert [s["attempts"] for s in want] == [1, 1]
    assert resumed.state.started == "2026-01-01T00:00:00+00:00"  # the first attempt's
    assert json.dumps(resumed.state.rows) == json.dumps(whole.state.rows)  # NaN at step 0
    stranger = Trainer([dict(c, train={**c["train"], "seed": 7}) for c in configs[:1]],
                       _dataset())
    with pytest.raises(ValueError, match="^checkpoint belongs to another stack$"):
        stranger.restore(checkpoints[3])


def test_the_compute_path_most_used_comes_first(tmp_path):
    trainer = Trainer(_configs(tmp_path), _dataset())
    trainer.state.path_steps = {"graph": 3, "eager": 5, "compiled": 1}
    summary = trainer._path_summary()
    assert summary["compute_path"] == "eager+graph+compiled"
    assert summary["compute_path_steps"] == {"graph": 3, "eager": 5, "compiled": 1}
    assert summary["float32_matmul"] == "ieee"


def test_the_summary_aligns_each_layer_with_bp_on_the_first_training_samples(tmp_path):
    """grad_cosine and grad_cosine_per_layer (W_1, each residual W_l, W_L) compare the
    trained net's PC gradients with BP's by autograd (tests/oracle.py) on the first
    min(64, n) training samples."""
    cfg = dict(_configs(tmp_path, depth=4)[0], algo={"name": "pc", "budget": 3,
                                                        "state_lr": 0.2})
    cfg["train"] = {**cfg["train"], "dtype": "float64"}
    data = _dataset()
    trainer = Trainer([cfg], data)
    (summary,) = trainer.run()
    net = trainer.net
    x = data.x_train.double()
    y = torch.nn.functional.one_hot(data.y_train, 10).double()
    weights = [w[0].detach() for w in net.weights]
    bp, _ = oracle.bp_grads(weights, x, y, "relu", oracle.scales(9, 6, 4))
    local = [g[0] for g in trainer.algo.weight_grads(net, x[None], y[None])]

    def cosine(a, b):
        return float((a * b).sum() / (a.norm() * b.norm()))

    assert summary["grad_cosine_per_layer"] == pytest.approx(
        [cosine(a, b) for a, b in zip(local, bp)], abs=1e-12)
    flat = [torch.cat([g.reshape(-1) for g in grads]) for grads in (local, bp)]
    assert summary["grad_cosine"] == pytest.approx(cosine(*flat), abs=1e-12)
    assert len(summary["grad_cosine_per_layer"]) == 4


def test_the_progress_bar_shows_the_run_its_steps_and_test_accuracy(tmp_path, capsys,
                                                                  monkeypatch):
    """train.progress=on: one bar on stderr named by algorithm, N, L and φ, counting steps
    from where the run (re)starts to the total, with the first model's test accuracy; off,
    or auto off a terminal: nothing."""
    def configs(mode):
        return [dict(c, train={**c["train"], "progress": mode, "evals_per_epoch": 5})
                for c in _configs(tmp_path, seeds=(0, 1))]

    trainer = Trainer(configs("on"), _dataset())
    checkpoints = {}
    trainer.run(save_checkpoint=lambda p: checkpoints.setdefault(p["state"]["step"],
                                                                 _through_disk(p)))
    bar = capsys.readouterr().err.replace("\r", "\n")
    assert "bp N=6 L=3 relu:" in bar and "0/5" in bar and "5/5" in bar
    final_acc = trainer.state.rows[0][-1]["test_acc"]
    assert f"test_acc={final_acc:.4f}" in bar.strip().splitlines()[-1]
    resumed = Trainer(configs("on"), _dataset())
    resumed.restore(checkpoints[3])
    resumed.run()
    bar = capsys.readouterr().err.replace("\r", "\n")
    assert "3/5" in bar and "5/5" in bar and "0/5" not in bar
    for mode, progress in (("off", True), ("auto", True), ("auto", False)):
        Trainer(configs(mode), _dataset()).run(progress=progress)  # pytest's stderr: no tty
        assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # auto on a terminal: shown
    Trainer(configs("auto"), _dataset()).run(progress=True)
    assert "5/5" in capsys.readouterr().err
    Trainer(configs("auto"), _dataset()).run(progress=False)  # a caller that wants none
    assert capsys.readouterr().err == ""


def test_a_stack_key_ignores_key_order_and_takes_paths(tmp_path):
    """Configs read from different files (a checkpoint's JSON, Hydra's YAML) may list their
    keys in another order, and a data root may be a Path: still one stack."""
    base = base_config(tmp_path, tmp_path / "results", algo=PCALM)
    reordered = {k: (dict(reversed(list(v.items()))) if isinstance(v, dict) else v)
                 for k, v in reversed(list(base.items()))}
    assert list(reordered["model"]) != list(base["model"])
    assert build.stack_key(reordered) == build.stack_key(base)
    with_path = dict(base, data={**base["data"], "root": tmp_path})
    assert build.stack_key(with_path) == build.stack_key(base)
