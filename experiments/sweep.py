"""Run an experiment's sweep: what is missing, grouped into jobs, on a launcher.

    python experiments/sweep.py experiment=figure2 scale=smoke sweep.launcher=local
    python experiments/sweep.py experiment=figure2 scale=paper sweep.launcher=slurm \\
        hydra.launcher.partition=gpu hydra.launcher.timeout_min=120 --no-wait

The make targets run it: `make sweep EXP=figure2 SCALE=smoke LAUNCHER=local ARGS='...'`, and
`make figure2` (sweep, collect, plot); `make help` lists them all.

Any config key is an override; `key=a,b` sets a grid axis, `key=a` pins one (pcalm/sweeps/grid.py).
`hydra.launcher.*` overrides go to the launcher (configs/hydra/launcher/). Every run is
validated before anything is launched. Runs already complete are skipped; if none is
missing, nothing is launched. --dry-run stops after the plan; --no-wait (SLURM) returns once
the jobs are submitted. Exit status: 0 all complete (or submitted), 1 runs missing, 2 bad input.

As with Hydra apps: `-m`/`--multirun` is accepted (a sweep always runs the whole grid);
`--cfg job` (or `-c job`) prints the grid and the first run's resolved config and stops;
tab completion of keys and groups is run.py's (the same @hydra.main config):
`eval "$(python experiments/sweep.py -sc install=bash)"`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from pcalm.atomic import atomic_write_json
from pcalm.cli import REPO, compose, exit_with, interrupted
from pcalm.data import DataError
from pcalm.runs import provenance
from pcalm.runs.eta import EtaTableError
from pcalm.runs.folder import RunFolder, check_results_dir, inside
from pcalm.runs.runner import load_run_dataset
from pcalm.runs.tasks.registry import TASKS
from pcalm.sweeps import slurm
from pcalm.sweeps import submitit_launcher as launcher_api
from pcalm.sweeps.cost import describe_seconds
from pcalm.sweeps.grid import (
    Sweep,
    job_count,
    load_sweep,
    plan_jobs,
    stack_size,
    stack_units,
)

RUN_JOB = REPO / "experiments" / "run_job.py"
FLAGS = ("--dry-run", "--no-wait")
PROGRESS_EVERY_S = 30.0
SWEEP_PID = "PCALM_SWEEP_PID"  # local jobs stop when this process (pid:start time) is gone
STOP_GRACE_S = 5.0  # after SIGTERM, how long the group gets before SIGKILL: workers stop within a
# step (their SIGTERM handler); whatever outlives that is killed, which loses nothing (every write
# is atomic, the run resumes from its last checkpoint)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def split_args(argv: list[str]) -> tuple[set[str], list[str]]:
    if any(a in ("-h", "--help") for a in argv):  # usage: this module's docstring
        print(__doc__.strip())
        raise SystemExit(0)
    argv = [a for a in argv if a not in ("-m", "--multirun")]  # a sweep is always a multirun
    flags = {a for a in argv if a.startswith("-")}
    unknown = sorted(flags - set(FLAGS))
    if unknown:
        exit_with(ValueError(f"unknown flag {unknown[0]}: allowed: {', '.join(FLAGS)}, -m, "
                             "--cfg job, -sc install=bash"))
    return flags, [a for a in argv if not a.startswith("-")]


def completion(argv: list[str]) -> int:
    """`-sc ...`: Hydra's shell completion of run.py (the same config tree), for this script."""
    env = dict(os.environ)
    if "COMP_LINE" in env:
        env["COMP_LINE"] = env["COMP_LINE"].replace("sweep.py", "run.py", 1)
    out = subprocess.run([sys.executable, str(REPO / "experiments" / "run.py"), *argv],
                         env=env, capture_output=True, text=True)
    text = out.stdout
    if any(a.startswith("install=") or a.startswith("uninstall=") for a in argv):
        text = text.replace("experiments/run.py", "experiments/sweep.py").replace(
            "run.py", "sweep.py")
    sys.stdout.write(text)
    sys.stderr.write(out.stderr)
    return out.returncode


