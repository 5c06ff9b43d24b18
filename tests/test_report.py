"""`make report` (experiments/report.py → pcalm.analysis): the scorecard on tables of real tiny runs
and on synthetic tables in each figure's format, whose verdicts are known."""

from __future__ import annotations

import csv
import math

import pandas as pd
import pytest

from pcalm.analysis.scorecard import write_report
from tests.conftest import REPO
from tests.test_analysis_stats import CELLS, table
from tests.test_plots_training import grid, train_and_collect

pytestmark = pytest.mark.usefixtures("one_thread")


def run_report(tables, out, monkeypatch, capsys, scale="smoke") -> str:
    """The report as `python experiments/report.py --scale S --tables T --out O` writes it."""
    text, written = write_report(tables, scale, out)
    assert written == out and out.read_text(encoding="utf-8") == text + "\n"
    return text


def row(text: str, number: str) -> str:
    """Claim `number`'s row of the claims table (the width table above also has "| 8 |")."""
    claims = text.split("## Claims", 1)[1]
    return next(line for line in claims.splitlines() if line.startswith(f"| {number} |"))


def verdict(text: str, number: str) -> str:
    return row(text, number).split("| **")[1].split("**")[0]


def test_scorecard_with_the_anchor_cell_and_unmeasured_claims(
        fake_data_root, results_dir, tmp_path, monkeypatch, capsys):
    # The figure2 grid around the anchor cell N = L = 32 ReLU (T = 2L), one cell missing.
    cells = []
    for c in grid(algo=["bp", "pc", "pcalm"], **{"model.activation": ["relu"],
                  "model.width": [8, 32], "model.depth": [4, 32], "train.seed": [0, 1]}):
        if c["algo"] != "bp":
            c["algo.budget"] = 2 * c["model.depth"]
        if not (c["algo"] == "pcalm" and c["model.width"] == 8 and c["model.depth"] == 4):
            cells.append(c)
    tables = train_and_collect(fake_data_root, results_dir, "figure2", cells)
    text = run_report(tables, tmp_path / "report-smoke.md", monkeypatch, capsys)

    assert "# pcalm reproduction scorecard — scale `smoke`" in text
    anchor = next(line for line in text.splitlines() if line.startswith("| test accuracy BP |"))
    assert "78.66 %" in anchor and "(n=2)" in anchor  # paper value beside our seed mean
    cosine = next(line for line in text.splitlines() if "gradient cosine" in line
                  and "PC-ALM" in line)
    assert "0.909" in cosine and "not measured" not in cosine
    assert "not the paper's" in text and "## PC-ALM − BP by width (signed)" in text
    for number in ("2", "3", "3b"):  # decided from the figure2 table
        assert verdict(text, number) in ("✓ holds", "✗ fails", "? undecided")
    for number, make in (("1", "make figure4 SCALE=smoke"), ("2b", "make figure2_mnist"),
                         ("4", "make figure3 SCALE=smoke"), ("5", "make figure5 SCALE=smoke"),
                         ("6", "make figure6"), ("8", "make figure8"), ("9", "make figure10"),
                         ("10", "make figure_eta SCALE=smoke")):
        assert verdict(text, number) == "– missing" and make in row(text, number)


def _figure2_table(tables, cells, **kw):
    df = table(cells, **kw).drop(columns=["acc"])
    df["data.name"] = "fashion_mnist"
    df["provenance.git_commit"] = "0123456789abcdef"
    df["provenance.git_dirty"] = False
    df["provenance.device_name"] = "Test CPU"
    df.to_csv(tables / "figure2-paper.csv", index=False)
    return df


