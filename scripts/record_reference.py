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
import shutil
import sys
from pathlib import Path

import pandas as pd

from pcalm.analysis.tables import portable_table
from pcalm.atomic import atomic_write_text
from pcalm.runs.folder import ARRAYS_FILE

REPO = Path(__file__).resolve().parent.parent

REFERENCE = REPO / "results" / "reference" / "tables"
CONFIG_PREFIXES = ("name", "task.", "model.", "algo.", "data.", "train.", "logger.",
                   "results_dir", "state_lr_source")


def slim_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in metrics.columns if c == "run_id" or not c.startswith(CONFIG_PREFIXES)]
    return metrics[keep]


def record(experiment: str, scale: str, tables: Path, out: Path = REFERENCE) -> list[Path]:
    runs = tables / f"{experiment}-{scale}.csv"
    metrics = tables / f"{experiment}-{scale}-metrics.csv"
    for path in (runs, metrics):
        if not path.is_file():
            raise SystemExit(f"error: no table {path}: run `make collect EXP={experiment} "
                             f"SCALE={scale}` first")
    written = [out / runs.name, out / metrics.name]
    as_text = pd.read_csv(runs, dtype=str, keep_default_na=False)  # every other cell verbatim
    atomic_write_text(written[0], portable_table(as_text).to_csv(index=False))
    atomic_write_text(written[1], slim_metrics(pd.read_csv(metrics)).to_csv(index=False))
    return written + copy_arrays(pd.read_csv(runs)["run_id"], tables.parent / "runs",
                                 out.parent / "runs")


def copy_arrays(run_ids, runs_dir: Path, out_runs: Path) -> list[Path]:
    """Each run's arrays.npz (diagnostic runs have one) → out_runs/<run_id>/arrays.npz,
    through a temporary name and a rename (a crash never leaves a torn array file)."""
    written = []
    for rid in run_ids:
        source = runs_dir / str(rid) / ARRAYS_FILE
        if not source.is_file():
            continue
        target = out_runs / str(rid) / ARRAYS_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".tmp")
        shutil.copyfile(source, partial)
        os.replace(partial, target)
        written.append(target)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiments", nargs="+")
    p.add_argument("--scale", default="paper")
    p.add_argument("--tables", type=Path,
                   default=Path(os.environ.get("PCALM_RESULTS", REPO / "results")) / "tables")
    args = p.parse_args(argv)
    for experiment in args.experiments:
        paths = record(experiment, args.scale, args.tables)
        for path in paths[:2]:
            print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
        if paths[2:]:
            size = sum(p.stat().st_size for p in paths[2:]) / 1e6
            print(f"wrote {len(paths) - 2} arrays.npz under {paths[2].parent.parent} "
                  f"({size:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
