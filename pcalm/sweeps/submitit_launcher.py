"""The SLURM launcher of sweeps: hydra-submitit-launcher's, submitting and waiting our way.

configs/hydra/launcher/slurm.yaml names `SweepSlurmLauncher` as its `_target_` (defined in
hydra_plugins/pcalm_launcher/, where Hydra accepts launcher plugins; its code is here). It submits
through submitit's public API (AutoExecutor.map_array: one job array per sweep), like the
upstream launcher, and differs only after submission:

- it records each job's id *and name* (``slurm_jobs.json`` beside the manifest), so that a
  later sweep can ask squeue which runs are still in flight (pcalm/sweeps/slurm.py);
- with PCALM_SUBMIT_ONLY set (experiments/sweep.py --no-wait) it returns once SLURM has
  accepted the jobs;
- a refused submission is one line (sbatch's own message) and exit status 3, and nothing
  of the sweep is left behind by the launcher;
- waiting needs no sacct: a job is over when its result file exists, or when squeue no
  longer lists it (cancelled, killed, node failure: its runs are then reported missing);
  a job that stays pending for a reason SLURM gives (PartitionConfig, Resources, ...) is
  reported once;
- each job's failure is one line, and the multirun's exit status says whether all went
  well, without a traceback of the submitting process.

The jobs themselves run the upstream launcher's code (__call__, and checkpoint, which
resubmits the job on a preemption or a time limit).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RECORD_JOBS = "PCALM_SLURM_JOBS"  # set by pcalm/sweeps/launchers.py Slurm: where to record job ids
SUBMIT_ONLY = "PCALM_SUBMIT_ONLY"  # set by launchers.py Slurm for experiments/sweep.py --no-wait
REFUSED = 3  # exit status: sbatch refused the jobs, nothing was submitted
POLL_S = float(os.environ.get("PCALM_SLURM_POLL_S", "10"))
PENDING_WARN_S = float(os.environ.get("PCALM_SLURM_PENDING_WARN_S", "60"))
# Pending reasons that do not clear by waiting for other users' jobs to end.
STUCK_REASONS = ("PartitionConfig", "ReqNodeNotAvail", "BadConstraints", "PartitionNodeLimit",
                 "PartitionTimeLimit", "InvalidAccount", "InvalidQOS", "QOSMaxCpuPerJobLimit",
                 "AssocMaxJobsLimit", "Resources")


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    """`launcher.launch` (a SweepSlurmLauncher): submit the jobs as one array; then record,
    return or wait, as the module docstring says."""
    from hydra.core.utils import JobReturn, JobStatus
    from submitit.core.utils import FailedJobError

    try:
        executor = make_executor(launcher.params)
    except UnsafeFolder as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(REFUSED) from None
    except RuntimeError as err:  # submitit finds no srun: this is no SLURM login node
        print(f"error: cannot submit to SLURM here: {err}", file=sys.stderr)
        raise SystemExit(REFUSED) from None
    arguments = job_arguments(launcher.config, job_overrides, initial_job_idx)
    said = io.StringIO()  # submitit prints sbatch's complaint itself: say it once, below
    try:
        with contextlib.redirect_stderr(said):
            jobs = executor.map_array(launcher, *zip(*arguments))
    except (FailedJobError, OSError) as err:  # sbatch refused, or is not there
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"error: SLURM did not accept the jobs: {message}", file=sys.stderr)
        raise SystemExit(REFUSED) from None
    indices = [_job_index(overrides) for overrides in job_overrides]
    name = launcher.params.get("name") or "submitit"  # submitit's default job name
    if os.environ.get(RECORD_JOBS):
        from pcalm.sweeps.slurm import record_jobs

        record_jobs(Path(os.environ[RECORD_JOBS]),
                    {job.job_id: k for job, k in zip(jobs, indices)}, str(name))
    array = jobs[0].job_id.split("_")[0]
    if os.environ.get(SUBMIT_ONLY):
        log.info(f"submitted SLURM job {array} ({len(jobs)} tasks); not waiting for it")
        return [JobReturn(status=JobStatus.COMPLETED) for _ in jobs]
    log.info(f"submitted SLURM job {array} ({len(jobs)} tasks); waiting for it")
    failures = wait_for(jobs, str(name))
    for line in failures:
        print(f"error: {line}", file=sys.stderr)
    if failures:
        raise SystemExit(1)
    return [JobReturn(status=JobStatus.COMPLETED) for _ in jobs]

class UnsafeFolder(RuntimeError):
    """A submitit folder others could write in; the message is one line."""


def private_folder(folder: Path) -> Path:
    """Make ``folder`` (submitit's: each queued job unpickles its ``*_submitted.pkl`` from it
    when it starts) writable by its owner only, and check that nobody else can replace it.

    Created with mode 0700 and re-checked: the folder and every existing folder above it up
    to the filesystem root must be owned by this user (or root) and not writable by group or
    others, unless sticky (/tmp: others cannot rename what is ours). Otherwise someone else
    could plant or swap a pickle that runs as this user when a queued job starts. UnsafeFolder
    names the first folder that fails and how to fix it.
    """
    folder = folder.expanduser().absolute()
    old = os.umask(0o077)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    finally:
        os.umask(old)
    os.chmod(folder, 0o700)
    me = os.getuid() if hasattr(os, "getuid") else None
    for node in (folder, *folder.parents):
        info = node.lstat()
        if stat.S_ISLNK(info.st_mode):
            raise UnsafeFolder(f"refusing submitit_folder {folder}: {node} is a symlink")
        if me is None:
            break
        open_to_others = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        sticky = info.st_mode & stat.S_ISVTX
        if info.st_uid not in (me, 0) or (open_to_others and not sticky):
            raise UnsafeFolder(
                f"refusing submitit_folder {folder}: {node} is writable by others (mode "
                f"{stat.S_IMODE(info.st_mode):o}, owner uid {info.st_uid}), who could plant a "
                f"pickle a queued job runs; `chmod go-w {node}`, or set "
                "hydra.launcher.submitit_folder to a folder only you can write")
    return folder


def make_executor(params: dict):
    """An AutoExecutor set up from the launcher's config, as the upstream launcher does."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    init_keys = {"submitit_folder", "max_num_timeout"}
    private_folder(Path(str(params["submitit_folder"])))
    executor = submitit.AutoExecutor(folder=params["submitit_folder"], cluster="slurm",
                                     slurm_max_num_timeout=params.get("max_num_timeout", 0))
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{key if key in generic else f"slurm_{key}": value
                                  for key, value in params.items() if key not in init_keys})
    return executor


