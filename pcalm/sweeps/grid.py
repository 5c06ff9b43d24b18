"""Sweeps: an experiment's grid → one resolved run config per grid point (jobs: plan.py).

The grid is `sweep.grid` (a dotted key or a config group → a list of values; the sweep is
their cartesian product), filled by `experiment=figureN` from `scale=smoke|paper`. The
command line changes it with the usual overrides:

    key=a,b                 sets the axis `key` (Hydra's sweep syntax; range(...) works too)
    key=a                   pins an axis of the grid to one value (any other key: every run)
    sweep.grid.key=[a,b]    the same as key=a,b;  ~sweep.grid.key drops the axis
    sweep.grid={k: [...]}   replaces the whole grid

Every grid point is composed and validated before anything is launched; one bad cell fails
the whole sweep with one line naming the key, the value and the cell. Composing is slow
(~0.4 s), so it happens once per combination of *group* choices (`algo`, `data`); value keys
are then set on that composed config in struct mode, so a typo'd key still fails.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pcalm import cli
from pcalm.errors import is_int_at_least
from pcalm.runs.config import ConfigError, check_name
from pcalm.runs.folder import NON_NUMERIC_KEYS, RunFolder

LAUNCHERS = ("local", "slurm", "basic")  # sweep.launcher: each a class of launchers.py
GRID_PREFIX = "sweep.grid."
NOT_SWEEPABLE = ("experiment", "scale")  # they define the grid itself


@dataclass
class Sweep:
    """An expanded sweep: its runs (validated, deduplicated) and how to launch them."""

    name: str  # the experiment's name (figure2), or "default"
    scale: str  # smoke | paper | custom
    configs: list[dict]  # one resolved run config per distinct run, in grid order
    settings: dict  # the `sweep` section: launcher, runs_per_job, local_jobs, max_stack
    hydra_overrides: list[str] = field(default_factory=list)  # hydra.* → the launcher

    @property
    def label(self) -> str:
        """`<experiment>-<scale>`: the name of its tables and sweep folders."""
        return f"{self.name}-{self.scale}"


def expand(overrides: list[str]) -> list[dict]:
    """The resolved run config of every grid point (duplicates dropped), in grid order."""
    return load_sweep(overrides).configs


def experiment_scale(overrides: list[str]) -> tuple[str, str]:
    """(experiment name, scale) of the sweep the overrides describe, for naming tables."""
    base = cli.compose(_compose_part(overrides)[0])
    return _name_scale(base)


def load_sweep(overrides: list[str]) -> Sweep:
    """Compose, expand and validate the sweep; ConfigError (one line) on any bad input."""
    hydra = [o for o in overrides if o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    compose_overrides, edits = _compose_part([o for o in overrides if o not in hydra])
    base = cli.compose(compose_overrides)
    grid = _grid(base, edits)
    settings = _settings(base)
    configs = _expand_grid(base, compose_overrides, grid)
    limit = settings["max_width_times_depth"]
    if limit is not None:  # e.g. scale=paper_cpu: the cells a CPU finishes in reasonable time
        configs = [c for c in configs if _width_times_depth(c) <= limit]
        if not configs:
            raise ConfigError(f"sweep.max_width_times_depth={limit} leaves no run of the grid")
    name, scale = _name_scale(base)
    return Sweep(name, scale, configs, settings, hydra)


def _width_times_depth(cfg: dict) -> int:
    return cfg["model"]["width"] * cfg["model"]["depth"]


# --------------------------------------------------------------------------- the grid


@dataclass
class _GridEdits:
    """What the command line does to the experiment's grid."""

    replace: dict | None = None  # sweep.grid={...}
    axes: dict = field(default_factory=dict)  # key -> values (key=a,b or sweep.grid.key=[..])
    drop: set = field(default_factory=set)  # ~sweep.grid.key, or a pinned key=a


