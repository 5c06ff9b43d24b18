"""`make gpu-check` fits a bare GPU machine: its Python code imports nothing that machine
lacks (hydra, omegaconf, submitit, wandb are blocked here), its checks run on the CPU with
--cpu, and without a GPU it stops in one line."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
MISSING = ("hydra", "omegaconf", "submitit", "wandb", "hydra_plugins", "antlr4")
BLOCKER = f'''import importlib.abc, sys
class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {MISSING!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not on the GPU machine)")
sys.meta_path.insert(0, _Missing())
'''


@pytest.fixture
def bare_env(tmp_path):
    """An environment whose Python cannot import what the bare GPU machine lacks."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}",
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "OUT": str(tmp_path / "out")}
    return env


def _run(args, env, timeout=120):
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_blocker_blocks(bare_env):
    done = _run([sys.executable, "-c", "import omegaconf"], bare_env)
    assert done.returncode == 1 and "not on the GPU machine" in done.stderr


def test_quick_checks_run_on_the_cpu_without_hydra(bare_env, tmp_path):
    out = tmp_path / "checks"
    done = _run([sys.executable, "scripts/gpu_check.py", "quick", "--cpu", "--no-compile",
                 "--dir", str(out)], bare_env)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = list(csv.DictReader((out / "quick.csv").open()))
    assert [r["check"][:2] for r in rows] == ["A1", "A2", "A3", "B ", "C1", "D1", "E "]
    assert all(r["ok"] == "True" for r in rows)


def test_bench_imports_without_hydra(bare_env):
    done = _run([sys.executable, "scripts/bench.py", "--help"], bare_env)
    assert done.returncode == 0 and "--no-calibrate" in done.stdout, done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA")
@pytest.mark.parametrize("command", [["scripts/gpu_check.py", "quick"],
                                     ["bash", "scripts/gpu_check.sh"]])
def test_without_a_gpu_it_stops_in_one_line(bare_env, command):
    args = command if command[0] == "bash" else [sys.executable, *command]
    done = _run(args, {**bare_env, "PY": sys.executable})
    assert done.returncode == 2 and not done.stdout
    assert len(done.stderr.strip().splitlines()) == 1 and "CUDA" in done.stderr


@pytest.mark.slow
def test_every_stage_runs_on_the_cpu_without_hydra(bare_env, tmp_path):
    """`gpu_check.sh --cpu`: all six stages, under their timeouts, at most 8 files out."""
    done = _run(["bash", "scripts/gpu_check.sh", "--cpu"], {**bare_env, "PY": sys.executable},
                timeout=400)
    assert done.returncode == 0, (tmp_path / "out" / "gpu-check.log").read_text()[-3000:]
    stages = list(csv.DictReader((tmp_path / "out" / "stages.csv").open()))
    assert [s["stage"] for s in stages] == ["env", "quick", "tests", "bench", "grid",
                                            "bench-compiled"]
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) <= 8, files
