"""The SLURM path where a one-node cluster cannot reach, with a fake SLURM on PATH.

tests/test_slurm_cluster.py runs sweeps on a real cluster. This file keeps what a local
cluster cannot show: the sbatch flags of a cluster with GPU partitions, accounts and QOS;
an squeue that does not answer; how a GPU partition changes the plan; and that a local
sweep never asks SLURM anything. The fakes record their arguments; sbatch keeps the
submitted script and answers "Submitted batch job <id>" as submitit expects; sinfo
describes a cluster with a `cpu` (default) and a `gpu` partition. On a machine without
SLURM, a SLURM sweep is one line.
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

from pcalm.runs.folder import RunFolder
from pcalm.sweeps.grid import expand, load_sweep
from pcalm.sweeps.launchers import make_launcher
from pcalm.sweeps.plan import headline, plan
from tests.conftest import REPO

FIRST_JOB_ID = 4242
SMALL = ["data.train_size=200", "data.test_size=100", "train.batch_size=50",
         "train.evals_per_epoch=1", "inference.state_lr=0.25", "inference.budget=4",
         "train.progress=off", "train.device=cpu"]


SBATCH = """\
import os, sys
log = os.environ["FAKE_SLURM_DIR"]
script = sys.argv[-1]
n = len([f for f in os.listdir(log) if f.startswith("sbatch-") and f.endswith(".sh")])
job_id = FIRST_JOB_ID + 100 * n
open(os.path.join(log, f"sbatch-{n}.args"), "w").write("\\n".join(sys.argv[1:]))
text = open(script).read()
open(os.path.join(log, f"sbatch-{n}.sh"), "w").write(text)
print(f"Submitted batch job {job_id}")
"""

RECORD = """\
import os, sys
log = os.environ["FAKE_SLURM_DIR"]
name = os.path.basename(sys.argv[0])
with open(os.path.join(log, name + ".calls"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if name == "squeue":  # squeue.fail: slurmctld is down
    if os.path.exists(os.path.join(log, "squeue.fail")):
        sys.exit("squeue: error: slurm_load_jobs error: Socket timed out")
if name == "sinfo":  # partition|CPUs|memory (MB)|gres, one line per kind of node
    print("cpu*|8|64000|(null)")
    print("gpu|16|128000|gpu:a100:4")
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """Fake SLURM commands first on PATH; returns the folder holding what they recorded."""
    bin_dir, log = tmp_path / "fake_slurm_bin", tmp_path / "fake_slurm_log"
    bin_dir.mkdir()
    log.mkdir()
    scripts = {"sbatch": SBATCH.replace("FIRST_JOB_ID", str(FIRST_JOB_ID)),
               **{name: RECORD for name in ("squeue", "sacct", "scancel", "scontrol", "sinfo",
                                                   "srun")}}
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


def planned(overrides: list[str], wait: bool = True):
    """What experiments/sweep.py plans for these overrides (its steps, in-process)."""
    sweep = load_sweep(overrides)
    launcher = make_launcher(sweep, wait)
    return launcher, plan(sweep, launcher)


def sbatch_flags(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, flags=re.M))


def test_slurm_submission_groups_runs_into_an_array(fake_slurm, data_env):
    done = subprocess.run([sys.executable, "experiments/sweep.py", *GRID, *LAUNCHER,
                           "--no-wait"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    runs = len(expand(GRID))
    tasks = math.ceil(runs / 3)
    assert (runs, tasks) == (12, 4)
    assert f"12 runs, 0 already complete (skipped), 12 to run in {tasks} jobs on slurm" in out
    # the gpu partition's nodes have 16 CPUs and 125 GB: 4 CPUs, 16 GB and the GPU asked for
    assert "each job asks SLURM for 4 CPUs, 16 GB, 1 GPU, on partition gpu\n" in out
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
    assert flags["job-name"].startswith("pcalm-figure2-smoke-")
    assert "-m submitit.core._submit" in script

    (manifest,) = data_env.glob("sweeps/figure2-smoke-*/manifest.json")
    jobs = json.loads(manifest.read_text())["jobs"]
    assert len(jobs) == tasks
    planned = sorted(RunFolder(data_env, c).id for job in jobs for c in job["runs"])
    assert planned == sorted(RunFolder(data_env, c).id for c in expand(GRID))
    assert not (data_env / "runs").exists()  # the fake SLURM ran nothing

    # Which SLURM job (id and name) got which manifest job, for the next sweep's squeue.
    record = json.loads((manifest.parent / "slurm_jobs.json").read_text())
    name = f"pcalm-{manifest.parent.name}"
    assert record == {f"{FIRST_JOB_ID}_{k}": {"job": k, "name": name} for k in range(tasks)}


@pytest.mark.parametrize("hidden, named", [(("sbatch", "srun"), "sbatch and srun"),
                                           (("srun",), "srun")])
def test_a_slurm_sweep_where_slurm_is_missing_is_one_line(fake_slurm, data_env,
                                                          hidden, named):
    bin_dir = fake_slurm.parent / "fake_slurm_bin"
    for name in hidden:
        (bin_dir / name).unlink()
    os.environ["PATH"] = str(bin_dir)  # restored by the fixture's monkeypatch
    with pytest.raises(ValueError) as err:  # sweep.py: `error: <it>`, exit status 2
        planned([*CELL, "algo=pc", "model.width=8"], wait=False)
    assert str(err.value) == (f"bad value sweep.launcher=slurm: {named} not found on PATH: run "
                              "the sweep on a SLURM login node, or use sweep.launcher=local")
    assert not list(fake_slurm.glob("sbatch-*"))
    assert not (data_env / "sweeps").exists() or not any((data_env / "sweeps").iterdir())


def test_an_squeue_that_does_not_answer_is_one_warning(fake_slurm, data_env, capsys):
    (fake_slurm / "squeue.fail").write_text("")  # no answer: warn, and plan as if none queued
    _, work = planned(GRID)
    assert "12 to run in 4 jobs on slurm" in headline(work)
    captured = capsys.readouterr()
    assert captured.err.strip() == ("warning: squeue failed (exit status 1): squeue: error: "
                                    "slurm_load_jobs error: Socket timed out; runs of queued "
                                    "SLURM jobs may be submitted again")


def test_a_local_sweep_asks_slurm_nothing(fake_slurm, data_env):
    """A local sweep must not depend on SLURM: no squeue (a SLURM client without a controller
    made a local --dry-run wait 12 s), no sinfo."""
    local = [a.replace("sweep.launcher=slurm", "sweep.launcher=local") for a in GRID]
    _, work = planned(local)
    assert "12 to run" in headline(work)
    assert not list(fake_slurm.glob("*.calls"))


@pytest.mark.parametrize("partition, gpus, device, even", [
    ("gpu", "null", "auto", True),   # runs meant for a GPU on a GPU partition: one each
    ("gpu", "1", "cpu", False),      # CPU runs: spread, whatever the job asks for
    ("cpu", "null", "auto", False),  # no GPUs on the partition: CPU planning
    ("gpu", "null", "cpu", False),
])
def test_seeds_of_a_cell_share_a_job_when_jobs_have_gpus(fake_slurm, data_env,
                                                         partition, gpus, device, even):
    """sweep.max_stack=auto: seed-mates are planned into one job (to train as one stack) when
    the SLURM jobs get a GPU and may use it, and spread like any runs otherwise."""
    grid = [a.replace("train.device=cpu", f"train.device={device}") for a in GRID]
    launcher, work = planned([*grid, f"hydra.launcher.partition={partition}",
                              f"hydra.launcher.gpus_per_node={gpus}"])
    sizes = [len(job) for job in work.jobs]
    assert sum(sizes) == 12
    assert all(n % 2 == 0 for n in sizes) == even  # the grid has seeds 0 and 1 of each cell
    assert (", 1 GPU," in launcher.request) == (gpus == "1" or even)


def test_a_recorded_job_is_in_flight_only_under_its_recorded_name(tmp_path):
    """Job ids repeat (a cluster reset; two clusters on one results folder): squeue listing
    the id under another job name means another job."""
    from pcalm.sweeps import slurm

    runs = expand([*CELL, "algo=pc", "model.width=8", "train.seed=0,1"])
    folder = tmp_path / "sweeps" / "figure2-smoke-x"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"jobs": [{"runs": runs[:1]},
                                                               {"runs": runs[1:]}]}))
    slurm.record_jobs(folder / slurm.JOBS_FILE, {"7_0": 0, "7_1": 1}, "pcalm-figure2-smoke-x")
    ours = {"name": "pcalm-figure2-smoke-x", "state": "PENDING", "reason": "Priority"}
    other = {**ours, "name": "someone-else"}
    owners = slurm.in_flight_runs(tmp_path, {"7_0": ours, "7_1": other})
    assert owners == {RunFolder(tmp_path, runs[0]).id: "7_0"}
    assert slurm.in_flight_runs(tmp_path, {"7_0": other, "7_1": other}) == {}