def job_arguments(config, job_overrides, initial_job_idx: int) -> list[tuple]:
    """What each job's `__call__` gets: its overrides, where its Hydra files go, its number
    and Hydra's global state."""
    from hydra.core.singleton import Singleton

    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    return [(list(overrides), "hydra.sweep.dir", initial_job_idx + i,
             f"job_id_for_{initial_job_idx + i}", Singleton.get_state())
            for i, overrides in enumerate(job_overrides)]


def _job_index(overrides: Sequence[str]) -> int:
    """The manifest job (`job=K`) a Hydra job runs."""
    return next(int(o.split("=", 1)[1]) for o in overrides if o.startswith("job="))


def wait_for(jobs: list, name: str) -> list[str]:
    """Wait until every job has a result or has left the queue; one line per failed job."""
    from pcalm.sweeps import slurm

    waiting = {job.job_id: job for job in jobs}
    failures: list[str] = []
    gone_once: set[str] = set()
    warned: set[str] = set()
    pending_since: dict[str, float] = {}
    while waiting:
        try:
            queue = slurm.queued_jobs(name)
        except slurm.QueueUnknown as err:
            log.warning(f"{err}; asking again in {POLL_S:.0f} s")
            queue = None
        for job_id, job in list(waiting.items()):
            if job.paths.result_pickle.exists():
                failures += _outcome(job)
                del waiting[job_id]
            elif queue is not None and job_id not in queue:
                # Gone from the queue without a result: look twice (a result file written
                # just before the job left may be late on a network disk).
                if job_id in gone_once:
                    failures.append(f"SLURM job {job_id} left the queue without a result "
                                    f"({slurm.final_state(job_id)}); its runs are missing")
                    del waiting[job_id]
                gone_once.add(job_id)
            elif queue is not None:
                _warn_if_stuck(job_id, queue[job_id], pending_since, warned)
        if waiting:
            time.sleep(POLL_S)
    return failures


def _outcome(job) -> list[str]:
    """[] for a job whose runs all went well; else one line saying what failed."""
    try:
        job.results()
    except Exception as err:  # the job's own error, raised from its result file
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        return [f"SLURM job {job.job_id} failed: {lines[-1] if lines else type(err).__name__} "
                f"(log: {job.paths.stdout})"]
    return []


def _warn_if_stuck(job_id: str, entry: dict[str, Any], since: dict[str, float],
                   warned: set[str]) -> None:
    """Say once that a job has been pending for a while for a reason that waiting alone may
    not cure (PartitionConfig: the partition cannot run it as asked; Resources: the node
    has too few free CPUs, memory or GPUs)."""
    state, reason = entry.get("state", ""), entry.get("reason", "")
    if state != "PENDING":
        since.pop(job_id, None)
        return
    first = since.setdefault(job_id, time.monotonic())
    array = job_id.split("_")[0]
    if (reason.startswith(STUCK_REASONS) and time.monotonic() - first >= PENDING_WARN_S
            and array not in warned):
        warned.add(array)
        print(f"warning: SLURM job {job_id} has been pending for "
              f"{time.monotonic() - first:.0f} s, reason {reason}: check "
              "hydra.launcher.cpus_per_task, mem_gb, gpus_per_node and partition against "
              "`sinfo -o '%P %c %m %G'`", file=sys.stderr, flush=True)
