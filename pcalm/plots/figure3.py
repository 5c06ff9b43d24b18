"""Figure 3: credit propagation layer × inference step, from results/tables/figure3-<scale>.csv.

    python experiments/plot.py figure3 --scale smoke [--tables DIR] [--out PATH]

Columns PC, PC-ALM; rows: the credit norm ‖ε_l(t)‖/‖δ_l‖ (log colour) and the cosine
cos(ε_l(t), −δ_l) to the BP adjoint. Overlays: the predicted ballistic PC-ALM front
t = (L − l)/√(α η_h) and the diffusive PC front t = (L − l)²/(ρ η_h) (SPEC §6).
Arrays from each run's arrays.npz (seed: the smallest in the table).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm

from pcalm.plots.style import ALGO_LABELS, plt, read_table, save, settings_note
from pcalm.plots.theory import data_label, with_arrays

NORM_RANGE = (1e-3, 2.0)
COLUMNS = ("run_id", "algo.name", "train.seed", "model.depth", "model.width", "algo.state_lr",
           "algo.budget", "train.batch_size", "steps", "task.steps_per_layer")
NUMBERS = COLUMNS[2:] + ("algo.alpha", "algo.rho")


def fronts(ax, depth: int, t_max: int, eta: float, alpha: float, rho: float) -> None:
    layers = np.arange(1, depth)
    wave = (depth - layers) / np.sqrt(alpha * eta)
    heat = (depth - layers) ** 2 / (rho * eta)
    ax.plot(wave, layers, color="k", linestyle="--", linewidth=1.1,
            label="PC-ALM front (L − l)/√(αη_h)")
    ax.plot(heat, layers, color="k", linestyle=":", linewidth=1.3,
            label="PC front (L − l)²/(ρη_h)")
    ax.set_xlim(0, t_max)
    ax.set_ylim(0.5, depth - 0.5)


def plot(experiment: str, scale: str, tables: Path, out: Path | None) -> Path:
    df = read_table(tables, experiment, scale, needs=COLUMNS, numbers=NUMBERS)
    df = df[df["train.seed"] == df["train.seed"].min()]
    runs = {row["algo.name"]: (row, arr) for row, arr in with_arrays(df, tables)}
    algos = [a for a in ("pc", "pcalm") if a in runs]
    first = runs[algos[0]][0]
    depth, width = int(first["model.depth"]), int(first["model.width"])
    eta = float(first["algo.state_lr"])
    alpha = float(runs["pcalm"][0]["algo.alpha"]) if "pcalm" in runs else 1.0
    rho = float(runs["pcalm"][0]["algo.rho"]) if "pcalm" in runs else 1.0

    fig, axes = plt.subplots(2, len(algos), figsize=(4.6 * len(algos) + 1.2, 6.4),
                             squeeze=False, sharex=True, sharey=True, layout="constrained")
    images = [None, None]
    for c, algo in enumerate(algos):
        row, a = runs[algo]
        t_max = a["norm_ratio"].shape[0] - 1
        extent = (-0.5, t_max + 0.5, 0.5, depth - 0.5)  # x = step, y = hidden layer 1..L-1
        norm = np.clip(a["norm_ratio"].T, *NORM_RANGE)
        images[0] = axes[0, c].imshow(norm, origin="lower", aspect="auto", extent=extent,
                                      cmap="magma", norm=LogNorm(*NORM_RANGE),
                                      interpolation="nearest")
        images[1] = axes[1, c].imshow(a["cosine"].T, origin="lower", aspect="auto",
                                      extent=extent, cmap="RdBu_r", vmin=-1, vmax=1,
                                      interpolation="nearest")
        budget = int(row["algo.budget"])
        for r in range(2):
            ax = axes[r, c]
            fronts(ax, depth, t_max, eta, alpha, rho)
            ax.axvline(budget, color="0.5", linewidth=0.9)
            ax.text(budget, depth - 0.5, f" T = 2L = {budget}", color="0.5", fontsize=7,
                    va="top", ha="left")
        axes[0, c].set_title(f"{ALGO_LABELS[algo]}: credit norm ‖ε_l(t)‖ / ‖δ_l‖")
        axes[1, c].set_title(f"{ALGO_LABELS[algo]}: cosine cos(ε_l(t), −δ_l)")
        axes[1, c].set_xlabel("inference step t")
    for r in range(2):
        axes[r, 0].set_ylabel("hidden layer l (1 = input side)")
    fig.colorbar(images[0], ax=axes[0, :], label="‖ε_l‖ / ‖δ_l‖ (log, clipped)", shrink=0.9)
    fig.colorbar(images[1], ax=axes[1, :], label="cosine to −δ_l", shrink=0.9)
    axes[0, 0].legend(loc="lower right", fontsize=7, framealpha=0.85)

    settings_note(fig, f"ReLU residual MLP at init, N = {width}, L = {depth} | "
                  f"{data_label(df)}, one batch of {int(first['train.batch_size'])} | "
                  f"{int(first['steps'])} steps = {int(first['task.steps_per_layer'])}L | "
                  f"η_h = {eta:.4f} (1/λ_max) | α = {alpha:g}, ρ = {rho:g} | "
                  f"seed {int(first['train.seed'])}", scale)
    fig.get_layout_engine().set(rect=(0, 0.035, 1, 0.965))
    fig.suptitle("Credit propagation: diffusive (PC) vs ballistic (PC-ALM)", fontsize=10)
    return save(fig, f"{experiment}-{scale}", out)
