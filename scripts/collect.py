"""Gather an experiment's runs into tables a figure reads.

    python scripts/collect.py experiment=figure2 scale=smoke [overrides...]

Expands the same grid as experiments/sweep.py (same overrides, same run ids) and writes
<results_dir>/tables/<experiment>-<scale>.csv (one row per complete run: run_id, flattened
config, summary) and <experiment>-<scale>-metrics.csv (one row per evaluation). Missing runs
are left out and named, so a half-finished sweep still plots.

A table never shrinks because part of its grid was run: overrides that pin or narrow the
grid (`model.width=8`) choose what the sweep trains, while the table always covers the whole
grid plus those runs. An override that changes the runs themselves (`data.train_size=600`)
names another table, `<experiment>-<scale>-<that setting>.csv`, printed at the end.
`--print-scale` prints only what plot scripts take as --scale for that table
(`smoke`, or `smoke-data.train_size=600`).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pandas as pd

from pcalm.analysis.tables import collect, load_metrics, portable_table, problems
from pcalm.atomic import atomic_write_text
from pcalm.cli import exit_with
from pcalm.runs.config import Cell
from pcalm.runs.eta import EtaTableError
from pcalm.runs.folder import RunFolder, check_results_dir, inside
from pcalm.sweeps.grid import table_scope

SHOW_MISSING = 3
SWEEP_FLAGS = ("--dry-run", "--no-wait")  # sweep.py's; ignored so `make figureN ARGS=` works


def write_tables(overrides: list[str]) -> tuple[pd.DataFrame, int, list[str], Path]:
    """Write both tables; returns (table, expected runs, missing cells, table path).

    Complete runs with a missing or unreadable metrics.csv are named on stderr (one line
    each): they are in the tables, but without those rows. Folders that fail the checks of
    pcalm.runs.folder.audit_run (edited config, bad summary, torn or foreign metrics) are left
    out of both tables, named in one warning line and listed in ``<table>-excluded.csv``.
    """
    scope = table_scope(overrides)
    cells = {RunFolder(c["results_dir"], c).id: c for c in scope.configs}
    results_dir = check_results_dir(scope.configs[0]["results_dir"])
    table = inside(results_dir, "tables", f"{scope.label}.csv")
    for line in real_problems(problems(results_dir, list(cells)), results_dir, cells):
        print(f"warning: {line}", file=sys.stderr)
    with warnings.catch_warnings():  # named above, in one line each
        warnings.simplefilter("ignore")
        df = collect(results_dir, list(cells), table)
        metrics = load_metrics(results_dir, list(cells))
    write_portable(table, df)
    write_portable(table.with_name(f"{scope.label}-metrics.csv"), metrics)
    write_excluded(table, df.attrs["excluded"])
    absent = set(df.attrs["missing"])
    missing = [str(Cell.of(cfg)) for rid, cfg in cells.items() if rid in absent]  # grid order
    return df, len(cells), missing, table


def write_excluded(table: Path, excluded: dict[str, str]) -> None:
    """Name the refused folders: one stderr line, and ``<table>-excluded.csv`` (run_id,
    reason; header only when none) that the report counts."""
    frame = pd.DataFrame(sorted(excluded.items()), columns=["run_id", "reason"])
    atomic_write_text(table.with_name(f"{table.stem}-excluded.csv"), frame.to_csv(index=False))
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


def write_portable(path: Path, df) -> None:
    """The table as it may leave this machine: no absolute paths, list cells as JSON."""
    atomic_write_text(path, portable_table(df).to_csv(index=False))


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    overrides = [a for a in argv if a not in SWEEP_FLAGS and a != "--print-scale"]
    try:
        if "--print-scale" in argv:
            print(table_scope(overrides).scale_label)
            return 0
        df, expected, missing, table = write_tables(overrides)
    except (ValueError, EtaTableError) as err:
        exit_with(err)
    except OSError as err:  # a full disk: the tables are written atomically, the old ones stay
        exit_with(OSError(f"cannot write the tables: {err.strerror or err} ({err.filename}); "
                          "the previous tables are unchanged"))
    except KeyboardInterrupt:
        print("interrupted: collect; the previous tables are unchanged", file=sys.stderr)
        raise SystemExit(130) from None
    line = f"collected {len(df)} of {expected} runs"
    if missing:
        more = ", ..." if len(missing) > SHOW_MISSING else ""
        line += f" ({len(missing)} missing: {'; '.join(missing[:SHOW_MISSING])}{more})"
    excluded = len(df.attrs["excluded"])
    counts = outcome_counts(df) + (f", {excluded} excluded" if excluded else "")
    print(f"{line} → {table}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