def show_config(overrides: list[str]) -> int:
    """`--cfg job`: the expanded grid and the first run's resolved config, as YAML."""
    import yaml

    try:
        sweep = load_sweep(overrides)
    except (ValueError, EtaTableError) as err:
        exit_with(err)
    axes = {}
    for cfg in sweep.configs:
        for key in ("algo.name", "model.activation", "model.width", "model.depth",
                    "train.seed"):
            section, leaf = key.split(".")
            axes.setdefault(key, [])
            if cfg[section][leaf] not in axes[key]:
                axes[key].append(cfg[section][leaf])
    print(f"# {sweep.label}: {len(sweep.configs)} {plural(len(sweep.configs), 'run')}; "
          "the values each key takes:")
    print(yaml.safe_dump({"grid": axes}, sort_keys=False).rstrip())
    print("# the first run:")
    print(yaml.safe_dump(sweep.configs[0], sort_keys=False).rstrip())
    return 0


def plural(n: int, word: str) -> str:
    return word if n == 1 else f"{word}s"


def is_complete(cfg: dict) -> bool:
    return RunFolder(cfg["results_dir"], cfg).exists_complete()


def is_diverged(cfg: dict) -> bool:
    """A finished run that diverged: it counts as done, never as a valid result."""
    path = RunFolder(cfg["results_dir"], cfg).summary_path
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("status") == "diverged"
    except (OSError, ValueError, AttributeError):
        return False


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


def launcher_overrides(sweep: Sweep, name: str, results_dir: Path) -> tuple[list[str], int, str]:
    """The multirun's launcher overrides, checked now by composing configs/job.yaml; how many
    GPUs its jobs will have (local: this machine's, each job gets one; SLURM: each job's);
    and for SLURM a line saying what each job asks for (checked against sinfo)."""
    launcher = sweep.settings["launcher"]
    overrides = [f"hydra/launcher={launcher}", quoted("results_dir", results_dir),
                 quoted("sweep_name", name), *sweep.hydra_overrides]
    given = {o.split("=", 1)[0].lstrip("+") for o in sweep.hydra_overrides}
    gpus, request = 0, ""
    if launcher == "local":
        import torch  # local jobs see no GPU unless told to: each gets one of this machine's

        gpus = torch.cuda.device_count() if "hydra.launcher.gpus_per_node" not in given else 0
        if gpus:
            overrides.append(f"hydra.launcher.gpus_per_node={gpus}")
    cfg = compose(overrides + ["manifest=x", "job=0"], config_name="job", with_hydra=True)
    if launcher == "slurm":
        from omegaconf import OmegaConf

        slurm.check_submission_commands()

        asked = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
        devices = {c["train"]["device"] for c in sweep.configs}
        resources, request = slurm.job_request(asked, devices, slurm.partitions())
        overrides += [f"hydra.launcher.{key}={'null' if value is None else value}"
                      for key, value in resources.items()]
        gpus = resources["gpus_per_node"] or (1 if asked.get("gres") else 0)
    elif launcher == "local" and "hydra.launcher.gpus_per_node" in given:
        gpus = cfg.hydra.launcher.get("gpus_per_node") or 0
    return overrides, gpus, request


def planning_device(configs: list[dict], jobs_have_gpu: int) -> str:
    """Where the jobs will train (cpu | cuda), for `sweep.max_stack=auto` when grouping runs."""
    cpu_only = all(c["train"]["device"] == "cpu" for c in configs)
    return "cuda" if jobs_have_gpu and not cpu_only else "cpu"


def local_slots(device: str, gpus: int) -> int:
    """How many local jobs the machine holds at once: one per GPU when the runs train on
    GPUs (each job gets its own: run_job.py), else one per core."""
    return gpus if device == "cuda" and gpus else cores()


def quoted(key: str, value) -> str:
    """`key='value'`: a path with spaces or commas stays one value for Hydra."""
    return f"{key}='{str(value).replace(chr(39), chr(92) + chr(39))}'"


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


