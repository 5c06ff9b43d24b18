"""wandb after the fact: log finished run folders, and keep one clean wandb run per run id.

The run folder is the source of truth (``metrics.csv``: one row per evaluation;
``summary.json``: the final numbers), so everything training sends to wandb can be sent again
later from disk. ``log_finished_run`` does that for a run trained without a logger (or
tracked only in part): it opens the wandb run with the run id as its id, logs every row of
``metrics.csv`` once at its own step, then the summary, exactly as training would have.

Why one offline folder per id: wandb makes a new ``offline-run-<time>-<id>/`` each time a run
is opened offline (a requeued job, a figure adding its tags, a re-logged summary), and an
offline run that is opened again starts counting ``_step`` from zero. Syncing several such
folders of one id replays them one after another into the same run, so history can arrive
twice or be dropped as out of order. Hence:

- a run logged here is written whole into one fresh offline folder, and the run id's other
  not yet synced offline folders move to ``wandb/superseded/`` (kept, never synced);
- ``consolidate`` (run by ``make wandb-sync`` before uploading) does the same for every
  finished run that holds more than one unsynced offline folder, and keeps only the newest
  of a figure's summary runs (each is re-logged whole);
- ``pcalm-logged.json`` beside them says that the run's whole history and summary are in
  wandb (written when a tracked training run or a run logged here finishes), so a second
  ``make wandb-log`` does nothing.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from pcalm.runs.tracking import LOGGED_FILE, in_wandb, mark_logged  # noqa: F401  (re-exported)

SUPERSEDED_DIR = "superseded"  # under <run_dir>/wandb/: folders a clean one replaced


def _parse(offline: Path) -> tuple[str, str, int] | None:
    """(time, run id, n) of ``offline-run-<date>_<time>-<id>[-<n>]`` (wandb adds ``-<n>``
    when a run is opened twice within one second), or None."""
    match = re.fullmatch(r"offline-run-(\d{8}_\d{6})-(.+?)(?:-(\d+))?", offline.name)
    if match is None:
        return None
    return match.group(1), match.group(2), int(match.group(3) or 0)


def offline_folders(wandb_dir: str | os.PathLike, run_id: str) -> list[Path]:
    """The offline-run folders of ``run_id`` in ``wandb_dir``, oldest first."""
    found = [(p, _parse(p)) for p in Path(wandb_dir).glob("offline-run-*")]
    mine = [(parsed[0], parsed[2], p) for p, parsed in found if parsed and parsed[1] == run_id]
    return [p for _, _, p in sorted(mine)]


def run_id_of(offline: Path) -> str | None:
    """The run id in an offline folder's name."""
    parsed = _parse(offline)
    return parsed[1] if parsed else None


def is_synced(offline: Path) -> bool:
    """Whether ``wandb sync`` uploaded this offline folder (it leaves ``*.wandb.synced``)."""
    return any(offline.glob("*.wandb.synced"))


def unsynced_folders(wandb_dir: str | os.PathLike, run_id: str) -> list[Path]:
    return [f for f in offline_folders(wandb_dir, run_id) if not is_synced(f)]


def supersede(wandb_dir: str | os.PathLike, run_id: str, keep: Path | None) -> int:
    """Move ``run_id``'s unsynced offline folders other than ``keep`` to ``superseded/``
    (kept on disk; ``make wandb-sync`` never uploads them); returns how many moved."""
    moved = 0
    for folder in unsynced_folders(wandb_dir, run_id):
        if keep is not None and folder.resolve() == keep.resolve():
            continue
        target = Path(wandb_dir) / SUPERSEDED_DIR / folder.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(target))
        moved += 1
    return moved


def _metric_rows(metrics_csv: Path) -> list[dict]:
    """metrics.csv as the rows training logged (empty cells left out), in step order."""
    import pandas as pd

    if not metrics_csv.is_file():
        return []
    frame = pd.read_csv(metrics_csv)
    rows = []
    for record in frame.to_dict("records"):
        row = {k: v for k, v in record.items()
               if not (isinstance(v, float) and math.isnan(v))}
        if "step" in row:
            row["step"] = int(row["step"])
            rows.append(row)
    return sorted(rows, key=lambda r: r["step"])


def log_finished_run(folder, *, logger_cfg: Mapping | None = None, force: bool = False) -> str:
    """Log one finished run folder (a ``pcalm.runs.folder.RunFolder``) to wandb; returns
    ``logged``, ``already`` or ``incomplete``.

    ``logger_cfg`` defaults to the run's own logger section, in offline mode if it says
    ``none`` (``WANDB_MODE`` still wins, as everywhere). ``force`` logs it again even if it
    is marked as logged (``consolidate`` does, to replace several offline folders by one).
    """
    from pcalm.runs.folder import is_summary
    from pcalm.runs.folder import read_json as _read_json
    from pcalm.runs.runner import run_name
    from pcalm.runs.tracking import effective_mode, open_tracker

    config = folder.config
    summary = _read_json(folder.summary_path)
    if not is_summary(summary):
        return "incomplete"
    wandb_dir = folder.path / "wandb"
    if not force and in_wandb(folder.path) and len(unsynced_folders(wandb_dir, folder.id)) <= 1:
        return "already"
    logger = dict(logger_cfg or config.get("logger") or {})
    if logger.get("mode", "none") == "none":
        logger["mode"] = "offline"
    tracker = open_tracker(logger, folder.id, run_name(config),
                           logger.get("group") or config.get("name"), config, folder.path)
    with tracker:
        for row in _metric_rows(folder.metrics_path):
            tracker.log(row, step=row["step"])
        tracker.summary(summary)
    mode = effective_mode(logger)
    if mode == "offline":
        _flush_offline()
        newest = offline_folders(wandb_dir, folder.id)[-1:]
        supersede(wandb_dir, folder.id, newest[0] if newest else None)
    mark_logged(folder.path, folder.id, mode)
    return "logged"