NODES = {"small": {"cpus": 2, "mem_mb": 8192, "gpus": False, "default": True},
         "gpu": {"cpus": 32, "mem_mb": 256000, "gpus": True, "default": False}}


@pytest.mark.parametrize("asked, devices, want", [
    ({}, {"auto"}, (2, 8, None)),                       # capped by the 2-CPU, 8 GB node
    ({"cpus_per_task": 1}, {"cpu"}, (1, 4, None)),      # memory: the node's share per CPU
    ({"partition": "gpu"}, {"auto"}, (4, 16, 1)),       # meant for the GPU partition's GPU
    ({"partition": "gpu"}, {"cpu"}, (4, 16, None)),     # CPU runs ask for none
    ({"partition": "gpu", "gpus_per_node": 2}, {"auto"}, (4, 16, 2)),
])
def test_job_request_fills_what_the_user_left_open(asked, devices, want):
    from pcalm.sweeps import slurm

    full = {"partition": None, "gpus_per_node": None, "gres": None, "cpus_per_task": None,
            "mem_gb": None, **asked}
    request, line = slurm.job_request(full, devices, NODES)
    assert (request["cpus_per_task"], request["mem_gb"], request["gpus_per_node"]) == want
    assert line.startswith(f"each job asks SLURM for {want[0]} CPUs, {want[1]} GB")


