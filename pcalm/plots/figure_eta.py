"""Figure η: PC's test accuracy vs the activity step η_h (results/tables/figure_eta-<scale>.csv).

    python experiments/plot.py figure_eta --scale smoke [--tables DIR] [--out PATH]

x: η_h · λ_max, the multiple k of 1/λ_max (λ_max = 1/η_h of the cell's table step: the
authors' published value where they have the cell, else ours, read through pcalm.runs.eta's
validated reader — so `algo.state_lr: table*k` runs sit at exactly k). One panel per network
(N, L, activation). y: test accuracy after one epoch, mean ± sd over seeds; single seeds as
dots, diverged runs (non-finite loss) as crosses at chance (10 %). The PC stability limit
η_h = 2/λ_max and the grid rule η_h = 1/λ_max are marked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pcalm.analysis.stats import CHANCE, NETWORK, eta_multiples, seed_stats
from pcalm.plots.grid import ALGO_ORDER, DATA_LABELS
from pcalm.plots.style import (
    ACTIVATION_LABELS,
    ALGO_COLORS,
    ALGO_LABELS,
    plt,
    read_accuracies,
    save,
    settings_note,
)

COLUMNS = ("algo.name", *NETWORK, "algo.state_lr", "algo.budget", "train.seed")
NUMBERS = COLUMNS[3:]


def table_step(data: str, activation: str, width: int, depth: int) -> float | None:
    """The cell's grid-rule step η_h = 1/λ_max (the authors' table, else ours, read through
    the validated reader of pcalm.runs.eta), or None where neither has the cell."""
    # imported here: pcalm.runs.eta still imports torch for its λ_max recipe (the review's
    # η split makes the reader torch-free); importing the figures stays torch-free
    from pcalm.cli import AUTHORS_ETA_TABLE, ETA_TABLE
    from pcalm.runs.eta import EtaTableError, lookup_state_lr

    try:
        return lookup_state_lr(ETA_TABLE, data, activation, width, depth, AUTHORS_ETA_TABLE)[0]
    except EtaTableError:
        return None


def plot(experiment: str, scale: str, tables: Path, out: Path | None) -> Path:
    df = read_accuracies(tables, experiment, scale, needs=COLUMNS, numbers=NUMBERS)
    df["x"] = eta_multiples(df, table_step).round(3)
    networks = df[NETWORK].drop_duplicates().sort_values(NETWORK).itertuples(index=False)
    networks = list(networks)
    fig, axes = plt.subplots(1, len(networks), figsize=(1.0 + 3.6 * len(networks), 3.9),
                             layout="constrained", sharey=True, squeeze=False)
    for ax, net in zip(axes[0], networks):
        rows = df[(df[NETWORK] == pd.Series(net, index=NETWORK)).all(axis=1)]
        _panel(ax, rows, net)
    axes[0][0].set_ylabel("test accuracy after one epoch (%)")
    axes[0][0].legend(loc="lower left", frameon=False, fontsize=7)
    first = df.iloc[0]
    data = DATA_LABELS.get(str(first.get("data.name")), first.get("data.name"))
    budgets = sorted({int(b) for b in df["algo.budget"].dropna().unique()})
    seeds = sorted(int(s) for s in df["train.seed"].unique())
    fig.suptitle(f"{data}: accuracy vs activity step η_h (multiples of 1/λ_max)")
    settings_note(fig, f"{data} | T = {'/'.join(map(str, budgets))} (2L) | λ_max = 1/η_h of "
                  f"the cell's table step (authors') | one epoch | seeds {seeds}", scale)
    fig.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))
    return save(fig, f"{experiment}-{scale}", out)


def _panel(ax, df: pd.DataFrame, net) -> None:
    """One network: mean ± sd per algorithm over the seeds, single runs, diverged runs."""
    stats = seed_stats(df, ["algo.name", "x"])
    for algo in [a for a in ALGO_ORDER if a in set(df["algo.name"])]:
        colour = ALGO_COLORS[algo]
        rows = stats[stats["algo.name"] == algo].sort_values("x")
        x, mean = rows["x"].to_numpy(float), rows["mean"].to_numpy(float)
        sd = np.nan_to_num(rows["sd"].to_numpy(float))
        ax.fill_between(x, mean - sd, mean + sd, color=colour, alpha=0.13, linewidth=0)
        ax.plot(x, mean, color=colour, marker="o", markersize=4, linewidth=1.5,
                label=f"{ALGO_LABELS[algo]} (mean ± sd)")
        runs = df[df["algo.name"] == algo]
        ok = runs[~runs["diverged"]]
        ax.scatter(ok["x"], ok["acc"], s=10, color=colour, alpha=0.45, linewidths=0)
        bad = runs[runs["diverged"]]
        if len(bad):
            ax.scatter(bad["x"], bad["acc"], s=40, marker="x", color=colour, linewidths=1.3,
                       label=f"{ALGO_LABELS[algo]}: diverged run (plotted at chance)")
    ax.axhline(CHANCE, color="0.6", linewidth=0.8, linestyle=":", label="chance (10 %)")
    placed = df["x"].notna().all()
    if placed:
        ax.axvline(2.0, color="0.25", linewidth=1.0, linestyle="--")
        ax.axvline(1.0, color="0.55", linewidth=0.8, linestyle=":")
        ax.text(2.0, 1.0, " 2/λ_max (PC stability limit)", transform=ax.get_xaxis_transform(),
                fontsize=7, va="top", ha="left", color="0.25")
        ax.text(1.0, 1.0, "1/λ_max (grid rule) ", transform=ax.get_xaxis_transform(),
                fontsize=7, va="top", ha="right", color="0.45")
        ax.set_xlabel("activity step η_h × λ_max  (multiples of 1/λ_max)")
    else:
        ax.set_xlabel("η_h × λ_max (the cell is in no η table: not placed)")
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.4g}")
    ax.set_ylim(0, max(0.3, float(df["acc"].max()) + 0.08))
    ax.grid(alpha=0.25)
    data, act, width, depth = net
    lam = 1 / table_step(str(data), str(act), int(width), int(depth)) if placed else None
    act = ACTIVATION_LABELS.get(act, act)
    ax.set_title(f"N = {int(width)}, L = {int(depth)}, {act}"
                 + (f" (λ_max = {lam:.4g})" if lam else ""), fontsize=9)
