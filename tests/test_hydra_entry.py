"""The entry points as Hydra users know them: `run.py -m experiment=figureN` names the grid
and the command that runs it (instead of silently launching its base cell); sweep.py takes
`-m` and `--cfg job`; both helps point to the make targets."""

from __future__ import annotations

import os
import subprocess
import sys

from pcalm.sweeps.grid import load_sweep, multirun_refusal
from tests.conftest import REPO


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, f"experiments/{script}", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_multirun_of_an_experiment_fails_in_one_line_naming_grid_and_command():
    out = _run("run.py", "-m", "experiment=figure2")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    n = len(load_sweep(["experiment=figure2"]).configs)
    assert line.startswith("error: experiment=figure2 is a grid of 72 runs") and n == 72
    assert "`python experiments/sweep.py experiment=figure2`" in line
    assert "`make sweep EXP=figure2 SCALE=smoke`" in line


def test_multirun_refusal_counts_the_edited_grid_and_leaves_plain_runs_alone():
    line = multirun_refusal(["-m", "experiment=figure2", "algo=pcalm", "train.seed=0,1,2"])
    assert "a grid of 36 runs" in line  # 1 algorithm × 3 activations × 2 × 2 × 3 seeds
    assert multirun_refusal(["experiment=figure2"]) is None  # no -m: one run, as asked
    assert multirun_refusal(["-m", "model.width=8,16"]) is None  # Hydra's own sweep
    one = ["-m", "experiment=figure2", "algo=bp", "model.activation=relu", "model.width=8",
           "model.depth=8", "train.seed=0"]
    assert multirun_refusal(one) is None  # a grid of one run: Hydra runs it


def test_sweep_takes_m_and_cfg_and_its_help_names_the_make_targets():
    out = _run("sweep.py", "-m", "--cfg", "job", "experiment=figure2", "algo=pc",
               "model.activation=tanh")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("# figure2-smoke: 8 runs")
    assert "model.width:\n  - 8\n  - 32" in out.stdout and "algo:\n  name: pc" in out.stdout
    helped = _run("sweep.py", "--help").stdout
    assert "make sweep EXP=figure2" in helped and "make help" in helped
    bad = _run("sweep.py", "--bogus", "experiment=figure2")
    assert bad.returncode == 2 and "unknown flag --bogus" in bad.stderr


def test_run_help_is_the_apps_and_points_to_make():
    out = _run("run.py", "--help")
    assert out.returncode == 0, out.stderr
    assert "make figure2" in out.stdout and "make sweep EXP=figure2" in out.stdout
    assert "-sc install=bash" in out.stdout
    assert "experiment: figure1, figure10" in out.stdout  # the groups, as Hydra lists them
