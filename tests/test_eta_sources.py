"""Where `algo.state_lr=table` takes η_h from: the authors' published table verbatim, our
recomputation elsewhere; both tables validated when read."""

import csv
import hashlib

import pytest

from pcalm.cli import AUTHORS_ETA_TABLE, ETA_TABLE
from pcalm.runs.config import ConfigError, resolve_run_config
from pcalm.runs.eta import EtaTableError, load_authors_table, load_table
from pcalm.runs.folder import run_id
from tests.conftest import REPO, base_config

# The file as the authors published it (../shared/reference/authors_eta_best_by_cell.csv).
AUTHORS_MD5 = "827b31c49ae698c7dba0044f91ff75aa"


def _authors_row(data: str, act: str, n: int, depth: int) -> dict:
    with AUTHORS_ETA_TABLE.open(newline="") as f:
        return next(r for r in csv.DictReader(f) if (r["dataset"], r["activation"], r["N"],
                                                     r["L"]) == (data, act, str(n), str(depth)))


def _grid_rule(tmp_path, root, **model):
    raw = base_config(root, tmp_path, model=model)
    raw["algo"].update(budget="2L", state_lr="table")
    return raw


def test_the_shipped_authors_table_is_unchanged():
    assert hashlib.md5(AUTHORS_ETA_TABLE.read_bytes()).hexdigest() == AUTHORS_MD5
    assert len(load_authors_table(AUTHORS_ETA_TABLE)) == 150


@pytest.mark.parametrize("act, ours, n, depth", [("relu", "relu", 32, 32),
                                                 ("linear", "identity", 8, 128),
                                                 ("tanh", "tanh", 128, 16)])
def test_grid_rule_uses_the_published_value_verbatim(tmp_path, fake_data_root, act, ours, n,
                                                     depth):
    cfg = resolve_run_config(_grid_rule(tmp_path, fake_data_root, width=n, depth=depth,
                                        activation=ours), ETA_TABLE, AUTHORS_ETA_TABLE)
    published = _authors_row("fashion_mnist", act, n, depth)["eta_best_1_over_lambda_median"]
    assert cfg["algo"]["state_lr"] == float(published)  # every digit, not our recomputation
    assert cfg["state_lr_source"] == "authors" and cfg["algo"]["budget"] == 2 * depth


def test_cells_the_authors_lack_fall_back_to_ours(tmp_path, fake_data_root):
    cfg = resolve_run_config(_grid_rule(tmp_path, fake_data_root, width=16, depth=4),
                             ETA_TABLE, AUTHORS_ETA_TABLE)
    assert cfg["state_lr_source"] == "pcalm"
    assert cfg["algo"]["state_lr"] == load_table(ETA_TABLE)[("fashion_mnist", "relu", 16, 4)]
    given = resolve_run_config(base_config(fake_data_root, tmp_path), ETA_TABLE,
                               AUTHORS_ETA_TABLE)
    assert given["state_lr_source"] == "config" and given["algo"]["state_lr"] == 0.25


def test_the_source_is_recorded_but_not_hashed(tmp_path, fake_data_root):
    cfg = resolve_run_config(_grid_rule(tmp_path, fake_data_root, width=32, depth=32),
                             ETA_TABLE, AUTHORS_ETA_TABLE)
    assert run_id(cfg) == run_id({**cfg, "state_lr_source": "pcalm"})
    assert run_id(cfg) != run_id({**cfg, "algo": {**cfg["algo"], "state_lr": 0.2}})


def _cut_state_lr(line: str) -> str:
    fields = line.split(",")
    fields[5] = fields[5][:4]
    return ",".join(fields)


def _damaged(tmp_path, transform):
    lines = ETA_TABLE.read_text().splitlines()
    path = tmp_path / "eta_table.csv"
    path.write_text("\n".join(transform(lines)) + "\n")
    return path


@pytest.mark.parametrize("transform, line, fragment", [
    # a number cut short: η_h 0.232177 → 0.23 (no longer 1/λ_max)
    (lambda ls: ls[:23] + [_cut_state_lr(ls[23])], 24, "not 1/λ_max"),
    (lambda ls: ls[:10] + [ls[10][:14]], 11, "bad"),  # the file ends mid-row
    (lambda ls: ["data,activation,width"] + ls[1:], 1, "bad header"),
    (lambda ls: ls[:5] + [ls[5].replace(ls[5].split(",")[4], "nan", 1)], 6, "not finite"),
    (lambda ls: ls[:5] + [ls[5].replace(ls[5].split(",")[5], "7.5", 1)], 6, "outside"),
])
def test_a_damaged_table_names_file_line_and_fix(tmp_path, transform, line, fragment):
    path = _damaged(tmp_path, transform)
    with pytest.raises(EtaTableError) as err:
        load_table(path)
    message = str(err.value)
    assert f"{path}, line {line}" in message and fragment in message
    assert "git checkout configs/eta_table.csv" in message and "\n" not in message


def test_the_committed_tables_pass_their_own_checks():
    assert len(load_table(ETA_TABLE)) >= 200
    assert (REPO / "configs" / "authors_eta_best_by_cell.csv") == AUTHORS_ETA_TABLE


@pytest.mark.parametrize("k", [0.5, 1.8, 2.2])
def test_a_multiple_of_the_table_step_is_k_over_the_authors_lambda_max(tmp_path,
                                                                       fake_data_root, k):
    """`algo.state_lr: table*k` (the appendix's η_h sweep) is k times the published η_h of
    the cell (= k/λ_max with their λ_max); k = 1 is exactly the grid rule's run (same id)."""
    raw = _grid_rule(tmp_path, fake_data_root, width=32, depth=16)
    raw["algo"]["state_lr"] = f"table*{k}"
    cfg = resolve_run_config(raw, ETA_TABLE, AUTHORS_ETA_TABLE)
    published = float(_authors_row("fashion_mnist", "relu", 32, 16)
                      ["eta_best_1_over_lambda_median"])
    assert cfg["algo"]["state_lr"] == pytest.approx(k * published, rel=1e-15)
    assert cfg["state_lr_multiple"] == k and cfg["state_lr_source"] == "authors"
    one = _grid_rule(tmp_path, fake_data_root, width=32, depth=16)
    one["algo"]["state_lr"] = "table*1"
    plain = resolve_run_config(_grid_rule(tmp_path, fake_data_root, width=32, depth=16),
                               ETA_TABLE, AUTHORS_ETA_TABLE)
    assert run_id(resolve_run_config(one, ETA_TABLE, AUTHORS_ETA_TABLE)) == run_id(plain)
    assert run_id(cfg) != run_id(plain)


@pytest.mark.parametrize("bad", ["table*0", "table*-1", "table*abc", "table*nan"])
def test_a_bad_multiple_of_the_table_step_is_one_line(tmp_path, fake_data_root, bad):
    raw = _grid_rule(tmp_path, fake_data_root, width=32, depth=16)
    raw["algo"]["state_lr"] = bad
    with pytest.raises(ConfigError, match=r"bad value algo\.state_lr=.*table\*k"):
        resolve_run_config(raw, ETA_TABLE, AUTHORS_ETA_TABLE)
