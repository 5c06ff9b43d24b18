"""One sweep job: train its share of a sweep's runs, listed in the sweep's manifest.

experiments/sweep.py launches this as a Hydra multirun over the job index (configs/job.yaml,
hydra/launcher=local|slurm|basic; SLURM: pcalm/sweeps/submitit_launcher.py). A job skips
runs already complete and resumes an interrupted run from its checkpoint, so a requeued job (SLURM
preemption or time limit: submitit calls the launcher's `checkpoint`, which resubmits the
same job) simply goes on.
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
REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "configs"
# Hydra finds launcher plugins by scanning sys.path for hydra_plugins/, and an editable
# install is not scanned: let it see this checkout's (hydra_plugins/pcalm_launcher).
sys.path.insert(1, str(REPO))
log = logging.getLogger("run_job")
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
    from pcalm.core.device import resolve_device, threads_for
    from pcalm.runs.config import Cell
    from pcalm.runs.runner import execute
    from pcalm.sweeps.grid import stack_size, stack_units

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
            set_threads(unit[0]["train"]["threads"]
                        or (threads and threads_for(unit[0], threads)))
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


if __name__ == "__main__":
    main()