def _flush_offline() -> None:
    """Let wandb's service write the offline files out before they are moved or read."""
    try:
        import wandb

        wandb.teardown()
    except Exception:  # an older wandb without teardown: its files are written on finish
        pass


def consolidate(results_dir: str | os.PathLike) -> tuple[int, int]:
    """Before a sync: one unsynced offline folder per run id. Returns (runs re-logged,
    summary-run folders superseded).

    A finished run with several unsynced offline folders (requeued, retagged) is logged again
    whole from its folder; of a figure's summary runs only the newest is kept.
    """
    from pcalm.runs.folder import RunFolder

    relogged = 0
    runs = Path(results_dir) / "runs"
    for run_dir in sorted(runs.glob("*/")) if runs.is_dir() else []:
        if len(unsynced_folders(run_dir / "wandb", run_dir.name)) <= 1:
            continue
        try:
            folder = RunFolder.from_path(run_dir)
        except (OSError, ValueError):
            continue  # not a run folder pcalm can read: leave it alone
        if log_finished_run(folder, force=True) == "logged":
            relogged += 1
    superseded = 0
    for wandb_dir in sorted((Path(results_dir) / "dashboard").glob("*/wandb")):
        ids = {run_id_of(f) for f in wandb_dir.glob("offline-run-*")} - {None}
        for rid in ids:
            unsynced = unsynced_folders(wandb_dir, rid)
            if len(unsynced) > 1:
                superseded += supersede(wandb_dir, rid, unsynced[-1])
    return relogged, superseded


def count_in_wandb(run_dirs: Iterable[str | os.PathLike]) -> int:
    """How many of these run folders are wholly in wandb."""
    return sum(in_wandb(d) for d in run_dirs)


# ------------------------------------------------------------------ a figure's summary run

FIGURES_DIR = Path(__file__).resolve().parents[2] / "figures"


def retag(configs: list[dict]) -> int:
    """Add this experiment's tags to grid runs tracked before under another (the same cell,
    so the same run: its wandb run is resumed once); returns how many."""
    from pcalm.runs.folder import RunFolder
    from pcalm.runs.runner import run_name  # imports torch: only when something is logged
    from pcalm.runs.tracking import open_tracker, recorded, run_meta

    count = 0
    for cfg in configs:
        folder = RunFolder(cfg["results_dir"], cfg)
        before = recorded(folder.path)
        if not before or not folder.exists_complete():
            continue  # never tracked (logger off when it trained), or not finished
        if set(run_meta(cfg)["tags"]) <= set(before.get("tags", [])):
            continue
        open_tracker(cfg["logger"], folder.id, run_name(cfg), before.get("group"), cfg,
                     folder.path).finish()
        count += 1
    return count


def log_figure_summary(scope, figure: Path | None = None) -> str:
    """An experiment's wandb summary run (experiments/dashboard.py, the last step of `make
    figureN`): its figure, its collected table as a wandb Table and an artifact, and how many
    of its finished runs are wholly in wandb. `scope` is the experiment's
    pcalm.sweeps.grid.TableScope (name, scale, label, configs). Returns the line to print; ""
    when the logger is off. ValueError (one line) when the table is not there yet."""
    from pcalm.runs.folder import RunFolder
    from pcalm.runs.tracking import effective_mode, open_summary_run, summary_run_id

    logger = scope.configs[0]["logger"]
    if effective_mode(logger) in ("none", "disabled"):
        return ""
    results = Path(scope.configs[0]["results_dir"])
    table = results / "tables" / f"{scope.label}.csv"
    if not table.is_file():
        raise ValueError(f"no table {table}: run `make collect EXP={scope.name} "
                         f"SCALE={scope.scale}` first")
    figure = figure or FIGURES_DIR / f"{scope.label}.png"
    retagged = retag(scope.configs)
    finished = [f for f in (RunFolder(c["results_dir"], c) for c in scope.configs)
                if f.exists_complete()]
    tracked = sum(in_wandb(f.path) for f in finished)
    counts = {"runs": len(finished), "runs_in_wandb": tracked}
    tracker = open_summary_run(logger, scope.name, scope.scale_label,
                               results / "dashboard" / scope.label,
                               {"experiment": scope.name, "scale": scope.scale,
                                "variant": scope.variant, **counts})
    with tracker:
        if figure.is_file():
            tracker.log_figure("figure", figure)
        tracker.log_table("runs", table, artifact=scope.label,
                          extra_files=(table.with_name(f"{scope.label}-metrics.csv"),))
        tracker.note(counts)
    # each summary run is logged whole: older unsynced copies would only replay into it
    wandb_dir = results / "dashboard" / scope.label / "wandb"
    rid = summary_run_id(scope.name, scope.scale_label)
    newest = unsynced_folders(wandb_dir, rid)[-1:]
    if newest:
        supersede(wandb_dir, rid, newest[0])
    shown = f"{figure.name} and " if figure.is_file() else ""
    again = f"; {retagged} runs of other experiments tagged" if retagged else ""
    missing = len(finished) - tracked
    rest = (f"; {missing} have no wandb history yet: `make wandb-log EXP={scope.name} "
            f"SCALE={scope.scale}` logs them") if missing else ""
    return (f"wandb ({effective_mode(logger)}): {shown}{table.name} in run "
            f"{scope.label}-summary, covering {len(finished)} runs of which {tracked} are in "
            f"wandb{again}{rest}")
