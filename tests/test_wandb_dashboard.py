"""What reaches wandb, read back from the offline run files (not a mock): a run's tags,
job_type, group and per-layer gradient cosines; a figure's summary run with its image, its
table and the table's CSV as an artifact; one grid cell reached from two experiments is one
wandb run carrying both experiments' tags.

Everything runs with wandb offline and every wandb directory under tmp_path: no network.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from pcalm.runs.config import resolve_run_config  # noqa: E402
from pcalm.runs.folder import RunFolder  # noqa: E402
from pcalm.runs.runner import execute  # noqa: E402
from pcalm.runs.tracking import (  # noqa: E402
    LAYER_KEY,
    TrackingError,
    open_summary_run,
    open_tracker,
    run_meta,
)
from tests.conftest import base_config  # noqa: E402
from tests.test_wandb_offline import history, wandb_records  # noqa: E402

DEPTH = 4


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """wandb offline, quiet, git-free, writing only under tmp_path."""
    for var in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME",
                "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    for var, value in (("WANDB_DISABLE_GIT", "true"), ("WANDB_SILENT", "true"),
                       ("WANDB_DISABLE_CODE", "true")):
        monkeypatch.setenv(var, value)
    for var, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"),
                     ("WANDB_DATA_DIR", "data"), ("WANDB_ARTIFACT_DIR", "artifacts")):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / sub))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc key of the machine's
    return tmp_path


def _config(data_root, results, name="figure2", scale="smoke"):
    raw = base_config(data_root, results, model={"width": 8, "depth": DEPTH},
                      data={"train_size": 200, "test_size": 100},
                      train={"batch_size": 50, "evals_per_epoch": 2},
                      logger={"mode": "offline", "scale": scale})
    raw["name"] = name
    return resolve_run_config(raw)


def _runs(run_dir: Path) -> list[Path]:
    """The .wandb files of `run_dir`, oldest first (one per time the run was opened), once
    wandb's service has written them out (it does so when torn down, as at process exit)."""
    import wandb

    wandb.teardown()
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def _run_record(path: Path):
    (info,) = [r.run for r in wandb_records(path) if r.WhichOneof("record_type") == "run"]
    return info


def test_a_run_carries_tags_job_type_a_scaled_group_and_per_layer_cosines(
        wandb_env, fake_data_root, results_dir):
    cfg = _config(fake_data_root, results_dir)
    (summary,) = execute([cfg], say=lambda _: None).trained
    folder = RunFolder(results_dir, cfg)
    (path,) = _runs(folder.path)
    info = _run_record(path)
    assert info.run_id == folder.id
    assert info.run_group == "figure2-smoke"  # smoke and paper runs of a figure apart
    assert info.job_type == "train"
    assert set(info.tags) == {"algo:pcalm", "act:relu", "N:8", f"L:{DEPTH}",
                              "data:fashion_mnist", "scale:smoke", "exp:figure2"}
    config = {i.key: json.loads(i.value_json) for i in info.config.update}
    assert config["model"]["width"] == 8  # nested: the UI filters on model.width

    rows = history(wandb_records(path))
    last = rows[-1]
    per_layer = summary["grad_cosine_per_layer"]
    assert len(per_layer) == DEPTH
    for i, cosine in enumerate(per_layer, 1):
        assert float(last[LAYER_KEY.format(i)]) == pytest.approx(cosine, rel=1e-12)
    assert float(last["grad_cosine"]) == pytest.approx(summary["grad_cosine"], rel=1e-12)
    assert json.loads(last["grad_cosine_per_layer._type"]) == "table-file"  # a wandb Table
    assert json.loads(last["grad_cosine_per_layer.nrows"]) == DEPTH
    assert int(last["_step"]) == summary["steps"]  # at the last training step


def test_one_cell_from_two_experiments_is_one_run_with_both_tags(
        wandb_env, fake_data_root, results_dir):
    first = _config(fake_data_root, results_dir, name="figure2")
    execute([first], say=lambda _: None)
    again = _config(fake_data_root, results_dir, name="figure6")
    folder = RunFolder(results_dir, again)
    assert folder.id == RunFolder(results_dir, first).id  # the name is not in the run id
    open_tracker(again["logger"], folder.id, "x", "figure6", again, folder.path).finish()
    opened = [_run_record(p) for p in _runs(folder.path)]
    assert len(opened) == 2 and {r.run_id for r in opened} == {folder.id}
    assert {"exp:figure2", "exp:figure6"} <= set(opened[-1].tags)
    assert opened[-1].run_group == "figure2-smoke"  # it stays in its first group


