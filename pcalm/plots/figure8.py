"""Figure 8: two routes to BP-aligned hidden credit, from results/tables/figure8-<scale>.csv.

    python experiments/plot.py figure8 --scale smoke [--tables DIR] [--out PATH]

x: FLOPs spent on inference (log; t · 4·B·N·(N(L−2) + C), pcalm.runs.tasks.figures.flops_per_step);
y, one panel each: (a) the stacked hidden-credit cosine cos(ε, −δ) over all hidden layers
(direction and the layers' relative magnitudes), (b) the mean over hidden layers of
cos(ε_l, −δ_l) (direction only), (c) the whole-network weight-gradient cosine to BP.
Route 1 (PC, blue, markers labelled by width N): PC at the fixed budget T = algo.budget across
widths. Route 2 (PC-ALM, red, markers labelled by T): PC-ALM at N = 32 as its budget T grows.
Route 1 at equilibrium (open markers, dashed): PC run until z stops changing (at most
2 diffusive crossing times, T ≈ 2L²/η_h), one point per width — does widening bring PC's
converged credit to BP's? Faint lines: every run's curve over t. Mean ± sd over seeds.
Also draws its MNIST twin, Figure 9 (`python experiments/plot.py figure9`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pcalm.plots.style import ALGO_COLORS, ALGO_LABELS, plt, read_table, save, settings_note
from pcalm.plots.theory import data_label, eta_text, mean_sd, seeds_text, with_arrays

COLUMNS = ("run_id", "algo.name", "model.depth", "algo.budget", "model.width",
           "train.batch_size")
NUMBERS = COLUMNS[2:] + ("flops_at_equilibrium", "stacked_credit_cosine_equilibrium",
                         "hidden_alignment_equilibrium", "cosine_equilibrium")
ROUTE2_WIDTH = 32  # [I] SPEC §7: "fixed N = 32, raise the PC-ALM budget"
PANELS = (("stacked_credit_cosine", "(a) hidden credit, all layers stacked",
           "cos(ε, −δ) over all hidden layers"),
          ("hidden_alignment", "(b) hidden credit, per layer (direction only)",
           "mean over layers of cos(ε_l, −δ_l)"),
          ("cosine", "(c) weight gradients", "cos(g, g_BP), whole network"))


def _group(runs, algo: str, width: int) -> list[dict]:
    return [a for row, a in runs if row["algo.name"] == algo and int(row["model.width"]) == width]


def label_widths(ax, xs, ms, widths) -> None:
    """`N=…` beside each point of a widening route, alternately below and above it, so that
    neighbours close on the log-FLOPs axis (N = 512, 1024) never run into each other."""
    for i, (x, m, n) in enumerate(zip(xs, ms, widths)):
        below = i % 2 == 0
        ax.annotate(f"N={int(n)}", (x, m), xytext=(0, -11 if below else 6),
                    textcoords="offset points", fontsize=7, color=ALGO_COLORS["pc"],
                    ha="center")


def equilibrium_note(df) -> str:
    """`; equilibrium up to N = 256` when some PC runs skipped the solve (solver none)."""
    pc = df[df["algo.name"] == "pc"]
    if "equilibrium_solver" not in pc or not (pc["equilibrium_solver"] == "none").any():
        return ""
    solved = pc.loc[pc["equilibrium_solver"] != "none", "model.width"]
    if solved.empty:
        return "; no equilibrium solved"
    return f"; equilibrium solved up to N = {int(solved.max())}"


def plot(experiment: str, scale: str, tables: Path, out: Path | None) -> Path:
    df = read_table(tables, experiment, scale, needs=COLUMNS, numbers=NUMBERS)
    runs = with_arrays(df, tables)
    first = runs[0][0]
    depth = int(first["model.depth"])
    budget = int(first["algo.budget"])
    widths = sorted({int(r["model.width"]) for r, _ in runs})
    route2 = min(widths, key=lambda n: abs(n - ROUTE2_WIDTH))

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.3), layout="constrained", sharex=True)
    for ax, (key, title, ylabel) in zip(axes, PANELS):
        for algo in ("pc", "pcalm"):  # faint: every width's curve over t
            for n in widths:
                group = _group(runs, algo, n)
                if not group or key not in group[0]:
                    continue
                mean, _ = mean_sd([a[key] for a in group])
                ax.plot(group[0]["flops"], mean, color=ALGO_COLORS[algo], linewidth=0.7,
                        alpha=0.25)
        # Route 1: PC at t = budget, one point per width.
        xs, ms, sds, ns = [], [], [], []
        for n in widths:
            group = _group(runs, "pc", n)
            if not group or key not in group[0]:
                continue
            i = int(np.searchsorted(group[0]["step"], budget))
            mean, sd = mean_sd([[a[key][i]] for a in group])
            xs.append(group[0]["flops"][i]), ms.append(mean[0]), sds.append(sd[0]), ns.append(n)
        if xs:
            ax.errorbar(xs, ms, yerr=sds, color=ALGO_COLORS["pc"], marker="o", markersize=5,
                        linewidth=1.8, capsize=2,
                        label=f"route 1: widen {ALGO_LABELS['pc']} (T = {budget})")
            label_widths(ax, xs, ms, ns)
        # Route 1 at equilibrium: PC run until z stops changing (pcalm.runs.tasks.figures).
        eq = df[df["algo.name"] == "pc"] if f"{key}_equilibrium" in df else df.iloc[0:0]
        eq = eq[eq[f"{key}_equilibrium"].notna()] if len(eq) else eq  # solver none: no point
        if len(eq):
            stats = eq.groupby("model.width").agg(
                x=("flops_at_equilibrium", "mean"), m=(f"{key}_equilibrium", "mean"),
                sd=(f"{key}_equilibrium", "std")).reset_index()
            ax.errorbar(stats["x"], stats["m"], yerr=stats["sd"].fillna(0),
                        color=ALGO_COLORS["pc"], marker="o", markerfacecolor="white",
                        markersize=5, linewidth=1.2, linestyle="--", capsize=2,
                        label=f"route 1 at equilibrium: {ALGO_LABELS['pc']} to T ≈ 2L²/η_h")
            label_widths(ax, stats["x"], stats["m"], stats["model.width"])
        # Route 2: PC-ALM at N = route2 over t; markers at multiples of L.
        group = _group(runs, "pcalm", route2)
        if group and key in group[0]:
            a0 = group[0]
            mean, sd = mean_sd([a[key] for a in group])
            ax.fill_between(a0["flops"], mean - sd, mean + sd, color=ALGO_COLORS["pcalm"],
                            alpha=0.18, linewidth=0)
            ax.plot(a0["flops"], mean, color=ALGO_COLORS["pcalm"], linewidth=1.8,
                    label=f"route 2: raise {ALGO_LABELS['pcalm']}'s T (N = {route2})")
            marks = [t for t in (depth // 2, depth, 2 * depth, 4 * depth, 8 * depth,
                                 16 * depth, 32 * depth) if t in set(a0["step"].tolist())]
            for t in marks:
                i = int(np.searchsorted(a0["step"], t))
                ax.plot(a0["flops"][i], mean[i], marker="s", markersize=4.5,
                        color=ALGO_COLORS["pcalm"])
                if key == "hidden_alignment":  # route 1's labels crowd this panel's top
                    continue
                tag = {depth // 2: "L/2", depth: "L"}.get(t, f"{t // depth}L")
                ax.annotate(f"T={tag}", (a0["flops"][i], mean[i]), xytext=(-4, 3),
                            textcoords="offset points", fontsize=6.5,
                            color=ALGO_COLORS["pcalm"], ha="right")
        ax.set_xscale("log")
        ax.set(title=title, ylabel=ylabel, xlabel="inference FLOPs per batch (log)")
        ax.grid(alpha=0.25)
    axes[0].plot([], [], color=ALGO_COLORS["pc"], alpha=0.4, linewidth=0.8,
                 label="PC, every N, over t (faint)")
    axes[0].plot([], [], color=ALGO_COLORS["pcalm"], alpha=0.4, linewidth=0.8,
                 label="PC-ALM, every N, over t (faint)")
    axes[0].legend(loc="lower right", frameon=False, fontsize=7)

    batch = int(first["train.batch_size"])
    note = equilibrium_note(df)
    settings_note(fig, f"ReLU residual MLP at init, L = {depth}, N ∈ {widths}{note} | "
                  f"{data_label(df)}, one batch of {batch} | FLOPs = t·4BN(N(L−2)+C) | "
                  f"{eta_text(df)} | α = ρ = 1 | {seeds_text(df)}", scale)
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    fig.suptitle(f"{data_label(df)}: two routes to BP-aligned hidden credit — widen PC at "
                 f"T = {budget}, or raise PC-ALM's budget at N = {route2}", fontsize=10)
    return save(fig, f"{experiment}-{scale}", out)
