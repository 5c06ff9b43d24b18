"""An experiment's run folders → its two tables (experiments/collect.py, `make collect`).

``write_tables(scope)`` writes ``<results_dir>/tables/<label>.csv`` (one row per complete run:
run_id, flattened config, summary), ``<label>-metrics.csv`` (one row per evaluation) and
``<label>-excluded.csv`` (folders that fail pcalm.runs.folder.audit_run, with the reason),
atomically and without this machine's absolute paths. ``scope`` is the experiment's
pcalm.sweeps.grid.TableScope (the caller expands the grid: analysis stands below sweeps).
Missing runs are left out and named, so a half-finished sweep still plots.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pcalm.analysis.tables import load, load_metrics, portable_table, problems
from pcalm.atomic import atomic_write_texts
from pcalm.runs.folder import RunFolder, check_results_dir, inside

SHOW_MISSING = 3


class TablesNotWritten(OSError):
    """The tables could not be written (a full disk, a read-only folder): the message is one
    line, and the previous tables are unchanged (every write is atomic)."""


@dataclass
class Collected:
    """What `write_tables` wrote: the table, how many runs the grid expects, the missing
    cells (described by `write_tables`' `describe`, in grid order), the table's path."""

    table: pd.DataFrame
    expected: int
    missing: list[str]
    path: Path

    def summary(self) -> str:
        """`collected 4 of 6 runs (2 missing: …) → <path>: 3 valid, 1 diverged, 1 excluded`."""
        line = f"collected {len(self.table)} of {self.expected} runs"
        if self.missing:
            more = ", ..." if len(self.missing) > SHOW_MISSING else ""
            line += (f" ({len(self.missing)} missing: "
                     f"{'; '.join(self.missing[:SHOW_MISSING])}{more})")
        excluded = len(self.table.attrs["excluded"])
        counts = outcome_counts(self.table) + (f", {excluded} excluded" if excluded else "")
        return f"{line} → {self.path}: {counts}"


def write_tables(scope, describe: Callable[[dict], str] | None = None) -> Collected:
    """Write the experiment's tables (module docstring); returns what was written. A missing
    run is named by `describe(config)` (experiments/collect.py: pcalm.runs.config.Cell), else
    by its run id.

    Complete runs with a missing or unreadable metrics.csv are named on stderr (one line
    each): they are in the tables, but without those rows. Folders that fail the checks of
    pcalm.runs.folder.audit_run (edited config, bad summary, torn or foreign metrics) are left
    out of both tables, named in one warning line and listed in ``<table>-excluded.csv``.
    TablesNotWritten (one line) when a table cannot be written.
    """
    cells = {RunFolder(c["results_dir"], c).id: c for c in scope.configs}
    results_dir = check_results_dir(scope.configs[0]["results_dir"])
    table = inside(results_dir, "tables", f"{scope.label}.csv")
    for line in real_problems(problems(results_dir, list(cells)), results_dir, cells):
        print(f"warning: {line}", file=sys.stderr)
    try:
        with warnings.catch_warnings():  # named above, in one line each
            warnings.simplefilter("ignore")
            df = load(results_dir, list(cells))
            metrics = load_metrics(results_dir, list(cells))
        atomic_write_texts({  # the three as one: all new, or all as they were
            table: portable_csv(df),
            table.with_name(f"{scope.label}-metrics.csv"): portable_csv(metrics),
            excluded_path(table): excluded_csv(df.attrs["excluded"])})
    except OSError as err:
        where = err.filename or table.parent
        raise TablesNotWritten(f"cannot write the tables: {err.strerror or err} ({where}); "
                               "the previous tables are unchanged") from None
    say_excluded(table, df.attrs["excluded"])
    absent = set(df.attrs["missing"])
    missing = [describe(cfg) if describe else rid  # grid order
               for rid, cfg in cells.items() if rid in absent]
    return Collected(df, len(cells), missing, table)


def excluded_path(table: Path) -> Path:
    return table.with_name(f"{table.stem}-excluded.csv")


def excluded_csv(excluded: dict[str, str]) -> str:
    """``<table>-excluded.csv`` (run_id, reason; header only when none), which the report
    counts."""
    frame = pd.DataFrame(sorted(excluded.items()), columns=["run_id", "reason"])
    return frame.to_csv(index=False)


def say_excluded(table: Path, excluded: dict[str, str]) -> None:
    """Name the refused folders in one stderr line."""
    if excluded:
        named = "; ".join(f"{rid}: {why}" for rid, why in sorted(excluded.items())[:SHOW_MISSING])
        more = "; ..." if len(excluded) > SHOW_MISSING else ""
        print(f"warning: {len(excluded)} run folders excluded, they fail the checks "
              f"({named}{more}); see {table.stem}-excluded.csv", file=sys.stderr)


def outcome_counts(df: pd.DataFrame) -> str:
    """``3 valid, 1 diverged, 1 without accuracy``: what the collected runs can back."""
    if df.empty:
        return "0 valid"
    valid = int(df["valid"].sum())
    diverged = int((df["status"] == "diverged").sum()) if "status" in df else 0
    parts = [f"{valid} valid"]
    if diverged:
        parts.append(f"{diverged} diverged")
    if len(df) - valid - diverged:
        parts.append(f"{len(df) - valid - diverged} without accuracy")
    return ", ".join(parts)


def real_problems(lines: list[str], results_dir: Path, cells: dict) -> list[str]:
    """The defects worth a warning: a diagnostic run (a task other than `train`, e.g. Figure
    1's) writes no metrics.csv by design, so its absence is not one."""
    by_design = {str(results_dir / "runs" / rid / "metrics.csv") + ": missing"
                 for rid, cfg in cells.items()
                 if (cfg.get("task") or {}).get("name", "train") != "train"}
    return [ln for ln in lines if not any(ln.startswith(d) for d in by_design)]


def portable_csv(df) -> str:
    """The table as it may leave this machine: no absolute paths, list cells as JSON."""
    return portable_table(df).to_csv(index=False)
