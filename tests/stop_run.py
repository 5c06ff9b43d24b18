"""Run experiments/run.py (same arguments), signalling itself at a known point of training.

    python tests/stop_run.py SIGNAL WHEN STEP  <run.py overrides...>

WHEN = checkpoint: right after the first checkpoint saved at a step >= STEP;
WHEN = metrics: halfway through writing metrics.csv, at the first evaluation after such a
checkpoint (so a temp file of the atomic write is left behind, as a real kill may leave it).
SIGNAL = KILL | TERM | INT. The tests use it in place of a sleep-then-kill race.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

from pcalm import atomic
from pcalm.runs import folder as results

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    sig, when, step = sys.argv[1], sys.argv[2], int(sys.argv[3])
    signum = getattr(signal, f"SIG{sig}")
    armed = {"checkpoint_seen": False}
    save, write = results.RunFolder.save_checkpoint, results.atomic_write_text

    def save_checkpoint(self, state):
        save(self, state)
        if state["state"]["step"] >= step:
            if when == "checkpoint":
                os.kill(os.getpid(), signum)
            armed["checkpoint_seen"] = True

    def atomic_write_text(path, text):
        if when == "metrics" and armed["checkpoint_seen"] and Path(path).name == "metrics.csv":
            def half(f):
                f.write(text[: len(text) // 2])
                f.flush()
                os.kill(os.getpid(), signum)
            atomic.atomic_write(path, half, binary=False)
        else:
            write(path, text)

    results.RunFolder.save_checkpoint = save_checkpoint
    results.atomic_write_text = atomic_write_text
    sys.argv = [str(REPO / "experiments" / "run.py"), *sys.argv[4:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
