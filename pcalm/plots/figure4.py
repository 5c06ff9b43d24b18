"""Figure 4: linear PC-ALM dynamics, from results/tables/figure4-<scale>.csv.

    python experiments/plot.py figure4 --scale smoke [--tables DIR] [--out PATH]

(A) eigenvalues of the iteration matrix M (PC-ALM; PC: its z block I − η_h H) with the unit
circle, and a zoom on the slow modes near 1; (B) primal traces z_l(t) of one unit in a low,
a middle and the top hidden layer, with their forward values h as reference lines; (C) dual
traces λ_l(t) of the same units with −δ_l (BP adjoint) as reference lines, and PC's credit
ε = r for contrast. Arrays from each run's arrays.npz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pcalm.plots.style import ALGO_COLORS, ALGO_LABELS, plt, read_table, save, settings_note
from pcalm.plots.theory import with_arrays

LAYER_STYLES = ("-", "--", "-.")
MARKERS = {"pc": "x", "pcalm": "o"}
COLUMNS = ("run_id", "algo.name", "model.depth", "model.width", "spectral_radius", "state_lr",
           "train.seed", "steps")
NUMBERS = COLUMNS[2:] + ("algo.alpha",)


def traced_layers(depth: int) -> list[int]:
    """0-based indices of hidden layers 1, L/2 and L−1."""
    return sorted({0, (depth - 1) // 2, depth - 2})


def label_lines(ax, items: list[tuple[float, str]], gap_pt: float = 7.0) -> None:
    """Label horizontal lines at the right edge, nudging labels at least `gap_pt` apart."""
    y0, y1 = ax.get_ylim()
    height_pt = ax.get_window_extent().height * 72 / ax.figure.dpi
    per_pt = (y1 - y0) / height_pt
    placed: list[float] = []
    for value, text in sorted(items):
        y = value if not placed else max(value, placed[-1] + gap_pt * per_pt)
        placed.append(y)
        ax.annotate(text, (1.0, y), xycoords=("axes fraction", "data"), xytext=(2, 0),
                    textcoords="offset points", fontsize=6.5, color="0.3", va="center",
                    annotation_clip=False)


def plot(experiment: str, scale: str, tables: Path, out: Path | None) -> Path:
    df = read_table(tables, experiment, scale, needs=COLUMNS, numbers=NUMBERS)
    if "train.seed" in df:
        df = df[df["train.seed"] == df["train.seed"].min()]
    runs = {row["algo.name"]: (row, arr) for row, arr in with_arrays(df, tables)}
    algos = [a for a in ("pc", "pcalm") if a in runs]
    first = runs[algos[-1]][0]
    depth, width = int(first["model.depth"]), int(first["model.width"])

    fig = plt.figure(figsize=(14, 4.0), layout="constrained")
    grid = fig.add_gridspec(1, 4, width_ratios=[1, 1, 1.5, 1.5])
    ax_e, ax_zoom = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    ax_z, ax_l = fig.add_subplot(grid[2]), fig.add_subplot(grid[3])

    circle = np.exp(1j * np.linspace(0, 2 * np.pi, 400))
    for ax in (ax_e, ax_zoom):
        ax.plot(circle.real, circle.imag, color="0.5", linewidth=0.8)
        ax.axhline(0, color="0.85", linewidth=0.6)
        ax.axvline(0, color="0.85", linewidth=0.6)
    for algo in algos:
        row, a = runs[algo]
        label = f"{ALGO_LABELS[algo]}: ρ(M) = {float(row['spectral_radius']):.5f}"
        for ax in (ax_e, ax_zoom):
            ax.scatter(a["eig_real"], a["eig_imag"], s=9 if algo == "pcalm" else 14,
                       marker=MARKERS[algo], color=ALGO_COLORS[algo], linewidths=0.8,
                       label=label, alpha=0.8, zorder=3 if algo == "pc" else 2)
    ax_e.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), aspect="equal", xlabel="Re μ",
             ylabel="Im μ", title="(A) eigenvalues μ of M")
    ax_e.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, fontsize=7)
    ax_zoom.set(xlim=(0.8, 1.02), ylim=(-0.12, 0.12), xlabel="Re μ", ylabel="Im μ",
                title="(A) zoom: the slow modes near μ = 1")

    layers = traced_layers(depth)
    labels: dict = {}  # axis -> [(value, text)] of the reference lines, labelled at the right
    ref = runs[algos[-1]][1]
    for i, l in enumerate(layers):
        unit = int(np.argmax(np.abs(ref["neg_delta"][l])))  # the unit with the most credit
        style = LAYER_STYLES[i % len(LAYER_STYLES)]
        for algo in algos:
            _, a = runs[algo]
            t = a["step"]
            keep = t >= 1
            kw = dict(color=ALGO_COLORS[algo], linestyle=style,
                      linewidth=1.6 if algo == "pcalm" else 1.0,
                      alpha=1.0 if algo == "pcalm" else 0.7)
            ax_z.plot(t[keep], a["z"][keep, l, unit], **kw)
            ax_l.plot(t[keep], a["lam" if algo == "pcalm" else "eps"][keep, l, unit], **kw)
        for ax, key, sym in ((ax_z, "forward_z", "h"), (ax_l, "neg_delta", "−δ")):
            value = float(ref[key][l, unit])
            ax.axhline(value, color="0.2", linestyle=":", linewidth=1)
            labels.setdefault(ax, []).append((value, f"{sym}, layer {l + 1}"))
        for ax in (ax_z, ax_l):
            ax.plot([], [], color="0.4", linestyle=style, label=f"layer {l + 1} (unit {unit})")
    for algo in algos:
        what = {"pcalm": "PC-ALM", "pc": "PC"}[algo]
        ax_z.plot([], [], color=ALGO_COLORS[algo], label=f"{what} z")
        ax_l.plot([], [], color=ALGO_COLORS[algo],
                  label="PC-ALM λ" if algo == "pcalm" else "PC credit ε = r (no λ)")
    ax_z.plot([], [], color="0.2", linestyle=":", label="forward values h")
    ax_l.plot([], [], color="0.2", linestyle=":", label="BP adjoint −δ")
    eta, alpha = float(first["state_lr"]), float(first.get("algo.alpha", 1.0) or 1.0)
    for ax in (ax_z, ax_l):
        ax.set_xscale("log")
        ax.axvline(depth / np.sqrt(alpha * eta), color="0.6", linewidth=0.8, linestyle="--")
        ax.grid(alpha=0.25)
        ax.set_xlabel("inference step t (log)")
        ax.legend(loc="lower left", frameon=False, fontsize=6.5)
    fig.canvas.draw()  # final limits and sizes, to keep the reference labels apart
    for ax, items in labels.items():
        label_lines(ax, items)
    ax_z.set(ylabel="primal activity z_l(t)", title="(B) primal traces")
    ax_l.set(ylabel="dual activity λ_l(t)", title="(C) dual traces (PC: credit ε)")
    ax_l.text(depth / np.sqrt(alpha * eta), 1.0, " t = L/√(αη_h)", color="0.45", fontsize=7,
              transform=ax_l.get_xaxis_transform(), va="top")

    settings_note(fig, f"linear net, N = {width}, L = {depth}, muPC, seed "
                  f"{int(first['train.seed'])} | one random input x ~ N(0, I), one-hot target | "
                  f"η_h = 1/λ_max = {eta:.4f} | α = ρ = 1 | T = {int(first['steps'])} | no data",
                  scale)
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    fig.suptitle("Linear PC-ALM: iteration-matrix spectrum and activity traces converging "
                 "to the forward pass and the BP adjoint", fontsize=10)
    return save(fig, f"{experiment}-{scale}", out)
