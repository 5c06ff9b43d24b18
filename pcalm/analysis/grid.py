"""Figure 2's width × depth grid decided cell by cell by the written rules (README: "How the
report decides a claim"). Tables in, verdicts out; pandas + scipy only.

A collected table has one row per run: `algo.name`, `model.activation`, `model.width`,
`model.depth`, `train.seed`, `test_acc`, `diverged`. `runs()` turns it into the form every
rule reads: canonical activation names, a boolean `diverged`, and `acc` = test accuracy, NaN
for a diverged run — a diverged run is never averaged in as chance; it decides its cell.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pcalm.analysis.stats import (
    ALGO,
    CHANCE,
    FAILS,
    HOLDS,
    SEED,
    UNDECIDED,
    Paired,
    as_bool,
    check_unique,
    holm,
    noninferiority,
    paired,
    sd_interval,
    seeds_needed,
    shortfall,
    superiority,
    trend,
)
from pcalm.names import (
    ACTIVATION_ALIASES,
    ACTIVATION_LABELS,
    ACTIVATION_NAMES,
    ALGORITHM_LABELS,
    CELL_KEY,
)

DELTA = 0.01  # the margin δ = 1 pp: the paper calls its anchor gap of 0.91 pp a match
DEEP_NARROW_RATIO = 4  # deep and narrow: L ≥ 4N
KEY = CELL_KEY
GRID_SIZES = (8, 16, 32, 64, 128)  # SPEC §7: N, L ∈ {8 … 128}
CPU_LIMIT = 2048  # cells with N·L ≥ 4096 need a GPU (configs/scale/paper_cpu.yaml)
LEARNED_MARGIN = 0.05  # a BP baseline learned if its seed mean is ≥ 5 pp above chance
PRACTICAL_SEEDS = 10  # more seeds than this per cell do not fit ~2 h per dataset on a CPU
ACT_LABEL = ACTIVATION_LABELS
ACTIVATIONS = ACTIVATION_NAMES


def runs(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical names, boolean `diverged`, `acc` (NaN for a diverged run)."""
    df = df.copy()
    if "model.activation" in df:
        df["model.activation"] = df["model.activation"].replace(ACTIVATION_ALIASES)
    df["diverged"] = as_bool(df["diverged"]) if "diverged" in df else False
    acc = pd.to_numeric(df.get("test_acc", pd.Series(np.nan, index=df.index)),
                        errors="coerce")
    df["acc"] = acc.where(~df["diverged"])
    return df


def cell_label(key: tuple) -> str:
    act, n, depth = key
    return f"{ACT_LABEL.get(act, act)} N={int(n)} L={int(depth)}"


def deep_narrow(width: int, depth: int) -> bool:
    return depth >= DEEP_NARROW_RATIO * width


def missing_cells(df: pd.DataFrame) -> list[tuple[int, int]]:
    """(N, L) of the paper grid with no run in the table, e.g. the deep-wide N·L ≥ 4096."""
    have = {(int(w), int(d)) for w, d in zip(df["model.width"], df["model.depth"])}
    return [(w, d) for w in GRID_SIZES for d in GRID_SIZES if (w, d) not in have]


def missing_text(cells: list[tuple[int, int]]) -> str:
    if not cells:
        return ""
    return ("lacks " + ", ".join(f"N={w} L={d}" for w, d in cells)
            + " (each activation; the cells with N·L ≥ 4096 need a GPU: `make figure2 SCALE=paper "
              "TRAIN=1` on one)")


# ----------------------------------------------------------------------- cell verdicts


@dataclass
class Cell:
    """One cell's decision: the paired difference, its raw and Holm-adjusted verdicts."""

    key: tuple
    d: Paired
    raw: str
    adjusted: str = UNDECIDED
    diverged: str = ""  # e.g. "PC-ALM seed 2 diverged"
    no_baseline: str = ""  # e.g. "BP did not learn (mean 11.2 %)": the cell decides nothing


