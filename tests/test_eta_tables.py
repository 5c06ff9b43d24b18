"""Reading and writing the η_h tables (pcalm/runs/eta.py): small tables written in each test, the
expected dictionaries and files spelled out here. Catches a loader that drops, renames or
rounds a value, a check off by one at its bounds, a message without file, line or fix, and a
merge that loses, duplicates or reorders rows."""

from __future__ import annotations

import pytest

from pcalm.core.eta_recipe import recipe_name
from pcalm.runs.eta import (
    EtaTableError,
    load_authors_table,
    load_table,
    lookup_state_lr,
    write_table,
)

OURS_HEADER = "data,activation,width,depth,lambda_max,state_lr,seeds,recipe"
AUTHORS_HEADER = ("dataset,activation,N,L,batch_size,lambda_max_total_gn_median,"
                  "eta_best_1_over_lambda_median,alpha_cap_eta_best_median")
OURS_FIX = "git checkout configs/eta_table.csv"
AUTHORS_FIX = "git checkout configs/authors_eta_best_by_cell.csv"


def _ours(tmp_path, *rows: str, name: str = "eta_table.csv"):
    path = tmp_path / name
    path.write_text("\n".join((OURS_HEADER, *rows)) + "\n")
    return path


def _authors(tmp_path, *rows: str):
    path = tmp_path / "authors.csv"
    path.write_text("\n".join((AUTHORS_HEADER, *rows)) + "\n")
    return path


def _row(n=16, depth=4, lam="5.0", eta="0.2", act="relu", data="fashion_mnist"):
    return f"{data},{act},{n},{depth},{lam},{eta},0-1-2,power17"


def _authors_row(n=8, depth=8, lam="5.0735071486275825", eta="0.19710231417935553",
                 act="linear", data="fashion_mnist"):
    return f"{data},{act},{n},{depth},64,{lam},{eta},2.0"


def test_our_table_reads_every_cell_with_its_value(tmp_path):
    path = _ours(tmp_path, _row(), _row(n=32, depth=8, lam="4.0", eta="0.25", act="linear"),
                 _row(n=64, depth=16, lam="8.0", eta="0.125", data="mnist", act="tanh"))
    assert load_table(path) == {("fashion_mnist", "relu", 16, 4): 0.2,
                                ("fashion_mnist", "identity", 32, 8): 0.25,
                                ("mnist", "tanh", 64, 16): 0.125}


def test_the_authors_table_is_read_verbatim(tmp_path):
    path = _authors(tmp_path, _authors_row(),
                    _authors_row(n=32, depth=16, act="relu", data="mnist", lam="4.0",
                                 eta="0.25"))
    assert load_authors_table(path) == {("fashion_mnist", "identity", 8, 8): 0.19710231417935553,
                                        ("mnist", "relu", 32, 16): 0.25}


@pytest.mark.parametrize("load", [load_table, load_authors_table])
def test_a_missing_table_is_named_with_its_fix(tmp_path, load):
    path = tmp_path / "nowhere.csv"
    with pytest.raises(EtaTableError, match=r"^no eta table at .*nowhere\.csv: restore it"):
        load(path)


OURS_EXPECTED = "data,activation,width,depth,lambda_max,state_lr,seeds"
AUTHORS_EXPECTED = ("dataset,activation,N,L,lambda_max_total_gn_median,"
                    "eta_best_1_over_lambda_median")


@pytest.mark.parametrize("load, header, missing, expected, fix", [
    (load_table, "data,activation,width,depth,lambda_max,seeds", "state_lr", OURS_EXPECTED,
     OURS_FIX),
    (load_table, "activation,width,depth,lambda_max,state_lr", "data", OURS_EXPECTED, OURS_FIX),
    (load_authors_table, "dataset,activation,N,L,eta_best_1_over_lambda_median",
     "lambda_max_total_gn_median", AUTHORS_EXPECTED, AUTHORS_FIX),
])
def test_a_bad_header_names_the_first_missing_column(tmp_path, load, header, missing, expected,
                                                     fix):
    path = tmp_path / "t.csv"
    path.write_text(header + "\n")
    with pytest.raises(EtaTableError) as err:
        load(path)
    message = str(err.value)
    assert message.startswith(f"{path}, line 1: bad header (missing column {missing}, "
                              f"expected {expected}): restore it")
    assert fix in message