def test_figure2_claims_exceeds_bp_diverged_runs_and_missing_cells(tmp_path, monkeypatch,
                                                                   capsys):
    tables = tmp_path / "tables"
    tables.mkdir()
    _figure2_table(tables, CELLS, diverged={(("tanh", 8, 32), "pcalm", 2)})
    text = run_report(tables, tmp_path / "r.md", monkeypatch, capsys, scale="paper")
    matches = row(text, "2")
    # tanh N=8 L=32 fails by its diverged PC-ALM seed and leaves Holm's family, so ReLU N=32
    # L=32 (p = 0.0101 that it is not behind by δ) fails after Holm over 4 cells (≤ 0.05/4);
    # tanh N=16 L=16 (p = 0.037) holds only unadjusted (third of 4: 0.037 > 0.05/2)
    assert verdict(text, "2") == "✗ fails"
    assert "2 hold / 1 undecided / 2 fail of 5 cells (Holm); unadjusted 3 / 0 / 2" in matches
    assert "tanh N=8 L=32" in matches and "PC-ALM seed 2 diverged" in matches
    assert "ReLU N=32 L=32 -3.00 [-3.84, -2.16] pp;" in matches
    assert "exceeds BP by > δ" in matches and "linear N=8 L=32 +5.50" in matches
    assert "lacks N=8 L=8" in matches and "N=128 L=128" in matches  # cells not in the table
    assert "tanh N=8 L=32 PC-ALM seed 2" in text  # the diverged-runs list
    cell = next(ln for ln in text.splitlines() if ln.startswith("| ReLU N=8 L=128 |"))
    assert "| 3 | 79.00 ± 1.00 |" in cell  # BP's mean ± sd over the 3 seeds
    assert "`0123456789`: 45 runs" in text and "Test CPU: 45 runs" in text
    # claim 3: the deep-narrow cells (L ≥ 4N) are N=8 at L=128 and at L=32 (two activations)
    deep = row(text, "3")
    assert "of 3 cells (Holm)" in deep and "doubling of L/N" in deep


def test_duplicate_runs_of_a_cell_stop_the_report(tmp_path, monkeypatch, capsys):
    tables = tmp_path / "tables"
    tables.mkdir()
    df = _figure2_table(tables, {("relu", 8, 128): CELLS[("relu", 8, 128)]})
    pd.concat([df, df.tail(1)]).to_csv(tables / "figure2-paper.csv", index=False)
    with pytest.raises(ValueError, match="two configs of one cell"):
        run_report(tables, tmp_path / "r.md", monkeypatch, capsys, scale="paper")


def _authors_lambda(activation="relu", width=32, depth=32):
    with open(REPO / "configs" / "authors_eta_best_by_cell.csv", newline="") as f:
        for r in csv.DictReader(f):
            if (r["dataset"], r["activation"], r["N"], r["L"]) == \
                    ("fashion_mnist", activation, str(width), str(depth)):
                return 1 / float(r["eta_best_1_over_lambda_median"])


def _eta_table(tables, accs: dict, diverged=()):
    """figure_eta rows: PC at η_h = k/λ_max (the authors' λ_max), accs {k: [acc per seed]}."""
    lam = _authors_lambda()
    rows = [{"algo.name": "pc", "data.name": "fashion_mnist", "model.activation": "relu",
             "model.width": 32, "model.depth": 32, "algo.state_lr": round(k / lam, 6),
             "train.seed": s, "test_acc": a, "diverged": (k, s) in diverged}
            for k, per_seed in accs.items() for s, a in enumerate(per_seed)]
    pd.DataFrame(rows).to_csv(tables / "figure_eta-smoke.csv", index=False)


def test_eta_claim_gain_below_the_limit_and_collapse_beyond(tmp_path, monkeypatch, capsys):
    tables = tmp_path / "tables"
    tables.mkdir()
    base = [0.65, 0.66, 0.64]
    _eta_table(tables, {0.5: [a - 0.02 for a in base], 1.0: base,
                        1.8: [a + 0.003 for a in base], 2.2: [math.nan, 0.1, math.nan]},
               diverged={(2.2, 0), (2.2, 2)})
    text = run_report(tables, tmp_path / "r.md", monkeypatch, capsys)
    eta = row(text, "10")
    # gain at k = 1.8 is +0.3 pp on every seed (sd 0): below δ = 1 pp; k = 2.2 collapsed
    assert verdict(text, "10") == "✓ holds", eta
    assert "best below 2 at k=1.8" in eta and "2 of 3 runs diverged" in eta
    assert "1 network(s)" in eta  # the paper says several
    _eta_table(tables, {1.0: base, 1.8: [a + 0.03 for a in base], 2.2: [0.5, 0.5, 0.5]})
    text = run_report(tables, tmp_path / "r.md", monkeypatch, capsys)
    assert verdict(text, "10") == "✗ fails"  # a 3 pp gain, and no collapse at 2.2