@dataclass
class GridDecision:
    """A claim about many cells: each cell's verdict and the grid's (Holm-adjusted)."""

    cells: dict[tuple, Cell] = field(default_factory=dict)

    def counts(self, adjusted: bool = True) -> dict[str, int]:
        verdicts = [c.adjusted if adjusted else c.raw for c in self.cells.values()]
        return {v: verdicts.count(v) for v in (HOLDS, UNDECIDED, FAILS)}

    def verdict(self) -> str:
        """holds: every cell holds after Holm; fails: some cell fails after Holm; else
        undecided. No cell: undecided (a claim with no valid runs is never a ✓)."""
        c = self.counts()
        if not self.cells or c[FAILS]:
            return FAILS if c[FAILS] else UNDECIDED
        return HOLDS if c[HOLDS] == len(self.cells) else UNDECIDED

    def counts_text(self) -> str:
        a, r = self.counts(), self.counts(adjusted=False)
        return (f"{a[HOLDS]} hold / {a[UNDECIDED]} undecided / {a[FAILS]} fail of "
                f"{len(self.cells)} cells (Holm); unadjusted {r[HOLDS]} / {r[UNDECIDED]} / "
                f"{r[FAILS]}")

    def listed(self, verdict: str) -> list[Cell]:
        return [c for k, c in sorted(self.cells.items(), key=_order) if c.adjusted == verdict]


def _order(item):
    (act, n, depth), _ = item
    return (ACTIVATIONS.index(act) if act in ACTIVATIONS else 9, int(n), int(depth))


# How each named test reads a cell: (rule, p-value that it holds, p-value that it fails, the
# verdict of a cell where method a diverged in some seed)
_TESTS = {
    "noninferiority": (noninferiority, lambda d, m: d.p_above(-m), lambda d, m: d.p_below(-m),
                       FAILS),
    "shortfall": (shortfall, lambda d, m: d.p_below(-m), lambda d, m: d.p_above(-m), HOLDS),
    "superiority": (superiority, lambda d, m: d.p_above(m), lambda d, m: d.p_below(m), FAILS),
}


def decide(df: pd.DataFrame, a: str, b: str, test: str, delta: float = DELTA,
           where=None) -> GridDecision:
    """Each cell (optionally those where `where(key)` is true) tested on acc(a) − acc(b).

    Holm adjusts the family of cells twice: once for the cells declared to hold, once for
    those declared to fail. A diverged run of `a` decides its cell (a failure of `a`: the
    claim fails where `a` should do well, holds where `a` is claimed to fall behind); a
    diverged run of `b` alone leaves the cell undecided. So does a BP baseline (`b` = bp)
    that did not learn (`unlearned_baseline`): matching or trailing a net at chance says
    nothing, so such a cell stays undecided and out of Holm's families.
    """
    rule, p_holds, p_fails, if_a_diverged = _TESTS[test]
    check_unique(df, KEY)
    diffs = paired(df, KEY, a, b)
    diverged = _diverged_by_cell(df, (a, b))
    unlearned = unlearned_baseline(df, KEY) if b == "bp" else {}
    keys = sorted(set(diffs) | set(diverged), key=lambda k: _order((k, None)))
    if where is not None:
        keys = [k for k in keys if where(k)]
    out = GridDecision()
    for key in keys:
        d = diffs.get(key, Paired(()))
        out.cells[key] = Cell(key, d, rule(d, delta))
        if key in unlearned:
            out.cells[key].raw, out.cells[key].no_baseline = UNDECIDED, unlearned[key]
    clean = [k for k in keys if not diverged.get(k) and k not in unlearned]
    holds = holm([p_holds(out.cells[k].d, delta) for k in clean])
    fails = holm([p_fails(out.cells[k].d, delta) for k in clean])
    for k, h, f in zip(clean, holds, fails):
        out.cells[k].adjusted = HOLDS if h else FAILS if f else UNDECIDED
    for k in keys:
        if diverged.get(k):
            cell = out.cells[k]
            cell.diverged = "; ".join(diverged[k])
            a_failed = any(text.startswith(_label(a)) for text in diverged[k])
            cell.raw = cell.adjusted = if_a_diverged if a_failed else UNDECIDED
    return out


