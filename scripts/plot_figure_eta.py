"""Figure η: PC's test accuracy vs the activity step η_h (results/tables/figure_eta-<scale>.csv).

    python scripts/plot_figure_eta.py --scale smoke [--tables DIR] [--out PATH]

x: η_h · λ_max (multiples of 1/λ_max; λ_max of the cell read from configs/eta_table.csv, the
value the experiment's η_h list was derived from; if the cell is not in the table, x is the
absolute η_h). y: test accuracy after one epoch, mean ± sd over seeds; single seeds as dots,
diverged runs (non-finite loss) as crosses at chance (10 %). The PC stability limit
η_h = 2/λ_max and the grid rule η_h = 1/λ_max are marked.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grid_heatmaps import ALGO_ORDER, CHANCE, DATA_LABELS, normalise, seed_stats  # noqa: E402
from plotting import (  # noqa: E402
    ACTIVATION_LABELS,
    ALGO_COLORS,
    ALGO_LABELS,
    REPO,
    parse_args,
    plt,
    read_table,
    save,
    settings_note,
)

ETA_TABLE = REPO / "configs" / "eta_table.csv"


def lambda_max(data: str, activation: str, width: int, depth: int,
               table: Path | None = None) -> float | None:
    """λ_max of a cell from the eta table (None if the table or the cell is missing)."""
    table = Path(table or ETA_TABLE)
    if not table.is_file():
        return None
    activation = {"linear": "identity"}.get(activation, activation)
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            if (row["data"], row["activation"], int(row["width"]), int(row["depth"])) == \
                    (data, activation, width, depth):
                return float(row["lambda_max"])
    return None


def eta_multiples(df, table: Path | None = None):
    """(x values, λ_max or None) for a normalised figure_eta table (one cell)."""
    first = df.iloc[0]
    lam = lambda_max(str(first["data.name"]), str(first["model.activation"]),
                     int(first["model.width"]), int(first["model.depth"]), table)
    eta = df["algo.state_lr"].astype(float)
    return (eta * lam if lam else eta), lam


def plot(experiment: str, scale: str, tables: Path, out: Path | None) -> Path:
    df = normalise(read_table(tables, experiment, scale))
    df["x"], lam = eta_multiples(df)
    df["x"] = df["x"].round(3)
    stats = seed_stats(df, ["algo.name", "x"])

    fig, ax = plt.subplots(figsize=(6.4, 3.9), layout="constrained")
    algos = [a for a in ALGO_ORDER if a in set(df["algo.name"])]
    for algo in algos:
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
    if lam:
        ax.axvline(2.0, color="0.25", linewidth=1.0, linestyle="--")
        ax.axvline(1.0, color="0.55", linewidth=0.8, linestyle=":")
        ax.text(2.0, 1.0, " 2/λ_max (PC stability limit)", transform=ax.get_xaxis_transform(),
                fontsize=7, va="top", ha="left", color="0.25")
        ax.text(1.0, 1.0, "1/λ_max (grid rule) ", transform=ax.get_xaxis_transform(),
                fontsize=7, va="top", ha="right", color="0.45")
        ax.set_xlabel("activity step η_h × λ_max  (multiples of 1/λ_max)")
    else:
        ax.set_xlabel("activity step η_h (per sample; no λ_max for this cell in the eta table)")
    ax.set_ylabel("test accuracy after one epoch (%)")
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.4g}")
    ax.set_ylim(0, max(0.3, float(df["acc"].max()) + 0.08))
    ax.grid(alpha=0.25)
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.9), frameon=False, fontsize=7)

    first = df.iloc[0]
    data = DATA_LABELS.get(str(first.get("data.name")), first.get("data.name"))
    width, depth = int(first["model.width"]), int(first["model.depth"])
    act = ACTIVATION_LABELS.get(first["model.activation"], first["model.activation"])
    budgets = sorted({int(b) for b in df["algo.budget"].dropna().unique()})
    seeds = sorted(int(s) for s in df["train.seed"].unique())
    ax.set_title(f"{data}: accuracy vs activity step η_h (N = {width}, L = {depth}, {act})")
    lam_text = f"λ_max = {lam:.4g}" if lam else "λ_max unknown"
    settings_note(fig, f"{data} | N = {width}, L = {depth}, {act} | T = "
                  f"{'/'.join(map(str, budgets))} | {lam_text} | one epoch | seeds {seeds}",
                  scale)
    fig.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))
    return save(fig, f"{experiment}-{scale}", out)


if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0])
    plot("figure_eta", args.scale, args.tables, args.out)
