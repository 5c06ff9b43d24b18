"""A run's configuration: validated once, before anything trains, with one-line errors.

Hydra composes a plain nested dict (configs/); `resolve_run_config` checks every value,
applies the paper's grid rule where asked (``algo.budget: 2L``, ``algo.state_lr: table``)
and returns the plain dict that names the run (its hash is the run id) and is saved with it.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path

from pcalm.core.algorithms import ALGORITHMS, COMPILE_MODES, algorithm_options, make_algorithm
from pcalm.core.device import DEVICES, DTYPES
from pcalm.core.model import ACTIVATIONS, PARAMETERISATIONS, get_activation
from pcalm.data import DATASETS, IMAGE_DATASETS, DataError, files_checksum
from pcalm.download import check_mirrors
from pcalm.errors import ConfigError, is_finite_number, is_int_at_least
from pcalm.runs.eta import SOURCE_CONFIG, lookup_state_lr
from pcalm.runs.tasks.registry import TASKS

LOGGER_MODES = ("none", "offline", "online")
PROGRESS = ("auto", "on", "off")

SECTION_KEYS = {
    "model": ("width", "depth", "activation", "param", "gamma0"),
    "data": ("name", "root", "train_size", "test_size", "verify", "mirrors"),
    "train": (
        "epochs", "batch_size", "eta0", "seed", "device", "dtype", "evals_per_epoch",
        "threads", "progress", "checkpoint_every", "compile",
    ),
    "logger": ("mode", "project", "entity", "group", "scale"),
}


def _fail(key: str, value, allowed: str) -> ConfigError:
    return ConfigError(f"bad value {key}={value!r}: {allowed}")


def _int(cfg: dict, section: str, key: str, minimum: int, optional: bool = False):
    value = cfg[section][key]
    if optional and value is None:
        return
    if not is_int_at_least(value, minimum):
        none = " or null" if optional else ""
        raise _fail(f"{section}.{key}", value, f"allowed: an integer >= {minimum}{none}")


def _number(cfg: dict, section: str, key: str, minimum: float = 0.0, strict: bool = True):
    value = cfg[section][key]
    if not is_finite_number(value) or value < minimum or (strict and value == minimum):
        sign = ">" if strict else ">="
        raise _fail(f"{section}.{key}", value, f"allowed: a finite number {sign} {minimum}")
    cfg[section][key] = float(value)


# Names that become file names (tables/<name>-<scale>.csv, sweeps/<name>-<scale>-<time>/).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_name(key: str, value) -> str:
    """`value` if it is a safe file-name part (no '/', no leading '.'), else ConfigError."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise _fail(key, value, "allowed: letters, digits, '_', '-' and '.', not starting "
                    "with '.' (it names files under results_dir)")
    return value


def _choice(cfg: dict, section: str, key: str, allowed) -> None:
    value = cfg[section][key]
    if value not in allowed:
        raise _fail(f"{section}.{key}", value, f"allowed: {', '.join(map(str, allowed))}")


def _check_sections(cfg: dict) -> None:
    for section, keys in SECTION_KEYS.items():
        if not isinstance(cfg.get(section), dict):
            raise ConfigError(f"missing config section {section!r}")
        unknown = sorted(set(cfg[section]) - set(keys))
        missing = [k for k in keys if k not in cfg[section]]
        if unknown:
            raise ConfigError(
                f"unknown key {section}.{unknown[0]}: allowed in {section}: {', '.join(keys)}"
            )
        if missing:
            raise ConfigError(f"missing key {section}.{missing[0]}")


def _resolve_data_identity(cfg: dict) -> None:
    """What data a run sees is part of its identity. `verify: true` (the default) admits only
    the official MNIST / Fashion-MNIST files (MD5-checked when loaded), so their root is not;
    `verify: false` admits any real-format files and records their checksum, read now. Files
    that cannot be read now leave it out: such a run stops at loading (pcalm.runs.runner)."""
    data = cfg["data"]
    if data["name"] not in IMAGE_DATASETS or data["verify"]:
        return
    if not TASKS[cfg["task"]["name"]].needs_data:
        return
    try:
        data["checksum"] = files_checksum(data["name"], data["root"])
    except DataError:
        pass


_TABLE_MULTIPLE = re.compile(r"table\s*\*\s*(\S+)")


