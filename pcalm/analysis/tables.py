"""Finished runs as pandas tables: the one way figures, reports and dashboards read results.

``load`` gives one row per complete run (``run_id``, the flattened config, the flattened
summary); ``load_metrics`` one row per evaluation of every complete run; ``collect`` writes the
``load`` table atomically as CSV (``results/tables/<experiment>-<scale>.csv``); ``problems``
names the defects a table would hide. Incomplete folders are skipped and listed in
``.attrs["missing"]``, so a half-finished sweep still plots; folders that fail
``pcalm.runs.folder.audit_run`` are left out and listed in ``.attrs["excluded"]``.
``portable_table`` drops this machine's absolute paths before a table leaves it. Never imports
torch.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pcalm.atomic import atomic_write_text
from pcalm.runs.folder import (
    ARRAYS_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    METRICS_HASH,
    SUMMARY_FILE,
    audit_run,
    is_summary,
    is_valid,
    plain,
    read_json,
)


def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` → ``{"a.b": 1, "c": [1, 2]}`` (lists stay lists)."""
    flat: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def _read_config(folder: Path) -> dict:
    """The stored config of a run folder, or {} (with a warning) if it cannot be read."""
    try:
        config = yaml.safe_load((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        warnings.warn(f"{folder}: cannot read {CONFIG_FILE} ({err})", stacklevel=3)
        return {}
    return config if isinstance(config, dict) else {}


def _scan(
    results_dir: str | os.PathLike, run_ids: Iterable[str] | None
) -> tuple[list[tuple[str, Path, dict, dict]], list[str], dict[str, str]]:
    """Complete runs as ``(id, folder, config, summary)`` and the ids left out.

    With ``run_ids``: the requested ids, and as "left out" those absent or incomplete. Without:
    every folder under ``runs/``, and as "left out" the incomplete ones found there.
    Folders that look complete but fail ``audit_run`` are left out too, and returned third
    as ``{run id: reason}``.
    """
    runs_dir = Path(results_dir) / "runs"
    if run_ids is None:
        ids = sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    else:
        ids = list(dict.fromkeys(str(i) for i in run_ids))  # dedupe, keep order
    complete, missing, excluded = [], [], {}
    for rid in ids:
        folder = runs_dir / rid
        summary = read_json(folder / SUMMARY_FILE) if folder.is_dir() else None
        if not is_summary(summary):
            missing.append(rid)
            continue
        reason = audit_run(folder, summary)
        if reason is not None:
            excluded[rid] = reason
            continue
        complete.append((rid, folder, _read_config(folder), summary))
    return complete, sorted(missing), excluded


def _result(summary: dict) -> dict:
    """A summary's table columns: flattened, without the folder's integrity hash."""
    return {k: v for k, v in flatten(summary).items() if k != METRICS_HASH}


def _frame(rows: list[dict], first: str = "run_id") -> pd.DataFrame:
    """DataFrame with columns in first-seen order (pandas' own order is not guaranteed)."""
    columns = list(dict.fromkeys([first, *(key for row in rows for key in row)]))
    return pd.DataFrame(rows, columns=columns)


def load(results_dir: str | os.PathLike = "results", run_ids: Iterable[str] | None = None):
    """One row per complete run: ``run_id``, flattened config, then flattened summary.

    Incomplete folders are skipped, so a half-finished sweep still loads. ``.attrs["missing"]``
    lists (sorted) the requested ids that are absent or incomplete — or, when ``run_ids`` is
    None, the incomplete folders found — so the caller can say which cells are missing.
    On a name clash between a config key and a summary key the summary value wins.
    """
    complete, missing, excluded = _scan(results_dir, run_ids)
    rows = [
        {"run_id": rid, **flatten(config), **_result(summary), "valid": is_valid(summary)}
        for rid, _, config, summary in complete
    ]
    df = _frame(rows)
    df.attrs["missing"] = missing
    df.attrs["excluded"] = excluded
    return df


def _read_metrics(path: Path) -> pd.DataFrame | None:
    """A run's metrics.csv as a frame, or None if it is absent, empty or unreadable."""
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        return None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError) as err:
        warnings.warn(f"{path}: cannot read metrics ({err})", stacklevel=3)
        return None


def load_metrics(results_dir: str | os.PathLike = "results", run_ids: Iterable[str] | None = None):
    """All metrics rows of complete runs, with ``run_id`` and flattened config columns joined on.

    For training curves: one row per evaluation per run. ``.attrs["missing"]`` as in ``load``.
    """
    complete, missing, excluded = _scan(results_dir, run_ids)
    frames = []
    for rid, folder, config, _ in complete:
        metrics = _read_metrics(folder / METRICS_FILE)
        if metrics is None or metrics.empty:
            continue
        head = {"run_id": rid, **flatten(config)}
        # Build the constant columns row by row so list-valued config entries stay whole.
        const = pd.DataFrame([head] * len(metrics), columns=list(head))
        frames.append(pd.concat([const, metrics.drop(columns=list(head), errors="ignore")], axis=1))
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id"])
    df.attrs["missing"] = missing
    df.attrs["excluded"] = excluded
    return df


def collect(
    results_dir: str | os.PathLike, run_ids: Iterable[str] | None, out_path: str | os.PathLike
) -> pd.DataFrame:
    """``load`` the runs, write the table atomically as CSV to ``out_path``, return it.

    Prints nothing: the caller reports (e.g. ``df.attrs["missing"]``).
    """
    df = load(results_dir, run_ids)
    atomic_write_text(out_path, df.to_csv(index=False))
    return df


def problems(results_dir: str | os.PathLike, run_ids: Iterable[str] | None = None) -> list[str]:
    """One line per defect of a complete run that a table would hide: no (or an unreadable)
    metrics.csv, a config.yaml that is absent, not YAML, or not a mapping."""
    complete, _, _ = _scan_quietly(results_dir, run_ids)
    lines = []
    for _, folder, _, _ in complete:
        config_path = folder / CONFIG_FILE
        try:
            config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
            if not isinstance(config, dict):
                lines.append(f"{config_path}: not a config (a YAML mapping), found "
                             f"{type(config).__name__}: its run has no config columns")
        except (OSError, yaml.YAMLError) as err:
            what = "missing" if isinstance(err, FileNotFoundError) else "unreadable"
            lines.append(f"{config_path}: {what}: its run has no config columns")
        metrics_path = folder / METRICS_FILE
        if not metrics_path.is_file():
            lines.append(f"{metrics_path}: missing: its run has no metrics rows")
        else:
            try:
                pd.read_csv(metrics_path)
            except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, ValueError):
                lines.append(f"{metrics_path}: unreadable CSV: its run has no metrics rows")
    return lines