def _compose_part(overrides: list[str]) -> tuple[list[str], _GridEdits]:
    """Split overrides into those Hydra composes and the edits of the grid (last one wins)."""
    edits, plain = _GridEdits(), {}

    def set_axis(key: str, values: list) -> None:
        edits.axes[key] = values
        edits.drop.discard(key)
        plain.pop(key, None)

    for o in cli.parse_overrides(overrides):
        if o.key == "sweep.grid":
            if o.kind == "del" or not isinstance(o.value, dict):
                raise ConfigError(f"bad value {o.text!r}: sweep.grid takes a dict, "
                                  "e.g. 'sweep.grid={model.width:[8,16],train.seed:[0,1]}'")
            edits.replace, edits.axes = dict(o.value), {}
        elif o.key.startswith(GRID_PREFIX):
            key = o.key[len(GRID_PREFIX):]
            if o.kind == "del":
                edits.drop.add(key)
                edits.axes.pop(key, None)
            else:
                set_axis(key, o.sweep if o.sweep is not None else _as_list(o.value))
        elif o.sweep is not None:
            if o.key in NOT_SWEEPABLE or o.kind != "change":
                raise ConfigError(f"bad override {o.text!r}: {o.key} takes one value")
            set_axis(o.key, o.sweep)
        else:  # one value: it also pins that axis of the experiment's grid
            plain[o.key] = o.text
            edits.drop.add(o.key)
            edits.axes.pop(o.key, None)
    return list(plain.values()), edits


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _grid(base: DictConfig, edits: _GridEdits) -> dict[str, list]:
    """The final grid: the experiment's (resolved), edited by the command line, checked."""
    if edits.replace is not None:
        grid = {k: _as_list(v) for k, v in edits.replace.items()}
    else:
        try:
            grid = OmegaConf.to_container(base.sweep.grid, resolve=True)
        except Exception as err:
            raise ConfigError(f"cannot resolve sweep.grid: {cli.one_line(err)}") from None
        grid = {str(k): _as_list(v) for k, v in grid.items()}
    grid.update(edits.axes)
    grid = {k: v for k, v in grid.items() if k not in edits.drop}
    for key, values in grid.items():
        _check_axis(base, key, values)
    return grid


def _check_axis(base: DictConfig, key: str, values: list) -> None:
    if key in NOT_SWEEPABLE:
        raise ConfigError(f"bad sweep.grid key {key}: it selects the grid and takes one value")
    if not values:
        raise ConfigError(f"empty sweep axis {key}: give it at least one value")
    _check_changes_numbers(key, values)
    options = cli.group_options(key)
    if options is not None:  # a config group: each value must be one of its files
        for v in values:
            if v not in options:
                raise cli.bad_choice(key, v, options)
    else:
        _check_key(base, key)


def _check_changes_numbers(key: str, values: list) -> None:
    """A sweep axis must change the run id: over a key the id leaves out (NON_NUMERIC_KEYS:
    where results go, the name, threads, checkpoints...) every value would be the same run,
    so all but one value would be silently skipped. Refused, in one line."""
    parts = key.split(".")
    cosmetic = next((k for k in NON_NUMERIC_KEYS if parts[: len(k.split("."))] == k.split(".")),
                    None)
    distinct = {repr(v) for v in values}
    if cosmetic is not None and len(distinct) > 1:
        shown = ",".join(str(v) for v in values)
        raise ConfigError(f"bad sweep axis {key}={shown}: {cosmetic} is not part of the run id "
                          "(it does not change the numbers), so every value would be one run; "
                          "allowed: one value (run one sweep per value)")


def _check_key(cfg: DictConfig, key: str) -> None:
    """A dotted key must exist in the composed config (struct mode: no silent typos)."""
    parts = key.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[:i])
        node = OmegaConf.select(cfg, where) if where else cfg
        if not isinstance(node, DictConfig) or part not in node:
            allowed = ", ".join(str(k) for k in node.keys()) if isinstance(node, DictConfig) \
                else f"none ({where} is a value)"
            scope = f" in {where}" if where else ""
            raise ConfigError(f"unknown key {key} in sweep.grid: allowed{scope}: {allowed}")


def _settings(base: DictConfig) -> dict:
    """The sweep section's launch settings, checked (one line per bad value)."""
    s = OmegaConf.to_container(base.sweep, resolve=True)
    if s.get("launcher") not in LAUNCHERS:
        raise ConfigError(f"bad value sweep.launcher={s.get('launcher')!r}: "
                          f"allowed: {', '.join(LAUNCHERS)}")
    for key, optional in (("runs_per_job", False), ("local_jobs", True), ("max_stack", False),
                          ("max_width_times_depth", True)):
        v = s.get(key)
        if key == "max_stack" and v == "auto":
            continue
        if (v is None and not optional) or (v is not None and not is_int_at_least(v, 1)):
            none = " or null" if optional else " or auto" if key == "max_stack" else ""
            raise ConfigError(f"bad value sweep.{key}={v!r}: allowed: an integer >= 1{none}")
    return {k: s.get(k) for k in ("launcher", "runs_per_job", "local_jobs", "max_stack",
                                  "max_width_times_depth")}


