"""Preemption: a sweep job signalled as SLURM would (SIGUSR2) is checkpointed and requeued by
submitit; the requeued job skips its finished run and resumes the interrupted one.

Uses the local submitit launcher, whose requeue (exit code 144 → the job restarts) follows
the same path as SLURM's `scontrol requeue`: hydra-submitit-launcher's `checkpoint`
resubmits the same job with the same arguments.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pcalm.runs.folder import RunFolder
from pcalm.sweeps.grid import expand

REPO = Path(__file__).resolve().parent.parent
# One job, two equal runs (seeds 0 and 1) of 200 steps each, a checkpoint every 20 steps.
GRID = ["experiment=figure2", "scale=smoke", "algo=pcalm", "model.width=16", "model.depth=4",
        "model.activation=tanh", "inference.budget=8", "inference.state_lr=0.25",
        "data.train_size=1000", "data.test_size=100", "train.batch_size=10", "train.epochs=2",
        "train.evals_per_epoch=1", "train.checkpoint_every=20", "train.progress=off",
        "train.device=cpu", "train.seed=0,1", "sweep.launcher=local", "sweep.local_jobs=1"]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [d for c in map(int, children) for d in (c, *descendants(c))]


def job_task(root: int) -> int | None:
    """The pid of the submitit task (the process running the sweep job) under `root`."""
    for pid in descendants(root):
        try:
            if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return None


def wait_for(condition, proc, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"sweep ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_preempted_job_requeues_and_resumes(fake_data_root, results_dir, monkeypatch):
    monkeypatch.setenv("PCALM_DATA", str(fake_data_root))
    first, second = (RunFolder(results_dir, c) for c in expand(GRID))
    proc = subprocess.Popen([sys.executable, "experiments/sweep.py", *GRID], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: first.exists_complete() and second.checkpoint_path.exists(), proc,
                 "a finished first run and a checkpoint of the second")
        os.kill(job_task(proc.pid), signal.SIGUSR2)  # what SLURM sends before preempting
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "done: 2 complete, 0 missing" in out
    (log,) = results_dir.glob("submitit/figure2-smoke-*/*_log.out")
    text = log.read_text()
    assert "this job is preempted" in text and "Requeued job" in text
    assert f"already complete: {first.id}" in text  # the requeued job skipped it
    assert f"resuming {second.id} at step" in text  # and resumed from the checkpoint
