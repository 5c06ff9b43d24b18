"""What SLURM still holds of earlier sweeps, so that a re-run does not submit it again.

When experiments/sweep.py submits to SLURM, the submitting process (experiments/run_job.py)
records which SLURM job got which job of the sweep's manifest, in
``<results_dir>/sweeps/<name>/slurm_jobs.json`` ({SLURM job id: manifest job index}; an array
task's id is ``<array>_<task>``). A job that ``squeue`` still lists (pending, running, or
requeued after a preemption) will train its runs: they are *in flight*, and the next sweep
skips them instead of training them twice.
"""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
from pathlib import Path

from pcalm.results import run_id

JOBS_FILE = "slurm_jobs.json"
SQUEUE_TIMEOUT_S = 60


class QueueUnknown(RuntimeError):
    """squeue exists here but did not answer."""


def live_jobs() -> set[str] | None:
    """Ids of this user's jobs in the queue, one per array task; None where there is no
    squeue (not a SLURM machine: nothing can be in flight from here)."""
    exe = shutil.which("squeue")
    if exe is None:
        return None
    command = [exe, "--noheader", "--array", "--format=%i", f"--user={getpass.getuser()}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise QueueUnknown(f"squeue failed: {err}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise QueueUnknown(f"squeue failed (exit status {done.returncode}): {last}")
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def in_flight_runs(results_dir: Path, live: set[str]) -> dict[str, str]:
    """Run id → the live SLURM job that will train it, over every sweep recorded here."""
    owners: dict[str, str] = {}
    if not live:
        return owners
    for record in sorted(Path(results_dir).glob(f"sweeps/*/{JOBS_FILE}")):
        try:
            jobs = json.loads(record.read_text(encoding="utf-8"))
            live_here = {job: int(index) for job, index in jobs.items() if job in live}
            manifest = json.loads((record.parent / "manifest.json").read_text(encoding="utf-8"))
            for job, index in live_here.items():
                for cfg in manifest["jobs"][index]["runs"]:
                    owners[run_id(cfg)] = job
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            continue  # a record or manifest from an older version, or half-deleted by hand
    return owners


def describe(job_ids: set[str], limit: int = 4) -> str:
    """`4242_0, 4242_1, 4242_2 and 3 more` for messages."""
    ordered = sorted(job_ids)
    head = ", ".join(ordered[:limit])
    return head + (f" and {len(ordered) - limit} more" if len(ordered) > limit else "")
