"""What SLURM still holds of earlier sweeps, so that a re-run does not submit it again.

When experiments/sweep.py submits to SLURM, the submitting process (experiments/run_job.py)
records which SLURM job got which job of the sweep's manifest, in
``<results_dir>/sweeps/<name>/slurm_jobs.json`` ({SLURM job id: {"job": manifest job index,
"name": the job's name}}; an array task's id is ``<array>_<task>``, the name is
``pcalm-<sweep name>``). A job that ``squeue`` still lists under that id *and* name (pending,
running, or requeued after a preemption) will train its runs: they are *in flight*, and the
next sweep skips them instead of training them twice.
"""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
from pathlib import Path

from pcalm.atomic import atomic_write_json
from pcalm.runs.folder import run_id

JOBS_FILE = "slurm_jobs.json"
SQUEUE_TIMEOUT_S = 60


class QueueUnknown(RuntimeError):
    """squeue exists here but did not answer."""


def queued_jobs(name: str | None = None) -> dict[str, dict[str, str]] | None:
    """This user's jobs in the queue (of job name `name`, if given), one per array task:
    id → {name, state, reason}; None where there is no squeue (not a SLURM machine: nothing
    can be in flight from here)."""
    exe = shutil.which("squeue")
    if exe is None:
        return None
    command = [exe, "--noheader", "--array", "--format=%i|%T|%r|%j",
               f"--user={getpass.getuser()}", *([f"--name={name}"] if name else [])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise QueueUnknown(f"squeue failed: {err}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise QueueUnknown(f"squeue failed (exit status {done.returncode}): {last}")
    jobs = {}
    for line in done.stdout.splitlines():
        job_id, state, reason, job_name = (line.strip().split("|", 3) + ["", "", ""])[:4]
        if job_id:
            jobs[job_id] = {"name": job_name, "state": state, "reason": reason}
    return jobs


def record_jobs(path: Path, indices: dict[str, int], name: str) -> None:
    """Add `indices` ({SLURM job id: manifest job index}) of jobs named `name` to the record
    at `path`. The name is what makes a queued job ours: ids repeat after a cluster is reset,
    and on two clusters sharing one results folder."""
    current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    current.update({job_id: {"job": k, "name": name} for job_id, k in indices.items()})
    atomic_write_json(path, current)


def in_flight_runs(results_dir: Path, live: dict[str, dict[str, str]]) -> dict[str, str]:
    """Run id → the live SLURM job that will train it, over every sweep recorded here: a
    recorded job counts only if squeue lists its id under its recorded name."""
    owners: dict[str, str] = {}
    if not live:
        return owners
    for record in sorted(Path(results_dir).glob(f"sweeps/*/{JOBS_FILE}")):
        try:
            jobs = json.loads(record.read_text(encoding="utf-8"))
            live_here = {job: int(entry["job"]) for job, entry in jobs.items()
                         if job in live and live[job]["name"] == entry["name"]}
            manifest = json.loads((record.parent / "manifest.json").read_text(encoding="utf-8"))
            for job, index in live_here.items():
                for cfg in manifest["jobs"][index]["runs"]:
                    owners[run_id(cfg)] = job
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            continue  # a record or manifest from an older version, or half-deleted by hand
    return owners


def final_state(job_id: str) -> str:
    """How a job that left the queue ended, as sacct tells it (where there is sacct)."""
    exe = shutil.which("sacct")
    if exe is None:
        return "no sacct here to say how it ended"
    try:
        done = subprocess.run([exe, "--noheader", "--parsable2", "--allocations",
                               "--format=State", f"--jobs={job_id}"],
                              capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return "sacct did not answer"
    states = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return f"state {states[-1]}" if done.returncode == 0 and states else "sacct knows nothing"


def describe(job_ids: set[str], limit: int = 4) -> str:
    """`4242_0, 4242_1, 4242_2 and 3 more` for messages."""
    ordered = sorted(job_ids)
    head = ", ".join(ordered[:limit])
    return head + (f" and {len(ordered) - limit} more" if len(ordered) > limit else "")


# What a SLURM job asks for when the launcher config leaves it open (null).
DEFAULT_CPUS = 4
DEFAULT_MEM_GB = 16


SUBMISSION_COMMANDS = ("sbatch", "srun")  # submitit needs both where it submits


def check_submission_commands() -> None:
    """A one-line error, before anything is planned, where SLURM's commands are missing."""
    missing = [name for name in SUBMISSION_COMMANDS if shutil.which(name) is None]
    if missing:
        raise ValueError(f"bad value sweep.launcher=slurm: {' and '.join(missing)} not found "
                         "on PATH: run the sweep on a SLURM login node, or use "
                         "sweep.launcher=local")


def partitions() -> dict[str, dict] | None:
    """What `sinfo` says of each partition: its largest node's CPUs and memory (MB), whether
    a node has GPUs (gpu gres), and whether it is the default. None without an answer."""
    exe = shutil.which("sinfo")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "--noheader", "--format=%P|%c|%m|%G"], capture_output=True,
                              text=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    found: dict[str, dict] = {}
    for line in done.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4:
            continue
        name, cpus, mem, gres = fields
        part = found.setdefault(name.rstrip("*"), {"cpus": 0, "mem_mb": 0, "gpus": False,
                                                   "default": name.endswith("*")})
        part["cpus"] = max(part["cpus"], _number(cpus))
        part["mem_mb"] = max(part["mem_mb"], _number(mem))
        part["gpus"] = part["gpus"] or "gpu" in gres
    return found


def _number(text: str) -> int:
    digits = text.rstrip("+").strip()  # sinfo writes `2+` for a mix of node sizes
    return int(digits) if digits.isdigit() else 0


def job_request(launcher: dict, devices: set[str], info: dict[str, dict] | None
                ) -> tuple[dict[str, int | None], str]:
    """What each job of a sweep asks SLURM for, and a line that says so.

    `launcher`: the composed hydra.launcher config; `devices`: the runs' train.device values.
    A key the user left null is chosen here: a GPU only when the runs are meant for one
    (train.device=cuda, or auto on a partition with GPUs), DEFAULT_CPUS CPUs and
    DEFAULT_MEM_GB GB, both capped by the partition's largest node. A value the partition
    cannot give fails here, in one line, rather than pend forever in the queue.
    """
    name = launcher.get("partition")
    if info and name and name not in info:
        raise ValueError(f"bad value hydra.launcher.partition={name}: allowed: "
                         f"{', '.join(sorted(info))} (sinfo)")
    if info and not name:
        name = next((k for k, p in info.items() if p["default"]), None)
    part = info.get(name) if info and name else None
    where = f"partition {name or '(the default)'}"
    gpus = _gpus(launcher, devices, part, where)
    cpus = _capped(launcher, "cpus_per_task", DEFAULT_CPUS, part and part["cpus"], where, "CPUs")
    node_gb = part["mem_mb"] // 1024 if part and part["mem_mb"] else None
    share = node_gb and max(1, node_gb * cpus // max(part["cpus"], 1))
    mem = _capped(launcher, "mem_gb", min(DEFAULT_MEM_GB, share or DEFAULT_MEM_GB), node_gb,
                  where, "GB of memory")
    gpu_text = f"{gpus} GPU" if gpus else (f"gres {launcher['gres']}" if launcher.get("gres")
                                           else "no GPU")
    known = "" if part else " (sinfo did not answer: not checked against the nodes)"
    line = f"each job asks SLURM for {cpus} CPUs, {mem} GB, {gpu_text}, on {where}{known}"
    return {"cpus_per_task": cpus, "mem_gb": mem, "gpus_per_node": gpus}, line


def _gpus(launcher: dict, devices: set[str], part: dict | None, where: str) -> int | None:
    asked = launcher.get("gpus_per_node")
    has = part["gpus"] if part else None
    if has is False and (asked or launcher.get("gres")):
        key = "gpus_per_node" if asked else "gres"
        raise ValueError(f"bad value hydra.launcher.{key}={asked or launcher['gres']}: {where} "
                         "has no GPUs (sinfo lists no gpu gres): allowed: null, or a GPU "
                         "partition (hydra.launcher.partition=...)")
    if has is False and "cuda" in devices:
        raise ValueError(f"bad value train.device=cuda: {where} has no GPUs: allowed: cpu or "
                         "auto, or a GPU partition (hydra.launcher.partition=...)")
    if asked is not None or launcher.get("gres"):
        return asked
    meant = "cuda" in devices or ("auto" in devices and bool(has))
    return 1 if meant else None


def _capped(launcher: dict, key: str, default: int, most: int | None, where: str,
            what: str) -> int:
    value = launcher.get(key)
    if value is None:
        return min(default, most) if most else default
    if most and int(value) > most:
        raise ValueError(f"bad value hydra.launcher.{key}={value}: allowed: at most {most}, "
                         f"the {what} of the largest node of {where} (sinfo)")
    return int(value)
