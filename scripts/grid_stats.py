"""Statistics that decide Figure 2's claims cell by cell: paired differences by seed with a
95 % interval, and a verdict per cell and per claim that says when 3 seeds cannot decide.

For a cell and two methods A, B, d_s = acc_A(seed s) − acc_B(seed s) over the seeds both
have; the interval is mean(d) ± t_{0.975, n−1} · sd(d)/√n (Student's t; n = 3 seeds gives
t = 4.303, so an interval is about ±2.5 sd wide). A claim about a cell is

- **holds** when the whole interval lies on the claim's side,
- **fails** when the whole interval lies on the other side,
- **undecided** otherwise (or with fewer than 2 seeds): more seeds would be needed.

Claims (the paper's, as thresholds on d in percentage points):
1. PC-ALM within 1 pp of BP in every cell: |d(PC-ALM, BP)| ≤ 1 pp, i.e. the interval inside
   [−1, +1] pp (equivalence); fails when it lies wholly outside.
2. PC behind BP in deep narrow cells (L ≥ 4N): d(PC, BP) < 0.
3. PC-ALM ≥ PC everywhere: d(PC-ALM, PC) ≥ 0; a cell fails only when PC-ALM is
   significantly worse (interval below 0), and holds when the interval is ≥ 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

# Student's t, 97.5 % quantile, by degrees of freedom (scipy-free; beyond 30: normal + 2.4/df).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}
HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"
WITHIN = 0.01  # claim 1: 1 pp
DEEP_NARROW_RATIO = 4  # claim 2: deep narrow = L ≥ 4 N


def t975(df: int) -> float:
    if df in T975:
        return T975[df]
    smaller = [k for k in T975 if k < df]
    return T975[max(smaller)] if df <= 30 else 1.96 + 2.4 / df


@dataclass(frozen=True)
class Interval:
    mean: float
    sd: float
    n: int
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Interval:
        n = len(values)
        mean = sum(values) / n if n else math.nan
        if n < 2:
            return cls(mean, math.nan, n, math.nan, math.nan)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = t975(n - 1) * sd / math.sqrt(n)
        return cls(mean, sd, n, mean - half, mean + half)

    def text(self) -> str:
        """`+0.42 pp [−1.10, +1.94]` (percentage points)."""
        if not math.isfinite(self.low):
            return f"{100 * self.mean:+.2f} pp (n={self.n})"
        return f"{100 * self.mean:+.2f} [{100 * self.low:+.2f}, {100 * self.high:+.2f}] pp"


def paired(df: pd.DataFrame, keys: list[str], a: str, b: str) -> dict[tuple, Interval]:
    """Per group of `keys`: the interval of acc(a) − acc(b), paired by seed."""
    cols = [*keys, "train.seed"]
    left = df[df["algo.name"] == a].set_index(cols)["acc"]
    right = df[df["algo.name"] == b].set_index(cols)["acc"]
    diff = (left - right).dropna()
    out = {}
    for key, group in diff.groupby(level=list(range(len(keys)))):
        key = key if isinstance(key, tuple) else (key,)
        out[key] = Interval.of([float(v) for v in group.values])
    return out


def within(iv: Interval, margin: float = WITHIN) -> str:
    if not math.isfinite(iv.low):
        return UNDECIDED
    if -margin <= iv.low and iv.high <= margin:
        return HOLDS
    if iv.low > margin or iv.high < -margin:
        return FAILS
    return UNDECIDED


def below_zero(iv: Interval) -> str:
    if not math.isfinite(iv.low):
        return UNDECIDED
    return HOLDS if iv.high < 0 else FAILS if iv.low > 0 else UNDECIDED


def at_least_zero(iv: Interval) -> str:
    if not math.isfinite(iv.low):
        return UNDECIDED
    return HOLDS if iv.low >= 0 else FAILS if iv.high < 0 else UNDECIDED


def deep_narrow(width: int, depth: int) -> bool:
    return depth >= DEEP_NARROW_RATIO * width


@dataclass
class GridClaim:
    text: str
    cells: dict[tuple, tuple[Interval, str]]  # cell key → (interval, verdict)

    def counts(self) -> dict[str, int]:
        verdicts = [v for _, v in self.cells.values()]
        return {k: verdicts.count(k) for k in (HOLDS, UNDECIDED, FAILS)}

    def verdict(self) -> str:
        """holds: every cell holds; fails: some cell fails; else undecided."""
        c = self.counts()
        if not self.cells:
            return "not measured"
        if c[FAILS]:
            return FAILS
        return HOLDS if c[HOLDS] == len(self.cells) else UNDECIDED


KEY = ["model.activation", "model.width", "model.depth"]


def grid_claims(df: pd.DataFrame) -> list[GridClaim]:
    """The three claims of Figure 2, decided cell by cell (df: normalised, with `acc`)."""
    alm_bp, pc_bp, alm_pc = (paired(df, KEY, a, b) for a, b in
                             (("pcalm", "bp"), ("pc", "bp"), ("pcalm", "pc")))
    return [
        GridClaim("PC-ALM within 1 pp of BP in every cell (interval of PC-ALM − BP inside "
                  "±1 pp)", {k: (iv, within(iv)) for k, iv in alm_bp.items()}),
        GridClaim(f"PC behind BP in deep narrow cells (L ≥ {DEEP_NARROW_RATIO}N; interval of "
                  "PC − BP below 0)", {k: (iv, below_zero(iv)) for k, iv in pc_bp.items()
                                       if deep_narrow(int(k[1]), int(k[2]))}),
        GridClaim("PC-ALM ≥ PC in every cell (interval of PC-ALM − PC at or above 0; fails "
                  "only where significantly below)",
                  {k: (iv, at_least_zero(iv)) for k, iv in alm_pc.items()}),
    ]


def seed_summary(df: pd.DataFrame) -> dict[tuple, dict[str, Interval]]:
    """Per cell and algorithm: mean ± sd (with its interval) of the accuracy over seeds."""
    out: dict[tuple, dict[str, Interval]] = {}
    for key, group in df.groupby([*KEY, "algo.name"]):
        out.setdefault(tuple(key[:3]), {})[key[3]] = Interval.of(
            [float(v) for v in group["acc"].values])
    return out
