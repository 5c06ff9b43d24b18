"""The theory-figure tasks (pcalm/runs/tasks/figures.py): shapes, and the numbers theory fixes.

Fig 1: PC-ALM's scalar weight gradient reaches BP's (to 1e-6), PC's does not. Fig 4: the
iteration matrix is stable and the traces converge to the forward pass / −δ. Fig 5: on a
linear net PC-ALM's gradient cosine → 1 (> 0.999) and beats PC's. Fig 3: step 0 carries no
credit. Every task: finite arrays of the documented shapes. Plus the experiment configs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pcalm.runs.config import ConfigError, resolve_run_config
from pcalm.runs.runner import load_run_dataset
from pcalm.runs.tasks.registry import TASKS
from tests.conftest import PC_CONFIG, PCALM_CONFIG, base_config

PC, PCALM = PC_CONFIG, PCALM_CONFIG


pytestmark = pytest.mark.usefixtures("one_thread")


def run(cfg: dict, dataset=None):
    cfg = resolve_run_config(cfg)
    task = TASKS[cfg["task"]["name"]]
    if task.needs_data and dataset is None:
        dataset = load_run_dataset(cfg)
    summary, arrays = task.fn(cfg, dataset)
    for name, value in arrays.items():
        assert np.all(np.isfinite(value)), f"{name} has non-finite values"
    return summary, arrays


def config(data_root, results, task: dict, algo: dict, **sections) -> dict:
    return base_config(data_root, results, task=task, algo=algo, **sections)


# ------------------------------------------------------------------------- Figure 1

SCALAR = {"width": 1, "depth": 2, "activation": "identity", "param": "sp"}


@pytest.mark.parametrize("algo", ["pc", "pcalm"])
def test_scalar_dynamics_gradient_reaches_bp_only_with_pcalm(tmp_path, algo):
    spec = dict(PCALM if algo == "pcalm" else PC, budget=50)
    summary, a = run(config(tmp_path, tmp_path, {"name": "scalar_dynamics"}, spec,
                            model=SCALAR, train={"dtype": "float64"}))
    w1, w2, x, y = 0.8, 1.3, 1.0, 0.0  # the task's defaults
    e = w2 * w1 * x - y
    assert summary["grad_bp_w1"] == pytest.approx(w2 * e * x)  # δ x
    assert summary["grad_bp_w2"] == pytest.approx(e * w1 * x)  # e h
    assert summary["lambda_max"] == pytest.approx(1 + w2**2)
    assert summary["state_lr"] == pytest.approx(1 / (1 + w2**2))
    assert a["z"].shape == a["lam"].shape == a["grad_w1"].shape == (51,)
    assert a["step"].tolist() == list(range(51))
    assert a["z"][0] == pytest.approx(w1 * x) and a["eps"][0] == 0  # forward pass
    assert summary["spectral_radius"] < 1
    if algo == "pcalm":
        assert abs(a["grad_w1"][-1] - summary["grad_bp_w1"]) < 1e-6
        assert abs(a["grad_w2"][-1] - summary["grad_bp_w2"]) < 1e-6
        assert summary["lam_final"] == pytest.approx(-w2 * e, abs=1e-6)  # λ* = −δ
        assert a["eig_real"].shape == (2,)
    else:
        assert summary["grad_error_final"] > 0.1  # PC settles at its own fixed point
        assert np.all(a["lam"] == 0)
        # PC's credit is −δ shrunk by the Hessian: ε* = −δ/(1 + w2²) (SPEC §5)
        assert a["eps"][-1] == pytest.approx(-w2 * e / (1 + w2**2), rel=1e-9)


def test_scalar_dynamics_rejects_a_non_scalar_net(tmp_path):
    cfg = config(tmp_path, tmp_path, {"name": "scalar_dynamics"}, PCALM,
                 model={**SCALAR, "width": 2})
    with pytest.raises(ConfigError, match="model.width=1"):
        run(cfg)


# ------------------------------------------------------------------------- Figure 4


@pytest.mark.parametrize("algo", ["pc", "pcalm"])
def test_linear_dynamics_is_stable_and_pcalm_converges_to_forward_and_adjoint(tmp_path, algo):
    n, depth, t = 4, 4, 1500
    spec = dict(PCALM if algo == "pcalm" else PC, budget=t)
    summary, a = run(config(tmp_path, tmp_path,
                            {"name": "linear_dynamics", "input_dim": 12, "trace_points": 60},
                            spec, model={"width": n, "depth": depth, "activation": "identity"}))
    s = len(a["step"])
    assert a["step"][0] == 0 and a["step"][-1] == t and np.all(np.diff(a["step"]) > 0)
    assert a["z"].shape == a["lam"].shape == a["eps"].shape == (s, depth - 1, n)
    assert a["forward_z"].shape == a["neg_delta"].shape == (depth - 1, n)
    dim = (depth - 1) * n
    assert a["eig_real"].shape == ((2 * dim,) if algo == "pcalm" else (dim,))
    assert summary["spectral_radius"] < 1
    assert summary["state_lr"] == pytest.approx(1 / summary["lambda_max"])
    np.testing.assert_allclose(a["z"][0], a["forward_z"], atol=1e-12)  # starts at forward
    if algo == "pcalm":
        np.testing.assert_allclose(a["z"][-1], a["forward_z"], atol=1e-6)
        np.testing.assert_allclose(a["lam"][-1], a["neg_delta"], atol=1e-6)
        assert summary["grad_cosine_final"] > 1 - 1e-9
    else:
        assert summary["z_rel_error_final"] > 1e-3  # PC leaves the forward pass
        assert np.all(a["lam"] == 0)


# ------------------------------------------------------------------------- Figure 5


def test_alignment_curve_linear_net_pcalm_reaches_bp_and_beats_pc(fake_data_root, tmp_path):
    depth, n = 4, 8
    task = {"name": "alignment_curve", "steps_per_layer": 300, "points": 12,
            "pc_reference": True}
    summary, a = run(config(fake_data_root, tmp_path, task, dict(PCALM, budget=2 * depth),
                            model={"width": n, "depth": depth, "activation": "identity"},
                            train={"dtype": "float64"}))
    s = len(a["step"])
    assert a["step"][-1] == 300 * depth and 2 * depth in a["step"].tolist()
    assert a["cosine"].shape == a["pc_cosine"].shape == a["rel_error"].shape == (s,)
    assert a["cosine_per_layer"].shape == a["rel_error_per_layer"].shape == (s, depth)
    assert summary["cosine_final"] > 0.999
    assert summary["rel_error_final"] < 0.05
    assert summary["cosine_final"] > summary["pc_cosine_final"]
    assert summary["front_step"] == pytest.approx(depth / math.sqrt(summary["state_lr"]))


# ------------------------------------------------------------------------- Figure 3


@pytest.mark.parametrize("algo", ["pc", "pcalm"])
def test_credit_traces_shapes_and_zero_credit_at_the_forward_pass(fake_data_root, tmp_path,
                                                                  algo):
    depth = 6
    spec = dict(PCALM if algo == "pcalm" else PC, budget=2 * depth)
    summary, a = run(config(fake_data_root, tmp_path,
                            {"name": "credit_traces", "steps_per_layer": 3}, spec,
                            model={"width": 8, "depth": depth}))
    assert a["norm_ratio"].shape == a["cosine"].shape == (3 * depth + 1, depth - 1)
    assert np.all(a["norm_ratio"][0] == 0) and np.all(a["cosine"][0] == 0)
    assert a["norm_ratio"][1, -1] > 0  # the first step reaches the top layer only
    assert np.all(a["norm_ratio"][1, :-1] == 0)
    assert summary["steps"] == 3 * depth


# ---------------------------------------------------------------------- Figures 8, 9


def test_credit_routes_shapes_and_flops(fake_data_root, tmp_path):
    from pcalm.runs.tasks.figures import flops_per_step

    depth, n, batch = 4, 8, 32
    summary, a = run(config(fake_data_root, tmp_path,
                            {"name": "credit_routes", "steps_per_layer": 4, "points": 6},
                            dict(PCALM, budget=2 * depth), model={"width": n, "depth": depth}))
    s = len(a["step"])
    assert {depth // 2, depth, 2 * depth, 4 * depth} <= set(a["step"].tolist())
    for key in ("flops", "hidden_alignment", "stacked_credit_cosine", "cosine"):
        assert a[key].shape == (s,), key
    assert a["credit_cosine"].shape == (s, depth - 1)
    assert flops_per_step(n, depth, batch) == 4 * batch * n * (n * (depth - 2) + 10)
    np.testing.assert_allclose(a["flops"], a["step"] * flops_per_step(n, depth, batch))
    assert summary["flops_at_budget"] == 2 * depth * flops_per_step(n, depth, batch)
    assert np.all(np.abs(a["hidden_alignment"]) <= 1 + 1e-6)


# ------------------------------------------------------------------- configuration


def test_task_parameters_are_checked(fake_data_root, tmp_path):
    bad_key = config(fake_data_root, tmp_path, {"name": "credit_traces", "steps": 3}, PCALM)
    with pytest.raises(ConfigError, match="unknown key task.steps"):
        resolve_run_config(bad_key)
    bad_value = config(fake_data_root, tmp_path,
                       {"name": "credit_traces", "steps_per_layer": 0}, PCALM)
    with pytest.raises(ConfigError, match="task.steps_per_layer"):
        run(bad_value)
    bp = config(fake_data_root, tmp_path, {"name": "credit_routes"}, {"name": "bp"})
    with pytest.raises(ConfigError, match="algo.name"):
        run(bp)


@pytest.mark.parametrize("experiment,scale,runs,check", [
    ("figure1", "smoke", 2, {"model.depth": {2}}),
    ("figure4", "paper", 2, {"model.width": {16}}),
    ("figure3", "smoke", 2, {"model.depth": {32}, "algo.budget": {64}}),
    ("figure3", "paper", 2, {"model.depth": {128}, "algo.budget": {256}}),
    ("figure5", "smoke", 18, {"model.depth": {8, 16, 32}, "algo.alpha": {0.25, 0.5, 1.0}}),
    ("figure5", "paper", 36, {"model.depth": {16, 32, 64, 128}}),
    ("figure8", "smoke", 20, {"model.depth": {16}, "model.width": {8, 16, 32, 64, 128}}),
    ("figure9", "paper", 48, {"model.depth": {64}, "data.name": {"mnist"}}),
])
def test_experiment_grids_expand(experiment, scale, runs, check, tmp_path, monkeypatch):
    """The experiments compose, their nested scale interpolations resolve, and every cell
    validates (η_h pinned, so that the test does not depend on configs/eta_table.csv)."""
    from pcalm.sweeps.grid import load_sweep

    monkeypatch.setenv("PCALM_RESULTS", str(tmp_path))
    sweep = load_sweep([f"experiment={experiment}", f"scale={scale}",
                        "inference.state_lr=0.2"])
    assert len(sweep.configs) == runs
    for dotted, values in check.items():
        section, key = dotted.split(".")
        assert {c[section][key] for c in sweep.configs} == values, dotted


@pytest.mark.parametrize("experiment", ["figure8", "figure9"])
def test_a_width_limit_leaves_only_the_wide_pc_equilibria_out(experiment, tmp_path,
                                                              monkeypatch):
    """`sweep.equilibrium_max_width=256`: the PC runs at N = 512, 1024 skip the Newton solve
    (and so have their own run ids); every other run is the unlimited sweep's, id for id."""
    from pcalm.runs.folder import RunFolder
    from pcalm.sweeps.grid import load_sweep

    monkeypatch.setenv("PCALM_RESULTS", str(tmp_path))
    args = [f"experiment={experiment}", "scale=paper", "inference.state_lr=0.2"]
    full = load_sweep(args)
    limited = load_sweep([*args, "sweep.equilibrium_max_width=256"])
    assert {c["task"]["equilibrium_solver"] for c in full.configs} == {"newton"}
    skipped = {(c["algo"]["name"], c["model"]["width"]) for c in limited.configs
               if c["task"]["equilibrium_solver"] == "none"}
    assert skipped == {("pc", 512), ("pc", 1024)}

    def ids(configs):
        return {RunFolder(c["results_dir"], c).id: c for c in configs}

    shared = ids(full.configs).keys() & ids(limited.configs).keys()
    assert len(shared) == 48 - 6
    assert all(ids(limited.configs)[i]["task"]["equilibrium_solver"] == "none"
               for i in ids(limited.configs).keys() - shared)


