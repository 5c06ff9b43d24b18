"""wandb after the fact (pcalm/runs/wandb_log.py), read back from the offline run files (no mock,
no network): a run trained without a logger is logged later with its own id, each evaluation
once; logging again adds nothing; a run opened several times (requeued, retagged) is left with
one clean offline folder to sync, the others set aside.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pcalm.runs.config import resolve_run_config
from pcalm.runs.folder import RunFolder
from pcalm.runs.runner import execute
from pcalm.runs.tracking import open_tracker
from pcalm.runs.wandb_log import (
    LOGGED_FILE,
    SUPERSEDED_DIR,
    consolidate,
    in_wandb,
    log_finished_run,
    unsynced_folders,
)
from tests.conftest import base_config
from tests.test_wandb_dashboard import wandb_env  # noqa: F401  (a fixture)
from tests.test_wandb_offline import history, wandb_records


def _train(data_root: Path, results: Path, mode: str) -> RunFolder:
    raw = base_config(data_root, results, model={"width": 8, "depth": 4},
                      data={"train_size": 200, "test_size": 100},
                      train={"batch_size": 50, "evals_per_epoch": 2},
                      logger={"mode": mode, "scale": "smoke"})
    raw["name"] = "figure2"
    cfg = resolve_run_config(raw)
    execute([cfg], progress=False, say=lambda _: None)
    return RunFolder(results, cfg)


def _offline_files(folder: RunFolder) -> list[Path]:
    import wandb

    wandb.teardown()  # the service writes the files out
    return sorted(folder.path.glob("wandb/offline-run-*/run-*.wandb"))


def _summary_values(path: Path) -> dict:
    out = {}
    for r in wandb_records(path):
        if r.WhichOneof("record_type") == "summary":
            out.update({i.key or ".".join(i.nested_key): json.loads(i.value_json)
                        for i in r.summary.update})
    return out


def _check_one_clean_run(folder: RunFolder) -> None:
    """Exactly one unsynced offline folder, holding every evaluation once and the summary."""
    (path,) = _offline_files(folder)
    (info,) = [r.run for r in wandb_records(path) if r.WhichOneof("record_type") == "run"]
    assert info.run_id == folder.id
    metrics = pd.read_csv(folder.metrics_path)
    logged = [row for row in history(wandb_records(path)) if "test_acc" in row]
    assert [int(row["step"]) for row in logged] == list(metrics["step"])  # each once, in order
    assert [int(row["_step"]) for row in logged] == list(metrics["step"])  # at its own step
    assert [float(row["test_acc"]) for row in logged] == list(metrics["test_acc"])
    summary = json.loads(folder.summary_path.read_text())
    assert _summary_values(path)["test_acc"] == summary["test_acc"]
    assert in_wandb(folder.path)


def test_a_run_trained_without_a_logger_is_logged_later_once(wandb_env, fake_data_root):  # noqa: F811
    folder = _train(fake_data_root, wandb_env / "results", mode="none")
    assert not (folder.path / "wandb").exists() and not in_wandb(folder.path)
    assert log_finished_run(folder) == "logged"  # logger none: offline
    _check_one_clean_run(folder)
    assert log_finished_run(folder) == "already"  # idempotent: no second folder
    _check_one_clean_run(folder)


def test_an_unfinished_run_is_not_logged(wandb_env, fake_data_root):  # noqa: F811
    raw = base_config(fake_data_root, wandb_env / "results")
    folder = RunFolder(wandb_env / "results", resolve_run_config(raw)).prepare()
    assert log_finished_run(folder) == "incomplete"
    assert not (folder.path / "wandb").exists()


def test_a_run_opened_again_offline_syncs_as_one_clean_run(wandb_env, fake_data_root):  # noqa: F811
    folder = _train(fake_data_root, wandb_env / "results", mode="offline")
    assert in_wandb(folder.path)  # tracked while training: marked as wholly logged
    cfg = folder.config
    for _ in range(2):  # e.g. another figure adding its tag, a requeued job: new folders
        open_tracker(cfg["logger"], folder.id, "again", "figure2", cfg, folder.path).finish()
    assert len(_offline_files(folder)) == 3
    assert consolidate(wandb_env / "results") == (1, 0)
    _check_one_clean_run(folder)
    set_aside = sorted((folder.path / "wandb" / SUPERSEDED_DIR).glob("offline-run-*"))
    assert len(set_aside) == 3  # kept, never synced
    assert consolidate(wandb_env / "results") == (0, 0)  # nothing left to do


def test_a_synced_folder_stays_and_only_unsynced_ones_are_replaced(wandb_env, fake_data_root):  # noqa: F811
    folder = _train(fake_data_root, wandb_env / "results", mode="offline")
    (first,) = _offline_files(folder)
    first.with_suffix(".wandb.synced").write_text("")  # what `wandb sync` leaves behind
    cfg = folder.config
    open_tracker(cfg["logger"], folder.id, "again", "figure2", cfg, folder.path).finish()
    assert len(unsynced_folders(folder.path / "wandb", folder.id)) == 1
    assert consolidate(wandb_env / "results") == (0, 0)  # one unsynced folder: nothing to do
    assert first.parent.is_dir() and (folder.path / "wandb" / LOGGED_FILE).is_file()


def test_the_figures_summary_run_says_how_many_of_its_runs_are_in_wandb(
        wandb_env, fake_data_root, monkeypatch, capsys):  # noqa: F811
    from pcalm.runs.tracking import summary_run_id
    from pcalm.runs.wandb_log import log_figure_summary
    from pcalm.sweeps.grid import TableScope

    results = wandb_env / "results"
    tracked = _train(fake_data_root, results, mode="offline")  # logged while training
    raw = base_config(fake_data_root, results, model={"width": 8, "depth": 4},
                      data={"train_size": 200, "test_size": 100},
                      train={"batch_size": 50, "evals_per_epoch": 2, "seed": 1},
                      logger={"mode": "offline", "scale": "smoke"})
    raw["name"] = "figure2"
    untracked_cfg = resolve_run_config({**raw, "logger": {**raw["logger"], "mode": "none"}})
    execute([untracked_cfg], progress=False, say=lambda _: None)  # trained without a logger
    untracked_cfg["logger"] = tracked.config["logger"]  # the figure is drawn with logger=offline
    (results / "tables").mkdir(parents=True)
    pd.DataFrame({"run_id": ["a"], "test_acc": [0.5]}).to_csv(
        results / "tables" / "figure2-smoke.csv", index=False)
    scope = TableScope("figure2", "smoke", "", [tracked.config, untracked_cfg])
    out = log_figure_summary(scope)  # the line experiments/dashboard.py prints
    assert "covering 2 runs of which 1 are in wandb" in out
    assert "`make wandb-log EXP=figure2 SCALE=smoke`" in out
    import wandb

    wandb.teardown()
    (path,) = (results / "dashboard" / "figure2-smoke" / "wandb").glob(
        f"offline-run-*-{summary_run_id('figure2', 'smoke')}/run-*.wandb")
    values = _summary_values(path)
    assert (values["runs"], values["runs_in_wandb"]) == (2, 1)
