"""The report's rules (pcalm/analysis/stats.py, grid.py) on small synthetic tables whose answers
are computed here by hand: scipy serves only as the table of t quantiles."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from pcalm.analysis import grid, stats

T95_2DF = 2.919986  # Student's t, one-sided 95 %, 2 degrees of freedom (printed tables)


def by_hand(values):
    """mean, sd, one-sided 95 % lower and upper bound of 3 paired differences."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T95_2DF * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def table(cells: dict, bp=(0.80, 0.78, 0.79), diverged=()) -> pd.DataFrame:
    """One row per (cell, algorithm, seed); cells {(act, N, L): {algo: [d per seed]}} plant
    acc(algo) = acc(BP) + d; `diverged` lists (cell, algo, seed) runs that diverged."""
    rows = []
    for (act, n, depth), diffs in cells.items():
        for seed, base in enumerate(bp):
            rows.append(dict(zip(("model.activation", "model.width", "model.depth"),
                                 (act, n, depth)), **{"algo.name": "bp", "train.seed": seed,
                                                      "test_acc": base, "diverged": False}))
            for algo, d in diffs.items():
                bad = ((act, n, depth), algo, seed) in diverged
                rows.append({"model.activation": act, "model.width": n, "model.depth": depth,
                             "algo.name": algo, "train.seed": seed,
                             "test_acc": math.nan if bad else base + d[seed], "diverged": bad})
    return grid.runs(pd.DataFrame(rows))


def test_one_sided_bounds_are_the_hand_computed_ones():
    d = stats.Paired((0.01, 0.03, 0.02))
    mean, sd, low, high = by_hand([0.01, 0.03, 0.02])
    assert (d.n, d.mean, d.sd) == pytest.approx((3, mean, sd), abs=1e-12)
    assert (d.lower(), d.upper()) == pytest.approx((low, high), abs=1e-7)
    # the p-value of H0: μ ≤ −δ is below 5 % exactly when the lower bound is above −δ
    for delta in (0.0, 0.005, 0.01):
        assert (d.p_above(-delta) < 0.05) == (low > -delta)


def test_noninferiority_holds_fails_undecided_by_hand():
    good = stats.Paired((0.002, 0.004, 0.003))  # lo = +0.0019 > −1 pp
    bad = stats.Paired((-0.03, -0.025, -0.035))  # hi = −0.0216 < −1 pp
    noisy = stats.Paired((-0.02, 0.02, 0.0))  # lo = −3.4 pp, hi = +3.4 pp
    assert by_hand(bad.values)[3] == pytest.approx(-0.03 + T95_2DF * 0.005 / math.sqrt(3))
    assert [stats.noninferiority(d, 0.01) for d in (good, bad, noisy)] == [
        "holds", "fails", "undecided"]
    assert [stats.shortfall(d, 0.01) for d in (good, bad, noisy)] == [
        "fails", "holds", "undecided"]
    assert stats.noninferiority(stats.Paired((0.5,)), 0.01) == "undecided"  # one seed
    assert stats.superiority(stats.Paired((0.05, 0.06, 0.055)), 0.01) == "holds"


def test_tost_needs_both_bounds_inside_the_margin():
    inside = stats.Paired((0.001, -0.001, 0.0))
    equivalent, p = stats.tost(inside, 0.01)
    # TOST p = max of the two one-sided p-values, computed here from the t statistic
    se = np.std(inside.values, ddof=1) / math.sqrt(3)
    expected = max(sps.t.sf((0 + 0.01) / se, 2), sps.t.cdf((0 - 0.01) / se, 2))
    assert equivalent and p == pytest.approx(expected)
    assert not stats.tost(stats.Paired((-0.02, 0.02, 0.0)), 0.01)[0]


