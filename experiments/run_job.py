"""One sweep job: train its share of a sweep's runs, listed in the sweep's manifest.

experiments/sweep.py launches this as a Hydra multirun over the job index (configs/job.yaml,
hydra/launcher=local|slurm|basic). A job skips runs already complete and resumes an
interrupted run from its checkpoint, so a requeued job (SLURM preemption or time limit:
submitit calls the launcher's `checkpoint`, which resubmits the same job) simply goes on.
With --submit-only (experiments/sweep.py --no-wait) the multirun returns once SLURM has
accepted the jobs instead of waiting for them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

# The submitting process needs neither torch nor the package: only the jobs import them.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
log = logging.getLogger("run_job")
SUBMIT_ONLY = "--submit-only"
RECORD_SLURM_JOBS = "PCALM_SLURM_JOBS"  # set by experiments/sweep.py: where to record job ids
SWEEP_PID = "PCALM_SWEEP_PID"  # set by experiments/sweep.py: `pid:start time` of the sweep
WATCH_EVERY_S = 1.0


def _alive(identity: str) -> bool:
    """Whether the process `pid:start time` (experiments/sweep.py's process_identity) lives.

    A zombie is dead: a sweep killed by SIGKILL stays one until its parent reaps it, which a
    parent blocked reading the sweep's output (and so ours, inherited) never does."""
    pid, _, start = identity.partition(":")
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError):
            return True
        return True
    fields = stat.rsplit(")", 1)[1].split()  # fields[0]: state; fields[19]: start time
    return fields[0] not in ("Z", "X") and (not start or fields[19] == start)


def stop_with_the_sweep() -> None:
    """A local job (not under SLURM, where SIGTERM means preemption and submitit requeues):
    SIGTERM stops it like Ctrl-C (submitit would ignore it), and it stops itself when the
    sweep that launched it is gone, however that died. Finished runs stay; the interrupted
    one resumes from its checkpoint on the next sweep."""
    if os.environ.get("SLURM_JOB_ID"):
        return

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    identity = os.environ.get(SWEEP_PID)
    if not identity:
        return

    def watch() -> None:
        while _alive(identity):
            time.sleep(WATCH_EVERY_S)
        log.info("the sweep that launched this job is gone: stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-sweep", daemon=True).start()


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


def run_job(manifest_path: str, index: int) -> None:
    """Train every run of job `index`; a failing run does not stop the others."""
    from pcalm.config import Cell
    from pcalm.device import resolve_device
    from pcalm.runner import execute
    from pcalm.sweep import stack_size, stack_units

    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    job = manifest["jobs"][index]
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
            set_threads(unit[0]["train"]["threads"] or threads)  # a run's own setting wins
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


@hydra.main(config_path=str(CONFIG_DIR), config_name="job", version_base="1.3")
def main(cfg: DictConfig) -> None:
    stop_with_the_sweep()
    run_job(cfg.manifest, int(cfg.job))


def submit_only() -> None:
    """Let this (the submitting) process treat SLURM jobs as done once they are submitted.

    hydra-submitit-launcher submits the array, then waits on `job.results()` of each job; here
    that returns a completed placeholder at once. The jobs themselves are untouched: they run
    on the cluster and write their run folders; re-running the sweep reports on them.
    """
    from hydra.core.utils import JobReturn, JobStatus
    from submitit.slurm.slurm import SlurmJob

    def submitted(job: SlurmJob) -> list[JobReturn]:
        if not job.job_id.partition("_")[2].strip("0"):  # say it once per array
            log.info(f"submitted SLURM job {job.job_id.split('_')[0]}; not waiting for it")
        return [JobReturn(status=JobStatus.COMPLETED)]

    SlurmJob.results = submitted


def record_slurm_jobs(path: str) -> None:
    """In the submitting process: write which SLURM job got which manifest job to `path`
    (JSON {job id: job index}, merged over Hydra's batches), so that pcalm/slurm.py can tell
    a later sweep which runs are still queued. The jobs themselves are untouched."""
    import submitit

    submit = submitit.AutoExecutor.map_array

    def map_array(self, fn, *iterables):
        jobs = submit(self, fn, *iterables)
        if self.cluster == "slurm":  # iterables[0]: each Hydra job's overrides, with job=K
            indices = [next(int(o.split("=", 1)[1]) for o in overrides if o.startswith("job="))
                       for overrides in iterables[0]]
            merge_json(Path(path), {job.job_id: k for job, k in zip(jobs, indices)})
        return jobs

    submitit.AutoExecutor.map_array = map_array


def merge_json(path: Path, entries: dict) -> None:
    """path ← its JSON object updated with `entries`, replaced atomically."""
    import tempfile

    current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    current.update(entries)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(current, f, indent=1)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as any file the user makes (mkstemp's is 0600)
    os.replace(tmp, path)


if __name__ == "__main__":
    if os.environ.get(RECORD_SLURM_JOBS):
        record_slurm_jobs(os.environ[RECORD_SLURM_JOBS])
    if SUBMIT_ONLY in sys.argv:
        sys.argv.remove(SUBMIT_ONLY)
        submit_only()
    main()
