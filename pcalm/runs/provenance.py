"""What produced a run: code version, environment, device, times and the command.

Recorded in every run's summary.json under ``provenance`` (and so as ``provenance.*`` columns
of the collected tables), so that a row of a table says which commit, which packages and
which machine made its numbers. Read once per process: a job reports the code it imported.
"""

from __future__ import annotations

import functools
import os
import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # pcalm/runs/provenance.py → the checkout
PACKAGES = ("torch", "numpy", "hydra-core", "submitit", "wandb")
# experiments/sweep.py passes the user's command to its jobs, which otherwise would only see
# their own `run_job.py -m ...` line, and the sweep's name (its folders: results/sweeps/<name>/,
# job logs in results/submitit/<name>/).
COMMAND_ENV = "PCALM_COMMAND"
SWEEP_ENV = "PCALM_SWEEP"
# What SLURM tells a job about itself: with the sweep name, the way from a run to its job's
# log (results/submitit/<sweep>/<array job id>_<task id>_log.out).
SLURM_ENV = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
             "slurm_array_task_id": "SLURM_ARRAY_TASK_ID"}


def now() -> str:
    """The current time, ISO 8601 with the UTC offset (seconds)."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def dirty_files(porcelain: str | None) -> tuple[int, int] | tuple[None, None]:
    """(changed tracked files, untracked files) of `git status --porcelain` output."""
    if porcelain is None:
        return None, None
    lines = [ln for ln in porcelain.splitlines() if ln.strip()]
    untracked = sum(ln.startswith("??") for ln in lines)
    return len(lines) - untracked, untracked


@functools.lru_cache(maxsize=1)
def code_and_environment() -> dict:
    """Git commit and dirtiness and package versions, read once.

    The tree is dirty when a tracked file changed *or* a file git does not ignore is
    untracked (a new module the run imported is code the commit does not have); the counts
    of each say how much.
    """
    commit = _git("rev-parse", "HEAD")
    changed, untracked = dirty_files(_git("status", "--porcelain", "--untracked-files=all"))
    env = {"git_commit": commit,
           "git_dirty": None if changed is None else bool(changed or untracked),
           "git_changed_files": changed, "git_untracked_files": untracked,
           "python": platform.python_version()}
    env.update({name.replace("-core", ""): _version(name) for name in PACKAGES})
    return env


def device_name(device) -> str:
    """The GPU's name for a CUDA device, else the CPU model."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model()


def command() -> str:
    """The command line that asked for the run (the sweep's, for a sweep job)."""
    return os.environ.get(COMMAND_ENV) or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def job() -> dict:
    """The sweep this run belongs to and the SLURM job and array task that ran it (None
    where not under a sweep or not on SLURM)."""
    out = {"sweep": os.environ.get(SWEEP_ENV) or None}
    out.update({key: os.environ.get(var) or None for key, var in SLURM_ENV.items()})
    return out


def cuda_versions(device) -> dict:
    """The CUDA runtime torch was built with and cuDNN's version, for a run on a GPU."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return {"cuda": None, "cudnn": None}
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"cuda": torch.version.cuda, "cudnn": cudnn}


def record(device, started: str, finished: str) -> dict:
    """The provenance block of one run's summary."""
    import torch

    return {**code_and_environment(), **cuda_versions(device), "device": str(device),
            "device_name": device_name(device), "host": socket.gethostname(),
            "threads": torch.get_num_threads(), **job(),
            "started": started, "finished": finished, "command": command()}
