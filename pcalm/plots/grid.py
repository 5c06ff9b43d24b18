"""Width × depth grid heatmaps: Figure 2 and its MNIST twin (pcalm.plots.figure2).

A collected table (experiments/collect.py) has one row per complete run with flattened config
columns (`algo.name`, `model.width`, `model.depth`, `model.activation`, `train.seed`, ...)
and summary columns (`test_acc`, `diverged`, `grad_cosine`, ...). Conventions used here
(the numbers come from pcalm.analysis.stats):

- a diverged run (non-finite loss; summary `diverged`) counts as chance accuracy (10 %), and
  its cell is hatched and says how many runs diverged;
- a cell's value is the mean over seeds, its spread the sd over seeds;
- a difference A − B is paired by seed (mean ± sd of A_s − B_s over seeds both have).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from pcalm.analysis.grid import LEARNED_MARGIN
from pcalm.analysis.stats import CHANCE, paired_difference, seed_stats
from pcalm.plots.style import (
    ACTIVATION_LABELS,
    ALGO_LABELS,
    plt,
    read_accuracies,
    save,
    settings_note,
    signed,
)

ACTIVATION_ORDER = ("identity", "tanh", "relu")
ALGO_ORDER = ("bp", "pc", "pcalm")
DATA_LABELS = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST", "synthetic": "synthetic"}
KEY = ["model.activation", "model.width", "model.depth"]
COLUMNS = ("algo.name", *KEY, "train.seed")  # what a grid table must hold to be drawn
DIFFERENCES = (("pc", "bp"), ("pcalm", "bp"), ("pcalm", "pc"))  # columns 2-4 of Figure 2
SD_MIN_PT = 6.5  # the per-cell sd stays legible when the figure is scaled to a paper column
MIN_PANEL_IN = 1.75  # a 1×1 or 1×N grid: titles and colour-bar labels must not overlap
CPU_SUBSET_LIMIT = 2048  # configs/scale/paper_cpu.yaml: sweep.max_width_times_depth


# ----------------------------------------------------------------------------- figure


def _text_colour(cmap, norm, value: float) -> str:
    r, g, b, _ = cmap(norm(value))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _spread(sd: float, n: int) -> str:
    """The per-cell sd over seeds (`±0.4`); `±<0.1` where it rounds to zero but is not,
    `n=1` where one seed gives no sd."""
    if not math.isfinite(sd):
        return f"n={n}"
    if 100 * sd < 0.005:  # seeds agree (to float rounding)
        return "±0"
    return f"±{100 * sd:.1f}" if round(100 * sd, 1) > 0 else "±<0.1"


def _heatmap(ax, cells: dict, widths, depths, cmap, norm, is_signed: bool, fontsize: float):
    """One panel: cells {(width, depth): (mean, sd, n, n_diverged)}; deep rows on top."""
    grid = np.full((len(depths), len(widths)), np.nan)
    for (w, d), (mean, *_rest) in cells.items():
        grid[depths.index(d), widths.index(w)] = mean
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap=cmap, norm=norm,
                      aspect="auto", interpolation="nearest")
    for i, d in enumerate(depths):
        for j, w in enumerate(widths):
            mean, sd, n, n_div = cells.get((w, d), (math.nan, math.nan, 0, 0))
            if not math.isfinite(mean):
                ax.text(j, i, "not run", ha="center", va="center", fontsize=fontsize * 0.85,
                        color="0.35")
                continue
            colour = _text_colour(cmap, norm, mean)
            value = signed(100 * mean) if is_signed else f"{100 * mean:.1f}"
            ax.text(j, i + 0.08, value, ha="center", va="center", fontsize=fontsize,
                    color=colour, fontweight="bold")
            ax.text(j, i - 0.24, _spread(sd, n), ha="center", va="center",
                    fontsize=max(SD_MIN_PT, fontsize * 0.8), color=colour)
            if n_div:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                           edgecolor="0.15", linewidth=0))
                ax.text(j + 0.46, i + 0.44, f"{n_div} div.", ha="right", va="top",
                        fontsize=fontsize * 0.62, color=colour)
    ax.set_xticks(range(len(widths)), [str(w) for w in widths])
    ax.set_yticks(range(len(depths)), [str(d) for d in depths])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_facecolor("0.88")  # missing cells
    return image


def _cells(stats: pd.DataFrame, activation: str) -> dict:
    rows = stats[stats["model.activation"] == activation]
    return {(int(r["model.width"]), int(r["model.depth"])):
            (r["mean"], r["sd"], int(r["n"]), int(r.get("n_diverged", 0)))
            for _, r in rows.iterrows()}


def grid_summary(df: pd.DataFrame) -> dict:
    """Everything the figure (and the report) needs from a normalised grid table."""
    acc = seed_stats(df, ["algo.name", *KEY])
    diverged = seed_stats(df, KEY)[[*KEY, "n_diverged"]]
    diffs = {}
    for a, b in DIFFERENCES:
        d = paired_difference(df, KEY, a, b)
        # a difference cell is hatched when any run of its cell (any algorithm) diverged
        diffs[(a, b)] = d.merge(diverged, on=KEY, how="left").fillna({"n_diverged": 0})
    return {"acc": acc, "diffs": diffs}


def _not_run_note(df: pd.DataFrame, widths: list[int], depths: list[int]) -> str:
    """What the grey cells are: say so when they are exactly the CPU subset's omissions."""
    present = set(zip(df["model.width"].astype(int), df["model.depth"].astype(int)))
    absent = [(w, d) for w in widths for d in depths if (w, d) not in present]
    if absent and all(w * d > CPU_SUBSET_LIMIT for w, d in absent) and all(
            w * d <= CPU_SUBSET_LIMIT for w, d in present):
        return (f"not run: N·L > {CPU_SUBSET_LIMIT} (this CPU's subset of the paper grid, "
                "scale=paper_cpu; they need a GPU)")
    return "not run (no complete run)"


