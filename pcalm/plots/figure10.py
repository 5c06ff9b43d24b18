"""Figure 10: training curves over one epoch, from results/tables/figure10-<scale>-metrics.csv.

    python experiments/plot.py figure10 --scale smoke [--tables DIR] [--out PATH]

One column per activation (linear, tanh, ReLU); top: test accuracy vs training step, bottom:
training loss (½‖ŷ − y‖², mean over the steps since the previous evaluation). BP, PC and
PC-ALM in their colours; line style per inference budget T. Mean ± sd band over seeds; a
diverged run's curve ends where its loss stopped being finite, and the note counts such runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pcalm.analysis.grid import read_csv_table
from pcalm.analysis.stats import ACTIVATION_ALIASES, CHANCE, normalise
from pcalm.plots.grid import ACTIVATION_ORDER, ALGO_ORDER, DATA_LABELS
from pcalm.plots.style import (
    ACTIVATION_LABELS,
    ALGO_COLORS,
    ALGO_LABELS,
    diverged_note,
    plt,
    read_table,
    save,
    settings_note,
)

BUDGET_STYLES = ["--", "-", ":", "-."]  # smallest T dashed, next solid, ...
COLUMNS = ("step", "algo.name", "model.activation", "model.width", "model.depth", "train.seed")
NUMBERS = ("step", "model.width", "model.depth", "train.seed", "test_acc", "train_loss",
           "train.batch_size", "train.evals_per_epoch")


def _curve(ax, rows, value: str, colour: str, style: str, label: str) -> None:
    """Mean ± sd over seeds of `value` vs step (NaN rows — diverged, step 0 loss — skipped)."""
    pivot = rows.pivot_table(index="step", columns="train.seed", values=value, aggfunc="mean")
    pivot = pivot.dropna(how="all")
    if pivot.empty:
        return
    steps = pivot.index.to_numpy(float)
    mean = pivot.mean(axis=1).to_numpy(float)
    sd = np.nan_to_num(pivot.std(axis=1).to_numpy(float))
    ax.fill_between(steps, mean - sd, mean + sd, color=colour, alpha=0.15, linewidth=0)
    ax.plot(steps, mean, color=colour, linestyle=style, linewidth=1.4, label=label)


def runs_table(tables: Path, experiment: str, scale: str) -> pd.DataFrame:
    """The per-run table beside the metrics (for the diverged count), normalised; an empty
    frame where there is none (the curves do not need it). A damaged one is a TableError."""
    path = Path(tables) / f"{experiment}-{scale}.csv"
    frame = read_csv_table(path, f"rebuild it with `make collect EXP={experiment} "
                           f"SCALE={scale.partition('-')[0]}`") if path.is_file() else None
    return normalise(pd.DataFrame() if frame is None else frame)


def metrics_with_configs(tables: Path, experiment: str, scale: str) -> pd.DataFrame:
    """The metrics table with each run's config columns. A collected table carries them; a
    table on record (`make reference` slims it to run id + metrics) gets them from the run
    table beside it, joined on the run id."""
    metrics = read_table(tables, experiment, scale, kind="metrics", needs=("step",),
                         numbers=("step",))
    missing = [c for c in COLUMNS if c not in metrics]
    if not missing:
        return read_table(tables, experiment, scale, kind="metrics", needs=COLUMNS,
                          numbers=NUMBERS)
    # slimmed: only the run id can bring the configs back
    metrics = read_table(tables, experiment, scale, kind="metrics", needs=("run_id", "step"),
                         numbers=("step",))
    runs = read_table(tables, experiment, scale, needs=("run_id", *missing),
                      numbers=tuple(c for c in missing if c in NUMBERS))
    extra = ["run_id", *[c for c in runs.columns if c not in metrics.columns]]
    return metrics.merge(runs[extra], on="run_id", how="inner")


def plot(experiment: str, scale: str, tables: Path, out: Path | None) -> Path:
    df = metrics_with_configs(tables, experiment, scale)
    df["model.activation"] = df["model.activation"].replace(ACTIVATION_ALIASES)
    if "algo.budget" not in df:
        df["algo.budget"] = np.nan
    activations = [a for a in ACTIVATION_ORDER if a in set(df["model.activation"])]
    batch = int(df["train.batch_size"].iloc[0]) if "train.batch_size" in df else 64
    budgets = sorted({int(b) for b in df["algo.budget"].dropna().unique()})
    styles = {b: BUDGET_STYLES[i % len(BUDGET_STYLES)] for i, b in enumerate(budgets)}
    if len(budgets) == 1:
        styles = {budgets[0]: "-"}

    fig, axes = plt.subplots(2, len(activations), figsize=(3.4 * len(activations) + 1.6, 5.6),
                             squeeze=False, sharex=True, layout="constrained")
    for c, act in enumerate(activations):
        sub = df[df["model.activation"] == act]
        for algo in [a for a in ALGO_ORDER if a in set(sub["algo.name"])]:
            rows = sub[sub["algo.name"] == algo]
            groups = [(None, rows)] if algo == "bp" else \
                [(int(b), g) for b, g in rows.groupby("algo.budget")]
            for budget, g in groups:
                style = "-" if budget is None else styles[budget]
                label = ALGO_LABELS[algo] + ("" if budget is None else f", T = {budget}")
                _curve(axes[0, c], g, "test_acc", ALGO_COLORS[algo], style, label)
                _curve(axes[1, c], g, "train_loss", ALGO_COLORS[algo], style, label)
        axes[0, c].set_title(ACTIVATION_LABELS.get(act, act))
        axes[0, c].axhline(CHANCE, color="0.6", linewidth=0.8, linestyle=":")
        axes[0, c].annotate("chance (10 %)", xy=(1, CHANCE), xycoords=("axes fraction", "data"),
                            xytext=(-2, 2), textcoords="offset points", ha="right",
                            va="bottom", fontsize=7, color="0.45")
        axes[0, c].yaxis.set_major_formatter(lambda v, _: f"{100 * v:.4g}")
        axes[1, c].set_xlabel(f"training step (batch {batch})")
        for r in range(2):
            axes[r, c].grid(alpha=0.25)
    axes[0, 0].set_ylabel("test accuracy (%)")
    axes[1, 0].set_ylabel("training loss ½‖ŷ − y‖²")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes[0, 1:]:  # an activation may hold curves the first one lacks
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside right center", frameon=False)

    first = df.iloc[0]
    data = DATA_LABELS.get(str(first.get("data.name")), first.get("data.name"))
    width, depth = int(first["model.width"]), int(first["model.depth"])
    seeds = sorted(int(s) for s in df["train.seed"].unique())
    evals = int(first.get("train.evals_per_epoch", 0) or 0)
    fig.suptitle(f"{data}: training curves over one epoch, N = {width}, L = {depth}",
                 fontsize=10)
    settings_note(fig, f"{data} | N = {width}, L = {depth} | T = "
                  f"{', '.join(map(str, budgets)) or '–'} (line style), η_h = 1/λ_max | "
                  f"{evals} evaluations per epoch | mean ± sd over seeds {seeds}"
                  + diverged_note(runs_table(tables, experiment, scale)), scale)
    fig.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))
    return save(fig, f"{experiment}-{scale}", out)
