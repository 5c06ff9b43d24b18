"""What a careful, adversarial user does to pcalm, and what must hold then (issue 10).

Checkpoints that run code or do not fit, summaries of the wrong shape, temp files a kill left
behind, two processes on one run, bad values and results folders, paths that leave the results
folder, Ctrl-C. Each test fails on the code before the fix. Kills happen at a known step
(tests/stop_run.py), never after a sleep.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from pcalm import cli
from pcalm.analysis.tables import load
from pcalm.runs import runner
from pcalm.runs.config import ConfigError, resolve_run_config
from pcalm.runs.folder import RunFolder, RunLock, check_results_dir, inside
from pcalm.runs.runner import execute
from pcalm.runs.train import Trainer
from tests.conftest import REPO, base_config

STOP_RUN = REPO / "tests" / "stop_run.py"
SMALL = {"data": {"train_size": 200, "test_size": 100},
         "train": {"batch_size": 50, "evals_per_epoch": 1, "checkpoint_every": 2}}
QUIET = {"progress": False, "say": lambda _: None}


def small(fake_data_root, results_dir, **sections):
    merged = {k: dict(v) for k, v in SMALL.items()}
    for key, values in sections.items():
        merged.setdefault(key, {}).update(values)
    return resolve_run_config(base_config(fake_data_root, results_dir, **merged))


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in proc.stdout + proc.stderr
    return err


def script(args: list[str], env: dict | None = None, timeout: int = 300):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# ------------------------------------------------------------------ 1. checkpoints run no code


class Planted:
    """Unpickling this calls open(marker, "w"): what a planted checkpoint.pt could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_planted_checkpoint_runs_no_code(tmp_path):
    folder = RunFolder(tmp_path, {"model": {"width": 8}}).prepare()
    marker = tmp_path / "pwned"
    torch.save({"step": 3, "payload": Planted(marker)}, folder.checkpoint_path)
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        assert folder.load_checkpoint() is None
    assert not marker.exists()


def test_a_real_checkpoint_loads_with_weights_only(fake_data_root, results_dir):
    # Two learning rates: the stack trains with StackedAdam, whose state must load too.
    stack = [small(fake_data_root, results_dir, train={"eta0": lr}) for lr in (1e-3, 2e-3)]
    dataset = runner.load_run_dataset(stack[0])
    trainer = Trainer(stack, dataset, torch.device("cpu"))
    trainer.run()
    folder = RunFolder(results_dir, stack[0])
    folder.save_checkpoint(trainer.checkpoint_payload())
    torch.load(folder.checkpoint_path, weights_only=True)  # raises if anything is not plain
    state = folder.load_checkpoint()
    again = Trainer(stack, dataset, torch.device("cpu"))
    again.restore(state)
    assert again.state.step == trainer.state.step
    assert torch.equal(again.net.w_hidden, trainer.net.w_hidden)


# ------------------------------------------------ 7. a checkpoint that loads but does not fit


def test_a_checkpoint_of_other_shapes_warns_and_restarts(fake_data_root, results_dir):
    cfg = small(fake_data_root, results_dir)
    narrow = small(fake_data_root, results_dir, model={"width": 8})
    dataset = runner.load_run_dataset(cfg)
    other = Trainer([narrow], dataset, torch.device("cpu"))
    folder = RunFolder(results_dir, cfg).prepare()
    folder.save_checkpoint({**other.checkpoint_payload(), "run_ids": [folder.id]})
    with pytest.warns(UserWarning, match="does not fit this run"):
        outcome = execute([cfg], **QUIET)
    assert len(outcome.trained) == 1 and folder.exists_complete()
    fresh = execute([dict(cfg, results_dir=str(results_dir / "fresh"))], **QUIET).trained[0]
    assert outcome.trained[0]["test_acc"] == fresh["test_acc"]  # from scratch, as a fresh run


# ------------------------------------------------- 8. anything but a summary means incomplete


@pytest.mark.parametrize("text", ["[]", "{}", '"done"', "3", "null", '{"status": "running"}',
                                  '{"test_acc": 0.5}'])
def test_anything_but_a_summary_means_incomplete(text, fake_data_root, results_dir):
    cfg = small(fake_data_root, results_dir)
    folder = RunFolder(results_dir, cfg).prepare()
    folder.summary_path.write_text(text)
    assert not folder.exists_complete()
    assert load(results_dir).attrs["missing"] == [folder.id]  # not collected
    outcome = execute([cfg], **QUIET)  # re-run
    assert len(outcome.trained) == 1 and folder.exists_complete()
    assert json.loads(folder.summary_path.read_text())["status"] == "complete"


