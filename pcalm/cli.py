"""Glue between Hydra and the library: compose configs, turn them into run configs, and
report bad input in one line. The only module of the package that imports Hydra.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pcalm.runs.config import ConfigError, resolve_run_config
from pcalm.runs.eta import AUTHORS_TABLE_NAME
from pcalm.runs.folder import check_results_dir

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "configs"
ETA_TABLE = CONFIG_DIR / "eta_table.csv"  # our recomputation (make eta-table)
AUTHORS_ETA_TABLE = CONFIG_DIR / AUTHORS_TABLE_NAME  # the authors' published values, unchanged
RUN_SECTIONS = ("name", "task", "model", "algo", "data", "train", "logger", "results_dir")


def newton_up_to(algo: str, width: int, max_width: int | None) -> str:
    """`${pcalm.newton_up_to:${algo.name},${model.width},${sweep.equilibrium_max_width}}`
    (Figures 8/9): the equilibrium solver of a credit_routes run — `newton` up to the width
    limit (null: no limit), `none` for a PC run beyond it (what a CPU leaves to a GPU). Only
    PC runs solve an equilibrium, so a PC-ALM run keeps `newton` (and its run id)."""
    limited = algo == "pc" and max_width is not None and int(width) > int(max_width)
    return "none" if limited else "newton"


# Registered on import: every process that composes a config imports this module first.
OmegaConf.register_new_resolver("pcalm.newton_up_to", newton_up_to, replace=True)


def run_config(cfg: DictConfig | dict) -> dict:
    """The resolved, validated run config of a composed Hydra config (sweep keys dropped)."""
    if isinstance(cfg, DictConfig):
        try:  # resolve the run's sections only: sweeps resolve thousands of cells
            cfg = {k: resolved(cfg[k]) for k in RUN_SECTIONS if k in cfg}
        except Exception as err:  # an interpolation error: name it, in one line
            raise ConfigError(one_line(err)) from None
    raw = {k: cfg[k] for k in RUN_SECTIONS if k in cfg}
    return resolve_run_config(raw, ETA_TABLE, AUTHORS_ETA_TABLE)


def resolved(node):
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def compose(overrides: list[str], config_name: str = "config",
            with_hydra: bool = False) -> DictConfig:
    """Compose `configs/<config_name>.yaml` with command-line style overrides.

    `with_hydra` keeps the `hydra` node (launcher settings) and applies `hydra.*` overrides.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    _check_group_paths(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose(config_name, overrides=overrides, return_hydra_config=with_hydra)
    except Exception as err:  # Hydra's errors are multi-line; users get one line
        raise _composition_error(err) from None


def _check_group_paths(overrides: list[str]) -> None:
    """A group choice is a file name of its folder, never a path (`experiment=../config`
    would make Hydra read another folder's file and fail somewhere else)."""
    for text in overrides:
        key, sep, value = text.lstrip("+~").partition("=")
        value = value.strip().strip("'\"")
        options = group_options(key) if sep else None
        if options is not None and ("/" in value or "\\" in value or value.startswith(".")):
            raise ConfigError(f"bad value {key}={value!r}: allowed: {', '.join(options)} "
                              f"(a file name of configs/{key}/, without .yaml)")


# OmegaConf's names of a typed field's type ("could not be converted to Integer"), in words.
_TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false",
               "String": "a string"}


def _shown_path(name: str) -> str:
    """A config file's path as users see it: relative to the checkout when inside it."""
    path = Path(name)
    try:
        return str(path.resolve().relative_to(CONFIG_DIR.parent))
    except ValueError:
        return name


def grammar_error(override: str, message: str) -> str:
    """One line for an override Hydra's grammar cannot read. Its own message is the lexer's
    state (`LexerNoViableAltException: …`, "token recognition error at: 'é'") and a caret on
    the next line; say what to do instead."""
    odd = next((c for c in override if not c.isascii()), None)
    key = override.split("=", 1)[0]
    if odd is not None and odd in key:  # quoting cannot help a key
        return (f"cannot parse override {override!r}: the key {key!r} has the character "
                f"{odd!r}; allowed: config keys are ASCII (`python experiments/run.py "
                "--help` lists the groups, `--cfg job` the keys)")
    if odd is not None and "=" in override:
        key, value = override.split("=", 1)
        return (f"cannot parse override {override!r}: the character {odd!r} is not allowed "
                f"unquoted; allowed: ASCII, or quote the value: {key}='\"{value}\"'")
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    reason = lines[0] if lines else "not Hydra's override syntax"
    return (f"cannot parse override {override!r}: {reason}; allowed: key=value, a list as "
            "key=[a,b], a sweep as key=a,b (Hydra's override syntax)")