def _name_scale(base: DictConfig) -> tuple[str, str]:
    scale = OmegaConf.select(base, "sweep.scale", default=None)
    name, scale = str(base.get("name") or "default"), str(scale or "custom")
    return check_name("name", name), check_name("sweep.scale", scale)  # they name files


# ----------------------------------------------------------------------- expansion


def _expand_grid(base: DictConfig, overrides: list[str], grid: dict[str, list]) -> list[dict]:
    """One validated run config per grid point; points resolving to the same run kept once."""
    groups = [k for k in grid if cli.group_options(k) is not None]
    values = [k for k in grid if k not in groups]
    configs, seen = [], set()
    for group_choice in itertools.product(*(grid[k] for k in groups)):
        choice = dict(zip(groups, group_choice))
        cfg = base if not choice else cli.compose(
            overrides + [f"{k}={v}" for k, v in choice.items()])
        cells = [{**choice, **dict(zip(values, v))}
                 for v in itertools.product(*(grid[k] for k in values))]
        for run in _cell_configs(cfg, cells, values):
            rid = RunFolder(run["results_dir"], run).id
            if rid not in seen:
                seen.add(rid)
                configs.append(run)
    return configs


def _cell_configs(cfg: DictConfig, cells: list[dict], value_keys: list[str]):
    """The resolved run config of each cell of one composed config.

    Resolving interpolations costs ~10 ms a cell, so when no interpolation can see the value
    keys, the run sections are resolved once and each cell sets its values in a plain copy.
    """
    for key in value_keys:
        try:
            _check_key(cfg, key)
        except ConfigError as err:
            raise ConfigError(f"{err} (cell: {describe(cells[0])})") from None
    template = _plain_template(cfg, value_keys)
    for cell in cells:
        try:
            if template is None:  # interpolations may depend on the values: let OmegaConf work
                for key in value_keys:
                    OmegaConf.update(cfg, key, cell[key], merge=False)
                run = cli.run_config(cfg)
            else:
                run = cli.run_config(_with_values(template, cell, value_keys))
        except ValueError as err:  # ConfigError, EtaTableError, OmegaConf's key errors
            raise ConfigError(f"{cli.one_line(err)} (cell: {describe(cell)})") from None
        # Jobs may run from another directory (a compute node): make paths absolute.
        run["results_dir"] = str(Path(run["results_dir"]).expanduser().resolve())
        run["data"]["root"] = str(Path(run["data"]["root"]).expanduser().resolve())
        yield run


def _plain_template(cfg: DictConfig, value_keys: list[str]) -> dict | None:
    """The resolved run sections, or None if an interpolation might read a value key."""
    texts = [v for v in _leaves(OmegaConf.to_container(cfg, resolve=False))
             if isinstance(v, str) and "${" in v]
    for key in value_keys:
        top = key.split(".")[0]
        if top not in cli.RUN_SECTIONS or any(top in t for t in texts):  # conservative
            return None
    try:
        return {k: cli.resolved(cfg[k]) for k in cli.RUN_SECTIONS if k in cfg}
    except Exception as err:
        raise ConfigError(cli.one_line(err)) from None