# --------------------------------------------------------- 9. temp files a kill left behind


def test_preparing_a_folder_removes_stray_temp_files(tmp_path):
    folder = RunFolder(tmp_path, {"model": {"width": 8}}).prepare()
    strays = [folder.path / ".metrics.csv.k2j3h4.tmp", folder.path / ".checkpoint.pt.x.tmp"]
    for stray in strays:
        stray.write_text("half a file")
    folder.prepare()
    assert not any(s.exists() for s in strays)
    assert sorted(p.name for p in folder.path.iterdir()) == ["config.yaml"]


RUN = ["algo=pcalm", "model.width=16", "model.depth=4", "inference.budget=8",
       "inference.state_lr=0.25", "data.train_size=400", "data.test_size=100",
       "train.batch_size=10", "train.epochs=1", "train.evals_per_epoch=4",
       "train.checkpoint_every=5", "train.threads=1", "train.progress=off", "train.device=cpu"]


@pytest.fixture
def data_env(fake_data_root, results_dir, monkeypatch):
    monkeypatch.setenv("PCALM_DATA", str(fake_data_root))
    return results_dir


def test_a_kill_mid_write_leaves_a_temp_file_that_the_resume_removes(data_env):
    folder = RunFolder(data_env, cli.run_config(cli.compose(RUN)))
    killed = script([str(STOP_RUN), "KILL", "metrics", "10", *RUN])
    assert killed.returncode == -9, killed.stderr
    assert list(folder.path.glob(".metrics.csv.*.tmp"))  # the torn write, as a kill leaves it
    rerun = script(["experiments/run.py", *RUN])
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" in rerun.stdout and folder.exists_complete()
    assert not list(folder.path.glob(".*.tmp"))


# ------------------------------------------------------------------- 6. Ctrl-C: one line


def test_ctrl_c_in_a_run_says_what_stopped_in_one_line_and_the_run_resumes(data_env):
    folder = RunFolder(data_env, cli.run_config(cli.compose(RUN)))
    stopped = script([str(STOP_RUN), "INT", "checkpoint", "10", *RUN])
    assert stopped.returncode == 130, stopped.stderr
    lines = stopped.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stopped.stderr, stopped.stderr
    assert lines[0].startswith("interrupted: run pcalm N=16 L=4") and str(folder.path) in lines[0]
    assert "same command" in lines[0]
    rerun = script(["experiments/run.py", *RUN])
    assert rerun.returncode == 0 and "resuming" in rerun.stdout, rerun.stderr


# -------------------------------------------------- two processes, one run: it trains once


def test_a_run_locked_by_another_process_is_left_to_it(fake_data_root, results_dir):
    cfg = small(fake_data_root, results_dir)
    folder = RunFolder(results_dir, cfg)
    other = RunLock(results_dir, folder.id)  # flock: another open file, as another process
    assert other.acquire(blocking=False)
    try:
        outcome = execute([cfg], wait=False, **QUIET)
        assert outcome.trained == [] and outcome.busy == [cfg]
        assert not folder.path.exists()
    finally:
        other.release()
    assert len(execute([cfg], wait=False, **QUIET).trained) == 1


def test_a_waiting_process_skips_the_run_the_lock_holder_finished(fake_data_root, results_dir):
    cfg = small(fake_data_root, results_dir)
    folder = RunFolder(results_dir, cfg)
    holder = RunLock(results_dir, folder.id)
    assert holder.acquire()
    waiting, result = threading.Event(), {}

    def say(line: str) -> None:
        if line.startswith("waiting for"):
            waiting.set()

    thread = threading.Thread(target=lambda: result.update(
        outcome=execute([cfg], progress=False, say=say)))
    thread.start()
    try:
        assert waiting.wait(60), "execute did not wait for the locked run"
        # The lock holder trains it meanwhile: what execute does under the lock (execute
        # itself would take the lock again, on another file description: flock refuses that).
        runner.train_stack([cfg], runner.load_run_dataset(cfg), progress=False,
                           say=lambda _: None)
    finally:
        holder.release()
    thread.join(120)
    assert not thread.is_alive(), "the waiting process never got the lock"
    assert result["outcome"].trained == [] and result["outcome"].skipped == [folder.id]