# ---------------------------------------------------------------- one bad value, one line


def _error(load, path) -> str:
    with pytest.raises(EtaTableError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("row, fragment", [
    (_row(n="x"), "bad width 'x'"),
    (_row(depth="4.5"), "bad depth '4.5'"),
    (_row(lam="abc"), "bad lambda_max 'abc'"),
    (_row(eta=""), "bad state_lr ''"),
    (_row(lam="inf", eta="0.2"), "lambda_max 'inf' is not finite"),
    (_row(eta="nan"), "state_lr 'nan' is not finite"),
    (_row(act=""), "bad activation '' (allowed: identity, tanh, relu, linear)"),
    (_row(act="gelu"), "bad activation 'gelu' (allowed: identity, tanh, relu, linear)"),
    (_row(n=0), "bad cell N=0 L=4"),
    (_row(depth=1), "bad cell N=16 L=1"),
    (_row(eta="2.5", lam="0.4"), "η_h 2.5 outside [0.001, 2.0]"),
    (_row(eta="0.0005", lam="2000"), "η_h 0.0005 outside [0.001, 2.0]"),
    (_row(eta="0.2", lam="5.2"), "η_h 0.2 is not 1/λ_max (λ_max 5.2)"),
])
def test_a_bad_value_in_our_table_names_file_line_and_fix(tmp_path, row, fragment):
    path = _ours(tmp_path, _row(n=8), row)  # the bad row is the file's third line
    message = _error(load_table, path)
    assert message.startswith(f"{path}, line 3: {fragment}")
    assert message.endswith(OURS_FIX + ") or rerun `make eta-table`")


@pytest.mark.parametrize("row, fragment", [
    (_authors_row(n="eight"), "bad N 'eight'"),
    (_authors_row(depth="x"), "bad L 'x'"),
    (_authors_row(lam="-inf"), "lambda_max_total_gn_median '-inf' is not finite"),
    (_authors_row(eta="zero"), "bad eta_best_1_over_lambda_median 'zero'"),
    (_authors_row(act="ReLU"), "bad activation 'ReLU'"),
    (_authors_row(n=0), "bad cell N=0 L=8"),
    (_authors_row(depth=1), "bad cell N=8 L=1"),
    (_authors_row(eta="0.19", lam="5.0735071486275825"), "η_h 0.19 is not 1/λ_max"),
    (_authors_row(eta="3.0", lam="0.3333333333333333"), "η_h 3.0 outside"),
])
def test_a_bad_value_in_the_authors_table_names_file_line_and_fix(tmp_path, row, fragment):
    path = _authors(tmp_path, _authors_row(n=16), row)
    message = _error(load_authors_table, path)
    assert message.startswith(f"{path}, line 3: {fragment}")
    assert message.endswith(AUTHORS_FIX + ")")


def test_the_checks_accept_their_bounds(tmp_path):
    """η_h at both ends of [1e-3, 2] and η_h·λ_max − 1 just inside ±2e-5 are table values;
    the smallest cell is N = 1, L = 2."""
    inside = _ours(tmp_path, _row(eta="0.001", lam="1000"), _row(n=2, eta="2.0", lam="0.5"),
                   _row(n=3, eta="0.2", lam="5.00009"), _row(n=4, eta="0.2", lam="4.99991"),
                   _row(n=1, depth=2))
    assert load_table(inside) == {("fashion_mnist", "relu", 16, 4): 0.001,
                                  ("fashion_mnist", "relu", 2, 4): 2.0,
                                  ("fashion_mnist", "relu", 3, 4): 0.2,
                                  ("fashion_mnist", "relu", 4, 4): 0.2,
                                  ("fashion_mnist", "relu", 1, 2): 0.2}
    for lam in ("5.00011", "4.99989"):  # |η_h·λ_max − 1| = 2.2e-5
        outside = _ours(tmp_path, _row(eta="0.2", lam=lam), name=f"out{lam}.csv")
        assert "is not 1/λ_max" in _error(load_table, outside)
    for eta, lam in (("0.000999", "1001.001001"), ("2.001", "0.49975012493753124")):
        outside = _ours(tmp_path, _row(eta=eta, lam=lam), name=f"out{eta}.csv")
        assert f"η_h {eta} outside" in _error(load_table, outside)


# ---------------------------------------------------------------- which table, which cell


def test_lookup_takes_the_authors_value_first_then_ours(tmp_path):
    authors = _authors(tmp_path, _authors_row(n=8, depth=8, act="relu", lam="4.0", eta="0.25"))
    ours = _ours(tmp_path, _row(n=8, depth=8, lam="5.0", eta="0.2"),
                 _row(n=16, depth=8, lam="8.0", eta="0.125"))
    assert lookup_state_lr(ours, "fashion_mnist", "relu", 8, 8, authors) == (0.25, "authors")
    assert lookup_state_lr(ours, "fashion_mnist", "relu", 16, 8, authors) == (0.125, "pcalm")
    assert lookup_state_lr(ours, "fashion_mnist", "relu", 8, 8) == (0.2, "pcalm")


def test_lookup_of_a_cell_no_table_has_is_a_one_line_error(tmp_path):
    ours = _ours(tmp_path, _row(n=8, depth=8))
    with pytest.raises(EtaTableError) as err:
        lookup_state_lr(ours, "mnist", "linear", 8, 8)
    assert str(err.value) == (f"no eta_h for cell data=mnist activation=linear N=8 L=8 in {ours}:"
                              " add it with `make eta-table DATA=mnist` (or set algo.state_lr)")
    authors = _authors(tmp_path, _authors_row())
    with pytest.raises(EtaTableError, match="^algo.state_lr=table needs an eta table path$"):
        lookup_state_lr(None, "mnist", "relu", 8, 8, authors)
    # linear is identity in both tables
    assert lookup_state_lr(None, "fashion_mnist", "identity", 8, 8, authors) == (
        0.19710231417935553, "authors")


# ---------------------------------------------------------------- writing our table


def _written(n, depth, lam, eta, act="relu", data="fashion_mnist", recipe="power17"):
    row = {"data": data, "activation": act, "width": n, "depth": depth, "lambda_max": lam,
           "state_lr": eta, "seeds": "0-1-2"}
    return row if recipe is None else {**row, "recipe": recipe}


def test_write_table_sorts_merges_and_replaces_by_cell(tmp_path):
    path = tmp_path / "eta_table.csv"
    write_table(path, [_written(16, 4, 5.0, 0.2), _written(8, 4, 4.0, 0.25, data="mnist")])
    assert path.read_text() == (f"{OURS_HEADER}\n"
                                "fashion_mnist,relu,16,4,5.0,0.2,0-1-2,power17\n"
                                "mnist,relu,8,4,4.0,0.25,0-1-2,power17\n")
    # a recomputed cell replaces its row; a new cell is sorted in; a row without a recipe
    # was computed with the exact λ_max
    write_table(path, [_written(16, 4, 8.0, 0.125, recipe="lanczos60"),
                       _written(8, 16, 2.0, 0.5, act="identity", recipe=None)])
    assert path.read_text() == (f"{OURS_HEADER}\n"
                                "fashion_mnist,identity,8,16,2.0,0.5,0-1-2,lanczos60\n"
                                "fashion_mnist,relu,16,4,8.0,0.125,0-1-2,lanczos60\n"
                                "mnist,relu,8,4,4.0,0.25,0-1-2,power17\n")
    assert load_table(path) == {("fashion_mnist", "identity", 8, 16): 0.5,
                                ("fashion_mnist", "relu", 16, 4): 0.125,
                                ("mnist", "relu", 8, 4): 0.25}
    assert [p.name for p in tmp_path.iterdir()] == ["eta_table.csv"]  # no temporary left


def test_write_table_never_merges_into_a_damaged_table(tmp_path):
    path = _ours(tmp_path, _row(), _row(n=32, eta="0.3"))
    before = path.read_text()
    with pytest.raises(EtaTableError, match="line 3: η_h 0.3 is not 1/λ_max"):
        write_table(path, [_written(8, 4, 4.0, 0.25)])
    assert path.read_text() == before


def test_recipe_names_say_method_and_steps():
    """What the `recipe` column holds: the method and its step count (17 power steps, 60
    Lanczos steps unless told)."""
    assert (recipe_name(), recipe_name("power"), recipe_name("lanczos")) == (
        "power17", "power17", "lanczos60")
    assert (recipe_name("power", 5), recipe_name("lanczos", 30)) == ("power5", "lanczos30")
