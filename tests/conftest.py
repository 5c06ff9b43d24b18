"""Shared fixtures: real-format data made by the tests, isolated results, no network."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from pcalm.data import make_fake_idx_root

REPO = Path(__file__).resolve().parent.parent


REAL_DATA = os.environ.get("PCALM_DATA")

# The tests write their own small IDX files under the official dataset names: let configs
# accept them (data.verify=false: their checksum joins the run id). tests/test_data.py checks
# that verify=true refuses them.
os.environ["PCALM_DATA_VERIFY"] = "false"

# wandb must never reach the network from a test, whatever the user's environment says.
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["WANDB_DISABLE_GIT"] = "true"


# Small algorithm sections for tests (the full configs/ defaults, smaller budgets).
PC_CONFIG = {"name": "pc", "budget": 8, "state_lr": 0.2}
PCALM_CONFIG = {"name": "pcalm", "budget": 8, "state_lr": 0.2, "rho": 1.0, "alpha": 1.0,
                "inner_steps": 1, "weight_credit": "pre_dual"}


@pytest.fixture
def one_thread():
    """Tiny matmuls on a busy 2-core machine: extra threads only add overhead."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def draw_figure(name: str, tables: Path, out: Path, scale="smoke") -> Path:
    """Draw figure `name` as `python experiments/plot.py NAME --scale S --tables T --out O`
    does (pcalm.plots.draw, in this process: a fresh interpreter per figure would cost more
    than the plotting) and check both files exist; returns the PNG."""
    from pcalm.plots import draw

    out.parent.mkdir(parents=True, exist_ok=True)
    png = draw(name, scale, tables, out)
    for suffix in (".png", ".pdf"):
        path = out.with_suffix(suffix)
        assert path.is_file() and path.stat().st_size > 1000, f"{path} missing or empty"
    return png


@pytest.fixture(scope="session")
def fake_data_root(tmp_path_factory) -> Path:
    """Small MNIST / Fashion-MNIST in the real IDX format and torchvision's layout."""
    return make_fake_idx_root(tmp_path_factory.mktemp("data"), n_train=1000, n_test=300)


@pytest.fixture
def results_dir(tmp_path, monkeypatch) -> Path:
    """A fresh results folder; PCALM_RESULTS points at it for subprocesses too."""
    path = tmp_path / "results"
    monkeypatch.setenv("PCALM_RESULTS", str(path))
    return path


def base_config(data_root: Path, results: Path, **sections) -> dict:
    """A complete run config (the configs/ defaults), small enough for a test.

    Keyword sections update the defaults key by key; `algo` replaces the whole section.
    """
    cfg = {
        "name": "test",
        "task": {"name": "train"},
        "model": {"width": 16, "depth": 4, "activation": "relu", "param": "mupc", "gamma0": 1.0},
        "algo": {"name": "pcalm", "budget": 8, "state_lr": 0.25, "rho": 1.0, "alpha": 1.0,
                 "inner_steps": 1, "weight_credit": "pre_dual"},
        "data": {"name": "fashion_mnist", "root": str(data_root), "train_size": None,
                 "test_size": None, "verify": False},  # test-made files are not the official
        "train": {"epochs": 1, "batch_size": 32, "eta0": 0.001, "seed": 0, "device": "cpu",
                  "dtype": "float32", "evals_per_epoch": 4, "threads": None, "progress": "off",
                  "checkpoint_every": 10, "compile": "auto"},
        "logger": {"mode": "none", "project": "pcalm", "entity": None, "group": None,
                   "scale": None},
        "results_dir": str(results),
    }
    for section, values in sections.items():
        if section != "algo" and isinstance(values, dict) and isinstance(cfg.get(section), dict):
            cfg[section].update(values)
        else:
            cfg[section] = copy.deepcopy(values)  # callers may mutate; shared dicts must not
    return cfg
