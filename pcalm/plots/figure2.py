"""Figure 2: width × depth grid heatmaps, from results/tables/figure2-<scale>.csv
(Fashion-MNIST); its twin figure2_mnist draws results/tables/figure2_mnist-<scale>.csv.

    python experiments/plot.py figure2 --scale smoke [--tables DIR] [--out PATH]

Rows linear / tanh / ReLU (deep rows on top); columns BP accuracy, PC − BP, PC-ALM − BP,
PC-ALM − PC; see pcalm/plots/grid.py for the conventions (diverged = chance, hatched).
"""

from __future__ import annotations

from pathlib import Path

from pcalm.plots.grid import plot_grid


def plot(experiment: str, scale: str, tables: Path, out: Path | None) -> Path:
    """Draw `experiment` (figure2 or figure2_mnist) at `scale`; returns the PNG path."""
    return plot_grid(experiment, scale, tables, out)
