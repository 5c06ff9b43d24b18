"""A sweep's plan: which runs are missing, the jobs they go into, their manifest; and, once
the jobs are done, what they left behind.

    sweep = load_sweep(overrides)                      grid.py: the grid, every cell validated
    launcher = make_launcher(sweep, wait)              launchers.py: the kind is a class
    work = plan(sweep, launcher)                       here: missing runs → balanced jobs
    write_manifest(path, work)                         what each job trains
    rc = launcher.launch(name, path, len(work.jobs), work.pending)
    report(work, launcher, rc, name)

Runs already complete are skipped, and so are runs a queued SLURM job of an earlier sweep will
train. The rest are split into jobs of balanced cost (longest processing time first), runs
that train as one stack (pcalm.runs.build.stack_units) kept in one job.
"""

from __future__ import annotations

import heapq
import json
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pcalm.atomic import atomic_write_json
from pcalm.core.device import run_threads
from pcalm.runs.build import stack_size, stack_units
from pcalm.runs.folder import RunFolder, check_results_dir, inside
from pcalm.runs.runner import load_run_dataset
from pcalm.runs.tasks.registry import TASKS
from pcalm.sweeps import slurm
from pcalm.sweeps.cost import describe_seconds
from pcalm.sweeps.grid import Sweep
from pcalm.sweeps.job import DISK_FULL
from pcalm.sweeps.launchers import Launcher

# Training-set sizes of the full splits, for the cost estimate only.
FULL_TRAIN_SIZE = {"mnist": 60000, "fashion_mnist": 60000, "synthetic": 6000}
INPUT_DIM, OUTPUT_DIM = 784, 10


@dataclass
class Plan:
    """What a sweep will train, and how."""

    sweep: Sweep
    results_dir: Path
    device: str  # where the jobs train (cpu | cuda): how many runs a stack holds
    queued: dict[str, str]  # run id → the SLURM job of an earlier sweep that will train it
    waiting: dict[str, str]  # of those, the runs still incomplete
    pending: list[dict]  # the runs to train: missing and not queued
    jobs: list[list[dict]]  # the pending runs, in jobs
    threads: int | None = None  # torch threads of each job (local: cores // jobs)
    gpus: int = 0  # local GPUs the jobs share, job k the (k mod gpus)-th; 0: none
    projected: list[float] | None = field(default=None)  # each job's wall time (s), if known


def plan(sweep: Sweep, launcher: Launcher) -> Plan:
    """The runs still missing and not queued in SLURM, and the jobs they go into (runs that
    will train as one stack on the jobs' device stay in one job). ValueError (one line) for
    a results folder, launcher setting or data set that cannot work, before anything runs."""
    results_dir = check_results_dir(sweep.configs[0]["results_dir"])
    launcher.prepare(results_dir, sweep_name(sweep, results_dir, claim=False))  # claimed later
    device = planning_device(sweep.configs, launcher.gpus)
    queued = launcher.in_flight()
    pending = [c for c in sweep.configs
               if not is_complete(c) and RunFolder(c["results_dir"], c).id not in queued]
    stack = stack_size(sweep.settings["max_stack"], device)
    jobs = plan_jobs(pending, launcher.job_count(len(pending), device), stack) if pending else []
    check_data(pending)
    return Plan(sweep, results_dir, device, queued, waiting_on(sweep.configs, queued), pending,
                jobs, launcher.threads(len(jobs)) if jobs else None,
                launcher.gpus_to_share(device))


def is_complete(cfg: dict) -> bool:
    return RunFolder(cfg["results_dir"], cfg).exists_complete()


def is_diverged(cfg: dict) -> bool:
    """A finished run that diverged: it counts as done, never as a valid result."""
    path = RunFolder(cfg["results_dir"], cfg).summary_path
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("status") == "diverged"
    except (OSError, ValueError, AttributeError):
        return False


def waiting_on(configs: list[dict], queued: dict[str, str]) -> dict[str, str]:
    """Of these runs, the incomplete ones a queued SLURM job will train: run id → job id."""
    folders = (RunFolder(c["results_dir"], c) for c in configs)
    return {f.id: queued[f.id] for f in folders if f.id in queued and not f.exists_complete()}


