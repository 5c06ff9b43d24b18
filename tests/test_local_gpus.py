"""Local sweeps on a machine with GPUs: one job per GPU, each job on its own GPU (CUDA is
stubbed: these run on any machine)."""

from __future__ import annotations

import json
import os

import torch

from pcalm.sweeps import launchers
from pcalm.sweeps.grid import load_sweep
from pcalm.sweeps.job import use_one_gpu
from pcalm.sweeps.plan import Plan, plan, write_manifest

GRID = ["experiment=figure2", "scale=smoke", "data.name=synthetic", "model.depth=4",
        "inference.state_lr=0.25", "model.activation=relu",
        "algo=pc,pcalm", "model.width=8,16,32", "train.seed=0,1", "sweep.launcher=local",
        "train.progress=off"]


def test_a_local_job_sees_only_its_own_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    use_one_gpu(1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    use_one_gpu(1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    use_one_gpu(None)  # a CPU sweep: left alone
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"


def planned(monkeypatch, gpus: int, device: str):
    """What experiments/sweep.py plans on a machine with `gpus` GPUs and 16 cores."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(launchers, "cores", lambda: 16)
    sweep = load_sweep([*GRID, f"train.device={device}"])
    return plan(sweep, launchers.make_launcher(sweep))


def test_local_jobs_are_one_per_gpu_and_one_per_core_without(monkeypatch, results_dir):
    two_gpus = planned(monkeypatch, 2, "auto")
    assert len(two_gpus.jobs) == 2 and two_gpus.gpus == 2  # 2 GPUs: 2 jobs, one GPU each
    assert two_gpus.threads == 8  # 16 cores // 2 jobs
    assert len(planned(monkeypatch, 0, "auto").jobs) == 12  # 16 cores, 12 runs
    cpu_runs = planned(monkeypatch, 2, "cpu")
    assert len(cpu_runs.jobs) == 12 and cpu_runs.gpus == 0  # CPU runs: per core, no GPU


def test_the_manifest_gives_each_local_job_its_gpu(tmp_path):
    sweep = load_sweep(GRID)
    jobs = [[c] for c in sweep.configs[:5]]
    work = Plan(sweep, tmp_path, "cuda", {}, {}, sweep.configs[:5], jobs, threads=1, gpus=2)
    path = tmp_path / "manifest.json"
    write_manifest(path, work)
    assert [j["gpu"] for j in json.loads(path.read_text())["jobs"]] == [0, 1, 0, 1, 0]
    work.gpus = 0
    write_manifest(path, work)
    assert [j["gpu"] for j in json.loads(path.read_text())["jobs"]] == [None] * 5