def test_a_lock_dies_with_its_process(tmp_path):
    code = ("import os, sys; from pcalm.runs.folder import RunLock; "
            "assert RunLock(sys.argv[1], 'abc').acquire(False); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    lock = RunLock(tmp_path, "abc")
    assert lock.acquire(blocking=False)  # no stale lock after its holder exited
    lock.release()


# ------------------------------------------------ failures leave no folder of config.yaml only


def test_a_failure_before_training_leaves_no_bare_run_folder(fake_data_root, results_dir,
                                                             monkeypatch):
    cfg = small(fake_data_root, results_dir)

    def no_tracker(*args, **kwargs):
        raise RuntimeError("tracker down")

    monkeypatch.setattr(runner, "open_tracker", no_tracker)
    with pytest.raises(RuntimeError, match="tracker down"):
        execute([cfg], **QUIET)
    assert not RunFolder(results_dir, cfg).path.exists()


def test_a_batch_larger_than_the_full_split_fails_before_any_folder(fake_data_root, results_dir):
    cfg = small(fake_data_root, results_dir, data={"train_size": None},
                train={"batch_size": 5000})  # the fake split has 1000 samples
    with pytest.raises(ValueError, match="train.batch_size=5000"):
        execute([cfg], **QUIET)
    assert not RunFolder(results_dir, cfg).path.exists()


# ------------------------------------------------------------------------------ bad values


@pytest.mark.parametrize("override", ["train.eta0=nan", "train.eta0=inf", "model.gamma0=nan",
                                      "model.gamma0=inf", "model.gamma0=-inf"])
def test_non_finite_numbers_fail_at_validation(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"bad value {key}=.*allowed: a finite number > 0"):
        cli.run_config(cli.compose([override]))


def test_non_finite_eta0_from_the_command_line(data_env):
    err = one_line_error(script(["experiments/run.py", "train.eta0=nan"]))
    assert "train.eta0=nan" in err and "finite number" in err


@pytest.mark.parametrize("section, key", [("train", "eta0"), ("algo", "state_lr"),
                                          ("algo", "rho"), ("algo", "alpha")])
def test_a_step_size_the_dtype_cannot_hold_fails_at_validation(section, key, tmp_path):
    """η_h = 1e100 is a float64 number but overflows float32 (largest 3.4028e38): one line at
    validation, not a traceback from the first inference step; float64 runs it."""
    def config(dtype):
        cfg = base_config(tmp_path, tmp_path / "results", train={"dtype": dtype})
        cfg[section][key] = 1e100
        return cfg

    with pytest.raises(ConfigError, match=rf"^bad value {section}\.{key}=1e\+100: allowed: at "
                                          r"most 3\.403e\+38, the largest train\.dtype=float32"):
        resolve_run_config(config("float32"))
    assert resolve_run_config(config("float64"))[section][key] == 1e100
    if key == "eta0":  # far below the edge, η0 meets the first-step bound (test_hostile.py)
        return
    at_the_edge = config("float32")
    at_the_edge[section][key] = float(torch.finfo(torch.float32).max)
    assert resolve_run_config(at_the_edge)[section][key] == at_the_edge[section][key]


def test_batch_larger_than_train_size_fails_at_validation():
    with pytest.raises(ConfigError, match=r"train.batch_size=200.*100 training samples"):
        cli.run_config(cli.compose(["data.train_size=100", "train.batch_size=200"]))


SWEEP = ["experiment=figure2", "scale=smoke", "inference.state_lr=0.25",
         "sweep.grid={model.width:[8]}", "model.depth=4", "algo=bp", "data.test_size=100",
         "--dry-run"]


@pytest.mark.parametrize("sizes", [["data.train_size=100", "train.batch_size=200"],
                                   ["data.train_size=null", "train.batch_size=5000"]])
def test_a_sweep_with_batches_larger_than_its_data_fails_when_planned(sizes, data_env):
    from pcalm.sweeps.grid import load_sweep
    from pcalm.sweeps.launchers import make_launcher
    from pcalm.sweeps.plan import plan

    with pytest.raises(ValueError) as err:  # sweep.py: `error: <it>`, exit status 2
        sweep = load_sweep(SWEEP[:-1] + sizes)  # the cell's validation, or its planning
        plan(sweep, make_launcher(sweep))
    assert "\n" not in str(err.value), err.value
    assert "train.batch_size=" in str(err.value) and "training samples" in str(err.value)
    assert not list(data_env.glob("runs/*")) and not list(data_env.glob("sweeps/*"))


def unwritable_dirs(tmp_path: Path) -> dict[str, Path]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    dirs = {"a file": a_file, "under a file": a_file / "results", "under /proc":
            Path("/proc/pcalm-results")}
    if os.geteuid() != 0:  # root writes anywhere that is not a special file system
        read_only = tmp_path / "read-only"
        read_only.mkdir()
        read_only.chmod(0o500)
        dirs["read-only"] = read_only
    elif os.path.isdir("/sys/kernel"):
        dirs["read-only"] = Path("/sys/kernel")
    return dirs


def test_check_results_dir_names_the_path_and_leaves_nothing_behind(tmp_path):
    for what, path in unwritable_dirs(tmp_path).items():
        with pytest.raises(ValueError, match=rf"results_dir='{path}'.*allowed: a folder") as e:
            check_results_dir(path)
        assert "\n" not in str(e.value), what
    fine = tmp_path / "new" / "results"
    assert check_results_dir(fine) == fine and not (tmp_path / "new").exists()


@pytest.mark.parametrize("entry", ["experiments/run.py", "experiments/sweep.py --dry-run",
                                   "experiments/collect.py"])
def test_an_unwritable_results_dir_fails_in_one_line(entry, data_env, tmp_path):
    args = entry.split() + (["experiment=figure1"] if "run.py" not in entry else [])
    for what in ("a file", "under /proc"):
        path = unwritable_dirs(tmp_path)[what]
        err = one_line_error(script(args, env={"PCALM_RESULTS": str(path)}))
        assert f"results_dir='{path}'" in err, (what, err)


def test_names_cannot_leave_the_results_dir(data_env, tmp_path):
    escape = "../../../pcalm-escape"
    err = one_line_error(script(["experiments/collect.py", "experiment=figure1",
                                 f"name={escape}"]))
    assert f"name='{escape}'" in err and "allowed: letters" in err
    assert not list(tmp_path.parent.parent.glob("**/pcalm-escape*"))
    with pytest.raises(ConfigError, match="name='../x'"):
        cli.run_config(cli.compose(["name=../x"]))
    with pytest.raises(ValueError, match="leaves results_dir"):
        inside(tmp_path, "tables", "../../x.csv")


def test_experiment_must_be_a_file_of_configs_experiment():
    with pytest.raises(ConfigError, match=r"experiment='../config': allowed: figure1, "):
        cli.compose(["experiment=../config"])


# ------------------------------------------------------------------- collect names defects


def test_collect_excludes_a_missing_metrics_file_and_a_junk_config_in_one_line(data_env,
                                                                              capsys):
    from pcalm.analysis.collect import write_tables
    from pcalm.sweeps.grid import load_sweep, table_scope

    grid = ["experiment=figure2", "scale=smoke", "inference.state_lr=0.25", "algo=bp",
            "sweep.grid={model.width:[8,16]}", "model.depth=4", "model.activation=relu"]
    first, second = (RunFolder(c["results_dir"], c) for c in load_sweep(grid).configs[:2])
    for folder in (first, second):
        folder.prepare().write_summary({"status": "complete", "run_id": folder.id,
                                        "test_acc": 0.1})
    second.write_metrics([{"step": 0, "test_acc": 0.1}])
    second.config_path.write_text("- just\n- a list\n")
    summary = write_tables(table_scope(grid)).summary()  # what experiments/collect.py prints
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("warning: 2 run folders excluded"), err
    assert f"{first.id}: metrics.csv is missing" in err
    assert f"{second.id}: config.yaml is not a mapping" in err
    assert re.search(r"collected 0 of \d+ runs", summary) and "2 excluded" in summary


# ----------------------------------------------------------- 3. sweep folders are unique


def test_two_sweeps_in_one_second_get_two_folders(data_env, monkeypatch):
    from pcalm.sweeps import plan
    from pcalm.sweeps.grid import load_sweep

    sweep = load_sweep(SWEEP[:-1])

    class Frozen:  # the same second for both
        @staticmethod
        def now():
            import datetime

            return datetime.datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(plan, "datetime", Frozen)
    a = plan.sweep_name(sweep, data_env)
    b = plan.sweep_name(sweep, data_env)
    assert a != b
    assert (data_env / "sweeps" / a).is_dir() and (data_env / "sweeps" / b).is_dir()


def test_the_same_run_twice_in_one_call_trains_once(fake_data_root, results_dir):
    """Two equal configs in one call (a grid listing a cell twice) are one run: trained once,
    never waiting on its own lock."""
    cfg = small(fake_data_root, results_dir)
    done = {}
    worker = threading.Thread(target=lambda: done.update(
        outcome=execute([cfg, json.loads(json.dumps(cfg))], max_stack=2, **QUIET)), daemon=True)
    worker.start()
    worker.join(timeout=300)
    assert not worker.is_alive(), "execute waits on a lock it holds itself"
    assert len(done["outcome"].trained) == 1 and RunFolder(results_dir, cfg).exists_complete()
