"""The tracker interface: no wandb when off, offline runs on disk, clear errors.

Nothing here touches the network: wandb runs offline (or disabled) with every wandb directory
inside tmp_path.
"""

from __future__ import annotations

import sys

import pytest

from pcalm.runs.tracking import NullTracker, Tracker, open_tracker

CONFIG = {"model": {"width": 32}, "algo": {"name": "pcalm"}, "logger": {"mode": "offline"}}


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Keep wandb offline, quiet, git-free, and writing only under tmp_path."""
    for var in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    for var, sub in [
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ]:
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / sub))
    return tmp_path


def open_(mode, run_dir, run_id="0123456789ab", **logger):
    return open_tracker({"mode": mode, **logger}, run_id, "test-run", "tests", CONFIG, run_dir)


def test_none_mode_is_null_and_never_imports_wandb(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # any `import wandb` would now fail
    monkeypatch.setenv("WANDB_MODE", "online")  # ignored: logger.mode=none wins
    tracker = open_("none", tmp_path / "run")
    assert isinstance(tracker, NullTracker) and isinstance(tracker, Tracker)
    tracker.log({"loss": 1.0}, step=0)
    tracker.summary({"acc": 0.5})
    tracker.finish()
    with tracker:
        pass
    assert list(tmp_path.iterdir()) == []  # no run dir, no wandb/ files


def test_bad_mode_is_one_line_value_error(tmp_path):
    with pytest.raises(ValueError) as err:
        open_("bogus", tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "bogus" in message and all(m in message for m in ("none", "offline", "online"))


def test_missing_wandb_says_pip_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError) as err:
        open_("offline", tmp_path)
    assert "pip install wandb" in str(err.value) and "\n" not in str(err.value)


def test_offline_writes_run_dirs_named_by_run_id(wandb_env):
    run_dir = wandb_env / "run"
    # Two runs open at once in one process (reinit must not hand back the first one).
    first = open_("offline", run_dir, run_id="aaaaaaaaaaaa", project="pcalm-tests")
    second = open_("offline", run_dir, run_id="bbbbbbbbbbbb", project="pcalm-tests")
    try:
        for step in range(3):
            first.log({"loss": 1.0 / (step + 1), "acc": 0.1 * step}, step=step)
            second.log({"loss": 2.0}, step=step)
        first.summary({"test_acc": 0.3})
    finally:
        first.finish()
        second.finish(exit_code=1)
    first.finish()  # finishing twice is harmless

    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert [p.name.rsplit("-", 1)[-1] for p in offline] == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    for path, rid in zip(offline, ["aaaaaaaaaaaa", "bbbbbbbbbbbb"], strict=True):
        log_file = path / f"run-{rid}.wandb"
        assert log_file.is_file() and log_file.stat().st_size > 0


def test_wandb_mode_env_overrides_logger_mode(wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_dir = wandb_env / "run"
    with open_("offline", run_dir) as tracker:
        tracker.log({"loss": 1.0}, step=0)
    assert not list((run_dir / "wandb").glob("offline-run-*"))