def test_holm_on_a_known_set_of_p_values():
    # sorted 0.005 ≤ 0.05/4, 0.01 ≤ 0.05/3, 0.03 > 0.05/2: stop; 0.04 is not rejected either
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert stats.holm([0.01, 0.02, 0.03]) == [True, True, True]  # 0.0167, 0.025, 0.05
    assert stats.holm([0.02, 0.02]) == [True, True]  # 0.02 ≤ 0.025, then 0.02 ≤ 0.05
    assert stats.holm([0.03, 0.03]) == [False, False]  # 0.03 > 0.025 stops at once
    assert stats.holm([math.nan, 0.001]) == [False, True]  # undecidable cells count in m


def test_trend_slope_and_interval_match_the_textbook_formulas():
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    y = np.array([0.01, -0.03, -0.04, -0.09, -0.10])
    sxx = ((x - x.mean()) ** 2).sum()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / sxx
    resid = y - (y.mean() + slope * (x - x.mean()))
    se = math.sqrt((resid ** 2).sum() / 3 / sxx)
    t = 3.182446  # two-sided 95 %, 3 df
    fit = stats.trend(x, y)
    assert (fit.slope, fit.low, fit.high) == pytest.approx(
        (slope, slope - t * se, slope + t * se), abs=1e-6)
    assert math.isnan(stats.trend([1, 1, 1], [0, 1, 2]).slope)  # no spread in x


def test_prediction_interval_and_seed_count():
    v = [0.77, 0.78, 0.76]
    sd = np.std(v, ddof=1)
    half = 4.302653 * sd * math.sqrt(1 + 1 / 3)
    assert stats.prediction_interval(v) == pytest.approx((0.77 - half, 0.77 + half), abs=1e-6)
    for sd in (0.005, 0.01, 0.03):
        n = stats.seeds_needed(sd, 0.01)

        def enough(k, sd=sd):
            return (sps.t.ppf(0.95, k - 1) + sps.t.ppf(0.8, k - 1)) * sd / math.sqrt(k) <= 0.01

        assert enough(n) and (n == 2 or not enough(n - 1))
    assert stats.seeds_needed(0.03, 0.01) > grid.PRACTICAL_SEEDS  # N = 8: no practical count
    assert stats.seeds_needed(0.5, 0.01, most=100) is None


CELLS = {
    ("relu", 8, 128): {"pcalm": [0.002, 0.004, 0.003], "pc": [-0.10, -0.12, -0.11]},
    ("relu", 32, 32): {"pcalm": [-0.03, -0.025, -0.035], "pc": [-0.035, -0.02, -0.03]},
    ("tanh", 8, 32): {"pcalm": [-0.02, 0.02, 0.0], "pc": [0.01, 0.04, 0.005]},
    ("identity", 8, 32): {"pcalm": [0.05, 0.06, 0.055], "pc": [-0.2, -0.25, -0.22]},
    # t = 0.01/(0.005/√3) = 3.46, p = 0.037: holds at 5 %, not after Holm over 5 cells
    ("tanh", 16, 16): {"pcalm": [-0.005, 0.0, 0.005], "pc": [-0.03, -0.03, -0.03]},
}


def test_grid_verdicts_raw_and_after_holm():
    decision = grid.decide(table(CELLS), "pcalm", "bp", "noninferiority")
    raw = {k: c.raw for k, c in decision.cells.items()}
    assert raw == {("relu", 8, 128): "holds", ("relu", 32, 32): "fails",
                   ("tanh", 8, 32): "undecided", ("identity", 8, 32): "holds",
                   ("tanh", 16, 16): "holds"}
    # Holm over 5 cells, computed here: p of H0 μ ≤ −δ (holds) and of μ ≥ −δ (fails)
    p_hold, p_fail = {}, {}
    for key, diffs in CELLS.items():
        mean, sd, _, _ = by_hand(diffs["pcalm"])
        t = (mean + 0.01) / (sd / math.sqrt(3))
        p_hold[key], p_fail[key] = sps.t.sf(t, 2), sps.t.cdf(t, 2)
    expected = {}
    for key in CELLS:
        rank_h = sorted(p_hold.values()).index(p_hold[key])
        ok_h = all(p <= 0.05 / (5 - i) for i, p in enumerate(sorted(p_hold.values())[:rank_h + 1]))
        rank_f = sorted(p_fail.values()).index(p_fail[key])
        ok_f = all(p <= 0.05 / (5 - i) for i, p in enumerate(sorted(p_fail.values())[:rank_f + 1]))
        expected[key] = "holds" if ok_h else "fails" if ok_f else "undecided"
    assert {k: c.adjusted for k, c in decision.cells.items()} == expected
    # Holm demotes both borderline cells: p = 0.037 > 0.05/3 and p_fail = 0.0101 > 0.05/5
    assert expected[("tanh", 16, 16)] == "undecided" and expected[("relu", 32, 32)] == "undecided"
    assert expected[("relu", 8, 128)] == "holds"
    assert decision.verdict() == "undecided"
    assert decision.counts() == {"holds": 2, "undecided": 3, "fails": 0}
    assert decision.counts(adjusted=False) == {"holds": 3, "undecided": 1, "fails": 1}