@pytest.mark.parametrize("asked, devices, message", [
    ({"cpus_per_task": 3}, {"cpu"}, "bad value hydra.launcher.cpus_per_task=3: allowed: at "
                                    "most 2, the CPUs of the largest node of partition small"),
    ({"mem_gb": 9}, {"cpu"}, "bad value hydra.launcher.mem_gb=9: allowed: at most 8"),
    ({"gpus_per_node": 1}, {"auto"}, "bad value hydra.launcher.gpus_per_node=1: partition "
                                     "small has no GPUs"),
    ({}, {"cuda"}, "bad value train.device=cuda: partition small has no GPUs"),
    ({"partition": "nope"}, {"cpu"}, "bad value hydra.launcher.partition=nope: allowed: gpu, "
                                     "small (sinfo)"),
])
def test_job_request_refuses_what_no_node_can_give(asked, devices, message):
    from pcalm.sweeps import slurm

    full = {"partition": None, "gpus_per_node": None, "gres": None, "cpus_per_task": None,
            "mem_gb": None, **asked}
    with pytest.raises(ValueError, match=re.escape(message)):
        slurm.job_request(full, devices, NODES)


def test_job_request_without_sinfo_keeps_the_defaults_and_says_so():
    from pcalm.sweeps import slurm

    full = {"partition": None, "gpus_per_node": None, "gres": None, "cpus_per_task": None,
            "mem_gb": None}
    request, line = slurm.job_request(full, {"cuda"}, None)
    assert request == {"cpus_per_task": 4, "mem_gb": 16, "gpus_per_node": 1}
    assert "not checked against the nodes" in line
