"""Glue between Hydra and the library: compose configs, turn them into run configs, and
report bad input in one line. The only module of the package that imports Hydra.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pcalm.config import ConfigError, resolve_run_config

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "configs"
ETA_TABLE = CONFIG_DIR / "eta_table.csv"
RUN_SECTIONS = ("name", "task", "model", "algo", "data", "train", "logger", "results_dir")


def run_config(cfg: DictConfig | dict) -> dict:
    """The resolved, validated run config of a composed Hydra config (sweep keys dropped)."""
    if isinstance(cfg, DictConfig):
        try:
            cfg = OmegaConf.to_container(cfg, resolve=True)
        except Exception as err:  # an interpolation error: name it, in one line
            raise ConfigError(_one_line(err)) from None
    raw = {k: cfg[k] for k in RUN_SECTIONS if k in cfg}
    return resolve_run_config(raw, ETA_TABLE)


def compose(overrides: list[str], config_name: str = "config") -> DictConfig:
    """Compose `configs/<config_name>.yaml` with command-line style overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose(config_name, overrides=overrides)
    except Exception as err:  # Hydra's errors are multi-line; users get the first line
        raise ConfigError(_one_line(err)) from None


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    # Hydra: "Could not override 'model.widht'." + "Key 'widht' is not in struct": keep both.
    detail = next((ln for ln in lines[1:] if "not in struct" in ln or "not found" in ln), "")
    return f"{lines[0]} {detail}".strip()


def exit_with(err: BaseException, code: int = 2) -> None:
    """Print a one-line error and leave; used for every user-facing failure."""
    print(f"error: {_one_line(err)}", file=sys.stderr)
    raise SystemExit(code)


def check_overrides(argv: list[str]) -> None:
    """Fail fast, in one line, on a bad override or value before Hydra starts a run.

    Only for single runs (`-m` sweeps are checked by experiments/sweep.py, cell by cell).
    """
    if any(a in ("-m", "--multirun") for a in argv) or any(a.startswith("-") for a in argv):
        return
    overrides = [a for a in argv if not a.startswith("hydra.") and not a.startswith("hydra/")]
    try:
        run_config(compose(overrides))
    except ValueError as err:
        exit_with(err)