def _chance_note(df: pd.DataFrame, summary: dict, batch: int) -> str:
    """Where BP did not learn (the report's rule: seed mean below chance + LEARNED_MARGIN),
    without guessing why: too few steps for a narrow net (smoke scale), or a learning rate
    that kills the net (a dead net ends at chance with a finite loss)."""
    acc = summary["acc"]
    bp = acc[(acc["algo.name"] == "bp") & (acc["mean"] < CHANCE + LEARNED_MARGIN - 1e-9)]
    if bp.empty:
        return ""
    cells = sorted({(int(w), int(d)) for w, d in zip(bp["model.width"], bp["model.depth"])})
    size = pd.to_numeric(df.get("data.train_size"), errors="coerce")
    size = int(size.iloc[0]) if size is not None and size.notna().any() else 60000
    steps = size // max(batch, 1)
    where = ", ".join(f"N = {w} L = {d}" for w, d in cells)
    return (f"\nBP did not learn (mean below {100 * (CHANCE + LEARNED_MARGIN):.0f} %) at {where}, "
            f"in {steps} steps ({size} samples, one epoch): a difference there compares noise "
            "around 10 %, and the report leaves those cells undecided")


def plot_grid(experiment: str, scale: str, tables: Path, out: Path | None) -> Path:
    df = read_accuracies(tables, experiment, scale, needs=COLUMNS)
    summary = grid_summary(df)
    activations = [a for a in ACTIVATION_ORDER if a in set(df["model.activation"])]
    activations += sorted(set(df["model.activation"]) - set(activations))
    widths = sorted(int(w) for w in df["model.width"].unique())
    depths = sorted(int(d) for d in df["model.depth"].unique())

    acc = summary["acc"]
    bp = acc[acc["algo.name"] == "bp"]
    lo = min(bp["mean"].min(), 1.0) if len(bp) else 0.0
    hi = max(bp["mean"].max(), 0.0) if len(bp) else 1.0
    lo, hi = (lo if math.isfinite(lo) else 0.5), (hi if math.isfinite(hi) else 0.5)
    if hi - lo < 0.02:
        lo, hi = lo - 0.01, hi + 0.01
    acc_norm = plt.Normalize(lo, hi)
    spread = [d["mean"].abs().max() for d in summary["diffs"].values() if len(d)]
    limit = max([s for s in spread if math.isfinite(s)] + [0.01])
    diff_norm = plt.Normalize(-limit, limit)
    acc_cmap = plt.get_cmap("viridis").copy()
    diff_cmap = plt.get_cmap("PuOr").copy()  # neither end looks like an algorithm's colour

    n_cells = max(len(widths), len(depths))
    panel = max(MIN_PANEL_IN, 0.55 + 0.42 * n_cells)
    fontsize = 9 if n_cells <= 3 else 8 if n_cells <= 5 else 7
    fig, axes = plt.subplots(len(activations), 4, figsize=(4 * panel + 0.9, len(activations)
                             * panel + 1.3), squeeze=False, layout="constrained")
    titles = ["BP test accuracy\n(%)",
              *(f"{ALGO_LABELS[a]} − {ALGO_LABELS[b]}\n(pp)" for a, b in DIFFERENCES)]
    acc_image = diff_image = None
    for r, act in enumerate(activations):
        acc_image = _heatmap(axes[r, 0], _cells(acc[acc["algo.name"] == "bp"], act), widths,
                             depths, acc_cmap, acc_norm, False, fontsize)
        for c, key in enumerate(DIFFERENCES, start=1):
            diff_image = _heatmap(axes[r, c], _cells(summary["diffs"][key], act), widths,
                                  depths, diff_cmap, diff_norm, True, fontsize)
        axes[r, 0].set_ylabel(f"{ACTIVATION_LABELS.get(act, act)}\n\ndepth L", fontsize=9)
        for c in range(4):
            axes[r, c].set_xlabel("width N" if r == len(activations) - 1 else "")
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=9)
    bar = fig.colorbar(acc_image, ax=axes[:, 0], orientation="horizontal", fraction=0.05,
                       aspect=12, pad=0.02)
    bar.set_label("test accuracy (%)")
    bar.ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}")
    bar = fig.colorbar(diff_image, ax=axes[:, 1:], orientation="horizontal", fraction=0.05,
                       aspect=40, pad=0.02)
    bar.set_label("accuracy difference (pp; > 0: first method better)")
    bar.ax.xaxis.set_major_formatter(lambda v, _: signed(100 * v, 0)
                                     if abs(v) >= 0.02 or abs(v) < 1e-12 else signed(100 * v, 1))

    data = DATA_LABELS.get(str(df["data.name"].iloc[0]), df["data.name"].iloc[0]) \
        if "data.name" in df else "?"
    seeds = sorted(int(s) for s in df["train.seed"].unique()) if "train.seed" in df else []
    fig.suptitle(f"{data}: test accuracy after one epoch across width × depth\n"
                 "(BP, and differences between methods)", fontsize=10)
    batch = int(df["train.batch_size"].iloc[0]) if "train.batch_size" in df else 64
    settings_note(fig, f"{data} | T = 2L, η_h = 1/λ_max per cell | batch {batch}, one epoch | "
                  f"mean over seeds {seeds}, small: ± sd (differences paired by seed)\n"
                  "hatched: a run of the cell diverged (counted as chance, 10 %) | grey: "
                  + _not_run_note(df, widths, depths) + _chance_note(df, summary, batch), scale)
    fig.get_layout_engine().set(h_pad=0.06, rect=(0, 0.045, 1, 0.955))
    return save(fig, f"{experiment}-{scale}", out)
