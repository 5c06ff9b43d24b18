"""End-to-end training on real-format (IDX) data made by the tests."""

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from pcalm.data import DataError
from pcalm.runs.config import ConfigError, resolve_run_config
from pcalm.runs.folder import RunFolder
from pcalm.runs.runner import execute, load_run_dataset
from pcalm.runs.train import Trainer
from tests.conftest import PC_CONFIG, PCALM_CONFIG, REPO, base_config

ALGOS = {"bp": {"name": "bp"}, "pc": PC_CONFIG, "pcalm": PCALM_CONFIG}


def _config(fake_data_root, results_dir, algo="pcalm", **sections):
    train = {"epochs": 2, **sections.pop("train", {})}
    return resolve_run_config(
        base_config(fake_data_root, results_dir, algo=ALGOS[algo], train=train, **sections)
    )


@pytest.mark.parametrize("algo", ["bp", "pc", "pcalm"])
def test_short_run_learns_far_above_chance(fake_data_root, results_dir, algo):
    cfg = _config(fake_data_root, results_dir, algo)
    outcome = execute([cfg], progress=False, say=lambda s: None)
    summary = outcome.trained[0]
    assert summary["status"] == "complete" and not summary["diverged"]
    # The fake classes are learnable (chance is 0.1). Every number of the loop is pinned
    # exactly by tests/test_golden_training.py; this checks the run folder around them.
    assert summary["test_acc"] > 0.6
    folder = RunFolder(results_dir, cfg)
    assert folder.exists_complete() and not folder.checkpoint_path.exists()
    metrics = pd.read_csv(folder.metrics_path)
    assert list(metrics["step"])[0] == 0 and len(metrics) == 1 + 2 * 4  # step 0 + 4 per epoch
    assert metrics["test_acc"].iloc[-1] == pytest.approx(summary["test_acc"])
    saved = json.loads(folder.summary_path.read_text())
    for key in ("test_acc", "test_mse", "test_ce", "train_loss"):
        assert saved[key] == summary[key] == pytest.approx(metrics[key].iloc[-1], rel=1e-12)
    if algo == "bp":  # BP's alignment to BP would be 1 by definition: not reported
        assert "grad_cosine" not in saved
    else:  # the values themselves: tests/test_golden_training.py
        assert saved["grad_cosine"] == summary["grad_cosine"]
        assert len(summary["grad_cosine_per_layer"]) == cfg["model"]["depth"]


def test_same_seed_same_numbers_and_rerun_skips(fake_data_root, results_dir, tmp_path):
    cfg = _config(fake_data_root, results_dir, "pcalm", train={"epochs": 1})
    first = execute([cfg], progress=False, say=lambda s: None).trained[0]
    again = execute([cfg], progress=False, say=lambda s: None)
    assert again.trained == [] and len(again.skipped) == 1
    other = dict(cfg, results_dir=str(tmp_path / "other"))
    second = execute([other], progress=False, say=lambda s: None).trained[0]
    for key in ("test_acc", "test_mse", "test_ce", "train_loss", "grad_cosine"):
        assert first[key] == second[key]
    a = pd.read_csv(RunFolder(results_dir, cfg).metrics_path)
    b = pd.read_csv(RunFolder(other["results_dir"], other).metrics_path)
    pd.testing.assert_frame_equal(a, b)


def test_different_seeds_differ(fake_data_root, results_dir):
    runs = [_config(fake_data_root, results_dir, "pc", train={"epochs": 1, "seed": s})
            for s in (0, 1)]
    a, b = execute(runs, progress=False, say=lambda s: None).trained
    assert a["test_mse"] != b["test_mse"]


@pytest.mark.parametrize("algo", ["bp", "pc", "pcalm"])
def test_a_stack_of_seeds_trains_like_lone_runs(fake_data_root, results_dir, algo):
    cfgs = [_config(fake_data_root, results_dir, algo, train={"epochs": 1, "seed": s})
            for s in (3, 4)]
    data = load_run_dataset(cfgs[0])
    stacked = Trainer(cfgs, data).run()
    for cfg, summary in zip(cfgs, stacked):
        alone = Trainer([cfg], data).run()[0]
        assert summary["test_acc"] == pytest.approx(alone["test_acc"], abs=1e-9)
        assert summary["train_loss"] == pytest.approx(alone["train_loss"], rel=1e-4)


def test_a_mixed_stack_trains_like_lone_runs(fake_data_root, results_dir):
    """Twins and learning-rate variants of one cell (PC / PC-ALM, own η_h, α, ρ, η0) train
    as one stack — per-model options in the loop and in Adam — exactly as each alone
    (float64, so that only rounding differs)."""
    variants = [
        ("pc", {}, {"seed": 0}),
        ("pcalm", {"alpha": 0.5, "rho": 1.5}, {"seed": 0}),
        ("pcalm", {"state_lr": 0.1}, {"seed": 1, "eta0": 0.003}),
        ("pc", {"state_lr": 0.3}, {"seed": 1, "eta0": 0.0005}),
    ]
    cfgs = [resolve_run_config(base_config(
        fake_data_root, results_dir, algo={**ALGOS[name], **algo},
        train={"epochs": 1, "dtype": "float64", **train})) for name, algo, train in variants]
    data = load_run_dataset(cfgs[0])
    trainer = Trainer(cfgs, data)
    assert trainer.algo.name == "stacked"
    stacked = trainer.run()
    for cfg, summary in zip(cfgs, stacked):
        alone = Trainer([cfg], data).run()[0]
        assert summary["models_in_stack"] == 4 and summary["lr"] == alone["lr"]
        for key in ("test_mse", "train_loss", "grad_cosine"):
            assert summary[key] == pytest.approx(alone[key], rel=1e-9), key
    assert len({s["test_mse"] for s in stacked}) == 4  # the variants do differ


