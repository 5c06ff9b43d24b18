"""What every entry point in experiments/ does before it starts (`prepare`).

**The same checkout.** An entry point imports pcalm from wherever Python finds it: PYTHONPATH
(the Makefile sets it to the checkout), else the venv's editable install, which points to the
checkout `make setup` ran in. A second clone or worktree sharing that venv would silently run
the first one's code under its own commands and record the wrong commit; `same_checkout`
refuses that in one line.

**Ctrl-C while it starts.** Importing torch, pandas and Hydra takes seconds, before any
entry point's own one-line handling of Ctrl-C is in place. Each entry point imports this
module first, which makes an interrupt that nothing handled print one line instead of a
traceback through the import machinery (`one_line_interrupt`).

**pcalm's SLURM launcher.** Hydra takes launcher plugins only from the `hydra_plugins`
namespace, which it finds by scanning sys.path; an editable install's import hook is not
scanned. `register_launcher` hands Hydra pcalm's launcher by Hydra's public hook
(`Plugins.register`) instead of putting the checkout on sys.path.
"""

from __future__ import annotations

import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent  # the checkout this pcalm came from


def one_line_interrupt(kind, value, traceback, *, previous=sys.excepthook) -> None:
    """sys.excepthook: an unhandled KeyboardInterrupt (Ctrl-C while the entry point imports
    its libraries) is one line; anything else goes to the previous hook. The exit status
    stays the interrupt's (130)."""
    if issubclass(kind, KeyboardInterrupt):
        print(f"\ninterrupted: {Path(sys.argv[0]).name}, while starting; every file it writes "
              "is atomic (its old or its new version, never half), so run it again",
              file=sys.stderr)
        return
    previous(kind, value, traceback)


sys.excepthook = one_line_interrupt  # the entry points import this module before any other


def same_checkout(entry_file: str) -> None:
    """Leave in one line (exit status 2) when the entry point at `entry_file` belongs to
    another checkout than the pcalm it imported."""
    entry_checkout = Path(entry_file).resolve().parent.parent
    if entry_checkout != CHECKOUT:
        print(f"error: {Path(entry_file).resolve()} imports pcalm from another checkout "
              f"({CHECKOUT}); allowed: the same checkout — run it through `make` there, "
              f"set PYTHONPATH={entry_checkout}, or `make setup` in {entry_checkout}",
              file=sys.stderr)
        raise SystemExit(2)


def register_launcher() -> None:
    """Make hydra/launcher=slurm's `_target_` (hydra_plugins.pcalm_launcher) known to Hydra."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.pcalm_launcher import SweepSlurmLauncher

    Plugins.instance().register(SweepSlurmLauncher)


def prepare(entry_file: str, *, launcher: bool = False) -> None:
    """The checks of an entry point; `launcher`: it may start a Hydra multirun on SLURM."""
    same_checkout(entry_file)
    if launcher:
        register_launcher()
