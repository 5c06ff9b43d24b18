"""The processes of a local sweep, and how they stop together.

A sweep (experiments/sweep.py) starts a Hydra multirun of experiments/run_job.py in a process
group of its own; a local launcher's jobs run in that group. They stop together however the
sweep stops:

- Ctrl-C or SIGTERM on the sweep: it SIGTERMs the group (`stop_group`), whose jobs stop like
  Ctrl-C within a step (`stop_with_the_sweep`), keeping finished runs and checkpoints;
- SIGKILL of the sweep: the multirun gets SIGTERM from the kernel (`die_with_parent`), and
  each local job, which watches the sweep's identity (`SWEEP_PID`: `pid:start time`), stops
  itself within `WATCH_EVERY_S`.

Under SLURM a job ignores all this: there SIGTERM means preemption, which submitit handles by
requeueing the job. Standard library only: the submitting process imports this, not torch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

SWEEP_PID = "PCALM_SWEEP_PID"  # `pid:start time` of the sweep, set for its multirun and jobs
STOP_GRACE_S = 5.0  # after SIGTERM, how long the group gets before SIGKILL: workers stop within a
# step (their SIGTERM handler); whatever outlives that is killed, which loses nothing (every write
# is atomic, the run resumes from its last checkpoint)
WATCH_EVERY_S = 1.0  # how often a local job checks that its sweep still lives


class Stopped(BaseException):
    """SIGTERM (e.g. from `timeout`): stop like Ctrl-C."""


def raise_stopped(signum, frame):
    """The sweep's SIGTERM handler: `signal.signal(signal.SIGTERM, raise_stopped)`."""
    raise Stopped


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: [0] state, [19] start time.

    The name is cut at the last ')': it may itself hold spaces and parentheses."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_identity(pid: int) -> str:
    """`pid:start-time` (from /proc), so a recycled pid is not taken for this process."""
    try:
        return f"{pid}:{_stat(pid)[19]}"
    except (OSError, IndexError):
        return str(pid)


def alive(identity: str) -> bool:
    """Whether the process `identity` (`process_identity`'s `pid:start time`) lives.

    A zombie is dead: a sweep killed by SIGKILL stays one until its parent reaps it, which a
    parent blocked reading the sweep's output (and so ours, inherited) never does."""
    pid, _, start = identity.partition(":")
    try:
        fields = _stat(pid)
    except OSError:  # no /proc: ask the kernel whether the pid exists
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError):
            return True
        return True
    return fields[0] not in ("Z", "X") and (not start or fields[19] == start)


# ------------------------------------------------------------------ the sweep's side


def die_with_parent() -> None:
    """In the launched multirun (Linux): SIGTERM it when this process dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


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


def run_group(command: list[str], cwd: Path, env: dict[str, str], every_s: float,
              tick: Callable[[], None]) -> int:
    """Run `command` in its own process group, calling `tick` every `every_s` while it runs;
    its exit status. Ctrl-C or SIGTERM here stops the whole group; a SIGKILL here stops the
    command (PR_SET_PDEATHSIG) and the local jobs (they watch this process: SWEEP_PID)."""
    env = {**os.environ, **env, SWEEP_PID: process_identity(os.getpid())}
    proc = subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True,
                            preexec_fn=die_with_parent)
    next_tick = time.monotonic() + every_s
    try:
        while proc.poll() is None:
            time.sleep(1.0)
            if time.monotonic() >= next_tick:
                tick()
                next_tick = time.monotonic() + every_s
    except (KeyboardInterrupt, Stopped):
        # a second Ctrl-C must not cut the stopping short; the handlers come back after it,
        # since an ignored SIGINT would be inherited by every process this one starts later
        previous = (signal.signal(signal.SIGINT, signal.SIG_IGN),
                    signal.signal(signal.SIGTERM, signal.SIG_IGN))
        try:
            stop_group(proc)
        finally:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])
        raise
    return proc.returncode


# ------------------------------------------------------------------- a job's side


def stop_with_the_sweep(say: Callable[[str], None]) -> None:
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
        while alive(identity):
            time.sleep(WATCH_EVERY_S)
        say("the sweep that launched this job is gone: stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-sweep", daemon=True).start()
