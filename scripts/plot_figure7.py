"""Figure 7: parameterisation sweep (MNIST), from results/tables/figure7-<scale>.csv.

    python scripts/plot_figure7.py --scale smoke [--tables DIR] [--out PATH]

The MNIST counterpart of Figure 6 (same panels; see scripts/plot_figure6.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plot_figure6 import plot  # noqa: E402
from plotting import parse_args  # noqa: E402

if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0])
    plot("figure7", args.scale, args.tables, args.out)