def test_diagnostic_claims_read_the_figure_task_columns(tmp_path, monkeypatch, capsys):
    """Claims 1, 4, 5 read the diagnostic tasks' summary columns (pcalm/runs/tasks/figures.py)."""
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "figure4-smoke.csv").write_text(
        "run_id,algo.name,model.activation,grad_cosine_final,grad_rel_error_final\n"
        "a,pc,identity,0.879,0.715\nb,pcalm,identity,1.0,0.000002\n")
    (tables / "figure3-smoke.csv").write_text(
        "run_id,algo.name,model.width,model.depth,model.activation,bottom_cosine_at_budget,"
        "front_speed,front_speed_predicted,front_exponent,front_layers_reached\n"
        "a,pc,32,32,relu,0.0,0.8,,2.3,9\nb,pcalm,32,32,relu,0.89,0.41,0.47,1.02,31\n")
    (tables / "figure5-smoke.csv").write_text(
        "run_id,algo.name,model.depth,algo.alpha,train.seed,input_rel_error_at_budget,"
        "pc_input_rel_error_at_budget\n"
        "a,pcalm,16,0.25,0,0.9,0.99\nb,pcalm,16,1.0,0,0.2,0.99\n"
        "c,pcalm,32,0.25,0,0.95,0.99\nd,pcalm,32,1.0,0,0.97,0.99\n")
    text = run_report(tables, tmp_path / "r.md", monkeypatch, capsys)
    assert verdict(text, "1") == "✓ holds" and "PC 0.879" in row(text, "1")
    assert verdict(text, "4") == "✓ holds"
    assert "measured 0.410 layers/step vs predicted √(αη_h) = 0.470" in row(text, "4")
    assert verdict(text, "5") == "✗ fails"  # at L = 32 the larger α is not better
    assert "L=16: α=0.25 0.900, α=1 0.200" in row(text, "5")
    assert verdict(text, "2") == "– missing"  # no figure2 table here


def test_routes_claim_reads_the_budget_points_and_names_unsolved_equilibria(
        tmp_path, monkeypatch, capsys):
    """Claim 8 decides on the T = 2L points (PC-ALM N = 32: 0.9 at 1e8 FLOPs beats PC's best
    0.6, cheaper than PC's widest run, 4e9); PC's equilibrium values are reported where
    solved, and the widths without one are named (solver none)."""
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "figure8-paper.csv").write_text(
        "run_id,algo.name,model.width,train.seed,hidden_alignment_at_budget,flops_at_budget,"
        "equilibrium_solver,hidden_alignment_equilibrium\n"
        "a,pcalm,32,0,0.9,1e8,,\nb,pc,8,0,0.5,1e7,newton,0.8\nc,pc,8,1,0.5,1e7,newton,0.9\n"
        "d,pc,32,0,0.6,1e8,newton,0.95\ne,pc,1024,0,0.55,4e9,none,\n")
    text = run_report(tables, tmp_path / "r.md", monkeypatch, capsys, scale="paper")
    line = row(text, "8")
    assert verdict(text, "8") == "✓ holds"
    assert "PC at equilibrium: N=8 0.850, N=32 0.950" in line
    assert "PC's equilibrium not solved at N = 1024" in line
    assert "PC stops at N" not in line


def test_routes_claim_names_an_equilibrium_solve_that_did_not_converge(tmp_path, monkeypatch,
                                                                        capsys):
    """Figure 9 at paper scale has one (N = 256, seed 0: 100 Newton steps, residual 6.7e-3):
    it is averaged in as it stopped, so the row says so, with its residual."""
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "figure9-paper.csv").write_text(
        "run_id,algo.name,model.width,train.seed,hidden_alignment_at_budget,flops_at_budget,"
        "equilibrium_solver,hidden_alignment_equilibrium,equilibrium_converged,"
        "equilibrium_residual,equilibrium_iterations\n"
        "a,pcalm,32,0,0.9,1e8,,,,,\nb,pc,8,0,0.5,1e7,newton,0.8,True,2.9e-07,48\n"
        "c,pc,8,1,0.5,1e7,newton,0.9,False,6.676e-03,100\n")
    line = row(run_report(tables, tmp_path / "r.md", monkeypatch, capsys, scale="paper"), "8b")
    assert ("PC at equilibrium: N=8 0.850 (1 of 2 solves converged; not converged, averaged in "
            "as they stopped: N=8 seed 1: residual 6.7e-03 after 100 Newton steps)") in line