def write_manifest(path: Path, sweep: Sweep, jobs: list[list[dict]], threads: int | None,
                   projected: list[float] | None = None, local_gpus: int = 0):
    """The sweep's manifest.json: each job's resolved run configs, torch threads, projected
    wall time (s), to check the cost model against what the job then takes, and, for local
    jobs on a machine with GPUs, which of them the job uses (`gpu`: an index among those the
    job sees; run_job.py hides the others)."""
    atomic_write_json(path, {
        "experiment": sweep.name, "scale": sweep.scale, "launcher": sweep.settings["launcher"],
        "created": datetime.now().isoformat(timespec="seconds"),
        "max_stack": sweep.settings["max_stack"],
        "jobs": [{"threads": threads, "projected_s": projected[i] if projected else None,
                  "gpu": i % local_gpus if local_gpus else None, "runs": job}
                 for i, job in enumerate(jobs)],
    })


def projection(sweep: Sweep, jobs: list[list[dict]], device: str, threads: int | None,
               results_dir: Path) -> list[float] | None:
    """Projected wall time of each job (s), printed with the plan; None if unknown.

    Local and basic jobs run here: the cost model of this device (pcalm.sweeps.cost; calibrated
    once, ~10 s, or by `make bench`). SLURM jobs run on nodes unknown here: a model stored by
    `make bench` on such a node (same device kind) is used, and the line says whose it is.
    """
    import torch

    from pcalm.sweeps import cost

    launcher = sweep.settings["launcher"]
    if launcher == "slurm":
        stored = cost.stored_models(results_dir, device)
        if not stored:
            print(f"projected time: unknown (no cost model of a {device} node: run `make bench` "
                  f"on one, with the results folder shared, to store it under {results_dir}/cost)")
            return None
        model = stored[0]
    else:
        threads = threads or torch.get_num_threads()
        model = cost.cached_or_calibrated(results_dir, device, threads)
    stack = stack_size(sweep.settings["max_stack"], device)
    seconds = [model.job_seconds(stack_units(job, stack)) for job in jobs]
    parallel = "in parallel" if launcher == "local" else "in order"
    where = f"{model.device}, {model.threads} thread{'s' * (model.threads > 1)} per job"
    if launcher == "slurm":
        where += ", cost model from " + "a stored `make bench`; cluster nodes may differ"
        total = f"longest job {describe_seconds(max(seconds))}"
    elif launcher == "local":
        total = describe_seconds(max(seconds))
    else:
        total = describe_seconds(sum(seconds))
    print(f"projected wall time: {total} ({len(jobs)} jobs {parallel}, "
          f"{describe_seconds(sum(seconds))} of job time in all; {where})", flush=True)
    return seconds


class Stopped(BaseException):
    """SIGTERM (e.g. from `timeout`): stop like Ctrl-C."""


def _raise_stopped(signum, frame):
    raise Stopped


def _die_with_parent() -> None:
    """In the launched multirun (Linux): SIGTERM it when this process dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def process_identity(pid: int) -> str:
    """`pid:start-time` (from /proc), so a recycled pid is not taken for this process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return str(pid)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the multirun's process group (the launcher, submitit's controllers and the
    jobs: they stop, keeping finished runs and checkpoints), then SIGKILL what is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def launch(command: list[str], pending: list[dict], env: dict[str, str]) -> int:
    """Run the multirun in its own process group; while it waits, say now and then how many
    runs are complete. Ctrl-C or SIGTERM here stops the whole group; a SIGKILL here stops the
    multirun (PR_SET_PDEATHSIG) and the local jobs (they watch this process: run_job.py)."""
    env = {**os.environ, **env, SWEEP_PID: process_identity(os.getpid())}
    proc = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True,
                            preexec_fn=_die_with_parent)
    last, next_report = 0, time.monotonic() + PROGRESS_EVERY_S
    try:
        while proc.poll() is None:
            time.sleep(1.0)
            if time.monotonic() >= next_report:
                done = sum(map(is_complete, pending))
                if done != last:
                    print(f"progress: {done} of {len(pending)} runs complete", flush=True)
                last, next_report = done, time.monotonic() + PROGRESS_EVERY_S
    except (KeyboardInterrupt, Stopped):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_group(proc)
        raise
    return proc.returncode