def test_configs_that_cannot_share_a_stack_are_refused(fake_data_root, results_dir):
    a = _config(fake_data_root, results_dir, "pc")
    b = _config(fake_data_root, results_dir, "pc", model={"width": 8})
    with pytest.raises(ValueError, match="may differ only in train.seed, train.eta0"):
        Trainer([a, b], load_run_dataset(a))


def test_divergence_is_recorded_not_raised(fake_data_root, results_dir):
    # η_h = 2 is 5× the stability limit 2/λ_max ≈ 0.4: states grow ~8× per step and
    # overflow float32 within the T = 64 steps of the first batch.
    algo = dict(ALGOS["pc"], state_lr=2.0, budget=64)
    cfg = resolve_run_config(base_config(fake_data_root, results_dir, algo=algo))
    summary = execute([cfg], progress=False, say=lambda s: None).trained[0]
    assert summary["diverged"] is True and summary["status"] == "diverged"
    assert summary["diverged_step"] == 1
    assert math.isnan(summary["test_acc"])
    saved = json.loads(RunFolder(results_dir, cfg).summary_path.read_text())
    assert saved["diverged_step"] == 1


@pytest.mark.parametrize(
    "section, values, fragment",
    [
        ("model", {"depth": 1}, "model.depth=1: allowed: an integer >= 2"),
        ("model", {"width": 0}, "model.width=0: allowed: an integer >= 1"),
        ("model", {"activation": "gelu"}, "model.activation='gelu': allowed: identity"),
        ("algo", {"name": "adam"}, "algo.name='adam': allowed: bp, pc, pcalm"),
        ("algo", {"budget": 0}, "budget must be an integer >= 1, got 0"),
        ("data", {"name": "cifar"}, "data.name='cifar': allowed: fashion_mnist, mnist, synthetic"),
        ("train", {"device": "tpu"}, "train.device='tpu': allowed: auto, cpu, cuda"),
        ("train", {"batch_size": 0}, "train.batch_size=0"),
    ],
)
def test_bad_config_fails_in_one_line(fake_data_root, results_dir, section, values, fragment):
    raw = base_config(fake_data_root, results_dir)
    raw[section].update(values)
    with pytest.raises(ConfigError) as err:
        resolve_run_config(raw)
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("verify", [True, False])
def test_missing_data_fails_before_training(tmp_path, results_dir, verify):
    raw = base_config(tmp_path / "nowhere", results_dir, data={"verify": verify})
    with pytest.raises(DataError) as err:  # unverified files are read for their checksum
        execute([resolve_run_config(raw)], progress=False, say=lambda s: None)
    assert "nowhere" in str(err.value) and "make data" in str(err.value)
    assert "\n" not in str(err.value)
    assert not (results_dir / "runs").exists()


def _run_cli(*overrides, env_root, results):
    env = {"PCALM_DATA": str(env_root), "PCALM_RESULTS": str(results), "WANDB_MODE": "disabled",
           "PCALM_DATA_VERIFY": "false", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "experiments/run.py", *overrides], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=300,
    )


def test_one_command_trains_a_cell_and_writes_its_folder(fake_data_root, results_dir):
    proc = _run_cli("algo=pcalm", "model.width=16", "model.depth=6", "data=fashion_mnist",
                    "train.evals_per_epoch=3", env_root=fake_data_root, results=results_dir)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy ") and "pcalm N=16 L=6 relu fashion_mnist" in last
    (folder,) = (results_dir / "runs").iterdir()
    assert {p.name for p in folder.iterdir()} == {"config.yaml", "metrics.csv", "summary.json"}
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["steps"] == 1000 // 64


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.depth=1", "model.depth=1: allowed: an integer >= 2"),
        ("algo=adam", "algo"),
        ("model.widht=3", "widht"),
        ("model.activation=gelu", "allowed: identity, tanh, relu, linear"),
        ("inference.budget=0", "budget must be an integer >= 1, got 0"),
    ],
)
def test_cli_bad_input_is_one_line_and_trains_nothing(fake_data_root, results_dir, override,
                                                      fragment):
    proc = _run_cli(override, env_root=fake_data_root, results=results_dir)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]
    assert not (results_dir / "runs").exists()


def test_cli_missing_data_is_one_line(tmp_path, results_dir):
    proc = _run_cli("model.depth=3", env_root=tmp_path / "empty", results=results_dir)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing data file" in lines[0] and "make data" in lines[0]