def test_pc_equilibrium_is_the_minimiser_of_the_pc_energy_for_a_linear_net():
    """Linear net, one sample: F(z) = ½‖Pz − y‖² + ½‖Rz − c‖² is minimised by
    z* = (PᵀP + RᵀR)⁻¹ (Pᵀy + Rᵀc) (SPEC §6's R, P; c = a_in W_1 x in the first block)."""
    import torch

    from pcalm.core import diagnostics
    from pcalm.core.model import ResidualMLP
    from pcalm.runs.tasks.figures import pc_equilibrium

    net = ResidualMLP(6, 4, 5, output_dim=3, activation="identity", seed=0,
                      dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(1, 6, generator=g, dtype=torch.float64), torch.eye(3)[[1]].double()
    system = diagnostics.linear_system(net)
    r, p = system["R"], system["P"]
    c = torch.zeros(r.shape[0], dtype=torch.float64)
    c[:4] = net.a_in * (net.w_in.detach() @ x[0])
    z_star = torch.linalg.solve(p.T @ p + r.T @ r, p.T @ y[0] + r.T @ c)
    with torch.no_grad():
        eq = pc_equilibrium(net, x, y, state_lr=0.2, tol=1e-13, max_steps=100_000)
    assert eq["converged"] and eq["steps"] < 100_000
    assert torch.allclose(eq["z"][:, 0, :].reshape(-1), z_star, atol=1e-10)
    with torch.no_grad():
        short = pc_equilibrium(net, x, y, state_lr=0.2, tol=0.0, max_steps=3)
    assert short["steps"] == 3 and not short["converged"]
    assert not torch.allclose(short["z"][:, 0, :].reshape(-1), z_star, atol=1e-4)


def test_credit_routes_newton_equilibrium_agrees_with_pc_run_to_equilibrium(fake_data_root,
                                                                             tmp_path):
    """Route 1 at equilibrium: the Newton solver (default) and PC's own dynamics run to the
    stated budget give the same alignments; the run records the residual and iterations."""
    pc = {"name": "pc", "budget": 8, "state_lr": 0.2}
    model = {"width": 8, "depth": 4, "activation": "tanh"}
    base = {"name": "credit_routes", "steps_per_layer": 2, "points": 4,
            "equilibrium_diffusion_times": 200.0}
    newton, _ = run(config(fake_data_root, tmp_path, base, pc, model=model))
    plain_cfg = config(fake_data_root, tmp_path,
                       dict(base, equilibrium_solver="plain", equilibrium_tol=1e-12),
                       pc, model=model)
    plain_cfg["train"]["dtype"] = "float64"  # a relative change of 1e-12 needs float64
    plain, _ = run(plain_cfg)
    assert newton["equilibrium_solver"] == "newton" and newton["equilibrium_converged"]
    assert newton["equilibrium_residual"] <= 1e-6 and newton["equilibrium_iterations"] >= 1
    assert plain["equilibrium_converged"]
    for key in ("hidden_alignment", "stacked_credit_cosine", "cosine"):
        assert newton[f"{key}_equilibrium"] == pytest.approx(plain[f"{key}_equilibrium"],
                                                             abs=1e-4), key
    assert newton["flops_at_equilibrium"] == plain["flops_at_equilibrium"] or \
        plain["equilibrium_steps"] < newton["equilibrium_steps"]


def test_credit_routes_without_an_equilibrium_keeps_route_1_at_the_budget(fake_data_root,
                                                                          tmp_path):
    """`task.equilibrium_solver=none` (what a CPU leaves to a GPU at N ≥ 512): the same
    curve and budget point as with the solver, and no equilibrium values at all."""
    pc = {"name": "pc", "budget": 8, "state_lr": 0.2}
    model = {"width": 8, "depth": 4, "activation": "relu"}
    base = {"name": "credit_routes", "steps_per_layer": 2, "points": 4}
    solved, arrays = run(config(fake_data_root, tmp_path, base, pc, model=model))
    skipped, skipped_arrays = run(config(fake_data_root, tmp_path,
                                         dict(base, equilibrium_solver="none"), pc, model=model))
    assert skipped["equilibrium_solver"] == "none"
    assert not [k for k in skipped if k.endswith("_equilibrium") or k.startswith("equilibrium_")
                and k != "equilibrium_solver"]
    for key in ("hidden_alignment_at_budget", "stacked_credit_cosine_at_budget",
                "cosine_at_budget", "flops_at_budget"):
        assert skipped[key] == solved[key], key
    assert np.array_equal(skipped_arrays["hidden_alignment"], arrays["hidden_alignment"])
    assert "hidden_alignment_equilibrium" in solved


def test_credit_front_speed_and_exponent_of_planted_fronts():
    """figure3's measured front (pcalm.runs.tasks.figures.credit_front) on ratio maps whose arrival
    steps are planted: layer column i of L − 1 is d = L − 1 − i layers below the output."""
    from pcalm.runs.tasks.figures import credit_front

    layers, steps = 15, 400
    d = layers - np.arange(layers)  # column 0 (input side) is the farthest

    def planted(arrival):
        t = np.arange(steps + 1)[:, None]
        return np.where(t >= arrival[None, :], 1.0, 0.0)

    wave = credit_front(planted(2 * d))  # ballistic: t = 2d, half a layer per step
    assert wave["front_layers_reached"] == layers
    assert wave["front_speed"] == pytest.approx(0.5) and wave["front_exponent"] == pytest.approx(1)
    heat = credit_front(planted(d ** 2))  # diffusive: t = d², reaches 15 layers by 225 steps
    assert heat["front_exponent"] == pytest.approx(2, abs=0.05)
    slow = credit_front(planted(np.where(d <= 2, d ** 2, 10 ** 6)))  # two layers only
    assert slow["front_layers_reached"] == 2 and math.isnan(slow["front_speed"])


def test_budget_in_steps_per_layer(fake_data_root, tmp_path):
    """algo.budget "kL" is k·L steps (narrow_linear's T = 8L); "2L" is the grid rule."""
    raw = base_config(fake_data_root, tmp_path, algo=dict(PCALM_CONFIG, budget="8L"))
    raw["model"]["depth"] = 5
    assert resolve_run_config(raw)["algo"]["budget"] == 40
    raw["algo"]["budget"] = "0L"
    with pytest.raises(ConfigError, match="budget"):
        resolve_run_config(raw)
