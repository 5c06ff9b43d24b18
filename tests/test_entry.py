"""What every entry point in experiments/ does first (pcalm/entry.py): refuse to run another
checkout's pcalm, and hand Hydra pcalm's SLURM launcher without putting the checkout on
sys.path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pcalm
from tests.conftest import REPO

INSTALLED_HERE = Path(pcalm.__file__).resolve().parent.parent == REPO


def without_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.mark.parametrize("entry", ["plot.py", "report.py", "collect.py", "run.py", "sweep.py",
                                   "run_job.py", "dashboard.py"])
def test_an_entry_point_of_another_checkout_refuses_this_pcalm_in_one_line(tmp_path, entry):
    """A second clone sharing this venv (or this PYTHONPATH) would run this checkout's code
    under its own command and record the wrong commit."""
    clone = tmp_path / "clone"
    (clone / "experiments").mkdir(parents=True)
    shutil.copy(REPO / "experiments" / entry, clone / "experiments" / entry)
    proc = subprocess.run([sys.executable, str(clone / "experiments" / entry), "--help"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0] == (f"error: {clone / 'experiments' / entry} imports pcalm from another "
                        f"checkout ({REPO}); allowed: the same checkout — run it through `make` "
                        f"there, set PYTHONPATH={clone}, or `make setup` in {clone}")


def test_this_checkouts_entry_point_starts(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "plot.py"), "--help"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0 and "error" not in proc.stderr


@pytest.mark.skipif(not INSTALLED_HERE, reason="the venv's editable install is another "
                    "checkout's (this one runs on PYTHONPATH)")
@pytest.mark.parametrize("entry", ["run.py", "run_job.py"])
def test_hydra_knows_pcalms_slurm_launcher_without_pythonpath(tmp_path, entry):
    """Run as a user would, from another folder with only the editable install: Hydra's scan
    of sys.path does not see hydra_plugins/pcalm_launcher, the registration does."""
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / entry), "--info",
                           "plugins"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=without_pythonpath())
    assert proc.returncode == 0, proc.stderr
    launchers = proc.stdout.split("Launcher:")[1].split("\n\t", 1)[1]
    assert "SweepSlurmLauncher" in launchers
