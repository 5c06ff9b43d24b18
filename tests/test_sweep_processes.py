"""Local sweeps as processes (issue 10, items 3, 5 and 6): two sweeps on one results folder
train each run once and both finish; a sweep killed with SIGKILL, or stopped with SIGTERM /
Ctrl-C, takes its submitit workers with it (one line, no traceback); the next sweep resumes.

No sleeps decide anything here: the tests wait for a file to appear (a checkpoint) or for a
process to end, each with a generous deadline.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

SMALL = ["scale=smoke", "experiment=figure2", "inference.state_lr=0.25",
         "data.test_size=100", "train.evals_per_epoch=1", "model.depth=4",
         "sweep.launcher=local", "sweep.local_jobs=2"]
QUICK = [*SMALL, "data.train_size=200", "train.batch_size=50",
         "sweep.grid={model.width:[8,16],train.seed:[0,1]}"]
# One PC-ALM run of a few thousand steps: long enough to be stopped in the middle.
LONG = [*SMALL, "data.train_size=1000", "train.batch_size=10", "train.epochs=16",
        "train.checkpoint_every=20", "sweep.grid={model.width:[16],train.seed:[0]}",
        "algo=pcalm"]


@pytest.fixture
def env(fake_data_root, results_dir):
    """Fake data, a fresh results folder, and a stored cost model for this CPU (any numbers:
    the projection is not under test here), so no sweep spends its first ~10 s calibrating."""
    import torch

    from pcalm.runs.provenance import device_name
    from pcalm.sweeps import cost

    cpu = torch.device("cpu")
    for threads in range(1, (os.cpu_count() or 1) + 1):
        cost.CostModel(device_name(cpu), "cpu", threads, (1e-4, 1e-5, 1e-10), (1e-4, 1e-5, 1e-10),
                       (1e-5, 1e-9, 1e-11), (1e-4, 1e-5, 1e-11)
                       ).save(cost.model_path(results_dir, cpu, threads))
    return {**os.environ, "PCALM_DATA": str(fake_data_root), "PCALM_RESULTS": str(results_dir)}


def sweep(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "experiments/sweep.py", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def processes_under(results_dir: Path) -> list[int]:
    """Pids of processes whose command line names `results_dir` (the sweep's jobs do)."""
    mine, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == mine:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(results_dir) in cmdline:
            found.append(int(entry.name))
    return found


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def trained_ids(results_dir: Path) -> list[str]:
    """Run ids in the jobs' 'test accuracy ... | <folder>' lines: one per run trained."""
    text = "".join(p.read_text() for p in results_dir.glob("submitit/*/*_log.out"))
    return re.findall(r"test accuracy .*\| \S*/runs/([0-9a-f]{12})", text)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_process_identity_is_its_pid_and_start_time_and_a_zombie_is_dead():
    from pcalm.sweeps.processes import alive, process_identity

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    fields = Path(f"/proc/{child.pid}/stat").read_text().split()  # comm "(python...)": no space
    identity = process_identity(child.pid)
    assert identity == f"{child.pid}:{fields[21]}"  # proc(5): field 22 is the start time
    assert alive(identity)
    assert not alive(f"{child.pid}:{int(fields[21]) + 1}")  # the pid, reused by a later process
    child.stdin.close()  # the child exits; until reaped it is a zombie, and counts as dead
    wait_until(lambda: Path(f"/proc/{child.pid}/stat").read_text().split()[2] == "Z", 30,
               "the child to exit")
    assert not alive(identity)
    child.wait()
    assert not alive(identity)


def test_two_sweeps_on_one_results_folder_train_each_run_once(env, results_dir):
    a, b = sweep(QUICK, env), sweep(QUICK, env)
    outs = [p.communicate(timeout=600) for p in (a, b)]
    for proc, (out, err) in zip((a, b), outs):
        assert proc.returncode == 0, out + err
        assert "done: 4 complete, 0 missing" in out
    assert len(list((results_dir / "sweeps").iterdir())) == 2  # a folder each
    ids = trained_ids(results_dir)
    assert len(ids) == 4 and len(set(ids)) == 4, ids  # each of the 4 runs trained once


def _started(results_dir: Path) -> bool:
    return bool(list(results_dir.glob("runs/*/checkpoint.pt")))


# SIGTERM takes SIGINT's path (one exception class apart): in the longer suite only.
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT,
                                  pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_stopping_a_sweep_stops_its_workers_and_the_next_sweep_resumes(stop, env,
                                                                       results_dir):
    first = sweep(LONG, env)
    wait_until(lambda: _started(results_dir) or first.poll() is not None, 300,
               "the run's first checkpoint")
    assert first.poll() is None, first.communicate()
    first.send_signal(stop)
    out, err = first.communicate(timeout=120)
    wait_until(lambda: not processes_under(results_dir), 60, "the sweep's workers to stop")
    (summary,) = [p.parent / "summary.json" for p in results_dir.glob("runs/*/config.yaml")]
    assert not summary.exists()  # stopped in the middle, not run to its end
    if stop != signal.SIGKILL:  # the sweep itself says what stopped, in one line
        assert first.returncode == (130 if stop == signal.SIGINT else 143)
        lines = err.strip().splitlines()
        assert "Traceback" not in err and len(lines) == 1, err
        assert lines[0].startswith("interrupted: sweep ") and "experiment=figure2" in lines[0]
    again = sweep(LONG, env)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0 and "done: 1 complete, 0 missing" in out, out + err
    logs = "".join(p.read_text() for p in results_dir.glob("submitit/*/*_log.out"))
    assert "resuming" in logs and summary.exists()


def test_a_stopped_group_leaves_the_signal_handlers_as_they_were(tmp_path):
    """Stopping a sweep's process group ignores a second Ctrl-C only while it stops: an
    ignored SIGINT left behind is inherited by every process started later (a test suite
    once lost Ctrl-C in all its later subprocesses). Catches handlers not restored."""
    from pcalm.sweeps.processes import Stopped, run_group

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def stop_now() -> None:
        raise Stopped("stop")

    with pytest.raises(Stopped):
        run_group([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, {}, 0.0,
                  stop_now)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    # a child inherits only what this process had (a shell's `cmd &` starts it ignoring SIGINT)
    child = subprocess.run([sys.executable, "-c", "import signal; print(signal.getsignal("
                            "signal.SIGINT) is signal.SIG_IGN)"], capture_output=True, text=True)
    assert child.stdout.strip() == str(before[0] is signal.SIG_IGN)