def in_flight(results_dir: Path, launcher: str) -> dict[str, str]:
    """Run id → the queued or running SLURM job (of an earlier sweep) that will train it.
    Only SLURM sweeps ask: a local sweep must not depend on SLURM being up (a run that a
    SLURM job trains meanwhile is not trained twice: each run trains under a lock)."""
    if launcher != "slurm":
        return {}
    try:
        live = slurm.queued_jobs()
    except slurm.QueueUnknown as err:
        print(f"warning: {err}; runs of queued SLURM jobs may be submitted again",
              file=sys.stderr)
        return {}
    return slurm.in_flight_runs(results_dir, live) if live else {}


def plan(sweep: Sweep, queued: dict[str, str], device: str, slots: int
         ) -> tuple[list[dict], list[list[dict]]]:
    """The runs still missing and not `queued` in SLURM, and the jobs they go into (seeds
    that will train as one stack on `device` stay in one job; local: at most `slots` jobs)."""
    s = sweep.settings
    pending = [c for c in sweep.configs
               if not is_complete(c) and RunFolder(c["results_dir"], c).id not in queued]
    n_jobs = job_count(s["launcher"], len(pending), s["runs_per_job"], s["local_jobs"], slots)
    stack = stack_size(s["max_stack"], device)
    return pending, plan_jobs(pending, n_jobs, stack) if pending else []


def waiting_on(configs: list[dict], queued: dict[str, str]) -> dict[str, str]:
    """Of these runs, the incomplete ones a queued SLURM job will train: run id → job id."""
    folders = (RunFolder(c["results_dir"], c) for c in configs)
    return {f.id: queued[f.id] for f in folders if f.id in queued and not f.exists_complete()}


