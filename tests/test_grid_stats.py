"""The report's statistics (scripts/grid_stats.py) on a synthetic table whose answer is known."""

from __future__ import annotations

import math
import runpy
import sys

import pandas as pd
import pytest

from tests.conftest import REPO


@pytest.fixture
def stats(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import grid_stats

    return grid_stats


# Per cell (activation, N, L): BP's accuracy per seed and the planted differences per seed.
BP = [0.80, 0.78, 0.79]
CELLS = {
    # PC-ALM − BP within 1 pp, decided; PC − BP clearly negative (deep narrow: L = 16 N).
    ("relu", 8, 128): {"pcalm": [0.002, 0.004, 0.003], "pc": [-0.10, -0.12, -0.11]},
    # PC-ALM 2–3 pp behind BP: fails claim 1; PC-ALM − PC = +0.5 pp ± noise: undecided.
    ("relu", 32, 32): {"pcalm": [-0.03, -0.02, -0.025], "pc": [-0.035, -0.02, -0.03]},
    # too noisy to decide anything; PC ahead of PC-ALM by 1–2 pp: claim 3 fails here.
    ("tanh", 8, 32): {"pcalm": [0.0, 0.02, -0.01], "pc": [0.01, 0.04, 0.005]},
}


def _table() -> pd.DataFrame:
    rows = []
    for (act, n, depth), diffs in CELLS.items():
        for seed, bp in enumerate(BP):
            rows.append({"algo.name": "bp", "model.activation": act, "model.width": n,
                         "model.depth": depth, "train.seed": seed, "acc": bp})
            for algo, d in diffs.items():
                rows.append({"algo.name": algo, "model.activation": act, "model.width": n,
                             "model.depth": depth, "train.seed": seed, "acc": bp + d[seed]})
    return pd.DataFrame(rows)


def _by_hand(values):
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = 4.303 * sd / math.sqrt(n)  # Student's t, 2 degrees of freedom, 97.5 %
    return mean, sd, mean - half, mean + half


def test_paired_intervals_match_a_hand_computation(stats):
    intervals = stats.paired(_table(), stats.KEY, "pcalm", "bp")
    for cell, diffs in CELLS.items():
        iv = intervals[cell]
        mean, sd, low, high = _by_hand(diffs["pcalm"])
        assert (iv.n, iv.mean, iv.sd, iv.low, iv.high) == pytest.approx((3, mean, sd, low, high),
                                                                         abs=1e-12)
    # PC-ALM − PC pairs by seed too: d_s = pcalm_s − pc_s
    alm_pc = stats.paired(_table(), stats.KEY, "pcalm", "pc")[("tanh", 8, 32)]
    expected = [a - b for a, b in zip(CELLS[("tanh", 8, 32)]["pcalm"],
                                      CELLS[("tanh", 8, 32)]["pc"])]
    assert alm_pc.mean == pytest.approx(sum(expected) / 3, abs=1e-12)


def test_verdicts_per_cell_and_per_claim(stats):
    within, behind, alm_vs_pc = stats.grid_claims(_table())
    verdicts = {cell: v for cell, (_, v) in within.cells.items()}
    assert verdicts == {("relu", 8, 128): "holds", ("relu", 32, 32): "fails",
                        ("tanh", 8, 32): "undecided"}
    assert within.counts() == {"holds": 1, "undecided": 1, "fails": 1}
    assert within.verdict() == "fails"
    # deep narrow (L ≥ 4N): N=8 at L=128 and at L=32; N=32, L=32 is not
    assert set(behind.cells) == {("relu", 8, 128), ("tanh", 8, 32)}
    assert behind.cells[("relu", 8, 128)][1] == "holds"
    assert behind.cells[("tanh", 8, 32)][1] == "undecided"  # PC slightly ahead, noisy
    assert behind.verdict() == "undecided"
    assert {c: v for c, (_, v) in alm_vs_pc.cells.items()} == {
        ("relu", 8, 128): "holds", ("relu", 32, 32): "undecided", ("tanh", 8, 32): "fails"}
    assert alm_vs_pc.verdict() == "fails"


def test_one_seed_is_undecided_never_a_verdict(stats):
    iv = stats.Interval.of([0.001])
    assert math.isnan(iv.low) and stats.within(iv) == "undecided"
    assert stats.below_zero(iv) == "undecided" and stats.at_least_zero(iv) == "undecided"


def test_the_report_prints_the_cell_by_cell_section(stats, tmp_path, monkeypatch, capsys):
    tables = tmp_path / "tables"
    tables.mkdir()
    df = _table().rename(columns={"acc": "test_acc"})
    df["data.name"] = "fashion_mnist"
    df["diverged"] = False
    df["provenance.git_commit"] = "0123456789abcdef"
    df["provenance.git_dirty"] = False
    df["provenance.device_name"] = "Test CPU"
    df.to_csv(tables / "figure2-paper.csv", index=False)
    monkeypatch.setattr(sys, "argv", ["report.py", "--scale", "paper", "--tables", str(tables),
                                      "--out", str(tmp_path / "r.md")])
    runpy.run_path(str(REPO / "scripts" / "report.py"), run_name="__main__")
    text = (tmp_path / "r.md").read_text()
    claim = next(ln for ln in text.splitlines() if ln.startswith("| PC-ALM within 1 pp"))
    assert "**fails**" in claim and "| 1 / 1 / 1 |" in claim and "ReLU N=32 L=32" in claim
    _, _, low, high = _by_hand(CELLS[("relu", 32, 32)]["pcalm"])
    assert f"[{100 * low:+.2f}, {100 * high:+.2f}] pp" in claim
    cell = next(ln for ln in text.splitlines() if ln.startswith("| ReLU N=8 L=128 |"))
    assert "| 3 | 79.00 ± 1.00 |" in cell  # BP's mean ± sd over the 3 seeds
    assert "`0123456789`: 27 runs" in text and "Test CPU: 27 runs" in text
    capsys.readouterr()


def test_make_figure2_scale_paper_draws_the_reference_without_training(tmp_path):
    """`make figure2 SCALE=paper` with a reference table: one plot call, no sweep."""
    import subprocess

    reference = tmp_path / "reference"
    reference.mkdir()
    df = _table().rename(columns={"acc": "test_acc"})
    df["data.name"], df["diverged"], df["train.batch_size"] = "fashion_mnist", False, 64
    df.to_csv(reference / "figure2-paper.csv", index=False)
    out = subprocess.run(["make", "-n", "figure2", "SCALE=paper", f"REFERENCE={reference}"],
                         cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    assert f"scripts/plot_figure2.py --scale paper --tables {reference}" in out
    assert "sweep.py" not in out and "collect" not in out
    again = subprocess.run(["make", "-n", "figure2", "SCALE=paper", "TRAIN=1",
                            f"REFERENCE={reference}"], cwd=REPO, capture_output=True,
                           text=True, timeout=60).stdout
    assert "make sweep EXP=figure2" in again  # TRAIN=1: run what is missing here first
    report = subprocess.run(["make", "-n", "report", "SCALE=paper", f"REFERENCE={reference}"],
                            cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in __import__("os").environ.items()
                                 if k != "PCALM_RESULTS"}).stdout
    assert f"--tables {reference}" in report and report.count("--tables") == 1
    (tmp_path / "mine" / "tables").mkdir(parents=True)
    df.to_csv(tmp_path / "mine" / "tables" / "figure2-paper.csv", index=False)
    own = subprocess.run(["make", "-n", "report", "SCALE=paper", f"REFERENCE={reference}",
                          f"PCALM_RESULTS={tmp_path / 'mine'}"], cwd=REPO,
                         capture_output=True, text=True, timeout=60).stdout
    assert f"--tables {tmp_path / 'mine'}/tables --out {tmp_path / 'mine'}/report-paper.md" in own
    assert own.count("--tables") == 1  # PCALM_RESULTS: the user's own runs, written there
    figure = subprocess.run(["make", "-n", "figure2", "SCALE=paper", f"REFERENCE={reference}",
                             f"PCALM_RESULTS={tmp_path / 'mine'}"], cwd=REPO,
                            capture_output=True, text=True, timeout=60).stdout
    assert f"--tables {tmp_path / 'mine'}/tables" in figure  # the figure reads what the report does
    assert f"--tables {reference}" not in figure
    empty = subprocess.run(["make", "-n", "report", "SCALE=paper", f"REFERENCE={reference}",
                            f"PCALM_RESULTS={tmp_path / 'none'}"], cwd=REPO,
                           capture_output=True, text=True, timeout=60).stdout
    assert f"--tables {reference}" in empty  # no own paper tables there: the reference
