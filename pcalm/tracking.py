"""Experiment tracking (Weights & Biases) behind one small interface.

Results on disk (``pcalm.results``) are the source of truth and are always written; a tracker
only mirrors them for live dashboards. So wandb is off by default, imported only when asked
for, and never needed for anything to work.

Mode precedence (``logger.mode`` in the config vs the ``WANDB_MODE`` environment variable):

1. ``logger.mode == "none"`` → no tracking at all, whatever ``WANDB_MODE`` says (wandb is not
   even imported).
2. Otherwise, an explicitly set ``WANDB_MODE`` wins over ``logger.mode`` (e.g. a cluster
   without internet exports ``WANDB_MODE=offline``, or ``disabled`` to silence a sweep whose
   configs say ``online``). We read it ourselves and pass it as ``mode=``: an explicit
   ``mode=`` would override the variable, and wandb reads its environment only once per
   process (at its first ``wandb.setup``), so a later change would otherwise go unseen.
3. Otherwise ``logger.mode`` ("offline" or "online") is passed to ``wandb.init``.

The run id is the wandb run id with ``resume="allow"``, so a requeued job continues its run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MODES = ("none", "offline", "online")
DEFAULT_PROJECT = "pcalm"


class Tracker:
    """What the training loop may call. Use as a context manager, or call ``finish`` in a
    ``finally`` block, so the tracked run is closed even when training fails."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record ``metrics`` at training step ``step`` (steps must not decrease)."""
        raise NotImplementedError

    def summary(self, d: Mapping[str, Any]) -> None:
        """Record final (one-per-run) values."""
        raise NotImplementedError

    def finish(self, exit_code: int = 0) -> None:
        """Close the run; ``exit_code != 0`` marks it failed. Safe to call twice."""
        raise NotImplementedError

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


class NullTracker(Tracker):
    """Tracks nothing (``logger.mode == "none"``)."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        pass

    def summary(self, d: Mapping[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class WandbTracker(Tracker):
    """Forwards to one wandb run object (never to the global ``wandb.run``, so several
    trackers can be open in one process)."""

    def __init__(self, run: Any):
        self.run = run

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(dict(metrics), step=int(step))

    def summary(self, d: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(dict(d))

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            run, self.run = self.run, None  # idempotent even if finish itself raises
            run.finish(exit_code=exit_code)


def _import_wandb(mode: str) -> Any:
    """Import wandb, or fail with one line telling how to get it."""
    try:
        import wandb
    except ImportError:
        raise ImportError(
            f"logger.mode={mode!r} needs the wandb package, which is not installed: "
            "pip install wandb (or set logger.mode=none)"
        ) from None
    return wandb


def open_tracker(
    logger_cfg: Mapping[str, Any],
    run_id: str,
    run_name: str,
    group: str | None,
    config: Mapping[str, Any],
    run_dir: str | os.PathLike,
) -> Tracker:
    """Open the tracker that ``logger_cfg["mode"]`` asks for (see module docstring).

    wandb files go to ``<run_dir>/wandb/`` (e.g. ``offline-run-<time>-<run_id>/``). Project and
    entity come from ``logger_cfg``, else ``WANDB_PROJECT`` / ``WANDB_ENTITY``, else "pcalm" /
    your default entity. wandb is made quiet (``WANDB_SILENT=true``) unless you set it.
    """
    mode = logger_cfg.get("mode", "none")
    if mode not in MODES:
        raise ValueError(f"logger.mode={mode!r} is not one of {', '.join(MODES)}")
    if mode == "none":
        return NullTracker()

    os.environ.setdefault("WANDB_SILENT", "true")
    wandb = _import_wandb(mode)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=logger_cfg.get("project") or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
        entity=logger_cfg.get("entity") or os.environ.get("WANDB_ENTITY") or None,
        group=group,
        name=run_name,
        id=run_id,
        resume="allow",
        config=dict(config),
        mode=os.environ.get("WANDB_MODE") or mode,
        dir=str(run_dir),
        reinit=_reinit(wandb),
    )
    return WandbTracker(run)


def _reinit(wandb: Any) -> str | bool:
    """The ``reinit`` value that lets one process hold several runs.

    wandb >= 0.19.10: "create_new" gives each call its own run, so sequential or concurrent
    runs (e.g. several models trained in one process) never get a previous run back; the
    default, "return_previous", would silently reuse an unfinished one. Older wandb only knows
    ``True`` (finish the previous run, then start a new one).
    """
    try:
        version = tuple(int(part) for part in wandb.__version__.split(".")[:3])
    except (AttributeError, ValueError):
        return "create_new"  # a dev/rc build: assume it is recent
    return "create_new" if version >= (0, 19, 10) else True
