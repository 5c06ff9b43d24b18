"""Put an experiment's collected tables on record: results/reference/tables/ (tracked).

    python scripts/record_reference.py figure2 figure2_mnist --scale paper   (make reference)

Copies <results>/tables/<exp>-<scale>.csv (one row per run: run id, config, numbers,
provenance) as it is but for this machine's paths (`data.root`, `results_dir` and the same
paths in `provenance.command`: relative to the repository, else `$PCALM_DATA` /
`$PCALM_RESULTS`; pcalm.analysis.tables.portable_table), and <exp>-<scale>-metrics.csv
slimmed to the run id and the metric columns (the config is one join away, in the run table), so the
record stays small. The diagnostic figures (1, 3, 4, 5, 8, 9) draw from each run's
arrays.npz as well: those are copied to results/reference/runs/<run_id>/arrays.npz, where
the plots look for them beside the tables. The figure and report targets read these when
asked for SCALE=paper (see the Makefile).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pcalm.analysis.tables import record

REPO = Path(__file__).resolve().parent.parent

REFERENCE = REPO / "results" / "reference" / "tables"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiments", nargs="+")
    p.add_argument("--scale", default="paper")
    p.add_argument("--tables", type=Path,
                   default=Path(os.environ.get("PCALM_RESULTS", REPO / "results")) / "tables")
    args = p.parse_args(argv)
    for experiment in args.experiments:
        try:
            paths = record(experiment, args.scale, args.tables, REFERENCE)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        for path in paths[:2]:
            print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
        if paths[2:]:
            size = sum(p.stat().st_size for p in paths[2:]) / 1e6
            print(f"wrote {len(paths) - 2} arrays.npz under {paths[2].parent.parent} "
                  f"({size:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
