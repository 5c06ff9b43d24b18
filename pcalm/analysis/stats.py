"""The statistics that decide the paper's claims (pandas + scipy; never torch).

Everything works on *seed-paired differences*: for a cell (activation, N, L) and two methods
A, B, d_s = acc_A(seed s) − acc_B(seed s) over the seeds both ran. With n seeds, mean d̄ and
sample sd s, the standard error is s/√n and Student's t with n − 1 degrees of freedom gives

    one-sided 95 % lower bound   lo = d̄ − t_{0.95, n−1} · s/√n
    one-sided 95 % upper bound   hi = d̄ + t_{0.95, n−1} · s/√n

(together: the two-sided 90 % interval; quantiles from scipy.stats.t). The named tests:

- **non-inferiority** of A to B at margin δ (H0: μ ≤ −δ): holds when lo > −δ; fails when
  hi < −δ (A significantly worse than B by more than δ); undecided otherwise;
- **shortfall** of A behind B by more than δ (H0: μ ≥ −δ): holds when hi < −δ; fails when
  lo > −δ; the mirror image of non-inferiority;
- **superiority by a margin** (H0: μ ≤ +δ): holds when lo > +δ; fails when hi < +δ;
- **TOST** equivalence (two one-sided tests, H0: |μ| ≥ δ): equivalent when lo > −δ and
  hi < +δ; its p-value is the larger of the two one-sided p-values;
- **Holm** step-down adjustment of a family of p-values (family-wise error ≤ α);
- a **trend**: least-squares slope of y on x with a two-sided 95 % t interval (n − 2 df).

A cell with fewer than two paired seeds has no sd and is always undecided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from pcalm.names import ACTIVATION_ALIASES as ACTIVATION_ALIASES  # a table may say `linear`
from pcalm.names import FAILS as FAILS  # the verdict words, re-exported
from pcalm.names import HOLDS as HOLDS
from pcalm.names import UNDECIDED as UNDECIDED

ALPHA = 0.05  # one-sided level of every test (95 % one-sided bounds)
SEED = "train.seed"
ALGO = "algo.name"


class DuplicateRunError(ValueError):
    """A table holds two rows for one (cell, algorithm, seed): two configs of one cell."""


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile t_{p, df} (scipy)."""
    return float(sps.t.ppf(p, df))


