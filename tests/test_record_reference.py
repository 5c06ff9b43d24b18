"""`make reference`: the record keeps every run row and slims the metrics to run id + metrics."""

import pandas as pd

from pcalm.analysis.tables import record
from pcalm.plots.theory import run_folder


def test_record_copies_runs_and_slims_metrics(tmp_path):
    tables, out = tmp_path / "tables", tmp_path / "reference"
    tables.mkdir()
    runs = pd.DataFrame({"run_id": ["a", "b"], "model.width": [8, 16], "test_acc": [0.5, 0.6],
                         "provenance.git_commit": ["c0ffee", "c0ffee"]})
    runs.to_csv(tables / "figure2-paper.csv", index=False)
    metrics = pd.DataFrame({"run_id": ["a", "a", "b"], "model.width": [8, 8, 16],
                            "algo.name": ["pc"] * 3, "state_lr_source": ["authors"] * 3,
                            "step": [0, 10, 0], "test_acc": [0.1, 0.5, 0.1]})
    metrics.to_csv(tables / "figure2-paper-metrics.csv", index=False)
    record("figure2", "paper", tables, out)
    assert (out / "figure2-paper.csv").read_text() == (tables / "figure2-paper.csv").read_text()
    slim = pd.read_csv(out / "figure2-paper-metrics.csv")
    assert list(slim.columns) == ["run_id", "step", "test_acc"]
    assert slim["test_acc"].tolist() == [0.1, 0.5, 0.1]


def test_record_copies_the_arrays_of_diagnostic_runs_where_the_plots_look(tmp_path):
    """Diagnostic figures draw from arrays.npz beside the tables (pcalm/plots/theory.py:
    <tables>/../runs/<run_id>/): the record copies each run's arrays there, byte for byte,
    and skips runs without arrays (training runs)."""
    import numpy as np

    results = tmp_path / "results"
    tables, out = results / "tables", tmp_path / "reference" / "tables"
    tables.mkdir(parents=True)
    pd.DataFrame({"run_id": ["a", "b"], "test_acc": [0.5, 0.6]}).to_csv(
        tables / "figure3-paper.csv", index=False)
    pd.DataFrame({"run_id": ["a"], "step": [0]}).to_csv(tables / "figure3-paper-metrics.csv",
                                                      index=False)
    (results / "runs" / "a").mkdir(parents=True)
    np.savez(results / "runs" / "a" / "arrays.npz", credit=np.arange(6.0).reshape(2, 3))
    written = record("figure3", "paper", tables, out)
    copied = tmp_path / "reference" / "runs" / "a" / "arrays.npz"
    assert copied in written and not (tmp_path / "reference" / "runs" / "b").exists()
    assert copied.read_bytes() == (results / "runs" / "a" / "arrays.npz").read_bytes()
    row = pd.read_csv(out / "figure3-paper.csv").iloc[0]
    assert run_folder(row, out) == copied.parent