def test_an_exceeds_bp_cell_is_listed_apart_and_not_a_failure():
    cells = {("identity", 8, 32): CELLS[("identity", 8, 32)]}
    mean, _, low, _ = by_hand(cells[("identity", 8, 32)]["pcalm"])
    assert low > 0.01  # PC-ALM above BP by more than δ, significantly
    decision = grid.decide(table(cells), "pcalm", "bp", "noninferiority")
    assert decision.verdict() == "holds"  # non-inferior, so it does not fail the claim
    over = grid.exceeds(table(cells))
    assert [c.key for c in over.listed("holds")] == [("identity", 8, 32)]
    assert over.cells[("identity", 8, 32)].d.mean == pytest.approx(mean)


def test_a_diverged_seed_fails_its_cell_and_is_never_averaged_as_chance():
    cells = {("relu", 8, 128): CELLS[("relu", 8, 128)]}
    df = table(cells, diverged={(("relu", 8, 128), "pcalm", 1)})
    assert math.isnan(df[(df["algo.name"] == "pcalm") & (df["train.seed"] == 1)]["acc"].iloc[0])
    decision = grid.decide(df, "pcalm", "bp", "noninferiority")
    cell = decision.cells[("relu", 8, 128)]
    assert cell.raw == cell.adjusted == "fails" and "PC-ALM seed 1 diverged" in cell.diverged
    assert cell.d.n == 2  # the diverged seed is not paired (not counted as 10 %)
    assert decision.verdict() == "fails"
    # a diverged PC run, for "PC behind BP", counts as PC behind
    df = table(cells, diverged={(("relu", 8, 128), "pc", 0)})
    assert grid.decide(df, "pc", "bp", "shortfall").cells[("relu", 8, 128)].adjusted == "holds"
    # only BP diverged: the cell cannot be decided
    df = table(cells)
    df.loc[(df["algo.name"] == "bp") & (df["train.seed"] == 2), ["diverged", "acc"]] = \
        [True, math.nan]
    assert grid.decide(df, "pcalm", "bp", "noninferiority").cells[
        ("relu", 8, 128)].adjusted == "undecided"
    assert grid.diverged_runs(df) == ["ReLU N=8 L=128 BP seed 2"]


def test_duplicate_keys_are_an_error_not_a_silent_pairing():
    df = table({("relu", 8, 128): CELLS[("relu", 8, 128)]})
    twice = pd.concat([df, df[df["algo.name"] == "pcalm"].head(1)])
    with pytest.raises(stats.DuplicateRunError, match="two configs of one cell"):
        grid.decide(twice, "pcalm", "bp", "noninferiority")
    with pytest.raises(stats.DuplicateRunError):
        stats.paired(twice, grid.KEY, "pcalm", "bp")


def test_no_valid_runs_is_never_a_holds():
    assert grid.GridDecision().verdict() == "undecided"
    only_bp = table({("relu", 8, 8): {}})
    assert grid.decide(only_bp, "pcalm", "bp", "noninferiority").verdict() == "undecided"
    cells = {("relu", 8, 8): {"pcalm": [0.0, 0.0, 0.0]}}
    all_diverged = table(cells, diverged={(("relu", 8, 8), "pcalm", s) for s in range(3)})
    assert grid.decide(all_diverged, "pcalm", "bp", "noninferiority").verdict() == "fails"