def _scan_quietly(results_dir, run_ids):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _scan(results_dir, run_ids)


# --------------------------------------------------------------------------------------------
# Portable tables: what a collected table may carry off this machine
# --------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def default_tables_dir() -> Path:
    """Where collected tables are read unless told: <PCALM_RESULTS, else <repo>/results>/tables
    (as configs/config.yaml's results_dir)."""
    return Path(os.environ.get("PCALM_RESULTS", REPO / "results")) / "tables"


# Path columns of a table and the variable a user sets to say where that folder is.
PATH_COLUMNS = {"data.root": "$PCALM_DATA", "results_dir": "$PCALM_RESULTS"}
TEXT_COLUMNS_WITH_PATHS = ("provenance.command",)


def portable_path(text: str, placeholder: str, repo: Path = REPO) -> str:
    """An absolute path as a table may keep it: relative to the repository when inside it,
    else ``placeholder`` (``$PCALM_DATA``); a relative path stays as it is."""
    path = Path(text)
    if not path.is_absolute():
        return text
    try:
        return path.relative_to(repo).as_posix() or "."
    except ValueError:
        return placeholder


def _json_cell(value: Any) -> Any:
    """A list cell (``data.mirrors``, ``grad_cosine_per_layer``) as JSON text, also when an
    older table holds it as a Python repr (``['https://…']``)."""
    if isinstance(value, (list, tuple)):
        return json.dumps(plain(value))
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        try:
            json.loads(value)
            return value
        except ValueError:
            import ast

            try:
                parsed = ast.literal_eval(value)  # literals only: never executes code
            except (ValueError, SyntaxError):
                return value
            return json.dumps(plain(parsed)) if isinstance(parsed, (list, tuple)) else value
    return value


