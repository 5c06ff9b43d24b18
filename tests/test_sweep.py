"""Sweeps: grid expansion, job planning, bad input, and a real local multirun.

The local sweep goes through experiments/sweep.py → Hydra multirun → hydra-submitit-launcher
(submitit_local) → experiments/run_job.py, on tiny cells of fake data. Quick checks call the
library's steps in-process (pcalm.sweeps.grid → launchers → plan: what sweep.py calls).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pcalm import cli
from pcalm.analysis.tables import load
from pcalm.runs.build import AUTO_GPU_STACK, stack_size, stack_units
from pcalm.runs.folder import RunFolder
from pcalm.sweeps import grid as sweep
from pcalm.sweeps.grid import Sweep, expand, experiment_scale, load_sweep
from pcalm.sweeps.launchers import Basic, Local, Slurm, make_launcher
from pcalm.sweeps.plan import headline, plan, plan_jobs, run_cost
from tests.conftest import REPO

# Tiny cells: 200 training samples, 4 steps, one evaluation; η_h fixed (no eta table needed).
SMALL = ["data.train_size=200", "data.test_size=100", "train.batch_size=50",
         "train.evals_per_epoch=1", "inference.state_lr=0.25", "inference.budget=4",
         "train.progress=off", "train.device=cpu"]
FIG2 = ["experiment=figure2", "scale=smoke", "inference.state_lr=0.25"]


@pytest.fixture
def data_env(fake_data_root, results_dir, monkeypatch):
    """Fake data and a tmp results folder, for this process and its subprocesses."""
    monkeypatch.setenv("PCALM_DATA", str(fake_data_root))
    return results_dir


def ids(configs):
    return [RunFolder(c["results_dir"], c).id for c in configs]


# ----------------------------------------------------------------------------- expansion


def test_expand_figure2_smoke_grid(data_env):
    configs = expand(FIG2)
    assert len(configs) == 3 * 3 * 2 * 2 * 2  # algo × activation × width × depth × seed
    assert len(set(ids(configs))) == len(configs)
    assert {c["algo"]["name"] for c in configs} == {"bp", "pc", "pcalm"}
    assert {c["model"]["width"] for c in configs} == {8, 32}
    pcalm_cell = next(c for c in configs if c["algo"]["name"] == "pcalm")
    assert pcalm_cell["algo"]["budget"] == 2 * pcalm_cell["model"]["depth"]  # T = 2L
    assert all(Path(c["results_dir"]).is_absolute() and c["results_dir"] == str(data_env)
               for c in configs)
    assert experiment_scale(FIG2) == ("figure2", "smoke")


def test_overrides_set_pin_and_replace_axes(data_env):
    pinned = expand(FIG2 + ["algo=pc", "model.width=8"])
    assert len(pinned) == 3 * 2 * 2 and {c["model"]["width"] for c in pinned} == {8}
    axis = expand(FIG2 + ["algo=pc", "model.width=8,16,24"])
    assert sorted({c["model"]["width"] for c in axis}) == [8, 16, 24] and len(axis) == 36
    same = expand(FIG2 + ["algo=pc", "sweep.grid.model.width=[8]"])
    assert sorted(ids(same)) == sorted(ids(pinned))
    dropped = expand(FIG2 + ["algo=pc", "model.width=8", "~sweep.grid.train.seed"])
    assert len(dropped) == 6 and {c["train"]["seed"] for c in dropped} == {0}
    replaced = expand(FIG2 + ["sweep.grid={model.width:[8,16],train.seed:[0,1]}"])
    assert len(replaced) == 4 and {c["algo"]["name"] for c in replaced} == {"pcalm"}


def test_runs_equal_after_resolution_are_kept_once(data_env):
    # BP has no inference budget: a budget axis gives the same BP run twice.
    configs = expand(FIG2 + ["model.width=8", "model.depth=4", "train.seed=0",
                             "model.activation=relu", "algo=bp,pc", "inference.budget=2,4"])
    assert sorted(c["algo"]["name"] for c in configs) == ["bp", "pc", "pc"]


def test_fast_expansion_equals_omegaconf_expansion(data_env, monkeypatch):
    fast = expand(FIG2 + ["model.depth=4"])
    monkeypatch.setattr(sweep, "_plain_template", lambda cfg, keys: None)
    assert expand(FIG2 + ["model.depth=4"]) == fast


def test_eta_table_cells_resolve_per_cell(data_env, tmp_path, monkeypatch):
    table = tmp_path / "eta_table.csv"
    rows = [f"fashion_mnist,{act},8,4,{lam},{1 / lam},0;1;2"
            for act, lam in (("identity", 2.0), ("tanh", 4.0), ("relu", 5.0))]
    table.write_text("data,activation,width,depth,lambda_max,state_lr,seeds\n"
                     + "\n".join(rows) + "\n")
    monkeypatch.setattr(cli, "ETA_TABLE", table)
    configs = expand(["experiment=figure2", "scale=smoke", "model.width=8", "model.depth=4",
                      "train.seed=0", "algo=pc"])
    lrs = {c["model"]["activation"]: c["algo"]["state_lr"] for c in configs}
    assert lrs == {"identity": 0.5, "tanh": 0.25, "relu": 0.2}
    with pytest.raises(ValueError, match="no eta_h for cell .* N=32"):
        expand(["experiment=figure2", "scale=smoke", "model.depth=4", "algo=pc"])


# ------------------------------------------------------------------------------ planning


def test_plan_jobs_balanced_every_run_once(data_env):
    configs = expand(FIG2)
    biggest = max(map(run_cost, configs))
    for n in (1, 2, 5, 16, 72, 100):
        jobs = plan_jobs(configs, n)
        assert len(jobs) == min(n, len(configs))
        assert sorted(i for job in jobs for i in ids(job)) == sorted(ids(configs))
        loads = [sum(map(run_cost, job)) for job in jobs]
        assert max(loads) - min(loads) <= biggest  # LPT: no job exceeds another by > one run
    stacked = plan_jobs(configs, 5, max_stack=2)
    for job in stacked:  # seed-mates stay in one job
        assert all(len(unit) == 2 for unit in stack_units(job, 2))


def test_max_stack_auto_stacks_a_cell_on_a_gpu_only(data_env):
    configs = expand(FIG2)  # BP, PC and PC-ALM, seeds 0 and 1, of every cell
    assert stack_size("auto", "cpu") == 1 and stack_size("auto", "cuda") == AUTO_GPU_STACK
    assert stack_size(3, "cpu") == stack_size(3, "cuda") == 3
    assert {len(u) for u in stack_units(configs, "auto", "cpu")} == {1}
    gpu_units = stack_units(configs, "auto", "cuda")
    members = {tuple(sorted((c["algo"]["name"], c["train"]["seed"]) for c in u))
               for u in gpu_units}  # BP apart; PC and PC-ALM twins together
    assert members == {(("bp", 0), ("bp", 1)), (("pc", 0), ("pc", 1), ("pcalm", 0), ("pcalm", 1))}
    for unit in gpu_units:  # one cell per stack
        assert len({(c["model"]["width"], c["model"]["depth"], c["model"]["activation"])
                    for c in unit}) == 1
    for job in plan_jobs(configs, 5, max_stack="auto"):  # planned before the device is known
        assert {len(u) for u in stack_units(job, "auto", "cuda")} <= {2, 4}


def test_job_counts(monkeypatch):
    from pcalm.sweeps import launchers

    def count(kind, pending: int, local_jobs: int | None, cores: int) -> int:
        monkeypatch.setattr(launchers, "cores", lambda: cores)
        settings = {"launcher": kind.kind, "runs_per_job": 3, "local_jobs": local_jobs}
        return kind(Sweep("x", "smoke", [], settings)).job_count(pending, "cpu")

    assert count(Slurm, 10, None, 2) == 4  # ceil(10 / runs_per_job)
    assert count(Local, 10, None, 2) == 2  # one per core
    assert count(Local, 10, 4, 2) == 4  # sweep.local_jobs
    assert count(Local, 1, None, 8) == 1
    assert count(Basic, 10, None, 8) == 1


def test_every_launcher_word_is_a_class():
    from pcalm.sweeps.grid import LAUNCHERS
    from pcalm.sweeps.launchers import KINDS

    assert set(KINDS) == set(LAUNCHERS)
    assert all(cls.kind == word for word, cls in KINDS.items())


def planned(overrides: list[str], wait: bool = True):
    """What experiments/sweep.py plans for these overrides (its steps, in-process)."""
    sweep = load_sweep(overrides)
    return plan(sweep, make_launcher(sweep, wait))


# ----------------------------------------------------------------------------- bad input

BAD_INPUT = {
    "unknown experiment": (["experiment=figure99"], ["experiment='figure99'", "figure2"]),
    "unknown algorithm": (FIG2 + ["algo=sgd"], ["algo='sgd'", "bp, pc, pcalm"]),
    "unknown algorithm in the grid": (FIG2 + ["algo=pc,sgd"], ["algo='sgd'", "bp, pc, pcalm"]),
    "depth < 2": (FIG2 + ["model.depth=1"], ["model.depth=1", "integer >= 2", "cell:"]),
    "depth < 2 in the grid": (FIG2 + ["model.depth=1,4"], ["model.depth=1", ">= 2"]),
    "typo'd key": (FIG2 + ["model.widht=8"], ["model.widht", "width, depth"]),
    "typo'd grid key": (FIG2 + ["model.widht=8,16"], ["model.widht", "width, depth"]),
    "typo'd launcher key": (FIG2 + ["hydra.launcher.partitoin=gpu"],
                            ["hydra.launcher.partitoin", "timeout_min"]),
    "bad launcher": (FIG2 + ["sweep.launcher=pbs"], ["sweep.launcher='pbs'", "local, slurm"]),
    "bad max_stack": (FIG2 + ["sweep.max_stack=many"],
                      ["sweep.max_stack='many'", "integer >= 1 or auto"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_fails_in_one_line_before_launching(case, data_env):
    overrides, expected = BAD_INPUT[case]
    with pytest.raises(ValueError) as err:  # sweep.py: `error: <it>`, exit status 2
        planned(overrides)
    assert "\n" not in str(err.value)
    assert all(text in str(err.value) for text in expected), err.value
    assert not data_env.exists()  # no run folder, no manifest, no submitit folder


def test_bad_input_from_the_command_line(data_env):
    proc = subprocess.run([sys.executable, "experiments/sweep.py", *FIG2, "model.depth=1,4"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "model.depth=1" in proc.stderr and not data_env.exists()


# ----------------------------------------------------------------------- a local sweep


def test_local_sweep_runs_then_skips_then_collects(data_env, capsys):
    grid = ["experiment=figure2", "scale=smoke", *SMALL, "sweep.launcher=local",
            "sweep.local_jobs=2", "sweep.grid={model.width:[8,16],train.seed:[0,1]}",
            "model.depth=4"]
    proc = subprocess.run([sys.executable, "experiments/sweep.py", *grid], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "figure2 (smoke): 4 runs, 0 already complete (skipped), 4 to run in 2 jobs on local" \
        in proc.stdout
    assert "done: 4 complete, 0 missing" in proc.stdout
    # the wall time and the projection, each in s, min or h (a loaded machine runs longer)
    assert re.search(r"^took [\d.]+ (s|min|h) \(projected [\d.]+ (s|min|h), [\d.]+x;",
                     proc.stdout, re.M), proc.stdout
    configs = expand(grid)
    assert all(RunFolder(data_env, c).exists_complete() for c in configs)
    (manifest,) = data_env.glob("sweeps/figure2-smoke-*/manifest.json")
    jobs = json.loads(manifest.read_text())["jobs"]
    assert len(jobs) == 2 and sum(len(j["runs"]) for j in jobs) == 4
    assert list(data_env.glob("submitit/figure2-smoke-*/*_log.out"))  # the jobs' logs

    # Again: everything is complete, nothing is launched.
    again = planned(grid)
    assert "4 runs, 4 already complete (skipped), 0 to run in 0 jobs" in headline(again)
    assert again.jobs == [] and len(list(data_env.glob("sweeps/*"))) == 1

    # Collect the grid plus a cell that never ran: a table of 4, the missing one named.
    from pcalm.analysis.collect import write_tables  # what experiments/collect.py runs
    from pcalm.sweeps.grid import table_scope

    out = write_tables(table_scope(grid[:-1] + ["model.depth=4,8"])).summary()
    # the table covers the experiment's whole grid under these settings plus the cells asked
    # for (the 4 trained ones in it, the rest named missing), under a name carrying the
    # settings (they change the runs: a smaller data set)
    found = re.search(r"collected 4 of (\d+) runs \((\d+) missing: .*→ (\S+\.csv): 4 valid",
                      out)
    assert found and int(found[1]) - int(found[2]) == 4, out
    table = Path(found[3])
    assert table.parent == data_env / "tables" and table.name.startswith("figure2-smoke-")
    assert table.is_file() and table.with_name(f"{table.stem}-metrics.csv").is_file()
    df = load(data_env)
    assert len(df) == 4 and set(df["model.width"]) == {8, 16}
    assert {"test_acc", "train.seed", "algo.name"} <= set(df.columns)
