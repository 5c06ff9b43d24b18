"""The reproduction scorecard as markdown: the claims of pcalm.analysis.claims, decided by the
rules of pcalm.analysis.grid / stats, with the tables a reader needs to check them."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import pandas as pd

from pcalm.analysis import claims as claims_mod
from pcalm.analysis import grid
from pcalm.analysis.grid import DELTA, KEY, cell_label
from pcalm.analysis.stats import paired
from pcalm.atomic import atomic_write_text

DIFFERENCES = (("pcalm", "bp"), ("pc", "bp"), ("pcalm", "pc"))


def build(tables: Path, scale: str) -> str:
    """The whole report for the tables in `tables` at `scale`."""
    claims, figure2 = claims_mod.all_claims(tables, scale)
    lines = [f"# pcalm reproduction scorecard — scale `{scale}`", "",
             f"Generated {datetime.now().isoformat(timespec='seconds')} from the tables in "
             f"`{tables}`. Accuracies are test accuracies after one epoch; differences are "
             "paired by seed (pp = percentage points). Rules (README: \"How the report decides "
             f"a claim\"): δ = {100 * DELTA:g} pp; one-sided 95 % bounds of seed-paired "
             "differences (Student's t); Holm across cells; a diverged run is a failure of "
             "its cell, never averaged in as chance.", ""]
    if scale not in ("paper", "paper_cpu"):
        lines += [f"At `{scale}` scale the data are a subset: absolute numbers are not the "
                  "paper's; compare orderings.", ""]
    lines += lead_section(figure2)
    lines += ["## Claims", "", "| # | claim (paper) | rule | measured | verdict | missing |",
              "|---|---|---|---|---|---|"]
    counts = claims_mod.guard_verdicts(claims, tables, scale)
    for c in claims:
        lines.append(f"| {c.number} | {c.text} | {c.rule} | {_cell(c.measured)} | "
                     f"**{c.mark}** | {c.missing or '–'} |")
    lines += ["", "Runs behind the claims (valid: neither diverged nor without accuracy; "
              "excluded: run folders `make collect` refused): " + "; ".join(counts) + ".", ""]
    lines += anchor_section(figure2["figure2"], scale)
    lines += narrow_linear_section(tables, scale, figure2["figure2"])
    for experiment, df in figure2.items():
        lines += seeds_section(df, experiment)
        lines += grid_section(df, experiment)
    return "\n".join(lines)


def default_out(tables: Path, scale: str) -> Path:
    """Where the report goes unless told: `<tables>/../report-<scale>.md`."""
    return Path(tables).parent / f"report-{scale}.md"


def write_report(tables: Path, scale: str, out: Path | None = None) -> tuple[str, Path]:
    """Build the report and write it atomically to `out` (default: `default_out`); returns
    (text, path). One-line errors: pcalm.analysis.grid.TableError for a damaged table,
    ValueError for an `out` in a missing folder, ReportNotWritten when writing fails (the
    previous report is then unchanged)."""
    out = Path(out) if out is not None else default_out(tables, scale)
    if not out.parent.is_dir():
        raise ValueError(f"bad value --out={str(out)!r}: its folder does not exist; "
                         "allowed: a path in an existing folder")
    text = build(tables, scale)
    try:
        atomic_write_text(out, text + "\n")
    except OSError as err:
        raise ReportNotWritten(f"cannot write {out}: {err.strerror or err}; the previous "
                               "report is unchanged") from None
    return text, out


class ReportNotWritten(OSError):
    """The report could not be written; the message is one line."""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def lead_section(figure2: dict) -> list[str]:
    """Signed per-width means of PC-ALM − BP: where PC-ALM trails BP and where it leads."""
    lines = ["## PC-ALM − BP by width (signed)", "",
             "Mean over depths of the cell means of the seed-paired PC-ALM − BP; in brackets "
             "the most negative and most positive cell; trail / lead = cells below / above 0.",
             ""]
    for experiment, df in figure2.items():
        if df is None:
            lines += [f"{experiment}: no table.", ""]
            continue
        means = grid.width_means(df)
        lines += [f"**{experiment}**", "", "| N | " + " | ".join(
            grid.ACT_LABEL[a] for a in grid.ACTIVATIONS) + " |",
            "|---|" + "---|" * len(grid.ACTIVATIONS)]
        for width in sorted(means["width"].unique()):
            row = []
            for act in grid.ACTIVATIONS:
                m = means[(means["width"] == width) & (means["activation"] == act)]
                row.append("–" if m.empty else
                           f"{100 * m['mean'].iloc[0]:+.2f} pp [{100 * m['low'].iloc[0]:+.2f}, "
                           f"{100 * m['high'].iloc[0]:+.2f}] ({int(m['trail'].iloc[0])} trail / "
                           f"{int(m['lead'].iloc[0])} lead)")
            lines.append(f"| {int(width)} | " + " | ".join(row) + " |")
        lines.append("")
    return lines


def anchor_section(df: pd.DataFrame | None, scale: str) -> list[str]:
    rows, verdict = claims_mod.anchor_rows(df)
    lines = ["## The authors' anchor cell", "",
             "Fashion-MNIST, N = 32, L = 32, ReLU, T = 2L = 64, one epoch. Paper: the authors' "
             "JAX run, one seed. Ours: the figure2 table's cell over its seeds, and the 95 % "
             "prediction interval for one more seed (mean ± t₀.₉₇₅ · sd · √(1 + 1/n)). Rule: "
             "the authors' value inside that interval for every quantity.", ""]
    if not rows:
        return lines + ["not measured: no figure2 table (`make figure2 SCALE="
                        f"{scale}`)", ""]
    lines += ["| quantity | paper (one seed) | ours (mean ± sd) | 95 % prediction interval |",
              "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return lines + ["", f"Verdict: **{claims_mod.MARK[verdict]}**", ""]


def narrow_linear_section(tables: Path, scale: str, fig2: pd.DataFrame | None) -> list[str]:
    lines = ["## Supplementary: the narrow linear cells where PC-ALM beats BP", "",
             "Figure 2's linear N = 8 cells, where PC-ALM *exceeds* BP, beside the "
             "supplementary experiment (configs/experiment/narrow_linear.yaml): BP at 1× and "
             "4× its learning rate and over 3 epochs, PC-ALM at T = 2L and 8L, 3 seeds.", ""]
    if fig2 is not None:
        d = paired(fig2, KEY, "pcalm", "bp")
        cells = [k for k in sorted(d) if k[0] == "identity" and int(k[1]) == 8]
        lines += ["Figure 2: " + "; ".join(f"{cell_label(k)} PC-ALM − BP {d[k].text()}"
                                           for k in cells), ""]
    table = claims_mod.narrow_linear_rows(tables, scale)
    if table is None:
        return lines + [f"not measured: `python experiments/sweep.py experiment=narrow_linear "
                        f"scale={scale}` then `make collect EXP=narrow_linear SCALE={scale}` "
                        f"({claims_mod.COST['narrow_linear']})", ""]
    lines += [f"- {text}" for text in claims_mod.narrow_linear_gaps(tables, scale)] + [""]
    lines += ["| L | method | η0 | epochs | T | accuracy (mean ± sd) | seeds |",
              "|---|---|---|---|---|---|---|"]
    for _, r in table.sort_values(["model.depth", "algo.name", "train.eta0",
                                   "train.epochs", "budget"]).iterrows():
        budget = f"{r['budget']:g}L" if math.isfinite(r["budget"]) else "–"
        sd = f" ± {100 * r['sd']:.2f}" if math.isfinite(r["sd"]) else ""
        div = f", {int(r['diverged'])} diverged" if r["diverged"] else ""
        lines.append(f"| {int(r['model.depth'])} | {claims_mod.LABEL[r['algo.name']]} | "
                     f"{r['train.eta0']:g} | {int(r['train.epochs'])} | {budget} | "
                     f"{100 * r['mean']:.2f}{sd} % | {int(r['n'])}{div} |")
    return lines + [""]


def seeds_section(df: pd.DataFrame | None, experiment: str) -> list[str]:
    if df is None:
        return []
    plans = grid.seed_plan(df)
    lines = [f"## {experiment}: seeds a cell needs", "",
             f"To decide non-inferiority at δ = {100 * DELTA:g} pp with 80 % power when "
             "PC-ALM = BP: the least n with (t₀.₉₅ + t₀.₈₀) · sd/√n ≤ δ (n − 1 df), sd = the "
             "pooled paired sd of PC-ALM − BP over the width's cells.", ""]
    return lines + [f"- {p.text()}" for p in plans] + [""]


def grid_section(df: pd.DataFrame | None, experiment: str) -> list[str]:
    """Every cell's numbers: accuracies and the three paired differences with their bounds."""
    data = "Fashion-MNIST" if experiment == "figure2" else "MNIST"
    lines = [f"## {experiment}: {data}, cell by cell", ""]
    if df is None:
        return lines + [f"not measured: `make {experiment}`", ""]
    decision = grid.decide(df, "pcalm", "bp", "noninferiority")
    diffs = {pair: paired(df, KEY, *pair) for pair in DIFFERENCES}
    lines += ["Differences: mean [one-sided 95 % lower, upper bound] pp. PC-ALM − PC ≥ 0 is "
              "shown without a verdict (not a claim of the paper). Verdict: non-inferiority of "
              "PC-ALM to BP, Holm-adjusted.", "",
              "| cell | seeds | BP (%) | PC (%) | PC-ALM (%) | PC-ALM − BP | verdict | PC − BP | "
              "PC-ALM − PC |", "|---|---|---|---|---|---|---|---|---|"]
    stats = df.groupby([*KEY, "algo.name"])["acc"].agg(["mean", "std", "count"])
    df_seeds = df.groupby(KEY)["train.seed"].nunique().to_dict()
    for key in sorted({tuple(k[:3]) for k in stats.index}, key=lambda k: grid._order((k, 0))):
        accs, n = [], int(df_seeds.get(key, 0))
        for algo in ("bp", "pc", "pcalm"):
            if (*key, algo) in stats.index:
                m, s, _ = stats.loc[(*key, algo)]
                accs.append(f"{100 * m:.2f} ± {100 * s:.2f}" if math.isfinite(s)
                            else f"{100 * m:.2f}" if math.isfinite(m) else "diverged")
            else:
                accs.append("–")
        cell = decision.cells.get(key)
        verdict = (cell.adjusted + (f" ({cell.diverged})" if cell.diverged else "")) \
            if cell else "–"
        ds = [diffs[p][key].text() if key in diffs[p] else "–" for p in DIFFERENCES]
        lines.append(f"| {cell_label(key)} | {n} | " + " | ".join(accs) + f" | {ds[0]} | "
                     f"{verdict} | {ds[1]} | {ds[2]} |")
    lines.append("")
    diverged = grid.diverged_runs(df)
    lines.append("Diverged runs: " + ("; ".join(diverged) if diverged else "none") + ".")
    lines.append("")
    return lines + provenance_lines(df)


def provenance_lines(df: pd.DataFrame) -> list[str]:
    """The distinct code versions and devices behind a table's numbers."""
    if "provenance.git_commit" not in df:
        return ["Provenance: not recorded in this table.", ""]
    commits = df.groupby(["provenance.git_commit", "provenance.git_dirty"], dropna=False).size()
    devices = df.groupby(["provenance.device_name"], dropna=False).size()
    commit_text = ", ".join(f"`{str(c)[:10]}`{' (dirty tree)' if str(d) == 'True' else ''}: "
                            f"{n} runs" for (c, d), n in commits.items())
    device_text = ", ".join(f"{d}: {n} runs" for d, n in devices.items())
    torch = ", ".join(sorted(str(v) for v in df.get("provenance.torch", pd.Series()).dropna()
                             .unique())) or "?"
    return [f"Provenance: commits {commit_text}; devices {device_text}; torch {torch}.", ""]