def main(argv: list[str]) -> int:
    if any(a in ("-sc", "--shell-completion") for a in argv):
        return completion(argv)
    for flag in ("--cfg", "-c"):
        if flag in argv:
            i = argv.index(flag)
            argv = argv[:i] + argv[i + 2:]  # its value: job | all (both print the same here)
            return show_config(split_args(argv)[1])
    flags, overrides = split_args(argv)
    wait = "--no-wait" not in flags
    try:
        sweep = load_sweep(overrides)
        launcher = sweep.settings["launcher"]
        if not wait and launcher != "slurm":
            raise ValueError(f"--no-wait needs sweep.launcher=slurm, not {launcher}")
        results_dir = check_results_dir(sweep.configs[0]["results_dir"])
        name = sweep_name(sweep, results_dir, claim=False)  # claimed once there is a job
        hydra_args, gpus, request = launcher_overrides(sweep, name, results_dir)
        device = planning_device(sweep.configs, gpus)
        queued = in_flight(results_dir, launcher)
        pending, jobs = plan(sweep, queued, device, local_slots(device, gpus))
        check_data(pending)
    except (ValueError, DataError, EtaTableError) as err:
        exit_with(err)
    elsewhere = waiting_on(sweep.configs, queued)
    in_slurm = f", {len(elsewhere)} in queued or running SLURM jobs (skipped)" if elsewhere else ""
    n = len(sweep.configs)
    print(f"{sweep.name} ({sweep.scale}): {n} {plural(n, 'run')}, "
          f"{n - len(pending) - len(elsewhere)} already complete (skipped)"
          f"{in_slurm}, {len(pending)} to run in {len(jobs)} {plural(len(jobs), 'job')} on "
          f"{launcher}", flush=True)
    if not pending:
        return still_queued(elsewhere, wait and "--dry-run" not in flags)
    if request:
        print(request, flush=True)
    threads = max(1, cores() // len(jobs)) if launcher == "local" else None
    local_gpus = gpus if launcher == "local" and device == "cuda" else 0
    projected = projection(sweep, jobs, device, threads, results_dir)
    if "--dry-run" in flags:
        for i, job in enumerate(jobs):
            when = f", projected {describe_seconds(projected[i])}" if projected else ""
            print(f"  job {i}: {len(job)} {plural(len(job), 'run')}{when}")
        return 0
    claimed = sweep_name(sweep, results_dir)  # its own folder, even if another sweep
    hydra_args = [quoted("sweep_name", claimed) if a == quoted("sweep_name", name) else a
                  for a in hydra_args]  # started in the same second took `name`
    name = claimed
    manifest = results_dir / "sweeps" / name / "manifest.json"
    write_manifest(manifest, sweep, jobs, threads, projected, local_gpus)
    command = [sys.executable, str(RUN_JOB), "-m", *hydra_args, quoted("manifest", manifest),
               f"job=range(0,{len(jobs)})"]
    env = {provenance.COMMAND_ENV: provenance.command(),  # each run records the user's command
           provenance.SWEEP_ENV: name}  # and its sweep (folders, job logs)
    # submitit logs each line through its own stdout and stderr handlers and through Hydra's:
    # three copies in a job's log. Without its config, Hydra's handler prints it once.
    env["SUBMITIT_LOG_LEVEL"] = os.environ.get("SUBMITIT_LOG_LEVEL", "NOCONFIG")
    if launcher == "slurm":
        env[launcher_api.RECORD_JOBS] = str(manifest.parent / slurm.JOBS_FILE)
        if not wait:
            env[launcher_api.SUBMIT_ONLY] = "1"
    started = time.monotonic()
    rc = launch(command, pending, env)
    if rc == launcher_api.REFUSED:  # SLURM took nothing (the launcher said why in one line)
        discard_sweep(results_dir, name)
        return 2
    if wait and projected:
        print(took_line(time.monotonic() - started, max(projected)), flush=True)
    return report(sweep.configs, rc, name, results_dir, wait, queued)


def discard_sweep(results_dir: Path, name: str) -> None:
    """Remove what a sweep that submitted nothing left: its folder (manifest) and logs."""
    import shutil

    for folder in (inside(results_dir, "sweeps", name), inside(results_dir, "submitit", name)):
        shutil.rmtree(folder, ignore_errors=True)


def took_line(seconds: float, projected_s: float) -> str:
    """The sweep's wall time beside its projection, so the cost model is checked every time."""
    ratio = f", {seconds / projected_s:.2f}x" if projected_s > 0 else ""
    return (f"took {describe_seconds(seconds)} (projected {describe_seconds(projected_s)}"
            f"{ratio}; a busy machine or a model calibrated on a busy one moves this: "
            "`make bench` recalibrates)")


def still_queued(elsewhere: dict[str, str], wait: bool) -> int:
    """Nothing to launch: 0 if all is complete; else say which SLURM jobs the missing runs
    wait for (exit status 1 when asked to wait: a figure must not be drawn from half a grid)."""
    if not elsewhere:
        return 0
    print(f"{len(elsewhere)} runs wait for SLURM jobs {slurm.describe(set(elsewhere.values()))}"
          " of an earlier sweep: re-run the same command when they are done (or scancel them "
          "to submit their runs again)", file=sys.stderr if wait else sys.stdout)
    return 1 if wait else 0


def report(configs: list[dict], rc: int, name: str, results_dir: Path, waited: bool,
           queued: dict[str, str]) -> int:
    """What the jobs left behind: complete runs, missing ones, where to look."""
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
    if missing or rc != 0:
        elsewhere = waiting_on(configs, queued)
        jobs = set(elsewhere.values())
        note = (f", {len(elsewhere)} of them wait for SLURM jobs {slurm.describe(jobs)} of an "
                "earlier sweep" if elsewhere else "")
        print(f"error: {missing} runs missing{note} (launcher exit status {rc}); job logs: "
              f"{logs}", file=sys.stderr)
        return 1
    return 0


def interrupt_line(argv: list[str]) -> str:
    words = [a for a in argv if a.startswith(("experiment=", "scale="))]
    return f"sweep {' '.join(words) or '(default)'}"


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        sys.exit(main(sys.argv[1:]))
    except (KeyboardInterrupt, Stopped) as stop:
        interrupted(interrupt_line(sys.argv[1:]), 143 if isinstance(stop, Stopped) else 130)
