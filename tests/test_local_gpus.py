"""Local sweeps on a machine with GPUs: one job per GPU, each job on its own GPU (CUDA is
stubbed: these run on any machine)."""

from __future__ import annotations

import json
import re

import torch

from tests.conftest import load_script

GRID = ["experiment=figure2", "scale=smoke", "data.name=synthetic", "model.depth=4",
        "inference.state_lr=0.25", "model.activation=relu",
        "algo=pc,pcalm", "model.width=8,16,32", "train.seed=0,1", "sweep.launcher=local",
        "train.progress=off"]


def test_a_local_job_sees_only_its_own_gpu(monkeypatch):
    run_job = load_script("experiments/run_job.py")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    run_job.use_one_gpu(1)
    assert run_job.os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    run_job.use_one_gpu(1)
    assert run_job.os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    run_job.use_one_gpu(None)  # a CPU sweep: left alone
    assert run_job.os.environ["CUDA_VISIBLE_DEVICES"] == "5"


def plan(monkeypatch, capsys, gpus: int, device: str, results_dir) -> list[int]:
    sweep_py = load_script("experiments/sweep.py")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(sweep_py, "cores", lambda: 16)
    monkeypatch.setattr(sweep_py, "projection", lambda *a: None)  # would time a real GPU
    assert sweep_py.main([*GRID, f"train.device={device}", "--dry-run"]) == 0
    return [int(n) for n in re.findall(r"job \d+: (\d+) runs?", capsys.readouterr().out)]


def test_local_jobs_are_one_per_gpu_and_one_per_core_without(monkeypatch, capsys, results_dir):
    assert len(plan(monkeypatch, capsys, 2, "auto", results_dir)) == 2  # 2 GPUs: 2 jobs
    assert len(plan(monkeypatch, capsys, 0, "auto", results_dir)) == 12  # 16 cores, 12 runs
    assert len(plan(monkeypatch, capsys, 2, "cpu", results_dir)) == 12  # CPU runs: per core


def test_the_manifest_gives_each_local_job_its_gpu(tmp_path):
    sweep_py = load_script("experiments/sweep.py")
    from pcalm.sweeps.grid import load_sweep

    sweep = load_sweep(GRID)
    jobs = [[c] for c in sweep.configs[:5]]
    path = tmp_path / "manifest.json"
    sweep_py.write_manifest(path, sweep, jobs, threads=1, local_gpus=2)
    assert [j["gpu"] for j in json.loads(path.read_text())["jobs"]] == [0, 1, 0, 1, 0]
    sweep_py.write_manifest(path, sweep, jobs, threads=1)
    assert [j["gpu"] for j in json.loads(path.read_text())["jobs"]] == [None] * 5
