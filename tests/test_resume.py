"""A run killed mid-training (SIGKILL) never looks complete, and its re-run resumes exactly.

The training loop is deterministic and a batch's data order is a function of seed + epoch, so
a run resumed from its last checkpoint gives the very same metrics as one never interrupted.
The run kills itself right after a checkpoint at a known step (tests/stop_run.py): no race
between a polling test and a busy CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from pcalm.cli import compose, run_config
from pcalm.runs.folder import RunFolder
from pcalm.runs.runner import execute

REPO = Path(__file__).resolve().parent.parent
STOP_RUN = REPO / "tests" / "stop_run.py"
KILL_STEP = 400  # of 500: most of the training time lies before the kill
# 500 steps of a small PC-ALM net, a checkpoint every 20: long enough to be killed mid-way.
RUN = ["algo=pcalm", "model.width=16", "model.depth=4", "model.activation=tanh",
       "inference.budget=8", "inference.state_lr=0.25", "data.train_size=1000",
       "data.test_size=100", "train.batch_size=10", "train.epochs=5", "train.evals_per_epoch=4",
       "train.checkpoint_every=20", "train.threads=1", "train.progress=off",
       "train.device=cpu"]


def run_folder(results: Path) -> RunFolder:
    return RunFolder(results, run_config(compose(RUN)))


def reference_metrics(results: Path, monkeypatch) -> pd.DataFrame:
    """The same run, uninterrupted, in another results folder (in-process, one thread)."""
    monkeypatch.setenv("PCALM_RESULTS", str(results))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        execute([run_config(compose(RUN))], progress=False, say=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    return pd.read_csv(run_folder(results).metrics_path)


def start_and_kill_at_checkpoint(folder: RunFolder) -> None:
    """SIGKILL (no chance to clean up: the worst case) right after the checkpoint at
    KILL_STEP is written."""
    proc = subprocess.run([sys.executable, str(STOP_RUN), "KILL", "checkpoint", str(KILL_STEP),
                           *RUN], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr


def test_killed_run_leaves_no_summary_and_resumes_exactly(fake_data_root, results_dir,
                                                          tmp_path, monkeypatch):
    monkeypatch.setenv("PCALM_DATA", str(fake_data_root))
    folder = run_folder(results_dir)
    start_and_kill_at_checkpoint(folder)
    assert not folder.summary_path.exists() and not folder.exists_complete()
    assert folder.checkpoint_path.exists()
    assert not list(folder.path.glob(".*.tmp"))  # killed between writes: no temp file
    before_kill = torch.load(folder.checkpoint_path, weights_only=True)["state"]
    assert before_kill["step"] == KILL_STEP

    rerun = subprocess.run([sys.executable, "experiments/run.py", *RUN], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" in rerun.stdout + rerun.stderr
    assert folder.exists_complete() and not folder.checkpoint_path.exists()

    resumed = pd.read_csv(folder.metrics_path)
    expected = reference_metrics(tmp_path / "reference", monkeypatch)
    assert len(resumed) == 5 * 4 + 1
    pd.testing.assert_frame_equal(resumed, expected, check_exact=True)
    # wall_time_s is the run's training time over both processes, not the resumed part only
    summary = json.loads(folder.summary_path.read_text())
    assert summary["wall_time_s"] > before_kill["seconds"] > 0