def portable_table(df: pd.DataFrame, repo: Path = REPO) -> pd.DataFrame:
    """The table without this machine's absolute paths (``data.root``, ``results_dir`` and
    the same paths inside ``provenance.command``), list cells as JSON. Run ids are untouched:
    none of these columns is part of a run's identity."""
    df = df.copy()
    replaced: dict[str, str] = {}
    for column, placeholder in PATH_COLUMNS.items():
        if column not in df:
            continue
        for value in df[column].dropna().unique():
            if isinstance(value, str):
                replaced[value] = portable_path(value, placeholder, repo)
        df[column] = df[column].map(lambda v: replaced.get(v, v) if isinstance(v, str) else v)
    longest_first = sorted(replaced.items(), key=lambda kv: -len(kv[0]))

    def scrub(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        for old, new in longest_first:
            text = text.replace(old, new)
        return text

    for column in TEXT_COLUMNS_WITH_PATHS:
        if column in df:
            df[column] = df[column].map(scrub)
    for column in df.columns:
        if df[column].dtype == object or pd.api.types.is_string_dtype(df[column]):
            df[column] = df[column].map(_json_cell)
    return df


# --------------------------------------------------------------------------------------------
# Tables on record: results/reference (scripts/record_reference.py)
# --------------------------------------------------------------------------------------------

CONFIG_PREFIXES = ("name", "task.", "model.", "algo.", "data.", "train.", "logger.",
                   "results_dir", "state_lr_source")


def slim_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    """The metrics table without its config columns (one join away, in the run table)."""
    keep = [c for c in metrics.columns if c == "run_id" or not c.startswith(CONFIG_PREFIXES)]
    return metrics[keep]


def record(experiment: str, scale: str, tables: Path, out: Path) -> list[Path]:
    """Put `<tables>/<experiment>-<scale>.csv` on record in `out` (scripts/record_reference.py,
    `make reference`): the run table verbatim but portable, the metrics slimmed to run id +
    metrics, each run's arrays.npz under `out`/../runs/; returns the files written.
    ValueError (one line) when a table is missing."""
    runs = tables / f"{experiment}-{scale}.csv"
    metrics = tables / f"{experiment}-{scale}-metrics.csv"
    for path in (runs, metrics):
        if not path.is_file():
            raise ValueError(f"no table {path}: run `make collect EXP={experiment} "
                             f"SCALE={scale}` first")
    written = [out / runs.name, out / metrics.name]
    as_text = pd.read_csv(runs, dtype=str, keep_default_na=False)  # every other cell verbatim
    atomic_write_text(written[0], portable_table(as_text).to_csv(index=False))
    atomic_write_text(written[1], slim_metrics(pd.read_csv(metrics)).to_csv(index=False))
    return written + copy_arrays(pd.read_csv(runs)["run_id"], tables.parent / "runs",
                                 out.parent / "runs")


def copy_arrays(run_ids, runs_dir: Path, out_runs: Path) -> list[Path]:
    """Each run's arrays.npz (diagnostic runs have one) → out_runs/<run_id>/arrays.npz,
    through a temporary name and a rename (a crash never leaves a torn array file)."""
    written = []
    for rid in run_ids:
        source = runs_dir / str(rid) / ARRAYS_FILE
        if not source.is_file():
            continue
        target = out_runs / str(rid) / ARRAYS_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".tmp")
        shutil.copyfile(source, partial)
        os.replace(partial, target)
        written.append(target)
    return written
