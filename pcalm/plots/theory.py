"""Shared by the theory figures (1, 3, 4, 5, 8, 9): a diagnostic run's arrays and mean ± sd
over seeds. Tables come from experiments/collect.py; arrays from each run folder.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from pcalm.analysis.grid import TableError
from pcalm.runs.folder import ARRAYS_FILE, load_arrays

DATA_LABELS = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST", "synthetic": "synthetic"}


def run_folder(row: pd.Series, tables: Path) -> Path:
    """`<results_dir>/runs/<run_id>`: the table's results_dir, else the tables' parent."""
    candidates = []
    if isinstance(row.get("results_dir"), str):
        candidates.append(Path(row["results_dir"]) / "runs" / row["run_id"])
    candidates.append(Path(tables).resolve().parent / "runs" / row["run_id"])
    for path in candidates:
        if (path / ARRAYS_FILE).is_file():
            return path
    return candidates[-1]


def with_arrays(df: pd.DataFrame, tables: Path) -> list[tuple[pd.Series, dict]]:
    """(row, arrays) of every run whose arrays.npz exists; warns about the others."""
    out, lost = [], []
    for _, row in df.iterrows():
        folder = run_folder(row, tables)
        if (folder / ARRAYS_FILE).is_file():
            out.append((row, read_arrays(folder)))
        else:
            lost.append(str(row["run_id"]))
    if lost:
        print(f"warning: no {ARRAYS_FILE} for run(s) {', '.join(lost)}: left out",
              file=sys.stderr)
    if not out:
        raise TableError(f"none of the {len(df)} runs in the table has its {ARRAYS_FILE} "
                         f"(looked under {run_folder(df.iloc[0], tables).parent})")
    return out


def read_arrays(folder: Path) -> dict:
    """A run folder's arrays.npz (never unpickled), or a TableError naming the damaged file."""
    try:
        return load_arrays(folder)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        raise TableError(f"{folder / ARRAYS_FILE}: not readable arrays ({reason}); rerun the "
                         "run (delete its folder) or rebuild the table") from None


def mean_sd(curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd (0 for one curve) over seeds of equal-length curves."""
    stack = np.stack([np.asarray(c, dtype=float) for c in curves])
    sd = stack.std(axis=0, ddof=1) if len(stack) > 1 else np.zeros(stack.shape[1])
    return stack.mean(axis=0), sd


def band(ax, x, curves, colour, label=None, linestyle="-", linewidth=1.4, alpha=0.18,
         **kwargs):
    """Plot mean ± sd over seeds of `curves` against x."""
    mean, sd = mean_sd(curves)
    ax.fill_between(x, mean - sd, mean + sd, color=colour, alpha=alpha, linewidth=0)
    return ax.plot(x, mean, color=colour, label=label, linestyle=linestyle,
                   linewidth=linewidth, **kwargs)[0]


def seeds_text(df: pd.DataFrame) -> str:
    seeds = sorted(int(s) for s in df["train.seed"].unique()) if "train.seed" in df else []
    return f"mean ± sd over seeds {seeds}" if len(seeds) > 1 else f"seed {seeds[0]}"


def data_label(df: pd.DataFrame) -> str:
    name = str(df["data.name"].iloc[0]) if "data.name" in df else "?"
    return DATA_LABELS.get(name, name)


def eta_text(df: pd.DataFrame, column: str = "algo.state_lr") -> str:
    """η_h as used: one value, or the range over the table's cells."""
    values = sorted(set(df[column].astype(float))) if column in df else []
    if not values:
        return "η_h = ?"
    if len(values) == 1:
        return f"η_h = {values[0]:.4g}"
    return f"η_h = {values[0]:.4g} … {values[-1]:.4g} (1/λ_max per cell)"
