"""The cost model behind the projected wall times of sweep plans (pcalm/sweeps/cost.py)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from pcalm.core import paths
from pcalm.core.native import fused
from pcalm.runs.provenance import device_name
from pcalm.sweeps import cost
from pcalm.sweeps.cost import CostModel, _fit, forward_macs

MODEL = CostModel("test-cpu", "cpu", 1, bp=(1e-4, 2e-5, 1e-10), step=(5e-5, 1e-6, 2e-10),
                  inference=(2e-5, 3e-9, 4e-11), evaluation=(1e-4, 5e-5, 3e-11))


def _cfg(algo, n, depth, budget=None, train_size=None, test_size=None, batch=64, evals=20):
    return {"model": {"width": n, "depth": depth},
            "algo": {"name": algo, **({} if algo == "bp" else {"budget": budget or 2 * depth})},
            "train": {"batch_size": batch, "epochs": 1, "evals_per_epoch": evals},
            "data": {"name": "fashion_mnist", "train_size": train_size, "test_size": test_size}}


def test_fit_recovers_planted_coefficients():
    true = (3e-5, 2e-9, 5e-11)
    rows = [[1.0, e, f] for e, f in ((1e3, 1e5), (1e5, 1e6), (5e4, 1e8), (2e5, 4e7), (1e4, 1e9))]
    seconds = [true[0] + true[1] * e + true[2] * f for _, e, f in rows]
    assert _fit(rows, seconds) == pytest.approx(true, rel=1e-6)


def test_fit_never_returns_a_negative_coefficient():
    rows = [[1.0, x, 0.0] for x in (1.0, 2.0, 3.0, 4.0)]
    coef = _fit(rows, [4.0, 3.0, 2.0, 1.0])  # decreasing: the slope alone would be negative
    assert all(c >= 0 for c in coef) and coef[1] == 0.0


def test_a_pcalm_run_costs_steps_times_the_step_plus_evaluations():
    n, depth, batch, t = 16, 128, 64, 256
    a0, a_l, a_w = MODEL.step
    b0, b_e, b_f = MODEL.inference
    w = batch * (784 * n + n * n * (depth - 2) + n * 10)
    step = a0 + a_l * depth + a_w * w + t * (b0 + b_e * batch * n * (depth - 1)
                                            + b_f * batch * n * n * (depth - 2))
    e0, e_l, e_w = MODEL.evaluation
    evals = 21 * 5 * (e0 + e_l * depth + e_w * 2000 * (784 * n + n * n * (depth - 2) + n * 10))
    expected = MODEL.startup[1] + 937 * step + evals  # 937 = 60,000 // 64; 21 evals × 5 chunks
    assert MODEL.run_seconds(_cfg("pcalm", n, depth)) == pytest.approx(expected, rel=1e-12)
    c0, c_l, c_w = MODEL.bp
    assert MODEL.step_seconds(_cfg("bp", n, depth)) == pytest.approx(c0 + c_l * depth + c_w * w)


def test_stacks_share_fixed_costs_and_pay_work_per_model():
    cfg = _cfg("pcalm", 32, 32)
    one, six = MODEL.step_seconds(cfg), MODEL.step_seconds(cfg, models=6)
    fixed = MODEL.step[0] + MODEL.step[1] * 32 + 64 * MODEL.inference[0]
    assert six - fixed == pytest.approx(6 * (one - fixed), rel=1e-12)
    assert MODEL.stack_seconds([cfg, _cfg("pc", 32, 32)]) == MODEL.run_seconds(cfg, models=2)
    assert forward_macs(64, 8, 2) == 64 * (784 * 8 + 8 * 10)


def test_model_round_trips_and_a_broken_file_means_recalibrate(tmp_path):
    path = tmp_path / "m.json"
    MODEL.save(path)
    assert CostModel.load(path) == MODEL
    path.write_text("{not json")
    assert CostModel.load(path) is None


def test_calibration_on_this_cpu_predicts_its_own_timings(one_thread):
    """The fitted model reproduces a directly timed step within a factor of 2 (timings on a
    shared machine are noisy; a wrong term or unit is off by far more)."""
    import torch

    from pcalm.core.algorithms import make_algorithm
    from pcalm.core.model import ResidualMLP

    model = cost.calibrate("cpu", 1)
    assert model.kind == "cpu" and all(c >= 0 for c in model.inference)
    assert model.tanh_bp > 0.5 and model.tanh_pc > 0.5  # timed ratios, near or above 1
    net = ResidualMLP(784, 16, 48, seed=[0])
    x = torch.randn(1, 64, 784)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (1, 64)), 10).float()
    algo = make_algorithm("pcalm", budget=96, state_lr=0.2)
    measured = cost._best_time(lambda: algo.stacked_weight_grads(net, x, y))
    predicted = model.step_seconds(_cfg("pcalm", 16, 48))
    assert 0.5 < predicted / measured < 2.0
    if fused.library() is not None:  # auto ran the native loop: the eager terms price eager
        assert model.native_max_width == paths.NATIVE_MAX_WIDTH
        assert algo.last_path == "native"
        algo.compile_mode = "off"
        measured = cost._best_time(lambda: algo.stacked_weight_grads(net, x, y))
        eager = dataclasses.replace(model, native_inference=None)
        assert 0.5 < eager.step_seconds(_cfg("pcalm", 16, 48)) / measured < 2.0


def test_narrow_training_runs_are_priced_on_the_native_loops_terms():
    """A training run at N ≤ native_max_width takes the native terms; a wider one, a tanh net,
    BP, and every diagnostic task (they observe each step: the eager loop) the eager ones."""
    native = dataclasses.replace(MODEL, native_step=(1e-4, 0.0, 0.0),
                                 native_inference=(1e-6, 0.0, 0.0), native_max_width=64)
    n, depth = 32, 16
    w = 64 * (784 * n + n * n * (depth - 2) + n * 10)
    assert native.step_seconds(_cfg("pcalm", n, depth)) == pytest.approx(1e-4 + 32 * 1e-6)
    assert native.step_seconds(_cfg("pcalm", 128, depth)) == MODEL.step_seconds(
        _cfg("pcalm", 128, depth))
    c0, c_l, c_w = MODEL.bp
    assert native.step_seconds(_cfg("bp", n, depth)) == pytest.approx(c0 + c_l * depth + c_w * w)
    task = {**_cfg("pcalm", n, depth), "task": {"name": "credit_traces"}}
    assert native.task_seconds(task) == MODEL.task_seconds(task)
    tanh = _cfg("pcalm", n, depth)
    tanh["model"]["activation"] = "tanh"  # runs eagerly
    assert native.step_seconds(tanh) == MODEL.step_seconds(tanh)


def test_a_tanh_net_costs_its_measured_factor_over_a_relu_one():
    """Calibrated tanh factors scale a tanh run's BP and PC steps and a tanh task; a model
    stored before them (1.0) prices tanh as ReLU."""
    tanh = dataclasses.replace(MODEL, tanh_bp=1.5, tanh_pc=1.7)
    for algo, factor in (("bp", 1.5), ("pcalm", 1.7)):
        relu, cfg = _cfg(algo, 32, 64), _cfg(algo, 32, 64)
        cfg["model"]["activation"] = "tanh"
        assert tanh.step_seconds(cfg) == pytest.approx(factor * MODEL.step_seconds(relu))
        assert MODEL.step_seconds(cfg) == MODEL.step_seconds(relu)
    task = {**_cfg("pcalm", 32, 8), "task": {"name": "credit_traces"}}
    task["model"]["activation"] = "tanh"
    assert tanh.task_seconds(task) == pytest.approx(1.7 * MODEL.task_seconds(task))


def test_a_stored_model_keeps_its_native_terms_and_an_old_one_has_none(tmp_path):
    native = dataclasses.replace(MODEL, native_step=(1e-4, 2e-6, 3e-12),
                                 native_inference=(1e-6, 1e-9, 1e-12), native_max_width=64)
    native.save(tmp_path / "m.json")
    assert CostModel.load(tmp_path / "m.json") == native
    raw = json.loads((tmp_path / "m.json").read_text())
    for key in ("native_step", "native_inference", "native_max_width", "tanh_bp", "tanh_pc"):
        del raw[key]
    (tmp_path / "old.json").write_text(json.dumps(raw))
    old = CostModel.load(tmp_path / "old.json")
    assert old.native_inference is None and old.native_max_width == 0
    assert old.tanh_bp == old.tanh_pc == 1.0
    assert old.step_seconds(_cfg("pcalm", 8, 32)) == MODEL.step_seconds(_cfg("pcalm", 8, 32))


def test_dry_run_prints_the_projected_time_per_job_and_in_total(fake_data_root, results_dir,
                                                                monkeypatch, capsys):
    from pcalm.sweeps import launchers
    from pcalm.sweeps.grid import load_sweep
    from pcalm.sweeps.plan import job_lines, plan, plan_jobs, projection

    monkeypatch.setenv("PCALM_DATA", str(fake_data_root))
    monkeypatch.setattr(launchers, "cores", lambda: 2)
    stored = CostModel(device_name("cpu"), "cpu", 1, MODEL.bp, MODEL.step, MODEL.inference,
                       MODEL.evaluation)
    stored.save(cost.model_path(results_dir, "cpu", 1))  # no calibration: these numbers
    args = ["experiment=figure2", "scale=smoke", "inference.state_lr=0.25", "model.width=8",
            "model.depth=8,32", "model.activation=relu", "sweep.launcher=local",
            "data.train_size=200", "data.test_size=100"]
    sweep = load_sweep(args)  # what experiments/sweep.py --dry-run does, step by step
    launcher = launchers.make_launcher(sweep)
    work = plan(sweep, launcher)
    work.projected = projection(work, launcher)
    out = capsys.readouterr().out + "\n".join(job_lines(work))
    jobs = plan_jobs(sweep.configs, 2, 1)
    per_job = [stored.startup[0] + sum(stored.run_seconds(c) for c in job) for job in jobs]
    assert f"projected wall time: {cost.describe_seconds(max(per_job))} (2 jobs in parallel, " \
           f"{cost.describe_seconds(sum(per_job))} of job time in all" in out
    for i, seconds in enumerate(per_job):
        assert f"job {i}: {len(jobs[i])} runs" in out
        assert f"projected {cost.describe_seconds(seconds)}" in out
    assert "calibrating" not in out
    assert math.isfinite(sum(per_job)) and sum(per_job) > 0


@pytest.mark.parametrize("threads_override, priced_at", [
    (None, 1),  # small nets train on one thread (pcalm.core.device.threads_for)
    ("train.threads=2", 2),  # a run's own setting wins
])
def test_each_run_is_priced_at_the_threads_it_will_train_with(
        fake_data_root, results_dir, monkeypatch, capsys, threads_override, priced_at):
    """One local job on two cores: the job's share is 2 threads, but a small net trains on
    one unless `train.threads` says otherwise, and the projection prices it so. (A sweep
    once priced every run at the job's share with a 2-thread model: 25.5 h projected for a
    47-minute sweep.) Catches pricing at the job's share instead of the run's threads."""
    from pcalm.sweeps import launchers
    from pcalm.sweeps.grid import load_sweep
    from pcalm.sweeps.plan import plan, projection

    monkeypatch.setenv("PCALM_DATA", str(fake_data_root))
    monkeypatch.setattr(launchers, "cores", lambda: 2)
    stored = {}
    for threads, scale in ((1, 1.0), (2, 10.0)):  # the 2-thread model 10× dearer, to tell apart
        stored[threads] = CostModel(device_name("cpu"), "cpu", threads,
                                    *[tuple(scale * c for c in term) for term in
                                      (MODEL.bp, MODEL.step, MODEL.inference, MODEL.evaluation)])
        stored[threads].save(cost.model_path(results_dir, "cpu", threads))
    args = ["experiment=figure2", "scale=smoke", "inference.state_lr=0.25", "model.width=8",
            "model.depth=8", "model.activation=relu", "sweep.launcher=local",
            "sweep.local_jobs=1", "data.train_size=200", "data.test_size=100",
            *([threads_override] if threads_override else [])]
    sweep = load_sweep(args)
    launcher = launchers.make_launcher(sweep)
    work = plan(sweep, launcher)
    assert len(work.jobs) == 1 and work.threads == 2
    (seconds,) = projection(work, launcher)
    model = stored[priced_at]
    want = model.startup[0] + sum(model.run_seconds(c) for c in sweep.configs)
    assert seconds == pytest.approx(want, rel=1e-12)
    assert f"{priced_at} thread" in capsys.readouterr().out


def _task_cfg(task: dict, algo: dict, n=32, depth=16, batch=64):
    return {"task": task, "algo": algo, "model": {"width": n, "depth": depth},
            "train": {"batch_size": batch, "epochs": 1, "evals_per_epoch": 20},
            "data": {"name": "fashion_mnist", "train_size": None, "test_size": None}}


def test_diagnostic_tasks_are_priced_by_their_inference_steps_and_observed_points():
    n, depth, batch = 32, 16, 64
    b0, b_e, b_f = MODEL.inference
    per_step = b0 + b_e * batch * n * (depth - 1) + b_f * batch * n * n * (depth - 2)
    a0, a_l, a_w = MODEL.step
    grad = a0 + a_l * depth + a_w * forward_macs(batch, n, depth)
    traces = _task_cfg({"name": "credit_traces", "steps_per_layer": 4}, {"name": "pcalm",
                                                                          "budget": 32})
    assert MODEL.run_seconds(traces) == pytest.approx(MODEL.startup[1] + 4 * depth * per_step)
    routes = {"name": "credit_routes", "steps_per_layer": 16, "points": 32}
    pcalm_run = _task_cfg(routes, {"name": "pcalm", "budget": 32, "state_lr": 0.25})
    pc_run = _task_cfg(routes, {"name": "pc", "budget": 32, "state_lr": 0.25})
    plain = _task_cfg(dict(routes, equilibrium_solver="plain"),
                      {"name": "pc", "budget": 32, "state_lr": 0.25})
    base = MODEL.startup[1] + 16 * depth * per_step + 33 * grad
    assert MODEL.run_seconds(pcalm_run) == pytest.approx(base)
    assert MODEL.run_seconds(pc_run) == pytest.approx(base + cost.EQUILIBRIUM_STEPS * per_step)
    plain_steps = math.ceil(2.0 * depth**2 / 0.25)  # the registered equilibrium_diffusion_times
    assert MODEL.run_seconds(plain) == pytest.approx(base + plain_steps * per_step)
    skipped = _task_cfg(dict(routes, equilibrium_solver="none"),
                        {"name": "pc", "budget": 32, "state_lr": 0.25})
    assert MODEL.run_seconds(skipped) == pytest.approx(base)
    curve = _task_cfg({"name": "alignment_curve", "steps_per_layer": 32, "points": 40,
                       "pc_reference": True}, {"name": "pcalm", "budget": 32, "alpha": 1.0})
    assert MODEL.run_seconds(curve) == pytest.approx(
        MODEL.startup[1] + 2 * (32 * depth * per_step + 41 * grad))
    linear = _task_cfg({"name": "linear_dynamics"}, {"name": "pc", "budget": 1000})
    one = b0 + b_e * n * (depth - 1) + b_f * n * n * (depth - 2)
    assert MODEL.run_seconds(linear) == pytest.approx(MODEL.startup[1] + 1000 * one)
    scalar = _task_cfg({"name": "scalar_dynamics"}, {"name": "pcalm", "budget": 50})
    assert MODEL.run_seconds(scalar) == pytest.approx(MODEL.startup[1] + 50 * (b0 + b_e))


def test_every_run_and_job_pays_its_start_up():
    cfg = _cfg("pcalm", 16, 8)
    bare = CostModel(**{**MODEL.__dict__, "startup": (0.0, 0.0)})
    started = CostModel(**{**MODEL.__dict__, "startup": (7.0, 0.25)})
    assert started.run_seconds(cfg) == pytest.approx(bare.run_seconds(cfg) + 0.25)
    units = [[cfg], [cfg, cfg]]
    assert started.job_seconds(units) == pytest.approx(
        7.0 + started.stack_seconds([cfg]) + started.stack_seconds([cfg, cfg]))
    assert started.job_seconds([]) == 7.0


def test_a_stored_model_without_start_up_terms_gets_the_defaults(tmp_path):
    import json

    path = tmp_path / "old.json"
    MODEL.save(path)
    raw = json.loads(path.read_text())
    del raw["startup"]
    path.write_text(json.dumps(raw))
    assert CostModel.load(path).startup == cost.DEFAULT_STARTUP


def test_a_run_states_its_work_and_projection_before_it_starts():
    """`experiments/run.py model.depth=100000` must not start a ten-hour run in silence: the
    plan line names the work and, with a stored model, the projected time. Planted model:
    one training step costs exactly 1 s and nothing else costs anything."""
    unit = CostModel("test-cpu", "cpu", 1, bp=(0.0, 0.0, 0.0), step=(1.0, 0.0, 0.0),
                     inference=(0.0, 0.0, 0.0), evaluation=(0.0, 0.0, 0.0), startup=(0.0, 0.0))
    cfg = _cfg("pcalm", 32, 100_000, budget=64)
    line = cost.plan_line(cfg, unit)
    # 60,000 // 64 = 937 steps of 1 s = 15.6 min
    assert line == ("plan: N = 32, L = 100,000, 937 training steps × T = 64 inference steps; "
                    "projected 16 min on test-cpu, 1 thread(s)")
    assert "projected time unknown" in cost.plan_line(cfg, None)
    bp = cost.plan_line(_cfg("bp", 8, 8, train_size=6400), unit)
    assert "100 training steps;" in bp and "inference" not in bp


def test_run_py_prints_the_plan_first_and_not_for_a_complete_run(fake_data_root, tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    args = [sys.executable, "experiments/run.py", "algo=bp", "model.width=8", "model.depth=4",
            "data.train_size=128", "data.test_size=64", f"results_dir={tmp_path}"]
    env = {**os.environ, "PCALM_DATA": str(fake_data_root), "WANDB_MODE": "disabled",
           "PYTHONPATH": str(REPO)}
    first = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0].startswith("plan: N = 8, L = 4, 2 training steps;")
    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "plan:" not in again.stdout
    assert "already complete" in again.stdout


def test_more_evaluations_than_steps_cost_one_per_step():
    """Training evaluates at most once per step (pcalm.runs.train.evaluation_steps): asking
    for 10⁹ evaluations of a 4-step run costs what asking for 4 does, not 10⁹."""
    few = _cfg("bp", 8, 4, train_size=256, test_size=128, evals=4)  # 256 // 64 = 4 steps
    many = _cfg("bp", 8, 4, train_size=256, test_size=128, evals=10**9)
    assert MODEL.run_seconds(many) == MODEL.run_seconds(few)
    assert MODEL.run_seconds(_cfg("bp", 8, 4, train_size=256, test_size=128, evals=2)) \
        < MODEL.run_seconds(few)