def _table_multiple(value) -> float | None:
    """k of `algo.state_lr: table` (k = 1) or `table*k` (η_h = k/λ_max of the cell, the
    appendix's η_h sweep); None for a plain number. A k that is not a positive finite
    number is a one-line error."""
    if value == "table":
        return 1.0
    match = _TABLE_MULTIPLE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        return None
    try:
        k = float(match.group(1))
    except ValueError:
        k = math.nan
    if not (math.isfinite(k) and k > 0):
        raise _fail("algo.state_lr", value, "table, table*k with k a positive number "
                    "(η_h = k/λ_max of the cell), or a positive number")
    return k


def _resolve_algo(cfg: dict, eta_table: Path | None, authors_table: Path | None) -> None:
    algo = cfg.get("algo")
    if not isinstance(algo, dict) or "name" not in algo:
        raise ConfigError("missing config key algo.name")
    name = algo["name"]
    if name not in ALGORITHMS:
        raise _fail("algo.name", name, f"allowed: {', '.join(ALGORITHMS)}")
    allowed = algorithm_options(name)
    for key in sorted(set(algo) - {"name"}):
        if key not in allowed:
            raise ConfigError(
                f"unknown key algo.{key} for algo {name}: allowed: {', '.join(allowed) or 'none'}"
            )
    model = cfg["model"]
    budget = algo.get("budget")
    if isinstance(budget, str) and re.fullmatch(r"[1-9][0-9]*L", budget):
        # "kL": k steps per layer; "2L" is the paper's grid rule T = 2L (SPEC §4)
        algo["budget"] = int(budget[:-1]) * model["depth"]
    multiple = _table_multiple(algo.get("state_lr"))
    if multiple is not None:  # the paper's grid rule η_h = k/λ_max (SPEC §4: k = 1)
        table_value, cfg["state_lr_source"] = lookup_state_lr(
            eta_table, cfg["data"]["name"], model["activation"], model["width"], model["depth"],
            authors_table,
        )
        algo["state_lr"] = table_value if multiple == 1 else multiple * table_value
        if multiple != 1:
            cfg["state_lr_multiple"] = multiple
    elif "state_lr" in algo:
        cfg["state_lr_source"] = SOURCE_CONFIG
    options = {k: v for k, v in algo.items() if k != "name"}
    try:
        make_algorithm(name, **options)
    except ValueError as err:
        raise ConfigError(f"bad algo config: {err}") from None
    for key in ("state_lr", "rho", "alpha"):
        if key in algo:
            algo[key] = float(algo[key])


def _check_representable(cfg: dict) -> None:
    """Step sizes the training dtype cannot hold (η_h = 1e100 in float32) fail here, in one
    line, rather than deep inside the first inference step."""
    import torch

    dtype = cfg["train"]["dtype"]
    largest = torch.finfo(DTYPES[dtype]).max
    numbers = [("train", "eta0"), *(("algo", k) for k in ("state_lr", "rho", "alpha"))]
    for section, key in numbers:
        value = cfg[section].get(key)
        if isinstance(value, float) and value > largest:
            raise _fail(f"{section}.{key}", value,
                        f"allowed: at most {largest:.4g}, the largest train.dtype={dtype} number")
    _check_first_step(cfg, math.sqrt(largest))


def _check_first_step(cfg: dict, bound: float) -> None:
    """A weight learning rate that diverges at the first step fails here, in one line.

    Adam's first update moves every weight by exactly lr = η0 · γ0² · sqrt(N/L) (m̂/√v̂ = ±1),
    and the energies and losses square the products of weights and activities. Once
    lr > sqrt(largest number of train.dtype) those squares overflow to inf, so the run is
    diverged from its second step on: refuse it, naming the η0 that reaches the bound.
    """
    m = cfg["model"]
    scale = m["gamma0"] ** 2 * math.sqrt(m["width"] / m["depth"])
    lr = cfg["train"]["eta0"] * scale
    if lr > bound:
        raise _fail("train.eta0", cfg["train"]["eta0"],
                    f"allowed: at most {bound / scale:.4g} here (Adam's first step moves every "
                    f"weight by lr = η0·γ0²·sqrt(N/L) = {lr:.4g}, whose square overflows "
                    f"train.dtype={cfg['train']['dtype']}: the run would diverge at once)")


