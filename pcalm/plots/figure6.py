"""Figure 6: parameterisation sweep (Fashion-MNIST), from results/tables/figure6-<scale>.csv.

    python experiments/plot.py figure6 --scale smoke [--tables DIR] [--out PATH]

Top: test accuracy after one epoch of BP / PC / PC-ALM vs the output multiplier γ0 — left
the muPC net (a_L = 1/(γ0 N), lr ∝ γ0²), right the standard parameterisation (sp) at the
same learning rates (γ0 does not enter an sp net). Bottom: gradient cosine to BP after
training.
Mean ± sd over seeds; a diverged run counts as chance (the note counts them). Figure 7 is its
MNIST twin (`python experiments/plot.py figure7`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pcalm.analysis.stats import CHANCE, seed_stats
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

COLUMNS = ("algo.name", "model.gamma0", "model.width", "model.depth", "train.seed")
NUMBERS = COLUMNS[1:] + ("grad_cosine",)
PARAMS = {  # column title, x label, marker
    "mupc": ("muPC: a_L = 1/(γ0 N), lr = η0 γ0² √(N/L)",
             "output multiplier γ0  (lazy ← → rich)", "o"),
    "sp": ("standard (sp): all a = 1, PyTorch init",
           "γ0 (sp: only the lr = η0 γ0² √(N/L) changes)", "s"),
}


def _series(ax, stats, algo: str, param: str, offset: float) -> None:
    rows = stats[(stats["algo.name"] == algo) & (stats["model.param"] == param)]
    rows = rows.sort_values("model.gamma0")
    if rows.empty:
        return
    x = rows["model.gamma0"].to_numpy(float) * offset  # small offset: overlapping error bars
    mean, sd = rows["mean"].to_numpy(float), np.nan_to_num(rows["sd"].to_numpy(float))
    colour = ALGO_COLORS.get(algo, "0.5")
    ax.fill_between(x, mean - sd, mean + sd, color=colour, alpha=0.12, linewidth=0)
    ax.errorbar(x, mean, yerr=sd, color=colour, marker=PARAMS.get(param, ("", "", "^"))[2],
                markersize=4, capsize=2, linewidth=1.4, label=ALGO_LABELS.get(algo, algo))


def plot(experiment: str, scale: str, tables: Path, out: Path | None) -> Path:
    df = read_accuracies(tables, experiment, scale, needs=COLUMNS, numbers=NUMBERS)
    if "model.param" not in df:
        df["model.param"] = "mupc"
    df["model.gamma0"] = df["model.gamma0"].astype(float)
    keys = ["algo.name", "model.param", "model.gamma0"]
    acc = seed_stats(df, keys)
    has_cos = "grad_cosine" in df and df["grad_cosine"].notna().any()
    cos = seed_stats(df[df["grad_cosine"].notna()], keys, value="grad_cosine") if has_cos \
        else None

    algos = [a for a in ALGO_ORDER if a in set(df["algo.name"])]
    params = [p for p in PARAMS if p in set(df["model.param"])]
    params += sorted(set(df["model.param"]) - set(params))
    fig, axes = plt.subplots(2, len(params), figsize=(4.3 * len(params) + 1.2, 6.4),
                             squeeze=False, sharey="row", layout="constrained")
    offsets = dict(zip(algos, (0.97, 1.0, 1.03)))
    gammas = sorted(df["model.gamma0"].unique())
    for c, param in enumerate(params):
        for algo in algos:
            _series(axes[0, c], acc, algo, param, offsets.get(algo, 1.0))
            if cos is not None and algo != "bp":
                _series(axes[1, c], cos, algo, param, offsets.get(algo, 1.0))
        title, xlabel, _ = PARAMS.get(param, (param, "γ0", "^"))
        axes[0, c].set_title(title)
        axes[1, c].set_xlabel(xlabel)
        axes[0, c].axhline(CHANCE, color="0.6", linewidth=0.8, linestyle=":")
        for ax in axes[:, c]:
            ax.set_xscale("log", base=2)
            ax.set_xticks(gammas, [f"{g:g}" for g in gammas])
            ax.minorticks_off()
            ax.grid(alpha=0.25)
        if cos is None:
            axes[1, c].text(0.5, 0.5, "no gradient cosines in the table", ha="center",
                            transform=axes[1, c].transAxes, color="0.4")
    axes[0, 0].set_ylabel("test accuracy after one epoch (%)")
    axes[0, 0].yaxis.set_major_formatter(lambda v, _: f"{100 * v:.4g}")
    axes[1, 0].set_ylabel("gradient cosine to BP after training")
    handles = [plt.Line2D([], [], color=ALGO_COLORS[a], linewidth=2, label=ALGO_LABELS[a])
               for a in algos]
    fig.legend(handles=handles, loc="outside right center", frameon=False)

    first = df.iloc[0]
    data = DATA_LABELS.get(str(first.get("data.name")), first.get("data.name"))
    width, depth = int(first["model.width"]), int(first["model.depth"])
    act = ACTIVATION_LABELS.get(first.get("model.activation"), first.get("model.activation"))
    budgets = sorted({int(b) for b in df.get("algo.budget", []) if b == b})
    seeds = sorted(int(s) for s in df["train.seed"].unique())
    n_div = int(df["diverged"].sum())
    fig.suptitle(f"{data}: parameterisation sweep at N = {width}, L = {depth}, {act}",
                 fontsize=10)
    settings_note(fig, f"{data} | N = {width}, L = {depth}, {act} | T = "
                  f"{'/'.join(map(str, budgets)) or '2L'} (2L), η_h = 1/λ_max of the muPC net "
                  f"(also for sp) | one epoch | mean ± sd over seeds {seeds}"
                  + (f" | {n_div} diverged runs counted as chance" if n_div else ""), scale)
    fig.get_layout_engine().set(rect=(0, 0.035, 1, 0.965))
    return save(fig, f"{experiment}-{scale}", out)
