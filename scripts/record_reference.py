"""Put an experiment's collected tables on record: results/reference/tables/ (tracked).

    python scripts/record_reference.py figure2 figure2_mnist --scale paper   (make reference)

Copies <results>/tables/<exp>-<scale>.csv (one row per run: run id, config, numbers,
provenance) as it is, and <exp>-<scale>-metrics.csv slimmed to the run id and the metric
columns (the config is one join away, in the run table), so the record stays small. The
figure and report targets read these when asked for SCALE=paper (see the Makefile).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pcalm.atomic import atomic_write_text  # noqa: E402

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
    atomic_write_text(written[0], runs.read_text(encoding="utf-8"))
    atomic_write_text(written[1], slim_metrics(pd.read_csv(metrics)).to_csv(index=False))
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiments", nargs="+")
    p.add_argument("--scale", default="paper")
    p.add_argument("--tables", type=Path,
                   default=Path(os.environ.get("PCALM_RESULTS", REPO / "results")) / "tables")
    args = p.parse_args(argv)
    for experiment in args.experiments:
        for path in record(experiment, args.scale, args.tables):
            print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