def planning_device(configs: list[dict], jobs_have_gpu: int) -> str:
    """Where the jobs will train (cpu | cuda), for `sweep.max_stack=auto` when grouping runs."""
    cpu_only = all(c["train"]["device"] == "cpu" for c in configs)
    return "cuda" if jobs_have_gpu and not cpu_only else "cpu"


def check_data(configs: list[dict]) -> None:
    """Load each dataset the pending runs need once, so a missing file (or a batch larger
    than the training set) fails now, not in the jobs."""
    sizes = {}
    for cfg in configs:
        if not TASKS[cfg["task"]["name"]].needs_data:
            continue
        d = cfg["data"]
        key = (d["name"], d["root"], d["train_size"], d["test_size"])
        if key not in sizes:
            sizes[key] = len(load_run_dataset(cfg).x_train)
        batch = cfg["train"]["batch_size"]
        if cfg["task"]["name"] == "train" and batch > sizes[key]:
            raise ValueError(f"bad value train.batch_size={batch}: allowed: at most the "
                             f"{sizes[key]} training samples of {d['name']} (one batch per step)")


# --------------------------------------------------------------------------- jobs


def weight_count(model: dict) -> int:
    """D·N + N²·(L−2) + N·C: the weights of a run's net."""
    n, depth = model["width"], model["depth"]
    return INPUT_DIM * n + n * n * max(depth - 2, 0) + n * OUTPUT_DIM


