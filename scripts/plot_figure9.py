"""Figure 9: the MNIST counterpart of Figure 8, from results/tables/figure9-<scale>.csv.

    python scripts/plot_figure9.py --scale smoke [--tables DIR] [--out PATH]

Same panels as scripts/plot_figure8.py (two routes to BP-aligned hidden credit vs FLOPs).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plot_figure8 import plot  # noqa: E402
from plotting import parse_args  # noqa: E402

if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0])
    plot("figure9", args.scale, args.tables, args.out)