def test_gamma_claim_names_a_point_whose_pcalm_runs_all_diverged(tmp_path, monkeypatch,
                                                                 capsys):
    """Figure 6 at paper scale has such a point (sp, γ0 = 8): it fails its point, is named
    without a paired difference, and the report is written (it raised a KeyError)."""
    tables = tmp_path / "tables"
    tables.mkdir()
    rows = ["run_id,algo.name,model.param,model.gamma0,train.seed,test_acc,diverged,status"]
    for i, (algo, param, gamma, seed) in enumerate(
            (a, p, g, s) for a in ("bp", "pcalm") for p, g in (("mupc", 1.0), ("sp", 8.0))
            for s in (0, 1, 2)):
        diverged = algo == "pcalm" and param == "sp"
        acc = "" if diverged else f"{0.80 + 0.001 * seed:.3f}"
        rows.append(f"r{i},{algo},{param},{gamma},{seed},{acc},{diverged},"
                    f"{'diverged' if diverged else 'complete'}")
    (tables / "figure6-smoke.csv").write_text("\n".join(rows) + "\n")
    text = run_report(tables, tmp_path / "r.md", monkeypatch, capsys)
    line = row(text, "6")
    assert verdict(text, "6") == "✗ fails"
    assert "sp/8.0: PC-ALM − BP – (no seed pair: diverged) [fails]" in line
    assert "mupc/1.0: PC-ALM − BP +0.00 [" in line and "pp [holds]" in line


def test_report_names_the_narrow_linear_table(tmp_path, monkeypatch, capsys):
    tables = tmp_path / "tables"
    tables.mkdir()
    rows = [{"algo.name": a, "model.depth": 32, "train.eta0": eta, "train.epochs": ep,
             "algo.budget": b, "train.seed": s, "test_acc": 0.4 + 0.01 * s, "diverged": False}
            for a, eta, ep, b in (("bp", 0.001, 1, math.nan), ("bp", 0.001, 3, math.nan),
                                  ("pcalm", 0.001, 1, 64), ("pcalm", 0.001, 1, 256))
            for s in range(3)]
    pd.DataFrame(rows).to_csv(tables / "narrow_linear-smoke.csv", index=False)
    text = run_report(tables, tmp_path / "r.md", monkeypatch, capsys)
    assert "| 32 | PC-ALM | 0.001 | 1 | 8L | 41.00 ± 1.00 % | 3 |" in text
    assert "| 32 | BP | 0.001 | 3 | – | 41.00 ± 1.00 % | 3 |" in text
    # every variant equals PC-ALM at T = 2L seed by seed: paired differences of exactly 0
    gaps = next(ln for ln in text.splitlines() if ln.startswith("- L=32, minus PC-ALM"))
    assert "BP η0=0.001 3 ep +0.00 [+0.00, +0.00] pp" in gaps
    assert "PC-ALM η0=0.001 1 ep T=8L +0.00" in gaps and "T=2L +0.00" not in gaps


def test_make_figure2_scale_paper_draws_the_reference_without_training(tmp_path):
    """`make figure2 SCALE=paper` with a reference table: one plot call, no sweep."""
    import subprocess

    reference = tmp_path / "reference"
    reference.mkdir()
    df = table(CELLS).drop(columns=["acc"])
    df["data.name"], df["diverged"], df["train.batch_size"] = "fashion_mnist", False, 64
    df.to_csv(reference / "figure2-paper.csv", index=False)
    out = subprocess.run(["make", "-n", "figure2", "SCALE=paper", f"REFERENCE={reference}"],
                         cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    assert f"experiments/plot.py figure2 --scale paper --tables {reference}" in out
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


def test_gamma_claim_never_holds_against_a_bp_that_did_not_learn(tmp_path, monkeypatch,
                                                                 capsys):
    """A γ0 so small (or a learning rate so large) that BP stays at chance: PC-ALM 'matches'
    it exactly, and the point is undecided, named, never a ✓."""
    tables = tmp_path / "tables"
    tables.mkdir()
    rows = ["run_id,algo.name,model.param,model.gamma0,train.seed,test_acc,diverged,status"]
    for i, (algo, seed) in enumerate((a, s) for a in ("bp", "pcalm") for s in (0, 1, 2)):
        rows.append(f"r{i},{algo},mupc,0.125,{seed},{0.10 + 0.001 * seed:.3f},False,complete")
    (tables / "figure6-smoke.csv").write_text("\n".join(rows) + "\n")
    text = run_report(tables, tmp_path / "r.md", monkeypatch, capsys)
    assert verdict(text, "6") == "? undecided"
    assert ("mupc/0.125: PC-ALM − BP +0.00 [+0.00, +0.00] pp [undecided, no baseline: BP did "
            "not learn (mean 10.1 %)]") in row(text, "6")