def _resolve_task(cfg: dict) -> None:
    task = cfg.setdefault("task", {"name": "train"})
    if not isinstance(task, dict) or task.get("name") not in TASKS:
        name = task.get("name") if isinstance(task, dict) else task
        raise _fail("task.name", name, f"allowed: {', '.join(TASKS)}")
    known = TASKS[task["name"]].params
    unknown = sorted(set(task) - {"name"} - set(known))
    if unknown:
        raise ConfigError(
            f"unknown key task.{unknown[0]} for task {task['name']}: "
            f"allowed: {', '.join(known) or 'none'}"
        )
    for key, default in known.items():
        task.setdefault(key, default)


def resolve_run_config(raw: dict, eta_table: Path | str | None = None,
                       authors_table: Path | str | None = None) -> dict:
    """Validate `raw` (a plain nested dict) and return the resolved copy; ConfigError if bad.

    `algo.state_lr: table` reads η_h from `authors_table` where it has the cell, else from
    `eta_table` (pcalm.runs.eta); the resolved config says which in `state_lr_source`.
    """
    cfg = copy.deepcopy(raw)
    if isinstance(cfg.get("data"), dict):  # derived, recomputed below: resolving is idempotent
        cfg["data"].pop("checksum", None)
        # Optional: configs saved before data.mirrors existed, and hand-built ones, name no
        # mirrors (nothing is downloaded for them). Not part of the run id (pcalm.runs.folder).
        cfg["data"].setdefault("mirrors", [])
    _resolve_task(cfg)
    _check_sections(cfg)
    _int(cfg, "model", "width", 1)
    _int(cfg, "model", "depth", 2)
    try:
        get_activation(cfg["model"]["activation"])
    except ValueError:
        raise _fail("model.activation", cfg["model"]["activation"],
                    f"allowed: {', '.join(ACTIVATIONS)}") from None
    _choice(cfg, "model", "param", PARAMETERISATIONS)
    _number(cfg, "model", "gamma0")
    _choice(cfg, "data", "name", DATASETS)
    _choice(cfg, "data", "verify", (True, False))
    try:
        cfg["data"]["mirrors"] = check_mirrors(cfg["data"]["mirrors"])
    except DataError as err:
        raise ConfigError(str(err)) from None
    _resolve_data_identity(cfg)
    _int(cfg, "data", "train_size", 10, optional=True)
    _int(cfg, "data", "test_size", 10, optional=True)
    for key, minimum in (("epochs", 1), ("batch_size", 1), ("seed", 0), ("evals_per_epoch", 1),
                         ("checkpoint_every", 1)):
        _int(cfg, "train", key, minimum)
    _int(cfg, "train", "threads", 1, optional=True)
    _number(cfg, "train", "eta0")
    _choice(cfg, "train", "device", DEVICES)
    _choice(cfg, "train", "dtype", tuple(DTYPES))
    _choice(cfg, "train", "progress", PROGRESS)
    _choice(cfg, "train", "compile", COMPILE_MODES)
    _choice(cfg, "logger", "mode", LOGGER_MODES)
    _resolve_algo(cfg, Path(eta_table) if eta_table else None,
                  Path(authors_table) if authors_table else None)
    _check_representable(cfg)
    cfg.setdefault("name", "default")
    check_name("name", cfg["name"])
    cfg.setdefault("results_dir", "results")
    if not isinstance(cfg["results_dir"], str) or not cfg["results_dir"]:
        raise _fail("results_dir", cfg["results_dir"], "allowed: a folder path")
    _check_batch_size(cfg)
    return cfg


def _check_batch_size(cfg: dict) -> None:
    """A set training-set size must hold at least one batch (the full split is checked when
    its files are read: pcalm.runs.train.Trainer)."""
    size, batch = cfg["data"]["train_size"], cfg["train"]["batch_size"]
    if size is None:
        return
    samples = size // 10 * 10 if cfg["data"]["name"] in IMAGE_DATASETS else size  # per class
    if batch > samples:
        raise _fail("train.batch_size", batch, f"allowed: at most the {samples} training "
                    f"samples of data.train_size={size} (one batch per step)")


@dataclass(frozen=True)
class Cell:
    """What a run trains, read off a resolved config (for display and run names)."""

    algo: str
    width: int
    depth: int
    activation: str
    data: str
    seed: int

    @classmethod
    def of(cls, cfg: dict) -> Cell:
        m = cfg["model"]
        return cls(cfg["algo"]["name"], m["width"], m["depth"], m["activation"],
                   cfg["data"]["name"], cfg["train"]["seed"])

    def __str__(self) -> str:
        return (f"{self.algo} N={self.width} L={self.depth} {self.activation} "
                f"{self.data} seed={self.seed}")
