"""Figure 2: width × depth grid heatmaps (Fashion-MNIST), from results/tables/figure2-<scale>.csv.

    python scripts/plot_figure2.py --scale smoke [--tables DIR] [--out PATH]

Rows linear / tanh / ReLU (deep rows on top); columns BP accuracy, PC − BP, PC-ALM − BP,
PC-ALM − PC; see scripts/grid_heatmaps.py for the conventions (diverged = chance, hatched).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grid_heatmaps import plot_grid  # noqa: E402
from plotting import parse_args  # noqa: E402

EXPERIMENT = "figure2"

if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0])
    plot_grid(EXPERIMENT, args.scale, args.tables, args.out)
