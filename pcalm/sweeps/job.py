"""One sweep job: train its share of a sweep's runs, listed in the sweep's manifest.

experiments/run_job.py runs this in each job of the Hydra multirun that a launcher starts
(pcalm/sweeps/launchers.py). A job skips runs already complete and resumes an interrupted run
from its checkpoint, so a requeued job (SLURM preemption or time limit: submitit calls the
launcher's `checkpoint`, which resubmits the same job) simply goes on.

Its runs are grouped into stacks by the runs' own rule (pcalm.runs.build.stack_units): a job
never imports the sweep's planner. Standard library only at import: the process that submits
the jobs imports this module too, and needs neither torch nor the rest of the package.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import traceback
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("run_job")  # the name on each line of a job's log

DISK_FULL = 28  # exit status of a multirun stopped by a full disk (ENOSPC's number): the
# sweep (pcalm.sweeps.plan.report) then says so in one line, with the space left
DISK_FULL_WORDS = ("No space left on device", "Disk quota exceeded")


def disk_full(err: BaseException) -> bool:
    """Whether `err`, or an error it was raised from or while handling, is a full disk.

    A job's own error reaches the multirun as text (submitit's FailedJobError holds the
    job's traceback), so the text is read too."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(words in str(err) for words in DISK_FULL_WORDS):
            return True
        err = err.__cause__ or err.__context__
    return False


def exit_quietly_on_a_full_disk(main: Callable[[], None]) -> None:
    """Run a Hydra `main`; a full disk anywhere in it (Hydra's own files, submitit's, ours)
    exits with DISK_FULL and prints nothing, for the sweep to say once. Hydra would print a
    traceback of its own: HYDRA_FULL_ERROR makes it raise the error to us instead."""
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except Exception as err:
        if disk_full(err):
            raise SystemExit(DISK_FULL) from None
        raise


def job_threads(job: dict) -> int | None:
    """torch threads: the manifest's (local: cores // jobs), else SLURM's allocation."""
    if job.get("threads"):
        return int(job["threads"])
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    return int(cpus) if cpus and cpus.isdigit() else None


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def use_one_gpu(gpu: int | None) -> None:
    """A local job on a machine with GPUs: see only the `gpu`-th of the GPUs it was given,
    so that the sweep's jobs spread over the GPUs instead of all training on the first.
    Before CUDA starts (torch reads CUDA_VISIBLE_DEVICES then)."""
    if gpu is None:
        return
    given = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    os.environ["CUDA_VISIBLE_DEVICES"] = given[gpu % len(given)] if given else str(gpu)


def run_job(manifest_path: str, index: int) -> None:
    """Train every run of job `index`; a failing run does not stop the others."""
    from pcalm.core.device import resolve_device, run_threads
    from pcalm.runs.build import stack_size, stack_units
    from pcalm.runs.config import Cell
    from pcalm.runs.runner import execute

    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    job = manifest["jobs"][index]
    use_one_gpu(job.get("gpu"))
    threads = job_threads(job)
    try:
        device = resolve_device(job["runs"][0]["train"]["device"]).type
    except ValueError:  # e.g. cuda asked for and absent: each run will fail and say so
        device = "cpu"
    stack = stack_size(manifest.get("max_stack", 1), device)
    log.info(f"job {index}: {len(job['runs'])} runs, {threads or 'default'} threads, "
             f"{device}, up to {stack} models per stack")
    failed, busy = [], []
    units = stack_units(job["runs"], stack)
    # Runs another process is training (another sweep's job) come last: this job trains
    # what it can meanwhile, then waits for them and skips those that are complete by then.
    for wait, batch in ((False, units), (True, None)):
        for unit in batch if batch is not None else busy:
            # A run's own setting wins; else small nets run one thread (pcalm.core.device)
            set_threads(run_threads(unit[0], threads))
            try:
                outcome = execute(unit, max_stack=stack, progress=False, say=log.info,
                                  wait=wait)
                if outcome.skipped:
                    log.info(f"already complete: {', '.join(outcome.skipped)}")
                if outcome.busy:
                    busy.append(outcome.busy)
            except Exception:  # report it and go on with the job's other runs
                log.error(traceback.format_exc())
                failed += [str(Cell.of(c)) for c in unit]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(job['runs'])} runs failed: {'; '.join(failed)}")
