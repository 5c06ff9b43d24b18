"""Figure 5: cosine of PC-ALM's weight gradient to BP's vs inference step, at init, from
results/tables/figure5-<scale>.csv.

    python experiments/plot.py figure5 --scale smoke [--tables DIR] [--out PATH]

One column per depth L; top: the whole-network cosine; bottom: the input layer W_1's relative
error ‖g_1 − g_BP,1‖/‖g_BP,1‖ (1 = no credit yet). The whole-network number is dominated by the
output layers; the input layer's cosine alone is blind to magnitude (any credit that reaches
W_1 points the right way), so the bottom row shows its relative error. PC-ALM per α (red, line style
by α), PC for reference (blue, stored in each PC-ALM run). Dashed verticals: the predicted
arrival t = L/√(α η_h) of PC-ALM's credit wave (same style per α); grey: the budget T = 2L.
Mean ± sd over seeds; log x.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pcalm.plots.style import ALGO_COLORS, ALGO_LABELS, plt, read_table, save, settings_note
from pcalm.plots.theory import band, data_label, eta_text, seeds_text, with_arrays

ALPHA_STYLES = (":", "--", "-", "-.")  # smallest α dotted ... largest solid
COLUMNS = ("run_id", "model.depth", "algo.alpha", "model.width", "algo.state_lr", "algo.budget",
           "train.batch_size")
NUMBERS = COLUMNS[1:]


def plot(experiment: str, scale: str, tables: Path, out: Path | None) -> Path:
    df = read_table(tables, experiment, scale, needs=COLUMNS, numbers=NUMBERS)
    runs = with_arrays(df, tables)
    depths = sorted({int(r["model.depth"]) for r, _ in runs})
    alphas = sorted({float(r["algo.alpha"]) for r, _ in runs})
    styles = {a: ALPHA_STYLES[i % len(ALPHA_STYLES)] for i, a in enumerate(alphas)}
    if len(alphas) >= 3:
        styles[alphas[-1]] = "-"
    width = int(runs[0][0]["model.width"])

    fig, axes = plt.subplots(2, len(depths), figsize=(3.5 * len(depths) + 1.8, 5.8),
                             squeeze=False, sharex="col", sharey="row", layout="constrained")
    rows = (("cosine", None, "whole network\ncos(g, g_BP)"),
            ("rel_error_per_layer", 0,
             "input layer W_1, relative error\n‖g_1 − g_BP,1‖ / ‖g_BP,1‖"))
    for c, depth in enumerate(depths):
        cell = [(r, a) for r, a in runs if int(r["model.depth"]) == depth]
        eta = float(cell[0][0]["algo.state_lr"])
        budget = int(cell[0][0]["algo.budget"])
        for r_i, (key, layer, _) in enumerate(rows):
            ax = axes[r_i, c]

            def pick(a, k=key, lay=layer):
                return a[k] if lay is None else a[k][:, lay]

            pc = [pick(a, "pc_" + key) for _, a in cell
                  if float(_["algo.alpha"]) == alphas[-1] and "pc_" + key in a]
            if pc:
                band(ax, cell[0][1]["step"], pc, ALGO_COLORS["pc"], label=ALGO_LABELS["pc"])
            for alpha in alphas:
                group = [pick(a) for r, a in cell if float(r["algo.alpha"]) == alpha]
                steps = next(a["step"] for r, a in cell if float(r["algo.alpha"]) == alpha)
                band(ax, steps, group, ALGO_COLORS["pcalm"], linestyle=styles[alpha],
                     label=f"{ALGO_LABELS['pcalm']}, α = {alpha:g}")
                ax.axvline(depth / np.sqrt(alpha * eta), color=ALGO_COLORS["pcalm"],
                           linestyle=styles[alpha], linewidth=0.8, alpha=0.6)
            ax.axvline(budget, color="0.55", linewidth=1.0)
            ax.set_xscale("log")
            ax.grid(alpha=0.25)
            ax.axhline(1.0 if layer is None else 0.0, color="0.3", linewidth=0.6)
        axes[0, c].set_title(f"L = {depth}  (η_h = {eta:.3f})")
        axes[0, c].text(budget, 0.02, " T = 2L", color="0.45", fontsize=7,
                        transform=axes[0, c].get_xaxis_transform())
        axes[1, c].set_xlabel("inference step t (log)")
    for r_i, (_, _, label) in enumerate(rows):
        axes[r_i, 0].set_ylabel(label)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color=ALGO_COLORS["pcalm"], linestyle="--", linewidth=0.8))
    labels.append("t = L/√(α η_h), per α")
    fig.legend(handles, labels, loc="outside right center", frameon=False)

    settings_note(fig, f"ReLU residual MLP at init, N = {width}, L ∈ {depths} | "
                  f"{data_label(df)}, one batch of {int(runs[0][0]['train.batch_size'])} | "
                  f"{eta_text(df)} | ρ = 1 | {seeds_text(df)}", scale)
    fig.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))
    fig.suptitle("Gradient alignment to BP at initialisation vs inference steps", fontsize=10)
    return save(fig, f"{experiment}-{scale}", out)