def _leaves(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _leaves(v)
    elif isinstance(node, list):
        for v in node:
            yield from _leaves(v)
    else:
        yield node


def _with_values(template: dict, cell: dict, value_keys: list[str]) -> dict:
    raw = copy.deepcopy(template)
    for key in value_keys:
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[leaf] = copy.deepcopy(cell[key])
    return raw


def describe(cell: dict) -> str:
    """`algo=pc model.width=8 ...`: a grid point as the overrides that select it."""
    return " ".join(f"{k}={v}" for k, v in cell.items()) or "(the base config)"


# ------------------------------------------------------------------ what a table holds

VARIANT_MAX_CHARS = 80  # longer variant names are cut and end in a hash of the whole


@dataclass
class TableScope:
    """What one collected table (and the figure drawn from it) covers.

    A table never shrinks because part of its grid was run: it holds every complete run of the
    experiment's whole grid *plus* the runs the command line asked for (`model.width=8` pins an
    axis for the sweep, not for the table). A setting that changes the runs themselves outside
    the grid (`data.train_size=6000`, `inference.budget=32`, `data=mnist`) makes another
    experiment: its table and figure get that setting in their name (the `variant`), so they
    never overwrite the experiment's own.
    """

    name: str  # the experiment
    scale: str
    variant: str  # "" for the experiment as configured, else e.g. "data.train_size=6000"
    configs: list[dict]  # the whole grid's runs, then any the command line added

    @property
    def label(self) -> str:
        """`<experiment>-<scale>[-<variant>]`: the stem of the table and figure files."""
        return f"{self.name}-{self.scale}" + (f"-{self.variant}" if self.variant else "")

    @property
    def scale_label(self) -> str:
        """`<scale>[-<variant>]`: what plot scripts take as --scale to find the table."""
        return self.scale + (f"-{self.variant}" if self.variant else "")


def table_scope(overrides: list[str]) -> TableScope:
    """The table an experiment's overrides collect into (see `TableScope`)."""
    from pcalm.runs.folder import NON_NUMERIC_KEYS

    requested = load_sweep(overrides)
    parsed = cli.parse_overrides(overrides)
    base = cli.compose(_compose_part(overrides)[0])
    grid_keys = set(OmegaConf.to_container(base.sweep.grid, resolve=False)) \
        if OmegaConf.select(base, "sweep.grid") is not None else set()
    keep, changing = [], []
    for o in parsed:
        if o.key in NOT_SWEEPABLE or o.key == "name":
            keep.append(o.text)
        elif o.key.startswith(("sweep", "hydra")) or o.key in grid_keys:
            continue  # narrows, extends or launches the grid: the table keeps the whole grid
        else:
            keep.append(o.text)
            if not any(o.key == k or o.key.startswith(f"{k}.") for k in NON_NUMERIC_KEYS):
                changing.append(o.text)
    whole = load_sweep(keep) if keep != overrides else requested
    variant = ""
    if changing:  # only if the runs really differ from the experiment's own (not a default)
        plain = [t for t in keep if t not in changing]
        own = {RunFolder(c["results_dir"], c).id for c in load_sweep(plain).configs}
        if any(RunFolder(c["results_dir"], c).id not in own for c in whole.configs):
            variant = variant_name(changing)
    configs, seen = [], set()
    for cfg in whole.configs + requested.configs:
        rid = RunFolder(cfg["results_dir"], cfg).id
        if rid not in seen:
            seen.add(rid)
            configs.append(cfg)
    return TableScope(requested.name, requested.scale, variant, configs)


def variant_name(overrides: list[str]) -> str:
    """A file-name-safe name for the overrides that change an experiment, e.g.
    `data.train_size=6000+inference.budget=32` (sorted; cut with a hash when long)."""
    import hashlib
    import re

    text = "+".join(sorted(t.lstrip("+~") for t in overrides))
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)
    if len(safe) <= VARIANT_MAX_CHARS:
        return safe
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{safe[:VARIANT_MAX_CHARS - 9]}~{digest}"


def multirun_refusal(argv: list[str]) -> str | None:
    """What `run.py -m experiment=figureN ...` must say instead of running.

    Hydra's `-m` sweeps only the keys given as `key=a,b`; an experiment's grid lives in
    `sweep.grid`, which only experiments/sweep.py expands, so Hydra would silently launch the
    base cell alone. Returns the one-line refusal (naming the grid's size and the command that
    runs it), or None when `argv` is not such a multirun or its grid is a single run.
    """
    if not any(a in ("-m", "--multirun") for a in argv):
        return None
    overrides = [a for a in argv if not a.startswith("-")]
    if not any(a.startswith("experiment=") for a in overrides):
        return None
    sweep = load_sweep([a for a in overrides if not a.startswith(("hydra.", "hydra/"))])
    if len(sweep.configs) <= 1:
        return None
    return (f"experiment={sweep.name} is a grid of {len(sweep.configs)} runs (sweep.grid, "
            f"scale={sweep.scale}) that run.py -m would not expand (it would launch one run): "
            f"run it with `python experiments/sweep.py {' '.join(overrides)}` or "
            f"`make sweep EXP={sweep.name} SCALE={sweep.scale}`")