def unlearned_baseline(df: pd.DataFrame, keys: list[str],
                       margin: float = LEARNED_MARGIN) -> dict[tuple, str]:
    """Cells (by `keys`) whose BP runs did not learn: seed-mean accuracy below chance +
    `margin` (e.g. a learning rate so large or so small that the net stays at chance).
    → "BP did not learn (mean 11.2 %)". Diverged BP runs are left to the divergence rule."""
    bp = df[(df[ALGO] == "bp") & ~df["diverged"]]
    out = {}
    for key, acc in bp.groupby(keys)["acc"]:
        key = key if isinstance(key, tuple) else (key,)
        if acc.notna().any() and acc.mean() < CHANCE + margin - 1e-9:  # 15 % is learning
            out[key] = f"BP did not learn (mean {100 * acc.mean():.1f} %)"
    return out


def _label(algo: str) -> str:
    return ALGORITHM_LABELS.get(algo, algo)


def _diverged_by_cell(df: pd.DataFrame, algos: tuple[str, ...]) -> dict[tuple, list[str]]:
    out: dict[tuple, list[str]] = {}
    bad = df[df["diverged"] & df[ALGO].isin(algos)]
    for _, row in bad.iterrows():
        key = (row["model.activation"], int(row["model.width"]), int(row["model.depth"]))
        out.setdefault(key, []).append(f"{_label(row[ALGO])} seed {int(row[SEED])} diverged")
    return out


def exceeds(df: pd.DataFrame, a: str = "pcalm", b: str = "bp",
            delta: float = DELTA) -> GridDecision:
    """Cells where a is significantly above b by more than δ (Holm): a discrepancy to
    explain, listed apart from the non-inferiority verdict."""
    return decide(df, a, b, "superiority", delta)


# ------------------------------------------------------------------------ summaries


def width_means(df: pd.DataFrame, a: str = "pcalm", b: str = "bp") -> pd.DataFrame:
    """Signed mean of the cell means of acc(a) − acc(b) per (activation, width), with the
    most negative and most positive cell and how many cells trail / lead."""
    diffs = paired(df, KEY, a, b)
    rows = [{"activation": k[0], "width": int(k[1]), "depth": int(k[2]), "mean": d.mean}
            for k, d in diffs.items()]
    if not rows:
        return pd.DataFrame(columns=["activation", "width", "mean", "low", "high", "cells",
                                     "trail", "lead"])
    cells = pd.DataFrame(rows)
    g = cells.groupby(["activation", "width"])["mean"]
    out = g.agg(mean="mean", low="min", high="max", cells="count").reset_index()
    out["trail"] = g.apply(lambda s: int((s < 0).sum())).values
    out["lead"] = g.apply(lambda s: int((s > 0).sum())).values
    return out


def depth_trend(df: pd.DataFrame, activation: str, a: str = "pc", b: str = "bp"):
    """Slope of the cell mean of acc(a) − acc(b) against log₂(L/N), one point per cell."""
    diffs = paired(df, KEY, a, b)
    points = [(math.log2(int(k[2]) / int(k[1])), d.mean) for k, d in diffs.items()
              if k[0] == activation]
    return trend([p[0] for p in points], [p[1] for p in points])


