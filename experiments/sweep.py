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

from pcalm import entry  # first: a Ctrl-C while the rest imports is one line
import os
import signal
import subprocess
import sys
import time

from pcalm.cli import REPO, exit_with, interrupted
from pcalm.data import DataError
from pcalm.runs.eta import EtaTableError
from pcalm.sweeps.grid import load_sweep
from pcalm.sweeps.launchers import make_launcher
from pcalm.sweeps.plan import (
    check_room,
    discard_sweep,
    headline,
    job_lines,
    plan,
    plural,
    projection,
    report,
    still_queued,
    sweep_name,
    took_line,
    write_manifest,
)
from pcalm.sweeps.processes import Stopped, raise_stopped

FLAGS = ("--dry-run", "--no-wait")


def main(argv: list[str]) -> int:
    if any(a in ("-sc", "--shell-completion") for a in argv):
        return completion(argv)
    for flag in ("--cfg", "-c"):
        if flag in argv:
            i = argv.index(flag)
            argv = argv[:i] + argv[i + 2:]  # its value: job | all (both print the same here)
            return show_config(split_args(argv)[1])
    flags, overrides = split_args(argv)
    wait, dry_run = "--no-wait" not in flags, "--dry-run" in flags
    try:
        sweep = load_sweep(overrides)  # the grid, every cell validated
        launcher = make_launcher(sweep, wait)  # local | slurm | basic: pcalm/sweeps/launchers.py
        work = plan(sweep, launcher)  # the runs missing, in jobs
    except (ValueError, DataError, EtaTableError) as err:
        exit_with(err)
    print(headline(work), flush=True)
    if not work.pending:
        return still_queued(work, wait and not dry_run)
    if launcher.request:
        print(launcher.request, flush=True)
    work.projected = projection(work, launcher)
    if dry_run:
        print("\n".join(job_lines(work)))
        return 0
    try:
        check_room(work.results_dir, work.pending)
    except ValueError as err:
        exit_with(err)
    name = sweep_name(sweep, work.results_dir)  # its own folder, even if another sweep started
    manifest = work.results_dir / "sweeps" / name / "manifest.json"  # in the same second
    write_manifest(manifest, work)
    started = time.monotonic()
    rc = launcher.launch(name, manifest, len(work.jobs), work.pending)
    if launcher.refused(rc):  # nothing was launched (the launcher said why in one line)
        discard_sweep(work.results_dir, name)
        return 2
    if wait and work.projected:
        print(took_line(time.monotonic() - started, max(work.projected)), flush=True)
    return report(work, rc, name, wait)


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


def interrupt_line(argv: list[str]) -> str:
    words = [a for a in argv if a.startswith(("experiment=", "scale="))]
    return f"sweep {' '.join(words) or '(default)'}"


if __name__ == "__main__":
    entry.prepare(__file__)  # this checkout's pcalm
    signal.signal(signal.SIGTERM, raise_stopped)
    try:
        sys.exit(main(sys.argv[1:]))
    except (KeyboardInterrupt, Stopped) as stop:
        interrupted(interrupt_line(sys.argv[1:]), 143 if isinstance(stop, Stopped) else 130)
