"""Figure 1: PC vs PC-ALM in the scalar two-layer linear net, from
results/tables/figure1-<scale>.csv.

    python experiments/plot.py figure1 --scale smoke [--tables DIR] [--out PATH]

(a) the state z(t) against its forward value h; (b) the credit ε(t) = ρr + λ (and PC-ALM's
multiplier λ) against the BP adjoint −δ; (c) the weight-gradient error max|g(t) − g_BP| (log);
(d) the (z, λ) phase plane with both fixed points. Arrays from each run's arrays.npz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pcalm.plots.style import (
    ALGO_COLORS,
    ALGO_LABELS,
    MINUS,
    plt,
    read_table,
    save,
    settings_note,
)
from pcalm.plots.theory import with_arrays

# what the panels read from each row (the arrays come from the run folder)
COLUMNS = ("run_id", "algo.name", "forward_z", "neg_delta", "spectral_radius", "steps",
           "task.w1", "task.w2", "task.x", "task.y", "state_lr")
NUMBERS = COLUMNS[2:]
REF = dict(color="0.25", linestyle=":", linewidth=1.1)


def _radius_label(name: str, radius: float) -> str:
    """The legend entry with the spectral radius of the iteration s⁺ = M s + b, saying what
    ρ(M) = 0 means: PC's one state with η_h = 1/λ_max reaches its fixed point in one step,
    which is PC's own (its error to BP stays), not BP's."""
    if radius < 5e-4:
        return f"{name} (ρ(M) = 0: one step to its\nown fixed point, not BP's)"
    return f"{name} (ρ(M) = {radius:.3f})"


def plot(experiment: str, scale: str, tables: Path, out: Path | None) -> Path:
    df = read_table(tables, experiment, scale, needs=COLUMNS, numbers=NUMBERS)
    runs = {row["algo.name"]: (row, arr) for row, arr in with_arrays(df, tables)}
    algos = [a for a in ("pc", "pcalm") if a in runs]
    first = runs[algos[0]][0]
    h, neg_delta = float(first["forward_z"]), float(first["neg_delta"])

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.3), layout="constrained")
    ax_z, ax_c, ax_g, ax_p = axes
    for algo in algos:
        row, a = runs[algo]
        c, name = ALGO_COLORS[algo], ALGO_LABELS[algo]
        t = a["step"]
        ax_z.plot(t, a["z"], color=c, marker=".", markersize=3, label=name)
        ax_c.plot(t, a["eps"], color=c, marker=".", markersize=3, label=f"{name} credit ε")
        if algo == "pcalm":
            ax_c.plot(t, a["lam"], color=c, linestyle="--", linewidth=1,
                      label=f"{name} multiplier λ")
        err = np.maximum(a["grad_error"], 1e-16)
        ax_g.semilogy(t, err, color=c, marker=".", markersize=3,
                      label=_radius_label(name, float(row["spectral_radius"])))
        ax_p.plot(a["z"], a["lam"], color=c, marker=".", markersize=4, linewidth=0.9,
                  label=name)
        ax_p.plot(a["z"][-1], a["lam"][-1], marker="o", markersize=7, color=c,
                  markerfacecolor="none")
    ax_z.axhline(h, **REF, label=f"forward value h = {h:.3g}".replace("-", MINUS))
    ax_c.axhline(neg_delta, **REF, label=f"BP adjoint −δ = {neg_delta:.3g}".replace("-", MINUS))
    ax_g.axhline(1e-6, color="0.6", linewidth=0.8, linestyle="--")
    ax_g.text(0.98, 1.4e-6, "10⁻⁶", color="0.45", fontsize=7, ha="right", va="bottom",
              transform=ax_g.get_yaxis_transform())
    ax_p.plot([h], [neg_delta], marker="*", markersize=12, color="0.15", linestyle="none",
              label="BP point (h, −δ)")
    ax_p.axhline(0, color="0.8", linewidth=0.6)

    ax_z.set(xlabel="inference step t", ylabel="hidden state z(t)", title="(a) primal state")
    ax_c.set(xlabel="inference step t", ylabel="credit signal",
             title="(b) credit ε = ρr + λ vs BP adjoint")
    ax_g.set(xlabel="inference step t", ylabel="max over (w1, w2) of |g(t) − g_BP|",
             title="(c) weight-gradient error")
    ax_p.set(xlabel="hidden state z", ylabel="multiplier λ", title="(d) phase plane (z, λ)")
    for ax in axes:
        ax.grid(alpha=0.25)
        ax.legend(loc="best", frameon=False)

    t_max = int(first["steps"])
    settings_note(fig, f"scalar linear net L = 2, D = N = C = 1, unit scales | "
                  f"w1 = {first['task.w1']:g}, w2 = {first['task.w2']:g}, x = "
                  f"{first['task.x']:g}, y = {first['task.y']:g} | η_h = 1/λ_max = "
                  f"{float(first['state_lr']):.4f} | α = ρ = 1 | T = {t_max} | no data", scale)
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    fig.suptitle("Scalar two-layer linear network: PC-ALM's credit reaches the BP adjoint, "
                 "PC's does not", fontsize=10)
    return save(fig, f"{experiment}-{scale}", out)

