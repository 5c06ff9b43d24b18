"""The per-cell activity step η_h = 1/λ_max: table values agree with the authors' table."""

import csv

import pytest
import torch

from pcalm.cli import ETA_TABLE
from pcalm.core.eta_recipe import cell_lambda_max
from pcalm.runs.config import resolve_run_config
from pcalm.runs.eta import EtaTableError, load_table, lookup_state_lr
from tests.conftest import REAL_DATA, base_config

# SPEC §4: η_h = 1/λ_max from the authors' table (their random init; ours differs, so λ_max
# agrees to a few percent, not exactly).
REFERENCE = [
    ("fashion_mnist", "identity", 8, 8, 0.19710),
    ("fashion_mnist", "identity", 32, 32, 0.22887),
    ("fashion_mnist", "identity", 128, 128, 0.24467),
    ("fashion_mnist", "relu", 8, 8, 0.20117),
    ("fashion_mnist", "relu", 128, 128, 0.24798),
    ("fashion_mnist", "relu", 32, 32, 0.23589),
    ("fashion_mnist", "relu", 32, 64, 0.24373),
    ("fashion_mnist", "relu", 8, 128, 0.24768),
    ("fashion_mnist", "tanh", 8, 8, 0.20889),
    ("mnist", "relu", 32, 32, 0.23587),
]
# Our λ_max (Lanczos, checked against dense eigvalsh) runs 2–4.5 % above the authors' values;
# SPEC §4's independent linear recomputation shows the same offset (4.48 vs 4.37 at N=L=32).
TOLERANCE = 0.05  # relative


@pytest.mark.parametrize("data, act, width, depth, reference", REFERENCE)
def test_committed_table_agrees_with_the_authors(data, act, width, depth, reference):
    """A check of the committed data file; the code that writes it is checked in
    tests/test_eta_recipe.py."""
    ours = load_table(ETA_TABLE)[(data, act, width, depth)]
    assert ours == pytest.approx(reference, rel=TOLERANCE)


def test_committed_table_covers_the_paper_grid():
    table = load_table(ETA_TABLE)
    grid = [8, 16, 32, 64, 128]
    for data in ("fashion_mnist", "mnist"):
        for act in ("identity", "tanh", "relu"):
            for n in grid:
                for depth in grid:
                    assert (data, act, n, depth) in table
    # What the code computes for these cells (not only a plausible range): the linear cells
    # are recomputed from the code in tests/test_eta_recipe.py, on test-made IDX files.


def test_linear_cells_do_not_depend_on_the_data():
    x_a, x_b = torch.randn(64, 784), torch.randn(64, 784) * 3 + 1
    a = cell_lambda_max(x_a, "identity", 8, 6, seeds=(0,))
    b = cell_lambda_max(x_b, "identity", 8, 6, seeds=(0,))
    assert a == pytest.approx(b, rel=1e-9)


@pytest.mark.skipif(not REAL_DATA, reason="PCALM_DATA not set: real datasets unavailable")
@pytest.mark.parametrize("data, act, width, depth, reference", [REFERENCE[3], REFERENCE[8]])
def test_recomputation_on_real_data_agrees_with_the_authors(data, act, width, depth, reference):
    from pcalm.data import load_dataset

    x = load_dataset(data, root=REAL_DATA).x_train
    lam = cell_lambda_max(x, act, width, depth)
    assert 1 / lam == pytest.approx(reference, rel=TOLERANCE)


def test_missing_cell_is_a_one_line_error(tmp_path, fake_data_root):
    table = tmp_path / "eta.csv"
    with table.open("w", newline="") as f:
        csv.writer(f).writerows([["data", "activation", "width", "depth", "lambda_max",
                                  "state_lr", "seeds"],
                                 ["fashion_mnist", "relu", 16, 4, 4.0, 0.25, "0-1-2"]])
    assert lookup_state_lr(table, "fashion_mnist", "relu", 16, 4) == (0.25, "pcalm")
    with pytest.raises(EtaTableError) as err:
        lookup_state_lr(table, "fashion_mnist", "relu", 16, 5)
    assert "N=16 L=5" in str(err.value) and "make eta-table" in str(err.value)
    assert "\n" not in str(err.value)
    raw = base_config(fake_data_root, tmp_path)
    raw["algo"].update(budget="2L", state_lr="table")
    resolved = resolve_run_config(raw, table)
    assert resolved["algo"]["budget"] == 8 and resolved["algo"]["state_lr"] == 0.25