def run_cost(cfg: dict) -> float:
    """Relative cost of a run: weights touched per pass × passes per step × steps.

    ~ (D·N + N²·(L−2) + N·C) · (T·k + 1) · steps, with T = 0 for BP (one forward/backward).
    """
    m, a, t, d = cfg["model"], cfg["algo"], cfg["train"], cfg["data"]
    weights = weight_count(m)
    if cfg.get("task", {}).get("name", "train") != "train":
        return float(weights)
    passes = a.get("budget", 0) * a.get("inner_steps", 1) + 1
    size = d.get("train_size") or FULL_TRAIN_SIZE.get(d["name"], 60000)
    steps = max(size // t["batch_size"], 1) * t["epochs"]
    return float(weights * passes * steps)


def plan_jobs(configs: list[dict], n_jobs: int, max_stack: int | str = 1) -> list[list[dict]]:
    """Split runs into at most `n_jobs` jobs of balanced cost (longest processing time first).

    Stack-mates stay in one job. Every run lands in exactly one job; empty jobs are dropped.
    """
    units = stack_units(configs, max_stack)
    units.sort(key=lambda u: -sum(run_cost(c) for c in u))
    heap = [(0.0, j) for j in range(max(1, n_jobs))]
    jobs: list[list[dict]] = [[] for _ in heap]
    for unit in units:  # give the next-largest unit to the least-loaded job
        load, j = heapq.heappop(heap)
        jobs[j].extend(unit)
        heapq.heappush(heap, (load + sum(run_cost(c) for c in unit), j))
    return [job for job in jobs if job]


def projection(work: Plan, launcher: Launcher) -> list[float] | None:
    """Projected wall time of each job (s), printed with the plan; None if unknown.

    Each job: its start-up, then its stacks one after another, on the launcher's cost model
    (pcalm.sweeps.cost); the line says whose model it is."""
    models: dict = {}  # thread count → cost model, each calibrated (or loaded) once

    def model_for(cfg: dict):
        threads = run_threads(cfg, work.threads)  # what the job will give this run
        if threads not in models:
            models[threads] = launcher.cost_model(work.device, threads)
        return models[threads]

    stack = stack_size(work.sweep.settings["max_stack"], work.device)
    seconds = []
    for job in work.jobs:
        units = stack_units(job, stack)
        priced = [(model_for(unit[0]), unit) for unit in units]
        if any(model is None for model, _ in priced):
            return None
        seconds.append(priced[0][0].startup[0] + sum(m.stack_seconds(u) for m, u in priced))
    used = sorted({m.threads for m in models.values()})
    device = next(iter(models.values())).device
    where = f"{device}, {'/'.join(map(str, used))} thread{'s' * (used != [1])} per run"
    print(f"projected wall time: {launcher.wall_time(seconds)} ({len(work.jobs)} jobs "
          f"{launcher.order}, {describe_seconds(sum(seconds))} of job time in all; "
          f"{where}{launcher.cost_note})", flush=True)
    return seconds


# ------------------------------------------------------------------ the sweep's folder


ROOM_MARGIN = 16 * 2**20  # bytes beyond the largest checkpoint: configs, metrics, logs


def room_needed(configs: list[dict]) -> int:
    """Bytes a sweep needs free at least: its largest run's checkpoint (the weights and Adam's
    two moments, in the run's dtype) plus ROOM_MARGIN for its small files."""
    def checkpoint(cfg: dict) -> int:
        if cfg["task"]["name"] != "train":
            return 0
        return 3 * weight_count(cfg["model"]) * (8 if cfg["train"].get("dtype") == "float64"
                                                  else 4)

    return max((checkpoint(c) for c in configs), default=0) + ROOM_MARGIN


def free_space(results_dir: Path) -> int:
    """Bytes free on the disk of `results_dir` (of its nearest existing parent if not made yet)."""
    existing = Path(results_dir).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def check_room(results_dir: Path, configs: list[dict]) -> None:
    """Refuse, in one line, a sweep whose results folder's disk is too full for even one of
    its runs (else it fails later, mid-write, in every job)."""
    free, need = free_space(results_dir), room_needed(configs)
    if free < need:
        raise ValueError(f"not enough room in {results_dir}: {free / 2**20:.1f} MB free, a run "
                         f"of this sweep needs about {need / 2**20:.0f} MB (its checkpoint and "
                         "files); allowed: free some space there, or results_dir= on a disk "
                         "with room")


def sweep_name(sweep: Sweep, results_dir: Path, claim: bool = True) -> str:
    """`<experiment>-<scale>-<time>[-n]`, its folder <results_dir>/sweeps/<name> made by this
    call (`claim`): mkdir fails if the folder exists, so two sweeps started in the same second
    get two folders. Without `claim` (--dry-run): the name a sweep would get now."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name, n = f"{sweep.label}-{stamp}", 1
    while True:
        folder = inside(results_dir, "sweeps", name)
        if not claim and not folder.exists():
            return name
        if claim:
            folder.parent.mkdir(parents=True, exist_ok=True)
            try:
                folder.mkdir()
                return name
            except FileExistsError:
                pass
        n += 1
        name = f"{sweep.label}-{stamp}-{n}"


def write_manifest(path: Path, work: Plan) -> None:
    """The sweep's manifest.json: each job's resolved run configs, torch threads, projected
    wall time (s), to check the cost model against what the job then takes, and, for local
    jobs on a machine with GPUs, which of them the job uses (`gpu`: an index among those the
    job sees; pcalm.sweeps.job hides the others)."""
    sweep, projected = work.sweep, work.projected
    atomic_write_json(path, {
        "experiment": sweep.name, "scale": sweep.scale, "launcher": sweep.settings["launcher"],
        "created": datetime.now().isoformat(timespec="seconds"),
        "max_stack": sweep.settings["max_stack"],
        "jobs": [{"threads": work.threads, "projected_s": projected[i] if projected else None,
                  "gpu": i % work.gpus if work.gpus else None, "runs": job}
                 for i, job in enumerate(work.jobs)],
    })


def discard_sweep(results_dir: Path, name: str) -> None:
    """Remove what a sweep that submitted nothing left: its folder (manifest) and logs."""
    for folder in (inside(results_dir, "sweeps", name), inside(results_dir, "submitit", name)):
        shutil.rmtree(folder, ignore_errors=True)


def drop_empty_files(results_dir: Path, name: str) -> None:
    """Remove the empty files a full disk left in a sweep's folders (Hydra's configs and
    logs, submitit's pickles, cut at their first write): none of them may look written."""
    for folder in (inside(results_dir, "sweeps", name), inside(results_dir, "submitit", name)):
        for path in sorted(folder.rglob("*")) if folder.is_dir() else ():
            if path.is_file() and not path.is_symlink() and path.stat().st_size == 0:
                path.unlink(missing_ok=True)


# ----------------------------------------------------------------------- what it says


def plural(n: int, word: str) -> str:
    return word if n == 1 else f"{word}s"


def headline(work: Plan) -> str:
    """The plan in one line: runs, skipped, to run, in how many jobs, on which launcher."""
    n, sweep, waiting = len(work.sweep.configs), work.sweep, work.waiting
    in_slurm = f", {len(waiting)} in queued or running SLURM jobs (skipped)" if waiting else ""
    return (f"{sweep.name} ({sweep.scale}): {n} {plural(n, 'run')}, "
            f"{n - len(work.pending) - len(waiting)} already complete (skipped)"
            f"{in_slurm}, {len(work.pending)} to run in {len(work.jobs)} "
            f"{plural(len(work.jobs), 'job')} on {sweep.settings['launcher']}")


def job_lines(work: Plan) -> list[str]:
    """--dry-run: each job's runs and projected time."""
    return [f"  job {i}: {len(job)} {plural(len(job), 'run')}"
            + (f", projected {describe_seconds(work.projected[i])}" if work.projected else "")
            for i, job in enumerate(work.jobs)]


def still_queued(work: Plan, wait: bool) -> int:
    """Nothing to launch: 0 if all is complete; else say which SLURM jobs the missing runs
    wait for (exit status 1 when asked to wait: a figure must not be drawn from half a grid)."""
    if not work.waiting:
        return 0
    print(f"{len(work.waiting)} runs wait for SLURM jobs "
          f"{slurm.describe(set(work.waiting.values()))} of an earlier sweep: re-run the same "
          "command when they are done (or scancel them to submit their runs again)",
          file=sys.stderr if wait else sys.stdout)
    return 1 if wait else 0


def took_line(seconds: float, projected_s: float) -> str:
    """The sweep's wall time beside its projection, so the cost model is checked every time."""
    ratio = f", {seconds / projected_s:.2f}x" if projected_s > 0 else ""
    return (f"took {describe_seconds(seconds)} (projected {describe_seconds(projected_s)}"
            f"{ratio}; a busy machine or a model calibrated on a busy one moves this: "
            "`make bench` recalibrates)")


def report(work: Plan, rc: int, name: str, waited: bool) -> int:
    """What the jobs left behind: complete runs, missing ones, where to look; the exit status
    (1 if runs are missing)."""
    configs, results_dir = work.sweep.configs, work.results_dir
    logs = f"{results_dir / 'submitit' / name} and {results_dir / 'sweeps' / name}"
    if not waited and rc == 0:
        print(f"submitted; job logs: {logs}. Re-run the same command to see what is complete "
              "(it trains only what is missing and not already queued).")
        return 0
    done = sum(map(is_complete, configs))
    missing = len(configs) - done
    diverged = sum(map(is_diverged, configs))
    note = f" ({diverged} of them diverged: not valid results)" if diverged else ""
    print(f"done: {done} complete{note}, {missing} missing", flush=True)
    free = free_space(results_dir) if missing or rc != 0 else 0
    if (missing or rc != 0) and (rc == DISK_FULL or free < room_needed(work.pending)):
        drop_empty_files(results_dir, name)
        print(f"error: {missing} runs missing: the disk of {results_dir} filled during the "
              f"sweep ({free / 2**20:.1f} MB free); finished runs are kept: "
              "free some space, or set results_dir= to a disk with room, and run the same "
              "command again", file=sys.stderr)
        return 1
    if missing or rc != 0:
        elsewhere = waiting_on(configs, work.queued)
        jobs = set(elsewhere.values())
        note = (f", {len(elsewhere)} of them wait for SLURM jobs {slurm.describe(jobs)} of an "
                "earlier sweep" if elsewhere else "")
        print(f"error: {missing} runs missing{note} (launcher exit status {rc}); job logs: "
              f"{logs}", file=sys.stderr)
        return 1
    return 0
