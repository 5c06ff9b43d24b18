"""Gather an experiment's runs into tables a figure reads.

    python experiments/collect.py experiment=figure2 scale=smoke [overrides...]

Expands the same grid as experiments/sweep.py (same overrides, same run ids) and writes
<results_dir>/tables/<experiment>-<scale>.csv (one row per complete run: run_id, flattened
config, summary) and <experiment>-<scale>-metrics.csv (one row per evaluation). Missing runs
are left out and named, so a half-finished sweep still plots.

A table never shrinks because part of its grid was run: overrides that pin or narrow the
grid (`model.width=8`) choose what the sweep trains, while the table always covers the whole
grid plus those runs. An override that changes the runs themselves (`data.train_size=600`)
names another table, `<experiment>-<scale>-<that setting>.csv`, printed at the end. The work
is pcalm.analysis.collect.write_tables.
`--print-scale` prints only what experiments/plot.py takes as --scale for that table
(`smoke`, or `smoke-data.train_size=600`).
"""

from __future__ import annotations

from pcalm import entry  # first: a Ctrl-C while the rest imports is one line
import sys

from pcalm.analysis.collect import TablesNotWritten, write_tables
from pcalm.cli import exit_with
from pcalm.runs.config import Cell
from pcalm.runs.eta import EtaTableError
from pcalm.sweeps.grid import table_scope

SWEEP_FLAGS = ("--dry-run", "--no-wait")  # sweep.py's; ignored so `make figureN ARGS=` works


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    overrides = [a for a in argv if a not in SWEEP_FLAGS and a != "--print-scale"]
    try:
        if "--print-scale" in argv:
            print(table_scope(overrides).scale_label)
            return 0
        collected = write_tables(table_scope(overrides), lambda cfg: str(Cell.of(cfg)))
    except (ValueError, EtaTableError, TablesNotWritten) as err:
        exit_with(err)
    except KeyboardInterrupt:
        print("interrupted: collect; the previous tables are unchanged", file=sys.stderr)
        return 130
    print(collected.summary())
    return 0


if __name__ == "__main__":
    entry.prepare(__file__)  # this checkout's pcalm
    sys.exit(main(sys.argv[1:]))