@dataclass(frozen=True)
class Paired:
    """Seed-paired differences d_s of one cell; bounds at one-sided level `ALPHA`."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def sd(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n >= 2 else math.nan

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.n) if self.n >= 2 else math.nan

    def lower(self, alpha: float = ALPHA) -> float:
        """One-sided (1 − α) lower bound d̄ − t_{1−α, n−1} · s/√n (NaN below 2 seeds)."""
        return self.mean - t_quantile(1 - alpha, self.n - 1) * self.se if self.n >= 2 \
            else math.nan

    def upper(self, alpha: float = ALPHA) -> float:
        """One-sided (1 − α) upper bound d̄ + t_{1−α, n−1} · s/√n (NaN below 2 seeds)."""
        return self.mean + t_quantile(1 - alpha, self.n - 1) * self.se if self.n >= 2 \
            else math.nan

    def p_above(self, threshold: float) -> float:
        """p-value of H0: μ ≤ threshold against μ > threshold (one-sided t test)."""
        if self.n < 2:
            return math.nan
        if self.se == 0:
            return 0.0 if self.mean > threshold else 1.0
        return float(sps.t.sf((self.mean - threshold) / self.se, self.n - 1))

    def p_below(self, threshold: float) -> float:
        """p-value of H0: μ ≥ threshold against μ < threshold (one-sided t test)."""
        if self.n < 2:
            return math.nan
        if self.se == 0:
            return 0.0 if self.mean < threshold else 1.0
        return float(sps.t.cdf((self.mean - threshold) / self.se, self.n - 1))

    def text(self) -> str:
        """`+0.42 [−1.10, +1.94] pp`: mean and the one-sided 95 % bounds, percentage points."""
        if self.n < 2:
            return f"{100 * self.mean:+.2f} pp (n={self.n})"
        return f"{100 * self.mean:+.2f} [{100 * self.lower():+.2f}, {100 * self.upper():+.2f}] pp"


# ------------------------------------------------------------------------- named tests


def noninferiority(d: Paired, delta: float) -> str:
    """A not worse than B by more than δ: holds if lo > −δ, fails if hi < −δ."""
    if d.n < 2:
        return UNDECIDED
    if d.lower() > -delta:
        return HOLDS
    return FAILS if d.upper() < -delta else UNDECIDED


def shortfall(d: Paired, delta: float) -> str:
    """A behind B by more than δ: holds if hi < −δ, fails if lo > −δ."""
    if d.n < 2:
        return UNDECIDED
    if d.upper() < -delta:
        return HOLDS
    return FAILS if d.lower() > -delta else UNDECIDED


def superiority(d: Paired, delta: float) -> str:
    """A ahead of B by more than δ: holds if lo > +δ, fails if hi < +δ."""
    if d.n < 2:
        return UNDECIDED
    if d.lower() > delta:
        return HOLDS
    return FAILS if d.upper() < delta else UNDECIDED


def tost(d: Paired, delta: float) -> tuple[bool, float]:
    """Two one-sided tests of equivalence |μ| < δ: (equivalent at α, TOST p-value)."""
    if d.n < 2:
        return False, math.nan
    p = max(d.p_above(-delta), d.p_below(delta))
    return p < ALPHA, p


def holm(pvalues: list[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected with family-wise error ≤ α.

    Sort p ascending: p_(1) ≤ … ≤ p_(m); reject H_(k) while p_(k) ≤ α/(m − k + 1), stop at
    the first that is not. NaN p-values (undecidable cells) count in m and are never rejected.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: (math.isnan(pvalues[i]), pvalues[i]))
    rejected = [False] * m
    for rank, i in enumerate(order):
        p = pvalues[i]
        if math.isnan(p) or p > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


@dataclass(frozen=True)
class Trend:
    """Least-squares slope of y on x with its two-sided (1 − 2α) = 95 % t interval."""

    slope: float
    low: float
    high: float
    n: int

    def text(self, unit: str = "pp", per: str = "unit of x") -> str:
        scale = 100 if unit == "pp" else 1
        return (f"{scale * self.slope:+.2f} [{scale * self.low:+.2f}, {scale * self.high:+.2f}]"
                f" {unit} per {per} (n={self.n})")


def trend(x, y, level: float = 0.95) -> Trend:
    """slope ± t_{(1+level)/2, n−2} · se(slope) of an ordinary least-squares line."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 3 or np.ptp(x) == 0:
        return Trend(math.nan, math.nan, math.nan, n)
    fit = sps.linregress(x, y)
    half = t_quantile((1 + level) / 2, n - 2) * fit.stderr
    return Trend(float(fit.slope), float(fit.slope - half), float(fit.slope + half), n)


def prediction_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Where one more seed's value falls: mean ± t_{(1+level)/2, n−1} · s · √(1 + 1/n)."""
    v = np.asarray(values, float)
    n = len(v)
    if n < 2:
        return math.nan, math.nan
    half = t_quantile((1 + level) / 2, n - 1) * float(np.std(v, ddof=1)) * math.sqrt(1 + 1 / n)
    return float(v.mean() - half), float(v.mean() + half)


def seeds_needed(sd: float, delta: float, power: float = 0.8, alpha: float = ALPHA,
                 most: int = 1000) -> int | None:
    """Seeds for a non-inferiority test at margin δ to hold with `power` when μ = 0:
    the least n ≥ 2 with (t_{1−α, n−1} + t_{power, n−1}) · sd/√n ≤ δ (None above `most`)."""
    if not math.isfinite(sd) or sd < 0:
        return None
    for n in range(2, most + 1):
        if (t_quantile(1 - alpha, n - 1) + t_quantile(power, n - 1)) * sd / math.sqrt(n) \
                <= delta:
            return n
    return None