def test_width_means_are_signed_and_seed_plan_pools_the_sd():
    means = grid.width_means(table(CELLS)).set_index(["activation", "width"])
    assert means.loc[("relu", 32), "mean"] == pytest.approx(-0.03)  # not |−3 pp|
    assert means.loc[("relu", 8), "mean"] == pytest.approx(0.003)
    assert means.loc[("relu", 32), "trail"] == 1
    cells = {k: v for k, v in CELLS.items() if k[1] != 16}
    plans = {p.width: p for p in grid.seed_plan(table(cells))}
    # width 8: three cells of 3 seeds, pooled sd² = mean of the three variances (2 df each)
    sds = [by_hand(cells[k]["pcalm"])[1] for k in cells if k[1] == 8]
    assert plans[8].sd == pytest.approx(math.sqrt(sum(s ** 2 for s in sds) / 3))
    assert plans[8].df == 6 and plans[8].sd_low < plans[8].sd < plans[8].sd_high


def test_missing_deep_wide_cells_are_named():
    df = table({("relu", w, d): {"pcalm": [0, 0, 0]} for w in grid.GRID_SIZES
                for d in grid.GRID_SIZES if w * d <= 2048})
    assert grid.missing_cells(df) == [(32, 128), (64, 64), (64, 128), (128, 32), (128, 64),
                                      (128, 128)]
    assert "N=32 L=128" in grid.missing_text(grid.missing_cells(df))


def test_the_analysis_layer_never_imports_torch():
    """ARCHITECTURE.md: analysis reads tables with pandas and scipy, never torch; of pcalm it
    imports only pcalm.analysis, the run folders it reads (pcalm.runs.folder), the shared
    atomic writers and the shared words (pcalm.names; tests/test_architecture.py holds the
    full layer rules)."""
    import ast
    from pathlib import Path

    import pcalm.analysis

    allowed = ("pcalm.analysis", "pcalm.runs.folder", "pcalm.atomic", "pcalm.names")
    for path in Path(pcalm.analysis.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name.split(".")[0] != "torch", (path.name, name)
                if name.startswith("pcalm"):
                    assert name.startswith(allowed), (path.name, name)


def test_a_cell_whose_bp_did_not_learn_is_undecided_and_out_of_holms_family():
    """Matching a BP net at chance says nothing (e.g. a learning rate that kills BP without
    a NaN): such a cell stays undecided, says why, and does not dilute Holm's family.
    Both cells alone have p = 0.037 that PC-ALM is not within δ: one cell at 5 % holds;
    two cells would both stay undecided (0.037 > 0.05/2)."""
    close = {"pcalm": [-0.005, 0.0, 0.005], "pc": [-0.03, -0.03, -0.03]}
    learned = table({("tanh", 16, 16): close})
    dead = table({("relu", 16, 16): close}, bp=(0.10, 0.11, 0.09))
    both = pd.concat([learned, dead], ignore_index=True)
    decision = grid.decide(both, "pcalm", "bp", "noninferiority")
    dead_cell = decision.cells[("relu", 16, 16)]
    assert (dead_cell.raw, dead_cell.adjusted) == ("undecided", "undecided")
    assert dead_cell.no_baseline == "BP did not learn (mean 10.0 %)"
    assert decision.cells[("tanh", 16, 16)].adjusted == "holds"  # a family of one
    assert decision.verdict() == "undecided"  # never a ✓ on a dead baseline
    assert grid.decide(dead, "pcalm", "bp", "noninferiority").verdict() == "undecided"
    # "PC behind BP" is not decided against a BP at chance either
    assert grid.decide(dead, "pc", "bp", "shortfall").cells[("relu", 16, 16)].raw == \
        "undecided"
    # 5 pp above chance is learning: BP at 15 % is a baseline
    assert grid.unlearned_baseline(table({("relu", 16, 16): close}, bp=(0.15, 0.15, 0.15)),
                                   list(grid.KEY)) == {}
