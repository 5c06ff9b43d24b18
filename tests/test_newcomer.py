"""The newcomer path, as a new user walks it: help texts, make targets, the project's own data
notes, Hydra's multirun on the project's launchers, and a run that leaves nothing but its
run folder (issue 12's list)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

TINY = ["data=synthetic", "data.train_size=100", "data.test_size=50", "train.batch_size=50",
        "model.width=8", "model.depth=4", "algo=bp", "train.evals_per_epoch=1",
        "train.progress=off", "train.device=cpu", "train.threads=1"]


def _run(args: list[str], timeout: int = 300, **env) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


def test_make_help_lists_every_figure_target():
    out = _run(["make", "help"]).stdout
    for target in [f"figure{n}" for n in range(1, 11)] + ["figure2_mnist", "figure_eta",
                                                          "wandb-sync", "reference", "report"]:
        assert re.search(rf"^{target}\s", out, re.M), f"make help lacks {target}:\n{out}"


def test_make_eta_table_passes_data_on():
    out = _run(["make", "-n", "eta-table", "DATA=synthetic"]).stdout
    assert "scripts/eta_table.py --data synthetic" in out
    assert "--data" not in _run(["make", "-n", "eta-table"]).stdout  # the script's default


@pytest.mark.parametrize("script", ["experiments/sweep.py", "experiments/collect.py",
                                    "experiments/dashboard.py", "experiments/plot.py",
                                    "experiments/report.py"])
def test_help_prints_usage(script):
    proc = _run([sys.executable, script, "--help"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"python {script}" in proc.stdout and "error" not in proc.stderr


def test_every_pointer_to_the_data_notes_names_the_projects_own_file():
    assert (REPO / "docs" / "DATA.md").is_file()
    files = [REPO / "Makefile", REPO / "README.md"]
    for folder in ("pcalm", "scripts", "experiments", "configs", "tests"):
        files += [p for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".yaml")]
    bare = [f"{p.relative_to(REPO)}: {line.strip()}" for p in files
            for line in p.read_text(encoding="utf-8").splitlines()
            if re.search(r"(?<!docs/)\bDATA\.md", line) and p.name != "test_newcomer.py"]
    assert not bare, "pointers to a DATA.md this repository lacks:\n" + "\n".join(bare)


def test_a_single_run_writes_its_run_folder_and_nothing_else(tmp_path):
    results = tmp_path / "results"
    proc = _run([sys.executable, "experiments/run.py", *TINY], PCALM_RESULTS=str(results))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in results.iterdir()) == ["locks", "runs"]  # no hydra/ folder
    assert not list(results.rglob("*.log")) and not list(results.rglob(".hydra"))
    (run,) = (results / "runs").iterdir()
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "metrics.csv",
                                                    "summary.json"]


def test_hydra_multirun_on_the_projects_local_launcher(tmp_path):
    """`python experiments/run.py -m hydra/launcher=local ...` (not only experiments/sweep.py)."""
    results = tmp_path / "results"
    proc = _run([sys.executable, "experiments/run.py", "-m", "hydra/launcher=local",
                 "hydra.launcher.gpus_per_node=0", *TINY, "train.seed=0,1"],
                PCALM_RESULTS=str(results))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list((results / "runs").glob("*/summary.json"))) == 2
    (logs,) = (results / "submitit").iterdir()  # named by sweep_name: <name>-multirun-<time>
    assert logs.name.startswith("default-multirun-")