def _records_of(run_dir: Path, kind: str) -> list:
    (path,) = _runs(run_dir)
    return [r for r in wandb_records(path) if r.WhichOneof("record_type") == kind]


def test_the_summary_run_holds_the_figure_the_table_and_the_csv_artifact(wandb_env):
    tmp = wandb_env
    table = tmp / "figure2-smoke.csv"
    pd.DataFrame({"algo": ["bp", "pc"], "width": [8, 32], "test_acc": [0.81, float("nan")]}
                 ).to_csv(table, index=False)
    png = tmp / "figure2.png"
    plt.figure(figsize=(2, 2))
    plt.plot([0, 1], [1, 0])
    plt.savefig(png, dpi=100)  # whatever savefig.dpi other tests left set
    plt.close("all")
    run_dir = tmp / "dashboard"
    with open_summary_run({"mode": "offline"}, "figure2", "smoke", run_dir) as tracker:
        tracker.log_figure("figure", png)
        tracker.log_table("runs", table, artifact="figure2-smoke")
    (info,) = [r.run for r in _records_of(run_dir, "run")]
    assert (info.run_id, info.job_type, info.run_group) == ("figure2-smoke-summary", "figure",
                                                            "figure2-smoke")
    assert {"exp:figure2", "scale:smoke", "summary"} <= set(info.tags)
    logged = {k: json.loads(v) for row in history(_records_of(run_dir, "history"))
              for k, v in row.items() if not k.startswith("_")}  # media: nested keys
    assert logged["figure._type"] == "image-file"
    assert (logged["figure.width"], logged["figure.height"]) == (200, 200)  # 2 in at 100 dpi
    assert logged["runs._type"] == "table-file" and logged["runs.nrows"] == 2
    (media,) = (run_dir / "wandb").glob("offline-run-*/files/media/table/runs_*.table.json")
    content = json.loads(media.read_text())
    assert content["columns"] == ["algo", "width", "test_acc"]
    assert content["data"] == [["bp", 8, 0.81], ["pc", 32, None]]
    artifacts = {r.artifact.name: r.artifact for r in _records_of(run_dir, "artifact")}
    artifact = artifacts["figure2-smoke"]  # beside wandb's own for the logged Table
    assert artifact.type == "table"
    assert [e.path for e in artifact.manifest.contents] == ["figure2-smoke.csv"]


def test_run_meta_names_a_diagnostic_task_as_its_job_type():
    meta = run_meta({"name": "figure3", "task": {"name": "credit_traces"},
                     "model": {"width": 32, "depth": 8, "activation": "tanh"},
                     "algo": {"name": "pc"}, "data": {"name": "synthetic"},
                     "logger": {"scale": "paper"}})
    assert meta == {"job_type": "credit_traces", "group": "figure3-paper",
                    "tags": ["algo:pc", "act:tanh", "N:32", "L:8", "data:synthetic",
                             "scale:paper", "exp:figure3"]}


def test_online_without_a_key_fails_fast_in_one_line(wandb_env, tmp_path):
    with pytest.raises(TrackingError) as err:
        open_tracker({"mode": "online"}, "0123456789ab", "x", "g", {}, tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message and "logger=offline" in message and "API key" in message


def test_online_without_a_network_fails_within_the_timeout_in_one_line(wandb_env, tmp_path,
                                                                      monkeypatch):
    import time

    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # a key, but no server to take it
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("PCALM_WANDB_INIT_TIMEOUT", "3")
    start = time.monotonic()
    with pytest.raises(TrackingError) as err:
        open_tracker({"mode": "online"}, "0123456789ab", "x", "g", {}, tmp_path / "run")
    assert time.monotonic() - start < 90  # bounded by the timeout, not wandb's 90 s+ retries
    message = str(err.value)
    assert "\n" not in message and "not reached within 3 s" in message
    assert "logger=offline" in message
