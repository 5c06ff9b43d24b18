"""The theory figures (figures 1, 3, 4, 5, 8, 9) plot real tiny diagnostic runs.

Each test runs a few tiny diagnostic tasks into a temporary results folder through the runner
(run folders with summary.json + arrays.npz), writes the table the way
experiments/collect.py does (`<exp>-smoke.csv` via pcalm.analysis.tables.collect), draws the
figure as `experiments/plot.py` does (pcalm.plots.draw with --tables, --out) and checks that
a non-empty PNG and PDF come out.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest

from pcalm.analysis.tables import collect
from pcalm.runs.config import resolve_run_config
from pcalm.runs.folder import RunFolder
from pcalm.runs.runner import execute
from tests.conftest import PC_CONFIG, PCALM_CONFIG, base_config, draw_figure

SCALE = "smoke"
PC, PCALM = PC_CONFIG, PCALM_CONFIG


pytestmark = pytest.mark.usefixtures("one_thread")


def cells(**axes) -> list[dict]:
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def make_config(data_root: Path, results: Path, task: dict, cell: dict, **sections) -> dict:
    """A resolved config: `cell` maps `algo` (pc | pcalm) and dotted keys to values."""
    algo = copy.deepcopy(PCALM if cell.get("algo", "pcalm") == "pcalm" else PC)
    cfg = base_config(data_root, results, task=dict(task), algo=algo, **copy.deepcopy(sections))
    for key, value in cell.items():
        if key != "algo":
            section, leaf = key.split(".")
            cfg[section][leaf] = value
    return resolve_run_config(cfg)


def run_and_collect(results: Path, experiment: str, configs: list[dict]) -> Path:
    execute(configs, progress=False, say=lambda _: None)
    tables = results / "tables"
    ids = [RunFolder(results, c).id for c in configs]
    df = collect(results, ids, tables / f"{experiment}-{SCALE}.csv")
    assert len(df) == len(configs)
    return tables


def plot(name: str, tables: Path, out: Path, monkeypatch) -> None:
    draw_figure(name, tables, out, SCALE)


def test_figure1_scalar_dynamics_plot(tmp_path, results_dir, monkeypatch):
    configs = [make_config(tmp_path, results_dir, {"name": "scalar_dynamics"},
                           {"algo": a, "algo.budget": 30}, data={"name": "synthetic"},
                           model={"width": 1, "depth": 2, "activation": "identity",
                                  "param": "sp"}, train={"dtype": "float64"})
               for a in ("pc", "pcalm")]
    tables = run_and_collect(results_dir, "figure1", configs)
    plot("figure1", tables, tmp_path / "fig" / "figure1", monkeypatch)


def test_figure4_linear_dynamics_plot(tmp_path, results_dir, monkeypatch):
    task = {"name": "linear_dynamics", "input_dim": 12, "trace_points": 40}
    configs = [make_config(tmp_path, results_dir, task, {"algo": a, "algo.budget": 300},
                           data={"name": "synthetic"},
                           model={"width": 4, "depth": 4, "activation": "identity"})
               for a in ("pc", "pcalm")]
    tables = run_and_collect(results_dir, "figure4", configs)
    plot("figure4", tables, tmp_path / "fig" / "figure4", monkeypatch)


def test_figure3_credit_traces_plot(fake_data_root, tmp_path, results_dir, monkeypatch):
    task = {"name": "credit_traces", "steps_per_layer": 3}
    configs = [make_config(fake_data_root, results_dir, task, {"algo": a, "algo.budget": 12},
                           model={"width": 8, "depth": 6}) for a in ("pc", "pcalm")]
    tables = run_and_collect(results_dir, "figure3", configs)
    plot("figure3", tables, tmp_path / "fig" / "figure3", monkeypatch)


def test_figure5_alignment_curve_plot(fake_data_root, tmp_path, results_dir, monkeypatch):
    task = {"name": "alignment_curve", "steps_per_layer": 4, "points": 8, "pc_reference": True}
    configs = [make_config(fake_data_root, results_dir, task,
                           {**c, "algo.budget": 2 * c["model.depth"]},
                           model={"width": 8})
               for c in cells(**{"algo.alpha": [0.5, 1.0], "model.depth": [4, 6],
                                 "train.seed": [0, 1]})]
    configs = configs[:-1]  # one seed of one cell missing: still plots
    tables = run_and_collect(results_dir, "figure5", configs)
    plot("figure5", tables, tmp_path / "fig" / "figure5", monkeypatch)


@pytest.mark.parametrize("experiment,data", [("figure8", "fashion_mnist"),
                                             ("figure9", "mnist")])
def test_figure8_9_credit_routes_plot(fake_data_root, tmp_path, results_dir, monkeypatch,
                                      experiment, data):
    task = {"name": "credit_routes", "steps_per_layer": 4, "points": 8}
    grid = cells(algo=["pc", "pcalm"], **{"model.width": [4, 8, 32], "train.seed": [0, 1]})
    grid = [c for c in grid if (c["algo"], c["model.width"], c["train.seed"]) != ("pc", 8, 1)]
    configs = [make_config(fake_data_root, results_dir, task, {**c, "algo.budget": 8},
                           model={"depth": 4}, data={"name": data}) for c in grid]
    tables = run_and_collect(results_dir, experiment, configs)
    plot(experiment, tables, tmp_path / "fig" / experiment, monkeypatch)
