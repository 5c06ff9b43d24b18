"""Run ids, atomic writes, the run-folder life cycle, and loading runs into tables."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from pcalm.analysis import tables
from pcalm.runs import folder as results
from pcalm.runs.folder import RunFolder, run_id


def make_config(**overrides) -> dict:
    """A full config like the one experiments/run.py hands over; ``overrides`` by dotted key."""
    config = {
        "name": "default",
        "model": {"width": 32, "depth": 32, "activation": "relu", "param": "mupc", "gamma0": 1.0},
        "algo": {
            "name": "pcalm",
            "budget": 64,
            "state_lr": 0.25,
            "rho": 1.0,
            "alpha": 1.0,
            "inner_steps": 1,
            "weight_credit": "pre_dual",
        },
        "data": {
            "name": "fashion_mnist",
            "root": "/some/path",
            "train_size": None,
            "test_size": None,
        },
        "train": {
            "epochs": 1,
            "batch_size": 64,
            "eta0": 0.001,
            "seed": 0,
            "device": "auto",
            "dtype": "float32",
            "evals_per_epoch": 20,
            "threads": None,
            "progress": "auto",
            "checkpoint_every": 100,
        },
        "logger": {"mode": "none", "project": "pcalm", "entity": None, "group": None},
        "results_dir": "results",
    }
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------------------- run identity


def test_run_id_is_short_hex_and_stable():
    rid = run_id(make_config())
    assert len(rid) == 12 and all(c in "0123456789abcdef" for c in rid)
    assert run_id(make_config()) == rid
    # key order must not matter
    reordered = dict(reversed(list(make_config().items())))
    assert run_id(reordered) == rid


def test_run_id_does_not_mutate_config():
    config = make_config()
    before = copy.deepcopy(config)
    run_id(config)
    assert config == before


@pytest.mark.parametrize(
    "key,value",
    [
        ("name", "figure3"),
        ("data.root", "/elsewhere"),
        ("train.device", "cuda"),
        ("train.threads", 4),
        ("train.progress", "off"),
        ("train.checkpoint_every", 7),
        ("logger.mode", "online"),
        ("logger.project", "other"),
        ("results_dir", "/scratch/results"),
        ("hydra.job.num", 3),
        ("sweep.dir", "multirun/x"),
        ("launcher.partition", "gpu"),
    ],
)
def test_run_id_ignores_non_numeric_keys(key, value):
    assert run_id(make_config(**{key: value})) == run_id(make_config())


def test_run_id_ignores_missing_non_numeric_sections():
    config = make_config()
    del config["logger"], config["results_dir"]
    assert run_id(config) == run_id(make_config())


@pytest.mark.parametrize(
    "key,value",
    [
        ("model.width", 64),
        ("algo.state_lr", 0.2500001),
        ("algo.name", "pc"),
        ("train.seed", 1),
        ("data.name", "mnist"),
        ("data.train_size", 1000),
        ("extra.unknown_knob", 1),  # unknown keys count as number-changing
    ],
)
def test_run_id_changes_with_numeric_keys(key, value):
    assert run_id(make_config(**{key: value})) != run_id(make_config())


def test_run_id_int_and_float_hash_alike():
    assert run_id(make_config(**{"algo.rho": 1})) == run_id(make_config(**{"algo.rho": 1.0}))
    assert run_id(make_config(**{"train.epochs": 1.0})) == run_id(make_config())
    # but a bool is a different setting from the number 1
    assert run_id(make_config(**{"algo.rho": True})) != run_id(make_config())


def test_run_id_tuple_equals_list():
    assert run_id(make_config(**{"model.dims": (1, 2)})) == run_id(
        make_config(**{"model.dims": [1, 2]})
    )


# --------------------------------------------------------------------------- atomic writes


def test_atomic_writes_roundtrip(tmp_path):
    results.atomic_write_text(tmp_path / "a" / "t.txt", "hello\n")
    results.atomic_write_json(tmp_path / "j.json", {"x": 1.5, "nan": float("nan")})
    results.atomic_torch_save(tmp_path / "c.pt", {"step": 3})
    assert (tmp_path / "a" / "t.txt").read_text() == "hello\n"
    assert json.loads((tmp_path / "j.json").read_text())["x"] == 1.5
    import torch

    assert torch.load(tmp_path / "c.pt")["step"] == 3
    assert files_in(tmp_path) == ["a", "c.pt", "j.json"]  # no temp files left


def test_atomic_json_failure_mid_write_leaves_old_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    results.atomic_write_json(target, {"old": 1})

    def broken_dump(obj, f, **kwargs):
        f.write('{"new": ')  # half a file, then the writer dies
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(results.json, "dump", broken_dump)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        results.atomic_write_json(target, {"new": 2})
    assert json.loads(target.read_text()) == {"old": 1}
    assert files_in(tmp_path) == ["summary.json"]


def test_atomic_json_failure_leaves_no_file_when_none_existed(tmp_path, monkeypatch):
    def broken_dump(obj, f, **kwargs):
        f.write("{")
        raise RuntimeError("boom")

    monkeypatch.setattr(results.json, "dump", broken_dump)
    with pytest.raises(RuntimeError):
        results.atomic_write_json(tmp_path / "summary.json", {"a": 1})
    assert files_in(tmp_path) == []


def test_atomic_replace_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.csv"
    results.atomic_write_text(target, "a\n1\n")

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(results.os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        results.atomic_write_text(target, "a\n1\n2\n")
    assert target.read_text() == "a\n1\n"
    assert files_in(tmp_path) == ["metrics.csv"]


def test_atomic_torch_save_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    import torch

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        results.atomic_torch_save(tmp_path / "checkpoint.pt", {"w": 1})
    assert files_in(tmp_path) == []


# ------------------------------------------------------------------------------ run folder


def test_run_folder_lifecycle(tmp_path):
    config = make_config()
    folder = RunFolder(tmp_path, config)
    assert folder.id == run_id(config)
    assert folder.path == tmp_path / "runs" / folder.id
    assert not folder.exists_complete()
    assert folder.load_checkpoint() is None

    folder.prepare()
    assert yaml.safe_load(folder.config_path.read_text()) == config  # full config, cosmetic too
    assert not folder.exists_complete()

    folder.write_metrics([{"step": 0, "test_acc": 0.1}])
    folder.write_metrics(
        [{"step": 0, "test_acc": 0.1}, {"step": 10, "test_acc": 0.5, "train_loss": 1.25}]
    )
    lines = folder.metrics_path.read_text().splitlines()
    assert lines == ["step,test_acc,train_loss", "0,0.1,", "10,0.5,1.25"]

    folder.save_checkpoint({"step": 10, "weights": [1.0, 2.0]})
    assert folder.load_checkpoint() == {"step": 10, "weights": [1.0, 2.0]}
    assert not folder.exists_complete()

    folder.write_summary({"status": "complete", "test_acc": 0.5, "diverged": False})
    assert folder.exists_complete()
    assert not folder.checkpoint_path.exists()
    assert files_in(folder.path) == ["config.yaml", "metrics.csv", "summary.json"]

    again = RunFolder(tmp_path, make_config(name="renamed", **{"train.device": "cuda"}))
    assert again.path == folder.path and again.exists_complete()


def test_corrupt_summary_means_incomplete(tmp_path):
    folder = RunFolder(tmp_path, make_config()).prepare()
    folder.summary_path.write_text('{"test_acc": 0.')
    assert not folder.exists_complete()


def test_corrupt_checkpoint_warns_and_returns_none(tmp_path):
    folder = RunFolder(tmp_path, make_config()).prepare()
    folder.checkpoint_path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        assert folder.load_checkpoint() is None


def test_from_path_reads_config(tmp_path):
    folder = RunFolder(tmp_path, make_config(**{"model.width": 8})).prepare()
    back = RunFolder.from_path(folder.path)
    assert back.id == folder.id and back.path == folder.path
    assert back.config["model"]["width"] == 8


# ---------------------------------------------------------------------------------- tables


def finished_run(results_dir: Path, summary: dict | None = None, metrics=None, **overrides):
    """Write a run folder; complete (with summary.json) unless ``summary`` is None."""
    folder = RunFolder(results_dir, make_config(**overrides)).prepare()
    if metrics is None and summary is not None:  # a finished run's metrics end at its summary
        metrics = [{"step": 0, "test_acc": summary.get("test_acc")}]
    if metrics is not None:
        folder.write_metrics(metrics)
    if summary is not None:
        folder.write_summary({"status": "complete", **summary})
    return folder


def test_load_flattens_filters_and_reports_missing(tmp_path):
    a = finished_run(
        tmp_path,
        {"test_acc": 0.8, "cos": {"layer": [0.1, 0.2], "net": 0.9}},
        **{"model.width": 16},
    )
    b = finished_run(tmp_path, {"test_acc": 0.7}, **{"model.width": 32})
    incomplete = finished_run(tmp_path, None, **{"model.width": 64})

    df = tables.load(tmp_path)
    assert sorted(df["run_id"]) == sorted([a.id, b.id])
    assert list(df.columns[:3]) == ["run_id", "name", "model.width"]
    assert {"algo.name", "train.seed", "logger.mode", "test_acc", "cos.net"} <= set(df.columns)
    row = df.set_index("run_id").loc[a.id]
    assert row["model.width"] == 16 and row["algo.state_lr"] == 0.25
    assert row["cos.layer"] == [0.1, 0.2]  # lists stay lists
    assert df.attrs["missing"] == [incomplete.id]

    only = tables.load(tmp_path, run_ids=[b.id, incomplete.id, "000000000000"])
    assert list(only["run_id"]) == [b.id]
    assert only.attrs["missing"] == sorted([incomplete.id, "000000000000"])


def test_load_empty_results_dir(tmp_path):
    df = tables.load(tmp_path / "nothing_here")
    assert len(df) == 0 and "run_id" in df.columns
    assert tables.load(tmp_path, run_ids=["abc"]).attrs["missing"] == ["abc"]


def test_load_metrics_joins_config(tmp_path):
    rows = [{"step": 0, "test_acc": 0.1}, {"step": 5, "test_acc": 0.4}]
    a = finished_run(tmp_path, {"test_acc": 0.4}, rows, **{"train.seed": 0})
    b = finished_run(tmp_path, {"test_acc": 0.1}, rows[:1], **{"train.seed": 1})
    finished_run(tmp_path, None, rows, **{"train.seed": 2})  # incomplete: left out

    m = tables.load_metrics(tmp_path)
    assert len(m) == 3
    assert m.columns[0] == "run_id" and list(m.columns[-2:]) == ["step", "test_acc"]
    by_run = m.groupby("run_id")["step"].apply(list).to_dict()
    assert by_run == {a.id: [0, 5], b.id: [0]}
    assert set(m.loc[m["run_id"] == b.id, "train.seed"]) == {1}
    assert len(m.attrs["missing"]) == 1

    assert len(tables.load_metrics(tmp_path, run_ids=[b.id])) == 1


def test_collect_writes_csv(tmp_path):
    import pandas as pd

    a = finished_run(tmp_path, {"test_acc": 0.8})
    out = tmp_path / "tables" / "sub" / "figure1.csv"
    df = tables.collect(tmp_path, [a.id, "ffffffffffff"], out)
    assert df.attrs["missing"] == ["ffffffffffff"]
    back = pd.read_csv(out)
    assert list(back["run_id"]) == [a.id] and back.loc[0, "test_acc"] == 0.8
    assert [p for p in os.listdir(out.parent) if p.endswith(".tmp")] == []
