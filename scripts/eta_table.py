"""Compute the paper's per-cell activity step η_h = 1/λ_max → configs/eta_table.csv.

    python scripts/eta_table.py                       # every grid cell, both datasets
    python scripts/eta_table.py --data mnist --widths 32 --depths 32 64

λ_max: top eigenvalue of the Gauss–Newton inference Hessian at initialisation, on the seed's
first batch of 64, max over the batch, median over seeds 0–2 (pcalm/eta.py). Linear cells do
not depend on the data, so they are computed once and written for both datasets.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pcalm.cli import ETA_TABLE  # noqa: E402
from pcalm.data import DataError, load_dataset  # noqa: E402
from pcalm.eta import DEFAULT_SEEDS, cell_lambda_max, write_table  # noqa: E402

GRID = [4, 8, 16, 32, 64, 128]
ACTIVATIONS = ["identity", "tanh", "relu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion_mnist,mnist", help="comma-separated")
    parser.add_argument("--widths", type=int, nargs="+", default=GRID)
    parser.add_argument("--depths", type=int, nargs="+", default=GRID)
    parser.add_argument("--activations", nargs="+", default=ACTIVATIONS)
    parser.add_argument("--root", default=None, help="data root (default: PCALM_DATA or data/)")
    parser.add_argument("--out", type=Path, default=ETA_TABLE)
    args = parser.parse_args()

    datasets = {}
    try:
        for name in args.data.split(","):
            datasets[name] = load_dataset(name, root=args.root).x_train
    except DataError as err:
        sys.exit(f"error: {err}")
    rows, linear_cache = [], {}
    for name, x_train in datasets.items():
        for act in args.activations:
            for width in args.widths:
                for depth in args.depths:
                    started = time.time()
                    key = (width, depth)
                    if act == "identity" and key in linear_cache:  # data-independent
                        lam = linear_cache[key]
                    else:
                        lam = cell_lambda_max(x_train, act, width, depth, DEFAULT_SEEDS)
                        if act == "identity":
                            linear_cache[key] = lam
                    row = {"data": name, "activation": act, "width": width,
                           "depth": depth, "lambda_max": f"{lam:.6f}",
                           "state_lr": f"{1 / lam:.6f}",
                           "seeds": "-".join(map(str, DEFAULT_SEEDS))}
                    rows.append(row)
                    write_table(args.out, [row])  # cell by cell: an interrupted run keeps its work
                    print(f"{name:13s} {act:8s} N={width:<4d} L={depth:<4d} "
                          f"λ_max={lam:.4f} η_h={1 / lam:.5f} ({time.time() - started:.1f}s)",
                          flush=True)
    print(f"wrote {len(rows)} cells to {args.out}")


if __name__ == "__main__":
    main()
