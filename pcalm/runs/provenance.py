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
# their own `run_job.py -m ...` line.
COMMAND_ENV = "PCALM_COMMAND"


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


@functools.lru_cache(maxsize=1)
def code_and_environment() -> dict:
    """Git commit and dirtiness (tracked files) and package versions, read once."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    env = {"git_commit": commit, "git_dirty": None if status is None else bool(status),
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


def record(device, started: str, finished: str) -> dict:
    """The provenance block of one run's summary."""
    import torch

    return {**code_and_environment(), "device": str(device), "device_name": device_name(device),
            "host": socket.gethostname(), "threads": torch.get_num_threads(),
            "started": started, "finished": finished, "command": command()}
