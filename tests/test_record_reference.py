"""`make reference`: the record keeps every run row and slims the metrics to run id + metrics."""

import pandas as pd

from tests.conftest import load_script


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
    record = load_script("scripts/record_reference.py")
    record.record("figure2", "paper", tables, out)
    assert (out / "figure2-paper.csv").read_text() == (tables / "figure2-paper.csv").read_text()
    slim = pd.read_csv(out / "figure2-paper-metrics.csv")
    assert list(slim.columns) == ["run_id", "step", "test_acc"]
    assert slim["test_acc"].tolist() == [0.1, 0.5, 0.1]
