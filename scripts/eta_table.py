"""Compute the per-cell activity step η_h = 1/λ_max → configs/eta_table.csv, and compare it
with the authors' published table (`make eta-table`).

    python scripts/eta_table.py                        # every cell, both datasets, + comparison
    python scripts/eta_table.py --data mnist --widths 32 --depths 32 64
    python scripts/eta_table.py --compare-only         # the committed table vs the authors'
    python scripts/eta_table.py --method lanczos       # the exact λ_max instead of the recipe
    python scripts/eta_table.py --choose-iters 30      # which power-iteration length fits best

λ_max: top eigenvalue of the Gauss–Newton inference Hessian at initialisation, on the seed's
first batch of 64, max over the batch, median over seeds 0–2 (pcalm/core/eta_recipe.py). The default
recipe is the one that reproduces the authors' 150 published values best: plain power
iteration, pcalm.core.eta_recipe.POWER_ITERS steps per sample (`--choose-iters` shows the evidence);
`--method lanczos` gives the exact value (2.5–4 % above theirs at L ≥ 32). Linear cells do
not depend on the data, so they are computed once and written for both datasets. The grid
rule uses the authors' value wherever they have the cell: this table serves the other cells
(depth 4, N ≥ 256 of Figs. 8/9, synthetic data).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from pcalm.cli import AUTHORS_ETA_TABLE, ETA_TABLE
from pcalm.core.eta_recipe import (
    DEFAULT_SEEDS,
    LAMBDA_METHOD,
    POWER_ITERS,
    cell_lambda_max,
    cell_power_traces,
    recipe_name,
)
from pcalm.data import DATASETS, DataError, load_dataset
from pcalm.names import ACTIVATION_NAMES
from pcalm.runs.eta import EtaTableError, load_authors_table, load_table, write_table

GRID = [4, 8, 16, 32, 64, 128]
ACTIVATIONS = list(ACTIVATION_NAMES)
# Figs. 8/9 at paper scale widen ReLU nets at L = 64 beyond the grid.
WIDE_CELLS = [("relu", n, 64) for n in (256, 512, 1024)]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="fashion_mnist,mnist", help="comma-separated")
    p.add_argument("--widths", type=int, nargs="+", default=None,
                   help=f"default: {GRID} and the wide Fig. 8/9 cells")
    p.add_argument("--depths", type=int, nargs="+", default=None, help=f"default: {GRID}")
    p.add_argument("--activations", nargs="+", default=ACTIVATIONS)
    p.add_argument("--root", default=None, help="data root (default: PCALM_DATA or data/)")
    p.add_argument("--out", type=Path, default=ETA_TABLE)
    p.add_argument("--method", default=LAMBDA_METHOD, choices=("power", "lanczos"))
    p.add_argument("--iters", type=int, default=None,
                   help=f"power: steps per sample (default {POWER_ITERS}); lanczos: 60")
    p.add_argument("--compare-only", action="store_true",
                   help="compare the table at --out with the authors' and stop")
    p.add_argument("--choose-iters", type=int, default=None, metavar="K",
                   help="for k = 1..K, how power iteration of k steps compares with the "
                        "authors' values on their cells")
    return p.parse_args(argv)


def cells(args) -> list[tuple[str, int, int]]:
    if args.widths is None and args.depths is None:
        grid = [(a, n, d) for a in args.activations for n in GRID for d in GRID]
        return grid + [c for c in WIDE_CELLS if c[0] in args.activations]
    widths, depths = args.widths or GRID, args.depths or GRID
    return [(a, n, d) for a in args.activations for n in widths for d in depths]


def relative_differences(ours: dict, authors: dict) -> dict[str, list[tuple[float, tuple]]]:
    """Per activation: (λ_ours/λ_authors − 1, cell) over the authors' cells that we have.

    Tables hold η_h = 1/λ_max, so λ_ours/λ_authors = η_authors/η_ours."""
    out: dict[str, list] = {}
    for key, eta_authors in authors.items():
        if key in ours:
            out.setdefault(key[1], []).append((eta_authors / ours[key] - 1, key))
    return out


def comparison_lines(ours: dict, authors: dict, label: str) -> list[str]:
    diffs = relative_differences(ours, authors)
    n = sum(len(v) for v in diffs.values())
    lines = [f"{label} vs the authors' published λ_max ({n} of their {len(authors)} cells; "
             "relative difference λ_ours/λ_authors − 1):"]
    everything = [d for v in diffs.values() for d, _ in v]
    for act in sorted(diffs) + ["all"]:
        pairs = diffs.get(act) or [(d, None) for d in everything]
        values = [d for d, _ in pairs]
        worst, cell = max(pairs, key=lambda p: abs(p[0])) if act != "all" else \
            max(((d, k) for v in diffs.values() for d, k in v), key=lambda p: abs(p[0]))
        where = f"{cell[0]} N={cell[2]} L={cell[3]}" if cell else ""
        median, mean = statistics.median(values), statistics.mean(map(abs, values))
        lines.append(f"  {act:8s} n={len(values):3d}  median {100 * median:+.2f} %"
                     f"  mean |·| {100 * mean:.2f} %"
                     f"  worst {100 * worst:+.2f} % ({where})")
    return lines


def choose_iters(args, datasets: dict, authors: dict) -> None:
    """For k = 1..K: median and mean |·| of the power recipe's deviation on the authors'
    cells (of the requested activations / sizes); prints the best k."""
    per_k: dict[int, list[float]] = {}
    for (data, act, n, depth), eta in sorted(authors.items()):
        if data not in datasets or act not in args.activations:
            continue
        if (args.widths and n not in args.widths) or (args.depths and depth not in args.depths):
            continue
        trace = cell_power_traces(datasets[data], act, n, depth, args.choose_iters)
        for k, lam in enumerate(trace, start=1):
            per_k.setdefault(k, []).append(lam * eta - 1)
    for k, values in per_k.items():
        print(f"  k={k:3d}: median {100 * statistics.median(values):+.2f} %, mean |·| "
              f"{100 * statistics.mean(map(abs, values)):.2f} % over {len(values)} cells")
    best = min(per_k, key=lambda k: statistics.mean(map(abs, per_k[k])))
    print(f"best: k = {best} (mean |relative difference| "
          f"{100 * statistics.mean(map(abs, per_k[best])):.2f} %)")


def compute(args, datasets: dict) -> dict:
    recipe = recipe_name(args.method, args.iters)
    rows, linear_cache, table = [], {}, {}
    for name, x_train in datasets.items():
        for act, width, depth in cells(args):
            started = time.time()
            key = (width, depth)
            if act == "identity" and key in linear_cache:  # data-independent
                lam = linear_cache[key]
            else:
                lam = cell_lambda_max(x_train, act, width, depth, DEFAULT_SEEDS,
                                      method=args.method, iters=args.iters)
                if act == "identity":
                    linear_cache[key] = lam
            row = {"data": name, "activation": act, "width": width, "depth": depth,
                   "lambda_max": f"{lam:.6f}", "state_lr": f"{1 / lam:.6f}",
                   "seeds": "-".join(map(str, DEFAULT_SEEDS)), "recipe": recipe}
            rows.append(row)
            table[(name, act, width, depth)] = 1 / lam
            write_table(args.out, [row])  # cell by cell: an interrupted run keeps its work
            print(f"{name:13s} {act:8s} N={width:<4d} L={depth:<4d} λ_max={lam:.4f} "
                  f"η_h={1 / lam:.5f} ({time.time() - started:.1f}s)", flush=True)
    print(f"wrote {len(rows)} cells ({recipe}) to {args.out}")
    return table


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        authors = load_authors_table(AUTHORS_ETA_TABLE)
        if args.compare_only:
            print("\n".join(comparison_lines(load_table(args.out), authors, str(args.out))))
            return 0
        names = [n for n in args.data.split(",") if n]
        bad = [n for n in names if n not in DATASETS]
        if bad:
            raise DataError(f"bad value --data {bad[0]}: allowed: {', '.join(DATASETS)}")
        datasets = {n: load_dataset(n, root=args.root).x_train for n in names}
        if args.choose_iters:
            choose_iters(args, datasets, authors)
            return 0
        table = compute(args, datasets)
    except (DataError, EtaTableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    label = f"this run ({recipe_name(args.method, args.iters)})"
    print("\n".join(comparison_lines(table, authors, label)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