def sd_interval(sd: float, df: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided interval of a normal sd from its sample sd: s·√(df/χ²_{hi}) … s·√(df/χ²_{lo})."""
    if df < 1 or not math.isfinite(sd):
        return math.nan, math.nan
    tail = (1 - level) / 2
    return (sd * math.sqrt(df / sps.chi2.ppf(1 - tail, df)),
            sd * math.sqrt(df / sps.chi2.ppf(tail, df)))


# ------------------------------------------------------------------------------ pairing


def check_unique(df: pd.DataFrame, keys: list[str]) -> None:
    """One row per (cell, algorithm, seed), else DuplicateRunError naming the first clash."""
    cols = [*keys, ALGO, SEED]
    dup = df.duplicated(cols, keep=False)
    if dup.any():
        first = df.loc[dup, cols].iloc[0].to_dict()
        count = int(dup.sum())
        raise DuplicateRunError(
            f"{count} rows share a (cell, algorithm, seed), e.g. {first}: the table holds two "
            "configs of one cell; collect one experiment's runs per table")


def paired(df: pd.DataFrame, keys: list[str], a: str, b: str,
           value: str = "acc") -> dict[tuple, Paired]:
    """Per group of `keys`: the seed-paired differences value(a) − value(b).

    Seeds where either value is missing (a diverged run's accuracy is NaN) are left out;
    the verdict functions of pcalm.analysis.claims decide such cells by divergence first.
    """
    check_unique(df, keys)
    cols = [*keys, SEED]
    left = df[df[ALGO] == a].set_index(cols)[value]
    right = df[df[ALGO] == b].set_index(cols)[value]
    diff = (left - right).dropna()
    out: dict[tuple, Paired] = {}
    if diff.empty:
        return out
    for key, group in diff.groupby(level=list(range(len(keys)))):
        key = key if isinstance(key, tuple) else (key,)
        out[key] = Paired(tuple(float(v) for v in group.values))
    return out


# ----------------------------------------------------------------- figure summaries
# What the figures draw (pcalm.plots): a cell's mean ± sd over seeds, with a diverged run
# counted as chance so that a collapse shows as a drop (the decisions above never average a
# diverged run in; pcalm.analysis.grid.runs gives it NaN instead).

CHANCE = 0.10  # 10 classes


def as_bool(series: pd.Series) -> pd.Series:
    """A CSV column of True/False (or 1/0, or missing) as booleans; missing → False."""
    if series.dtype == bool:
        return series
    return series.astype(str).str.strip().str.lower().isin(("true", "1", "1.0"))


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical activation names, boolean `diverged`, and `acc`: test accuracy with a
    diverged (or accuracy-less) run counted as chance."""
    df = df.copy()
    if "model.activation" in df:
        df["model.activation"] = df["model.activation"].replace(ACTIVATION_ALIASES)
    df["diverged"] = as_bool(df["diverged"]) if "diverged" in df else False
    acc = pd.to_numeric(df.get("test_acc", pd.Series(np.nan, index=df.index)), errors="coerce")
    df["acc"] = acc.where(~df["diverged"] & acc.notna(), CHANCE)
    return df


def seed_stats(df: pd.DataFrame, keys: list[str], value: str = "acc") -> pd.DataFrame:
    """Mean, sd, seed count and diverged count of `value` per group of `keys`."""
    g = df.groupby(keys, dropna=False)
    out = g[value].agg(mean="mean", sd="std", n="count")
    out["n_diverged"] = g["diverged"].sum() if "diverged" in df else 0
    return out.reset_index()


def paired_difference(df: pd.DataFrame, keys: list[str], a: str, b: str,
                      value: str = "acc") -> pd.DataFrame:
    """Per group of `keys`: mean and sd over seeds of value(algo a) − value(algo b), paired by
    seed (seeds both ran)."""
    cols = [*keys, SEED]
    left = df[df[ALGO] == a].set_index(cols)[value]
    right = df[df[ALGO] == b].set_index(cols)[value]
    diff = (left - right).dropna().rename("diff").reset_index()
    if diff.empty:
        return pd.DataFrame(columns=[*keys, "mean", "sd", "n"])
    return diff.groupby(keys)["diff"].agg(mean="mean", sd="std", n="count").reset_index()


NETWORK = ["data.name", "model.activation", "model.width", "model.depth"]


def eta_multiples(df: pd.DataFrame, table_step) -> pd.Series:
    """k = η_h / η_table of each row's cell, i.e. η_h in multiples of 1/λ_max, where
    `table_step(data, activation, width, depth)` is the cell's grid-rule step η_table = 1/λ_max
    or None (then NaN)."""
    steps = {}
    for cell in df[NETWORK].drop_duplicates().itertuples(index=False):
        step = table_step(str(cell[0]), str(cell[1]), int(cell[2]), int(cell[3]))
        steps[tuple(cell)] = np.nan if step is None else step
    per_row = [steps[tuple(r)] for r in df[NETWORK].itertuples(index=False)]
    return df["algo.state_lr"].astype(float) / np.asarray(per_row, dtype=float)