@dataclass(frozen=True)
class SeedPlan:
    """Seeds a cell of one width needs to decide non-inferiority at δ (80 % power, μ = 0)."""

    width: int
    sd: float  # pooled paired sd of PC-ALM − BP over the width's cells
    df: int
    sd_low: float
    sd_high: float
    seeds: int | None
    seeds_low: int | None  # at the sd interval's ends
    seeds_high: int | None

    def text(self) -> str:
        def count(n):
            return str(n) if n is not None else "> 1000"

        decided = (f"{count(self.seeds)} seeds (from {count(self.seeds_low)} to "
                   f"{count(self.seeds_high)} over the sd's 95 % interval)")
        if self.seeds is None or self.seeds > PRACTICAL_SEEDS:
            decided += f": no practical count (≤ {PRACTICAL_SEEDS}) decides this width"
        return (f"N={self.width}: paired sd {100 * self.sd:.2f} pp [{100 * self.sd_low:.2f}, "
                f"{100 * self.sd_high:.2f}] (df {self.df}) → {decided}")


def seed_plan(df: pd.DataFrame, delta: float = DELTA, a: str = "pcalm",
              b: str = "bp") -> list[SeedPlan]:
    """Per width: the pooled paired sd √(Σ(n−1)s²/Σ(n−1)) over its cells, and the seeds
    `stats.seeds_needed` asks for at that sd and at the ends of its χ² interval."""
    diffs = paired(df, KEY, a, b)
    plans = []
    for width in sorted({int(k[1]) for k in diffs}):
        cells = [d for k, d in diffs.items() if int(k[1]) == width and d.n >= 2]
        dof = sum(d.n - 1 for d in cells)
        if not dof:
            continue
        sd = math.sqrt(sum((d.n - 1) * d.sd ** 2 for d in cells) / dof)
        low, high = sd_interval(sd, dof)
        plans.append(SeedPlan(width, sd, dof, low, high, seeds_needed(sd, delta),
                              seeds_needed(low, delta), seeds_needed(high, delta)))
    return plans


def diverged_runs(df: pd.DataFrame) -> list[str]:
    """Every diverged run of a table, by cell, algorithm and seed."""
    out = []
    for _, row in df[df["diverged"]].iterrows():
        key = (row["model.activation"], row["model.width"], row["model.depth"])
        out.append(f"{cell_label(key)} {_label(row[ALGO])} seed {int(row[SEED])}")
    return out


class TableError(ValueError):
    """A collected table the report cannot read; the message is one line naming the file."""


# Columns a width × depth grid table (figure2, figure2_mnist) must have to be decided cell by
# cell (experiments/collect.py writes them); every other table needs `algo.name`. Diagnostic
# tables (figures 1, 3, 4, 5, 8, 9) hold no accuracy.
GRID_TABLES = ("figure2", "figure2_mnist")
GRID_COLUMNS = ("algo.name", "data.name", "model.width", "model.depth", "model.activation",
                "train.seed")
# Columns the claims read from the other tables without asking first (a table lacking one is
# damaged: a one-line TableError, never a KeyError).
TABLE_COLUMNS = {
    "figure6": ("algo.name", "train.seed"), "figure7": ("algo.name", "train.seed"),
    "figure10": ("algo.name", *KEY, "train.seed"),
    "figure_eta": ("algo.name", "data.name", *KEY, "algo.state_lr", "train.seed"),
}
NUMERIC_COLUMNS = ("model.width", "model.depth", "train.seed", "test_acc", "model.gamma0",
                   "algo.budget", "algo.state_lr", "algo.alpha", "grad_cosine",
                   "grad_cosine_final", "grad_rel_error_final", "grad_error_final",
                   "front_speed", "front_speed_predicted", "front_exponent",
                   "front_layers_reached", "flops_at_budget", "hidden_alignment_at_budget",
                   "input_rel_error_at_budget", "pc_input_rel_error_at_budget")
DIAGNOSTIC_TABLES = ("figure1", "figure3", "figure4", "figure5", "figure8", "figure9")


