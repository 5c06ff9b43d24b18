"""The training figures (figures 2, 2_mnist, 6, 7, 10, η) plot tables of real tiny runs.

Each test trains a few tiny runs on fake IDX data into a temporary results folder, writes the
tables the way experiments/collect.py does (`<exp>-<scale>.csv` and `<exp>-<scale>-metrics.csv`,
via pcalm.analysis.tables.collect / load_metrics), draws the figure as `experiments/plot.py`
does (--tables, --out) and checks that a non-empty PNG and PDF come out. Cells are left out
on purpose: a half-finished sweep must still plot.
"""

from __future__ import annotations

import copy
import functools
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from pcalm.analysis.tables import collect, load_metrics
from pcalm.atomic import atomic_write_text
from pcalm.cli import compose, run_config
from pcalm.runs.config import resolve_run_config
from pcalm.runs.folder import RunFolder
from pcalm.runs.runner import execute
from tests.conftest import REPO, draw_figure

SCALE = "smoke"


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def _base(algo: str, data_root: str, results: str) -> dict:
    """The resolved default config of `algo` (configs/, composed once), made tiny."""
    overrides = [f"algo={algo}", f"data.root={data_root}", f"results_dir={results}",
                 "inference.budget=4", "inference.state_lr=0.2", "model.width=8",
                 "model.depth=3", "data.train_size=100", "data.test_size=100",
                 "train.batch_size=32", "train.evals_per_epoch=2", "train.device=cpu",
                 "train.progress=off"]
    return run_config(compose(overrides))


def tiny_config(data_root: Path, results: Path, cell: dict) -> dict:
    """A resolved run config: `cell` maps dotted keys (and `algo`) to values."""
    cfg = copy.deepcopy(_base(cell.get("algo", "pcalm"), str(data_root), str(results)))
    for key, value in cell.items():
        if key == "algo":
            continue
        section, leaf = key.split(".")
        cfg[section][leaf] = value
    return resolve_run_config(cfg)


def train_and_collect(data_root: Path, results: Path, experiment: str, cells: list[dict]):
    """Train the cells, write `<results>/tables/<experiment>-smoke[-metrics].csv`."""
    configs = [tiny_config(data_root, results, c) for c in cells]
    execute(configs, max_stack=4, progress=False, say=lambda _: None)
    ids = [RunFolder(results, c).id for c in configs]
    tables = results / "tables"
    collect(results, ids, tables / f"{experiment}-{SCALE}.csv")
    metrics = load_metrics(results, ids)
    atomic_write_text(tables / f"{experiment}-{SCALE}-metrics.csv", metrics.to_csv(index=False))
    return tables


def grid(**axes) -> list[dict]:
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def plot(name: str, tables: Path, out: Path, monkeypatch) -> None:
    draw_figure(name, tables, out, SCALE)


@pytest.mark.parametrize("experiment,data,activations", [
    ("figure2", "fashion_mnist", ["identity", "relu"]),
    ("figure2_mnist", "mnist", ["relu"]),
])
def test_grid_heatmaps_plot_with_a_missing_and_a_diverged_cell(
        fake_data_root, results_dir, tmp_path, monkeypatch, experiment, data, activations):
    cells = grid(algo=["bp", "pc", "pcalm"], **{"model.activation": activations,
                 "model.width": [4, 8], "model.depth": [2, 4], "train.seed": [0, 1],
                 "data.name": [data]})
    missing = {"algo": "pcalm", "model.activation": activations[-1], "model.width": 8,
               "model.depth": 4}
    cells = [c for c in cells if any(c[k] != v for k, v in missing.items())]
    for c in cells:  # PC far beyond 2/λ_max in one cell: that run diverges
        if (c["algo"], c["model.activation"], c["model.width"], c["model.depth"],
                c["train.seed"]) == ("pc", activations[0], 4, 4, 0):
            c["algo.state_lr"] = 1e12
    tables = train_and_collect(fake_data_root, results_dir, experiment, cells)
    assert "True" in (tables / f"{experiment}-{SCALE}.csv").read_text()  # the diverged run
    plot(experiment, tables, tmp_path / "fig" / experiment, monkeypatch)


@pytest.mark.parametrize("experiment,data,gammas", [("figure6", "fashion_mnist", [0.5, 1, 2]),
                                                    ("figure7", "mnist", [1, 2])])
def test_parameterisation_sweep_plots(fake_data_root, results_dir, tmp_path, monkeypatch,
                                      experiment, data, gammas):
    cells = grid(algo=["bp", "pc", "pcalm"], **{"model.param": ["mupc", "sp"],
                 "model.gamma0": gammas, "train.seed": [0, 1],
                 "data.name": [data]})
    cells = [c for c in cells if not (c["model.param"] == "sp" and c["model.gamma0"] == 2
                                      and c["algo"] == "pc")]  # one missing point
    tables = train_and_collect(fake_data_root, results_dir, experiment, cells)
    plot(experiment, tables, tmp_path / experiment, monkeypatch)


def test_training_curves_plot(fake_data_root, results_dir, tmp_path, monkeypatch):
    cells = grid(algo=["bp", "pc", "pcalm"], **{"algo.budget": [2, 4],
                 "model.activation": ["identity", "tanh"], "train.seed": [0, 1]})
    cells = [({k: v for k, v in c.items() if k != "algo.budget"} if c["algo"] == "bp" else c)
             for c in cells]
    cells = [c for c in cells if not (c["algo"] == "pc" and c["train.seed"] == 1
                                      and c["model.activation"] == "tanh")]  # missing seed
    tables = train_and_collect(fake_data_root, results_dir, "figure10", cells)
    metrics = (tables / f"figure10-{SCALE}-metrics.csv").read_text()
    assert "train_loss" in metrics
    plot("figure10", tables, tmp_path / "figure10", monkeypatch)


def test_eta_sweep_plots_diverged_runs(fake_data_root, results_dir, tmp_path, monkeypatch):
    cells = grid(algo=["pc", "pcalm"], **{"algo.state_lr": [0.1, 0.3, 1e12],
                 "train.seed": [0, 1], "model.depth": [4]})
    tables = train_and_collect(fake_data_root, results_dir, "figure_eta", cells)
    plot("figure_eta", tables, tmp_path / "figure_eta", monkeypatch)


def test_plot_without_a_table_says_how_to_make_it(tmp_path):
    proc = subprocess.run(
        [sys.executable, "experiments/plot.py", "figure2", "--scale", SCALE,
         "--tables", str(tmp_path), "--out", str(tmp_path / "f")],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "make figure2 SCALE=smoke" in proc.stderr


def test_training_curves_redraw_from_the_tables_on_record():
    """Figure 10 from results/reference/tables: the metrics on record are slimmed to run id +
    metrics (`make reference`), so the config columns come from the run table by run id.
    Checks the curves' data: 15 (activation, algorithm, T) groups of 3 seeds, every metrics
    row matched to its run. Catches a plot that needs the collected (unslimmed) metrics."""
    import pandas as pd

    from pcalm.plots.figure10 import metrics_with_configs

    tables = REPO / "results" / "reference" / "tables"
    slim = pd.read_csv(tables / "figure10-paper-metrics.csv")
    assert "algo.name" not in slim  # what makes the join necessary
    df = metrics_with_configs(tables, "figure10", "paper")
    assert len(df) == len(slim) and df["algo.name"].notna().all()
    runs = df.drop_duplicates("run_id")
    assert len(runs) == 45
    groups = runs.groupby(["model.activation", "algo.name", runs["algo.budget"].fillna(0)])
    assert len(groups) == 15 and set(groups.size()) == {3}
