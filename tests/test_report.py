"""`make report` (scripts/report.py) on tables of real tiny runs: the scorecard, the anchor row,
unmeasured claims marked as such."""

from __future__ import annotations

import runpy
import sys

import pytest

from tests.conftest import REPO
from tests.test_plots_training import grid, train_and_collect

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def scripts_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))


def run_report(tables, out, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", ["report.py", "--scale", "smoke", "--tables", str(tables),
                                      "--out", str(out)])
    runpy.run_path(str(REPO / "scripts" / "report.py"), run_name="__main__")
    printed = capsys.readouterr().out
    text = out.read_text()
    assert text.strip() in printed
    return text


def row(text: str, number: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {number} |"))


def test_scorecard_with_the_anchor_cell_and_unmeasured_claims(
        fake_data_root, results_dir, tmp_path, monkeypatch, capsys, scripts_path):
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
    assert "not comparable" in text and "Orderings:" in text
    for number in ("2", "3"):  # measured from the figure2 table
        assert row(text, number).rstrip(" |").endswith(("✓", "✗", "partly", "activations)",
                                                        "threshold)"))
    assert "N=8, L=32 vs N=32, L=4" in row(text, "3")
    for number, make in (("1", "make figure4 SCALE=smoke"), ("2b", "make figure2_mnist"),
                         ("4", "make figure3 SCALE=smoke"), ("5", "make figure_eta SCALE=smoke"),
                         ("6", "make figure6"), ("7", "make figure10")):
        assert "not measured" in row(text, number) and make in row(text, number)


def test_eta_claim_is_measured_against_the_eta_table(
        fake_data_root, results_dir, tmp_path, monkeypatch, capsys, scripts_path):
    cells = grid(algo=["pc"], **{"algo.state_lr": [0.05, 0.1, 0.15, 1e12], "train.seed": [0, 1],
                 "model.depth": [4]})
    tables = train_and_collect(fake_data_root, results_dir, "figure_eta", cells)
    eta_table = tmp_path / "eta_table.csv"
    eta_table.write_text("data,activation,width,depth,lambda_max,state_lr,seeds\n"
                         "fashion_mnist,relu,8,4,10.0,0.1,0-1-2\n")
    import plot_figure_eta

    monkeypatch.setattr(plot_figure_eta, "ETA_TABLE", eta_table)
    text = run_report(tables, tmp_path / "r.md", monkeypatch, capsys)
    eta = row(text, "5")
    assert "not measured" not in eta and "2 runs diverged" in eta
    assert "at 1.50/λ_max" in eta or "at 1.00/λ_max" in eta or "at 0.50/λ_max" in eta


def test_diagnostic_claims_read_the_figure_task_columns(tmp_path, monkeypatch, capsys,
                                                        scripts_path):
    """Claims 1 and 4 read the diagnostic tasks' summary columns (pcalm/runs/tasks/figures.py):
    the interface between those tables and the report, checked on two-row tables."""
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "figure4-smoke.csv").write_text(
        "run_id,algo.name,model.activation,grad_cosine_final,grad_rel_error_final\n"
        "a,pc,identity,0.879,0.715\nb,pcalm,identity,1.0,0.000002\n")
    (tables / "figure3-smoke.csv").write_text(
        "run_id,algo.name,model.width,model.depth,model.activation,bottom_cosine_at_budget,"
        "credit_norm_ratio_at_budget\n"
        "a,pc,32,32,relu,0.0,0.10\nb,pcalm,32,32,relu,0.89,0.76\n")
    text = run_report(tables, tmp_path / "r.md", monkeypatch, capsys)
    assert row(text, "1").endswith("| smoke | ✓ |") and "PC 0.879" in row(text, "1")
    assert row(text, "4").endswith("| smoke | ✓ |") and "PC-ALM 0.890, PC 0.000" in row(text, "4")
    assert "not measured" in row(text, "2")  # no figure2 table here