def read_table(tables: Path, experiment: str, scale: str) -> pd.DataFrame | None:
    """A collected table `<tables>/<experiment>-<scale>.csv`, or None if missing or empty;
    TableError (one line) if it is not a table: not UTF-8 CSV, a grid column missing, or a
    non-number in a number column."""
    path = Path(tables) / f"{experiment}-{scale}.csv"
    if not path.is_file():
        return None
    needed = GRID_COLUMNS if experiment in GRID_TABLES else \
        TABLE_COLUMNS.get(experiment, GRID_COLUMNS[:1])
    return read_csv_table(path, f"rebuild it with `make collect EXP={experiment} SCALE={scale}`",
                          needed)


def read_csv_table(path: Path, remake: str, needed: Iterable[str] = (),
                   numeric: Iterable[str] = ()) -> pd.DataFrame | None:
    """The CSV table at `path` with its number columns (`numeric` and NUMERIC_COLUMNS, where
    present) as numbers; None if it holds no rows. TableError (one line naming the file, the
    column or value, what is allowed, and `remake`: how to rebuild it) when it is not UTF-8
    CSV, lacks a column of `needed`, or holds a non-number in a number column."""
    try:
        df = pd.read_csv(path, encoding="utf-8")
    except pd.errors.EmptyDataError:
        return None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TableError(f"{path}: not a readable CSV table ({reason}); {remake}") from None
    if df.empty:
        return None
    lacking = [c for c in needed if c not in df]
    if lacking:
        raise TableError(f"{path}: column {lacking[0]!r} is missing; {remake}")
    for column in (c for c in dict.fromkeys([*NUMERIC_COLUMNS, *numeric]) if c in df):
        numbers = pd.to_numeric(df[column], errors="coerce")
        junk = df[column][numbers.isna() & df[column].notna()]
        if len(junk):
            raise TableError(f"{path}: bad value {column}={junk.iloc[0]!r} in row "
                             f"{junk.index[0] + 2}: allowed: a number")
        df[column] = numbers
    return df


def valid_mask(df: pd.DataFrame, experiment: str) -> pd.Series:
    """Rows whose numbers can back a claim: collect's `valid` column where the table has it,
    else not diverged; a training table's rows also need a finite `test_acc` (a table
    without that column has no valid rows)."""
    if "valid" in df:
        mask = as_bool(df["valid"])
    elif "diverged" in df:
        mask = ~as_bool(df["diverged"])
    else:
        mask = pd.Series(True, index=df.index)
    if experiment not in DIAGNOSTIC_TABLES:
        acc = pd.to_numeric(df.get("test_acc", pd.Series(math.nan, index=df.index)),
                            errors="coerce")
        mask &= acc.notna() & acc.abs().lt(math.inf)
    return mask


def excluded_count(tables: Path, experiment: str, scale: str) -> int:
    """How many run folders collect left out as failing its checks (its -excluded.csv)."""
    try:
        return len(pd.read_csv(Path(tables) / f"{experiment}-{scale}-excluded.csv",
                               encoding="utf-8"))
    except (OSError, ValueError, pd.errors.ParserError):
        return 0


def runs_behind(tables: Path, experiment: str, scale: str) -> tuple[int, str]:
    """(valid runs, `figure2: 4 valid of 6 runs (2 diverged, 1 excluded)`) of one table."""
    df = read_table(tables, experiment, scale)
    excluded = excluded_count(tables, experiment, scale)
    if df is None:
        return 0, f"{experiment}: no runs" + (f" ({excluded} excluded)" if excluded else "")
    valid = valid_mask(df, experiment)
    if "status" in df:
        diverged = int((df["status"] == "diverged").sum())
    else:
        flags = as_bool(df["diverged"]) if "diverged" in df else pd.Series(False, index=df.index)
        diverged = int((~valid & flags).sum())
    other = int((~valid).sum()) - diverged
    notes = [f"{n} {what}" for n, what in ((diverged, "diverged"), (other, "without accuracy"),
                                           (excluded, "excluded")) if n]
    text = f"{experiment}: {int(valid.sum())} valid of {len(df)} runs"
    return int(valid.sum()), text + (f" ({', '.join(notes)})" if notes else "")
