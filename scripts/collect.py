"""Gather an experiment's runs into tables a figure reads.

    python scripts/collect.py experiment=figure2 scale=smoke [overrides...]

Expands the same grid as experiments/sweep.py (same overrides, same run ids) and writes
<results_dir>/tables/<experiment>-<scale>.csv (one row per complete run: run_id, flattened
config, summary) and <experiment>-<scale>-metrics.csv (one row per evaluation). Missing runs
are left out and named, so a half-finished sweep still plots.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from pcalm.analysis.tables import collect, load_metrics, problems
from pcalm.atomic import atomic_write_text
from pcalm.cli import exit_with
from pcalm.runs.config import Cell
from pcalm.runs.eta import EtaTableError
from pcalm.runs.folder import RunFolder, check_results_dir, inside
from pcalm.sweeps.grid import load_sweep

SHOW_MISSING = 3
SWEEP_FLAGS = ("--dry-run", "--no-wait")  # sweep.py's; ignored so `make figureN ARGS=` works


def write_tables(overrides: list[str]) -> tuple[int, int, list[str], Path]:
    """Write both tables; returns (collected, expected, missing cells, table path).

    Complete runs with a missing or unreadable metrics.csv or config.yaml are named on stderr
    (one line each): they are in the tables, but without those columns or rows.
    """
    sweep = load_sweep(overrides)
    cells = {RunFolder(c["results_dir"], c).id: c for c in sweep.configs}
    results_dir = check_results_dir(sweep.configs[0]["results_dir"])
    table = inside(results_dir, "tables", f"{sweep.label}.csv")
    for line in problems(results_dir, list(cells)):
        print(f"warning: {line}", file=sys.stderr)
    with warnings.catch_warnings():  # named above, in one line each
        warnings.simplefilter("ignore")
        df = collect(results_dir, list(cells), table)
        metrics = load_metrics(results_dir, list(cells))
    atomic_write_text(table.with_name(f"{sweep.label}-metrics.csv"), metrics.to_csv(index=False))
    absent = set(df.attrs["missing"])
    missing = [str(Cell.of(cfg)) for rid, cfg in cells.items() if rid in absent]  # grid order
    return len(df), len(cells), missing, table


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    overrides = [a for a in argv if a not in SWEEP_FLAGS]
    try:
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
