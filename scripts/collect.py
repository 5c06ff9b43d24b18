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

from pcalm.cli import exit_with
from pcalm.config import Cell
from pcalm.eta import EtaTableError
from pcalm.results import (
    RunFolder,
    atomic_write_text,
    check_results_dir,
    collect,
    inside,
    load_metrics,
    portable_table,
    problems,
)
from pcalm.sweep import table_scope

SHOW_MISSING = 3
SWEEP_FLAGS = ("--dry-run", "--no-wait")  # sweep.py's; ignored so `make figureN ARGS=` works


def write_tables(overrides: list[str]) -> tuple[int, int, list[str], Path]:
    """Write both tables; returns (collected, expected, missing cells, table path).

    Complete runs with a missing or unreadable metrics.csv or config.yaml are named on stderr
    (one line each): they are in the tables, but without those columns or rows.
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
    absent = set(df.attrs["missing"])
    missing = [str(Cell.of(cfg)) for rid, cfg in cells.items() if rid in absent]  # grid order
    return len(df), len(cells), missing, table


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
        collected, expected, missing, table = write_tables(overrides)
    except (ValueError, EtaTableError) as err:
        exit_with(err)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    line = f"collected {collected} of {expected} runs"
    if missing:
        more = ", ..." if len(missing) > SHOW_MISSING else ""
        line += f" ({len(missing)} missing: {'; '.join(missing[:SHOW_MISSING])}{more})"
    print(f"{line} → {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
