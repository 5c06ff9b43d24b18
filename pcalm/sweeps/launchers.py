"""Where a sweep's jobs run: each kind of `sweep.launcher` is a class.

`Local`, `Slurm` and `Basic` are, from the sweep's side, what configs/hydra/launcher/<kind>.yaml
is from Hydra's (as hydra-submitit-launcher's LocalLauncher and SlurmLauncher over one base).
Each way the kinds differ is one method:

| method          | Local                          | Slurm                              | Basic    |
|-----------------|--------------------------------|------------------------------------|----------|
| `prepare`       | this machine's GPUs, one a job | checks sbatch; asks sinfo; CPUs,   | —        |
|                 |                                | memory, GPUs of a job (`request`)  |          |
| `in_flight`     | —                              | runs queued SLURM jobs will train  | —        |
| `job_count`     | one a core or GPU (local_jobs) | runs_per_job runs each             | one      |
| `threads`       | cores // jobs                  | (the job's: cpus_per_task)         | (torch's)|
| `gpus_to_share` | this machine's, for GPU runs   | —                                  | —        |
| `cost_model`    | this machine's (calibrated)    | a stored `make bench` of a node    | this one |
| `wall_time`     | the longest job (in parallel)  | the longest job                    | the sum  |
| `env`           | —                              | where job ids go; submit only      | —        |
| `refused`       | —                              | sbatch took nothing (exit status 3)| —        |
| --no-wait       | refused                        | returns once the jobs are queued   | refused  |

Every kind launches the same way (`launch`): a Hydra multirun of experiments/run_job.py over
the manifest's jobs, in a process group of its own (pcalm/sweeps/processes.py), its Hydra
launcher the kind's config (SLURM's: pcalm/sweeps/submitit_launcher.py).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from pcalm.cli import REPO, compose
from pcalm.runs import provenance
from pcalm.runs.folder import RunFolder
from pcalm.sweeps import slurm
from pcalm.sweeps.cost import describe_seconds
from pcalm.sweeps.grid import Sweep
from pcalm.sweeps.processes import run_group
from pcalm.sweeps.submitit_launcher import RECORD_JOBS, REFUSED, SUBMIT_ONLY

RUN_JOB = REPO / "experiments" / "run_job.py"
PROGRESS_EVERY_S = 30.0


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def quoted(key: str, value) -> str:
    """`key='value'`: a path with spaces or commas stays one value for Hydra."""
    return f"{key}='{str(value).replace(chr(39), chr(92) + chr(39))}'"


class Launcher:
    """A sweep's launcher: what its jobs get, how many there are, and how they are started.

    Made for one sweep (`make_launcher`); `prepare` checks its config before anything is
    planned, `launch` runs the jobs of a written manifest."""

    kind = ""  # the word of sweep.launcher and of configs/hydra/launcher/<kind>.yaml
    returns_early = False  # whether --no-wait can return once the jobs are submitted
    order = "in order"  # how the jobs run, said with the projected wall time
    cost_note = ""  # added to the projection's line: where its cost model comes from

    def __init__(self, sweep: Sweep, wait: bool = True):
        if not wait and not self.returns_early:
            raise ValueError(f"--no-wait needs sweep.launcher=slurm, not {self.kind}")
        self.sweep, self.wait = sweep, wait
        self.results_dir: Path | None = None  # set by `prepare`
        self.gpus = 0  # GPUs each job may use (locally: this machine's, shared out one a job)
        self.request = ""  # what each job asks of the cluster, one line printed with the plan
        self.chosen: list[str] = []  # launcher overrides chosen here, after the user's

    # ------------------------------------------------------------ before planning

    def prepare(self, results_dir: Path, name: str) -> None:
        """Check the launcher's config now, by composing configs/job.yaml with the user's
        hydra.* overrides (a typo'd key fails in one line), and settle what each job gets."""
        self.results_dir = results_dir
        self.settle(compose(self.overrides(name) + ["manifest=x", "job=0"], config_name="job",
                            with_hydra=True))

    def settle(self, cfg) -> None:
        """What the jobs get, read from their composed launcher config (`cfg.hydra.launcher`)."""

    def given(self, key: str) -> bool:
        """Whether the user set the launcher key `key` (`hydra.launcher.gpus_per_node`)."""
        return key in {o.split("=", 1)[0].lstrip("+") for o in self.sweep.hydra_overrides}

    def overrides(self, name: str) -> list[str]:
        """The multirun's overrides of configs/job.yaml: the kind's launcher config, where
        the jobs write, the user's hydra.* overrides, then what this launcher chose."""
        return [f"hydra/launcher={self.kind}", quoted("results_dir", self.results_dir),
                quoted("sweep_name", name), *self.sweep.hydra_overrides, *self.chosen]

    # ------------------------------------------------------------------ the plan

    def in_flight(self) -> dict[str, str]:
        """Run id → the job of an earlier sweep that will train it (skipped by this one)."""
        return {}

    def job_count(self, pending: int, device: str) -> int:
        """How many jobs `pending` (≥ 1) runs that train on `device` (cpu | cuda) go into."""
        raise NotImplementedError

    def threads(self, jobs: int) -> int | None:
        """Torch threads of each of `jobs` jobs, for the manifest; None: the job's own
        (SLURM's cpus_per_task, else torch's default)."""
        return None

    def gpus_to_share(self, device: str) -> int:
        """How many GPUs the manifest shares out among jobs training on `device`, job k
        getting the (k mod n)-th (experiments/run_job.py hides the others); 0: none."""
        return 0

    def cost_model(self, device: str, threads: int | None):
        """The cost model the jobs' projected times come from (pcalm.sweeps.cost); None if
        unknown. Jobs on this machine: its own, calibrated once (~10 s) or by `make bench`."""
        import torch

        from pcalm.sweeps import cost

        return cost.cached_or_calibrated(self.results_dir, device,
                                         threads or torch.get_num_threads())

    def wall_time(self, seconds: list[float]) -> str:
        """The sweep's projected wall time, from its jobs' (`seconds`): run one after another."""
        return describe_seconds(sum(seconds))

    # ---------------------------------------------------------------- the launch

    def env(self, name: str, manifest: Path) -> dict[str, str]:
        """What the multirun's environment adds: each run records the user's command and
        its sweep (folders, job logs)."""
        # submitit logs each line through its own stdout and stderr handlers and through
        # Hydra's: three copies in a job's log. Without its config, Hydra's prints it once.
        return {provenance.COMMAND_ENV: provenance.command(), provenance.SWEEP_ENV: name,
                "SUBMITIT_LOG_LEVEL": os.environ.get("SUBMITIT_LOG_LEVEL", "NOCONFIG")}

    def launch(self, name: str, manifest: Path, jobs: int, pending: list[dict]) -> int:
        """Run the manifest's `jobs` jobs (a multirun of experiments/run_job.py over the job
        index) and wait for it, saying now and then how many of the `pending` runs are
        complete; the multirun's exit status."""
        command = [sys.executable, str(RUN_JOB), "-m", *self.overrides(name),
                   quoted("manifest", manifest), f"job=range(0,{jobs})"]
        last = 0

        def progress() -> None:
            nonlocal last
            done = sum(RunFolder(c["results_dir"], c).exists_complete() for c in pending)
            if done != last:
                print(f"progress: {done} of {len(pending)} runs complete", flush=True)
            last = done

        return run_group(command, REPO, self.env(name, manifest), PROGRESS_EVERY_S, progress)

    def refused(self, rc: int) -> bool:
        """Whether the multirun's exit status `rc` says that nothing was launched."""
        return False


class Local(Launcher):
    """Jobs as processes on this machine (submitit_local), all at once."""

    kind = "local"
    order = "in parallel"

    def prepare(self, results_dir: Path, name: str) -> None:
        import torch  # local jobs see no GPU unless told to: each gets one of this machine's

        if not self.given("hydra.launcher.gpus_per_node"):
            self.gpus = torch.cuda.device_count()
            if self.gpus:
                self.chosen.append(f"hydra.launcher.gpus_per_node={self.gpus}")
        super().prepare(results_dir, name)

    def settle(self, cfg) -> None:
        if self.given("hydra.launcher.gpus_per_node"):
            self.gpus = cfg.hydra.launcher.get("gpus_per_node") or 0

    def job_count(self, pending: int, device: str) -> int:
        # as many as the machine holds at once: one per GPU when the runs train on GPUs (each
        # job gets its own), else one per core; or sweep.local_jobs
        slots = self.gpus if device == "cuda" and self.gpus else cores()
        return min(pending, self.sweep.settings["local_jobs"] or slots)

    def threads(self, jobs: int) -> int | None:
        return max(1, cores() // jobs)

    def gpus_to_share(self, device: str) -> int:
        return self.gpus if device == "cuda" else 0

    def wall_time(self, seconds: list[float]) -> str:
        return describe_seconds(max(seconds))


class Slurm(Launcher):
    """One SLURM job array per sweep (pcalm/sweeps/submitit_launcher.py). This object owns
    what SLURM holds: the resources each job asks for, the runs queued jobs of earlier sweeps
    will train, where the job ids are recorded, and what a refusal means."""

    kind = "slurm"
    returns_early = True
    cost_note = ", cost model from a stored `make bench`; cluster nodes may differ"

    def settle(self, cfg) -> None:
        from omegaconf import OmegaConf

        slurm.check_submission_commands()
        asked = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
        devices = {c["train"]["device"] for c in self.sweep.configs}
        resources, self.request = slurm.job_request(asked, devices, slurm.partitions())
        self.chosen += [f"hydra.launcher.{key}={'null' if value is None else value}"
                        for key, value in resources.items()]
        self.gpus = resources["gpus_per_node"] or (1 if asked.get("gres") else 0)

    def in_flight(self) -> dict[str, str]:
        """A run that a queued or running SLURM job (of an earlier sweep) will train is not
        submitted again. Only SLURM sweeps ask: a local sweep must not depend on SLURM being
        up (a run that a SLURM job trains meanwhile is not trained twice: each run trains
        under a lock)."""
        try:
            live = slurm.queued_jobs()
        except slurm.QueueUnknown as err:
            print(f"warning: {err}; runs of queued SLURM jobs may be submitted again",
                  file=sys.stderr)
            return {}
        return slurm.in_flight_runs(self.results_dir, live) if live else {}

    def job_count(self, pending: int, device: str) -> int:
        return math.ceil(pending / self.sweep.settings["runs_per_job"])

    def cost_model(self, device: str, threads: int | None):
        """SLURM jobs run on nodes unknown here: a model stored by `make bench` on such a
        node (same device kind), if there is one."""
        from pcalm.sweeps import cost

        stored = cost.stored_models(self.results_dir, device)
        if not stored:
            print(f"projected time: unknown (no cost model of a {device} node: run `make bench` "
                  f"on one, with the results folder shared, to store it under "
                  f"{self.results_dir}/cost)")
            return None
        return stored[0]

    def wall_time(self, seconds: list[float]) -> str:
        return f"longest job {describe_seconds(max(seconds))}"

    def env(self, name: str, manifest: Path) -> dict[str, str]:
        env = {**super().env(name, manifest), RECORD_JOBS: str(manifest.parent / slurm.JOBS_FILE)}
        if not self.wait:
            env[SUBMIT_ONLY] = "1"
        return env

    def refused(self, rc: int) -> bool:
        return rc == REFUSED  # SLURM took nothing (the launcher said why in one line)


class Basic(Launcher):
    """Every run in one job, one after another (Hydra's basic launcher)."""

    kind = "basic"

    def job_count(self, pending: int, device: str) -> int:
        return 1


KINDS = {cls.kind: cls for cls in (Local, Slurm, Basic)}


def make_launcher(sweep: Sweep, wait: bool = True) -> Launcher:
    """The launcher `sweep.launcher` names (checked by load_sweep); `wait=False` is --no-wait."""
    return KINDS[sweep.settings["launcher"]](sweep, wait)
