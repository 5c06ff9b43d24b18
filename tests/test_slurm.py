"""The SLURM path with a fake SLURM: sbatch/squeue/sacct/srun/scancel/scontrol on PATH.

The fakes record their arguments; sbatch also keeps the submitted script and answers
"Submitted batch job <id>" as submitit expects. With FAKE_SLURM_RUN=1, sbatch runs the
script's array tasks itself (environment as SLURM sets it, srun just runs the command), so
the whole path — manifest, pickled job, run_job under SLURM — runs on this machine.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pcalm.results import RunFolder
from pcalm.sweep import expand
from tests.conftest import REPO, load_script

FIRST_JOB_ID = 4242
SMALL = ["data.train_size=200", "data.test_size=100", "train.batch_size=50",
         "train.evals_per_epoch=1", "inference.state_lr=0.25", "inference.budget=4",
         "train.progress=off", "train.device=cpu"]


SBATCH = """\
import os, re, subprocess, sys
log = os.environ["FAKE_SLURM_DIR"]
script = sys.argv[-1]
n = len([f for f in os.listdir(log) if f.startswith("sbatch-") and f.endswith(".sh")])
job_id = FIRST_JOB_ID + 100 * n
open(os.path.join(log, f"sbatch-{n}.args"), "w").write("\\n".join(sys.argv[1:]))
text = open(script).read()
open(os.path.join(log, f"sbatch-{n}.sh"), "w").write(text)
if os.environ.get("FAKE_SLURM_RUN"):  # run the tasks in the background, as SLURM would
    array = re.search(r"#SBATCH --array=(\\d+)-(\\d+)", text)
    for t in range(int(array[1]), int(array[2]) + 1) if array else [None]:
        env = dict(os.environ, SLURM_JOB_ID=str(job_id if t is None else job_id + 1 + t),
                   SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_NTASKS="1",
                   SLURM_JOB_NUM_NODES="1", SLURM_JOB_NODELIST="node1",
                   SLURM_CPUS_PER_TASK="1")
        if t is not None:
            env.update(SLURM_ARRAY_JOB_ID=str(job_id), SLURM_ARRAY_TASK_ID=str(t))
        task = subprocess.Popen(["bash", script], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        name = str(job_id) if t is None else f"{job_id}_{t}"
        open(os.path.join(log, f"task-{name}.pid"), "w").write(str(task.pid))
print(f"Submitted batch job {job_id}")
"""

SRUN = """\
import os, subprocess, sys
args, out, err = sys.argv[1:], None, None
while args and args[0].startswith("--"):
    flag = args.pop(0)
    if flag in ("--output", "--error"):
        path = args.pop(0)
        for tag, var in (("%A", "SLURM_ARRAY_JOB_ID"), ("%a", "SLURM_ARRAY_TASK_ID"),
                         ("%j", "SLURM_JOB_ID"), ("%t", "SLURM_PROCID")):
            path = path.replace(tag, os.environ.get(var, ""))
        if flag == "--output":
            out = path
        else:
            err = path
with open(out, "a") as o, open(err or out, "a") as e:
    sys.exit(subprocess.call(args, stdout=o, stderr=e))
"""

RECORD = """\
import os, sys
log = os.environ["FAKE_SLURM_DIR"]
name = os.path.basename(sys.argv[0])
with open(os.path.join(log, name + ".calls"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if name == "squeue":  # the queue a test wrote to squeue.out; squeue.fail: slurmctld is down
    if os.path.exists(os.path.join(log, "squeue.fail")):
        sys.exit("squeue: error: slurm_load_jobs error: Socket timed out")
    queue = os.path.join(log, "squeue.out")
    if os.path.exists(queue):
        print(open(queue).read(), end="")
if name == "sacct":  # a task is RUNNING while its process lives, then COMPLETED
    print("JobID|State|NodeList")
    for pid_file in sorted(f for f in os.listdir(log) if f.startswith("task-")):
        pid = int(open(os.path.join(log, pid_file)).read())
        try:
            os.kill(pid, 0)
            state = "RUNNING"
        except OSError:
            state = "COMPLETED"
        print(f"{pid_file[5:-4]}|{state}|node1")
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """Fake SLURM commands first on PATH; returns the folder holding what they recorded."""
    bin_dir, log = tmp_path / "fake_slurm_bin", tmp_path / "fake_slurm_log"
    bin_dir.mkdir()
    log.mkdir()
    scripts = {"sbatch": SBATCH.replace("FIRST_JOB_ID", str(FIRST_JOB_ID)), "srun": SRUN,
               **{name: RECORD for name in ("squeue", "sacct", "scancel", "scontrol")}}
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(log))
    return log


@pytest.fixture
def data_env(fake_data_root, results_dir, monkeypatch):
    monkeypatch.setenv("PCALM_DATA", str(fake_data_root))
    return results_dir


CELL = ["experiment=figure2", "scale=smoke", *SMALL, "model.depth=4", "model.activation=relu",
        "sweep.launcher=slurm"]
GRID = [*CELL, "algo=pc,pcalm", "model.width=8,16,32", "train.seed=0,1", "sweep.runs_per_job=3"]
LAUNCHER = ["hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1",
            "hydra.launcher.timeout_min=30", "hydra.launcher.array_parallelism=4",
            "hydra.launcher.account=lab", "hydra.launcher.qos=normal"]


def sbatch_flags(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, flags=re.M))


def test_slurm_submission_groups_runs_into_an_array(fake_slurm, data_env, capsys):
    sweep_py = load_script("experiments/sweep.py")
    assert sweep_py.main([*GRID, *LAUNCHER, "--no-wait"]) == 0
    out = capsys.readouterr().out
    runs = len(expand(GRID))
    tasks = math.ceil(runs / 3)
    assert (runs, tasks) == (12, 4)
    assert f"12 runs, 0 already complete (skipped), 12 to run in {tasks} jobs on slurm" in out
    assert "submitted" in out

    (script_file,) = fake_slurm.glob("sbatch-*.sh")  # one sbatch: one array for the sweep
    script = script_file.read_text()
    flags = sbatch_flags(script)
    assert flags["partition"] == "gpu"
    assert flags["gpus-per-node"] == "1"
    assert flags["time"] == "30"
    assert flags["array"] == f"0-{tasks - 1}%4"
    assert flags["account"] == "lab" and flags["qos"] == "normal"
    assert flags["cpus-per-task"] == "4" and flags["mem"] == "16GB"
    assert flags["signal"] == "USR2@120"  # time to requeue before the kill
    assert "submitit/figure2-smoke-" in flags["output"]
    assert "-m submitit.core._submit" in script

    (manifest,) = data_env.glob("sweeps/figure2-smoke-*/manifest.json")
    jobs = json.loads(manifest.read_text())["jobs"]
    assert len(jobs) == tasks
    planned = sorted(RunFolder(data_env, c).id for job in jobs for c in job["runs"])
    assert planned == sorted(RunFolder(data_env, c).id for c in expand(GRID))
    assert not (data_env / "runs").exists()  # the fake SLURM ran nothing

    # Which SLURM job got which manifest job, for the next sweep to ask squeue about.
    record = json.loads((manifest.parent / "slurm_jobs.json").read_text())
    assert record == {f"{FIRST_JOB_ID}_{k}": k for k in range(tasks)}


def test_rerun_skips_runs_of_queued_slurm_jobs(fake_slurm, data_env, capsys):
    """A sweep re-run while its jobs are queued submits nothing twice: runs of jobs squeue
    still lists are skipped; once a job has left the queue its missing runs go again."""
    sweep_py = load_script("experiments/sweep.py")
    assert sweep_py.main([*GRID, "--no-wait"]) == 0
    (manifest,) = data_env.glob("sweeps/figure2-smoke-*/manifest.json")
    jobs = json.loads(manifest.read_text())["jobs"]
    capsys.readouterr()
    queue = fake_slurm / "squeue.out"

    queue.write_text("".join(f"{FIRST_JOB_ID}_{k}\n" for k in range(4)) + "999_7\n")
    assert sweep_py.main([*GRID, "--no-wait"]) == 0  # nothing to submit
    out = capsys.readouterr().out
    assert "0 already complete (skipped), 12 in queued or running SLURM jobs (skipped), " \
           "0 to run in 0 jobs on slurm" in out
    assert f"12 runs wait for SLURM jobs {FIRST_JOB_ID}_0, {FIRST_JOB_ID}_1" in out
    assert len(list(fake_slurm.glob("sbatch-*.sh"))) == 1
    assert sweep_py.main(GRID) == 1  # waiting for them here would draw half a grid
    assert "re-run the same command when they are done" in capsys.readouterr().err
    assert sweep_py.main([*GRID, "--dry-run"]) == 0  # a plan, not a wait
    (call,) = {c for c in (fake_slurm / "squeue.calls").read_text().splitlines()}
    assert "--array" in call.split() and "--noheader" in call.split() and "--user=" in call

    queue.write_text(f"{FIRST_JOB_ID}_2\n")  # tasks 0, 1, 3 ended without finishing
    assert sweep_py.main([*GRID, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{len(jobs[2]['runs'])} in queued or running SLURM jobs (skipped), " \
           f"{12 - len(jobs[2]['runs'])} to run" in out

    (fake_slurm / "squeue.fail").write_text("")  # no answer: warn, and plan as if none queued
    assert sweep_py.main([*GRID, "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "12 to run in 4 jobs on slurm" in captured.out
    assert captured.err.strip() == ("warning: squeue failed (exit status 1): squeue: error: "
                                    "slurm_load_jobs error: Socket timed out; runs of queued "
                                    "SLURM jobs may be submitted again")


@pytest.mark.slow
def test_slurm_jobs_run_and_complete(fake_slurm, data_env, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_RUN", "1")
    grid = [*CELL, "algo=pc", "model.width=8", "train.seed=0,1", "sweep.runs_per_job=1"]
    proc = subprocess.run(
        [sys.executable, "experiments/sweep.py", *grid, "hydra.launcher.gpus_per_node=null"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 to run in 2 jobs on slurm" in proc.stdout
    assert "done: 2 complete, 0 missing" in proc.stdout
    flags = sbatch_flags(next(fake_slurm.glob("sbatch-*.sh")).read_text())
    assert flags["array"] == "0-1%2" and "gpus-per-node" not in flags
    logs = list(data_env.glob("submitit/figure2-smoke-*/*_log.out"))
    assert len(logs) == 2
    assert all("1 threads" in log.read_text() for log in logs)  # SLURM_CPUS_PER_TASK


@pytest.mark.parametrize("gpus, device, even", [("1", "auto", True), ("null", "auto", False),
                                                ("1", "cpu", False)])
def test_seeds_of_a_cell_share_a_job_when_jobs_have_gpus(fake_slurm, data_env, capsys, gpus,
                                                         device, even):
    """sweep.max_stack=auto: seed-mates are planned into one job (to train as one stack) when
    the SLURM jobs ask for a GPU and may use it, and spread like any runs otherwise."""
    sweep_py = load_script("experiments/sweep.py")
    grid = [a.replace("train.device=cpu", f"train.device={device}") for a in GRID]
    assert sweep_py.main([*grid, f"hydra.launcher.gpus_per_node={gpus}", "--dry-run"]) == 0
    sizes = [int(n) for n in re.findall(r"job \d+: (\d+) runs", capsys.readouterr().out)]
    assert sum(sizes) == 12
    assert all(n % 2 == 0 for n in sizes) == even  # the grid has seeds 0 and 1 of each cell