def _composition_error(err: BaseException) -> ConfigError:
    """One line naming the bad key or group choice and what is allowed there."""
    if isinstance(getattr(err, "override", None), str):  # Hydra's grammar refused it
        return ConfigError(grammar_error(err.override, str(err.message)))
    options, missing = getattr(err, "options", None), getattr(err, "missing_cfg_file", None)
    if options is not None and missing and "/" in missing:  # an unknown group option
        group, name = missing.rsplit("/", 1)
        return bad_choice(group, name, options)
    mark = getattr(err, "problem_mark", None)
    if mark is not None:  # YAML that does not parse, or a `!!` tag: name the file and line
        hint = ": configs are plain YAML (no !! tags)" if "tag" in str(err.problem) else ""
        return ConfigError(f"{_shown_path(mark.name)} line {mark.line + 1}: {err.problem}{hint}")
    cause = err.__cause__
    full_key, parent = getattr(cause, "full_key", None), getattr(cause, "parent_node", None)
    key = getattr(cause, "key", None)
    if full_key and isinstance(parent, DictConfig) and key in parent:  # a value of wrong type
        wanted = str(getattr(cause, "msg", "")).splitlines()[0].rsplit(" to ", 1)[-1]
        allowed = _TYPE_WORDS.get(wanted, f"a value of type {wanted}")
        return ConfigError(f"bad value {full_key}={getattr(cause, 'value', None)!r}: "
                           f"allowed: {allowed}")
    if full_key and isinstance(parent, DictConfig):  # a typo'd key: list its siblings
        head = full_key.rsplit(".", 1)[0] if "." in full_key else ""
        keys = [str(k) for k in parent.keys() if k != "hydra"]
        where = f" in {head}" if head else ""
        return ConfigError(f"unknown key {full_key}: allowed{where}: {', '.join(keys)}")
    return ConfigError(one_line(err))


@dataclass(frozen=True)
class Override:
    """One command-line override as Hydra's grammar reads it."""

    text: str
    key: str  # dotted key or config group
    kind: str  # change | add | force_add | del
    value: Any  # the single value (None for a sweep or a deletion)
    sweep: list | None  # the values of `key=a,b` or `key=range(...)`, else None


def parse_overrides(texts: list[str]) -> list[Override]:
    """Parse command-line overrides with Hydra's grammar; ConfigError (one line) if bad."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Override as HydraOverride

    parser = OverridesParser.create()
    parsed = []
    for text in texts:
        try:
            o = parser.parse_override(text)
        except Exception as err:
            raise ConfigError(grammar_error(text, str(err))) from None
        sweep = None
        if o.is_sweep_override():
            if not o.is_discrete_sweep() or o.value_type.name == "GLOB_CHOICE_SWEEP":
                raise ConfigError(f"cannot enumerate {text!r}: list the values (key=a,b,c) "
                                  "or use range(start,stop,step)")
            sweep = [HydraOverride._convert_value(v) for v in o.sweep_iterator()]
        value = None if sweep is not None or o.is_delete() else o.value()
        parsed.append(Override(text, o.key_or_group, o.type.name.lower(), value, sweep))
    return parsed


def group_options(group: str) -> list[str] | None:
    """The choices of a config group under configs/ (None if `group` is not a group)."""
    folder = CONFIG_DIR / group
    if "." in group or not folder.is_dir():
        return None
    return sorted(p.stem for p in folder.glob("*.yaml"))


def bad_choice(group: str, value: str, options: list[str] | None) -> ConfigError:
    """`bad value group='value': allowed: a, b`; where the group's folder is missing or empty
    (a damaged checkout), that, and how to restore it, instead of an empty list."""
    if not options:
        return ConfigError(f"bad value {group}={value!r}: configs/{group}/ holds no .yaml "
                           f"files in {CONFIG_DIR.parent}: the checkout is incomplete; allowed: "
                           f"restore it (`git checkout -- configs/{group}`)")
    return ConfigError(f"bad value {group}={value!r}: allowed: {', '.join(options)}")


def one_line(err: BaseException) -> str:
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    # Hydra: "Could not override 'model.widht'." + "Key 'widht' is not in struct": keep both.
    detail = next((ln for ln in lines[1:] if "not in struct" in ln or "not found" in ln), "")
    return f"{lines[0]} {detail}".strip()


def exit_with(err: BaseException, code: int = 2) -> None:
    """Print a one-line error and leave; used for every user-facing failure."""
    print(f"error: {one_line(err)}", file=sys.stderr)
    raise SystemExit(code)


def check_overrides(argv: list[str]) -> None:
    """Fail fast, in one line, on a bad override or value before Hydra starts a run.

    Only for single runs (`-m` sweeps are checked by experiments/sweep.py, cell by cell).
    """
    if any(a in ("-m", "--multirun") for a in argv) or any(a.startswith("-") for a in argv):
        return
    overrides = [a for a in argv if not a.startswith("hydra.") and not a.startswith("hydra/")]
    try:
        check_results_dir(run_config(compose(overrides))["results_dir"])  # Hydra writes there
    except ValueError as err:
        exit_with(err)


def interrupted(what: str, code: int = 130) -> None:
    """Ctrl-C (or SIGTERM): one line saying what stopped and how to go on, then leave."""
    print(f"\ninterrupted: {what}; run the same command again to resume it (finished runs are "
          "kept, an interrupted one goes on from its last checkpoint)", file=sys.stderr)
    raise SystemExit(code)
