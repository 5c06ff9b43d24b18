"""The committed reference tables stay valid: today's code gives their runs the same ids.

A run's id is a hash of its resolved config (pcalm/runs/folder.py::run_id). If moving or
rewriting the code changed an id, `make figure2 SCALE=paper TRAIN=1` would retrain every run
of results/reference/tables instead of finding it. The ids pinned here were recorded by the
paper-scale sweep that produced those tables.
"""

import csv

import pytest

from pcalm.runs.folder import run_id
from pcalm.sweeps.grid import load_sweep
from tests.conftest import REPO

TABLES = REPO / "results" / "reference" / "tables"
# (table, run id, what the row says the run is): read off the committed CSV
PINNED = [
    ("figure2-paper.csv", "c91918a87e58", {"algo.name": "bp", "model.width": "8",
                                           "model.depth": "8", "model.activation": "identity"}),
    ("figure2-paper.csv", "007fa3f20f7f", {}),
    ("figure2-paper.csv", "0340157ee046", {}),
    ("figure2-paper.csv", "05896daf51e2", {}),
]


def reference_ids(table: str) -> dict[str, dict]:
    with open(TABLES / table, newline="", encoding="utf-8") as f:
        return {row["run_id"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def figure2_paper_ids(tmp_path_factory):
    # the official data's id is its name (data.verify=true): no file is read, none is needed
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PCALM_DATA", str(tmp_path_factory.mktemp("no-data")))
        sweep = load_sweep(["experiment=figure2", "scale=paper", "data.verify=true"])
    return {run_id(cfg) for cfg in sweep.configs}


@pytest.mark.parametrize("table, rid, what", PINNED)
def test_pinned_reference_ids_are_still_computed(figure2_paper_ids, table, rid, what):
    row = reference_ids(table)[rid]
    assert {k: row[k] for k in what} == what
    assert rid in figure2_paper_ids


def test_every_reference_run_of_figure2_keeps_its_id(figure2_paper_ids):
    missing = sorted(set(reference_ids("figure2-paper.csv")) - figure2_paper_ids)
    assert missing == [], f"{len(missing)} reference runs would get new ids: {missing[:5]}"
