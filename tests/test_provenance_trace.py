"""Provenance a user can trace: SLURM job and array task, the sweep, CUDA/cuDNN on a GPU,
untracked files in the dirty flag; tables that carry no machine paths and JSON list cells;
the lock file of the environment that produced the reference tables."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import torch

from pcalm.analysis.tables import portable_table
from pcalm.runs import provenance
from pcalm.runs.folder import run_id
from tests.conftest import REPO

REFERENCE = REPO / "results" / "reference" / "tables"


def test_a_run_records_its_slurm_job_array_task_and_sweep(monkeypatch):
    for var in provenance.SLURM_ENV.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv(provenance.SWEEP_ENV, raising=False)
    assert provenance.job() == {"sweep": None, "slurm_job_id": None,
                                "slurm_array_job_id": None, "slurm_array_task_id": None}
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4240")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv(provenance.SWEEP_ENV, "figure2-paper-20261203-120000")
    record = provenance.record(torch.device("cpu"), "t0", "t1")
    assert (record["slurm_job_id"], record["slurm_array_job_id"],
            record["slurm_array_task_id"]) == ("4242", "4240", "2")
    assert record["sweep"] == "figure2-paper-20261203-120000"
    assert (record["cuda"], record["cudnn"]) == (None, None)  # a CPU run uses neither


def test_cuda_and_cudnn_versions_are_torchs_on_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert provenance.cuda_versions(torch.device("cuda", 0)) == {"cuda": "12.8",
                                                                 "cudnn": 91002}


def test_the_dirty_flag_counts_untracked_files(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    (repo / "new.py").write_text("y = 2\n")  # untracked, not ignored
    status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=all"],
                            capture_output=True, text=True, check=True).stdout
    assert provenance.dirty_files(status) == (0, 1)
    (repo / "a.py").write_text("x = 3\n")
    status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=all"],
                            capture_output=True, text=True, check=True).stdout
    assert provenance.dirty_files(status) == (1, 1)
    assert provenance.dirty_files("") == (0, 0) and provenance.dirty_files(None) == (None, None)
    env = provenance.code_and_environment()
    assert env["git_dirty"] == bool(env["git_changed_files"] or env["git_untracked_files"])


def test_tables_carry_no_machine_paths_and_lists_as_json(tmp_path):
    repo = tmp_path / "checkout"
    df = pd.DataFrame({
        "run_id": ["abc"], "data.root": ["/scratch/me/data"],
        "results_dir": [str(repo / "results")],
        "data.mirrors": [["https://a.example/x/", "https://b.example/y/"]],
        "grad_cosine_per_layer": ["[0.5, 0.25]"], "old_mirrors": ["['https://c.example/']"],
        "provenance.command": [f"sweep.py experiment=figure2 results_dir={repo / 'results'} "
                               "data.root=/scratch/me/data"]})
    out = portable_table(df, repo=repo)
    row = out.iloc[0]
    assert (row["data.root"], row["results_dir"]) == ("$PCALM_DATA", "results")
    assert row["provenance.command"] == ("sweep.py experiment=figure2 results_dir=results "
                                         "data.root=$PCALM_DATA")
    assert json.loads(row["data.mirrors"]) == ["https://a.example/x/", "https://b.example/y/"]
    assert json.loads(row["old_mirrors"]) == ["https://c.example/"]  # an older table's repr
    assert json.loads(row["grad_cosine_per_layer"]) == [0.5, 0.25]
    assert row["run_id"] == "abc"


def test_the_committed_reference_tables_hold_no_absolute_paths():
    for path in sorted(REFERENCE.glob("*-paper.csv")):
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        for column in df.columns:
            cells = df[column].astype(str)
            assert not cells.str.contains(r"(?:^|[ =])/(?:work|home|tmp|root|scratch)/").any(), \
                f"{path.name}: {column} holds a machine path"
        if "data.root" in df:
            assert set(df["data.root"]) <= {"$PCALM_DATA", "data"}


def test_rewriting_the_path_columns_changes_no_run_id(tmp_path):
    """The reference tables' rows keep their run ids: the columns made portable are not part
    of a run's identity, so the same config with either value is the same run."""
    from tests.conftest import base_config

    cfg = base_config(tmp_path / "data", tmp_path / "results")
    portable = {**cfg, "results_dir": "results",
                "data": {**cfg["data"], "root": "$PCALM_DATA"}}
    assert run_id(portable) == run_id(cfg)
    metrics = pd.read_csv(REFERENCE / "figure2-paper-metrics.csv", usecols=["run_id"])
    runs = pd.read_csv(REFERENCE / "figure2-paper.csv", usecols=["run_id"])
    assert set(runs["run_id"]) == set(metrics["run_id"])  # (the metrics file was not rewritten)


def test_the_lock_file_pins_the_reference_environment():
    lock = (REPO / "requirements-lock.txt").read_text().splitlines()
    pins = dict(line.split("==", 1) for line in lock if "==" in line and not line.startswith("#"))
    df = pd.read_csv(REFERENCE / "figure2-paper.csv")
    for package, column in (("torch", "provenance.torch"), ("numpy", "provenance.numpy"),
                            ("hydra-core", "provenance.hydra"),
                            ("submitit", "provenance.submitit"), ("wandb", "provenance.wandb")):
        (recorded,) = set(df[column].astype(str))
        assert pins[package] == recorded, package
    assert not any(line.startswith("-e ") or "file://" in line for line in lock)
    make = subprocess.run(["make", "-n", "setup", "LOCK=1"], cwd=REPO, capture_output=True,
                          text=True, timeout=60).stdout
    assert "pip install -r requirements-lock.txt" in make and "--no-deps -e" in make
    assert "--quiet" not in make  # pip shows its progress
    assert Path(REPO / "pyproject.toml").read_text().count('"pyyaml"') == 1
