"""Experiment tracking (Weights & Biases) behind one small interface.

Results on disk (``pcalm.runs.folder``) are the source of truth and are always written; a tracker
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

What a run carries (``run_meta``): tags ``algo:<name>``, ``act:<activation>``, ``N:<width>``,
``L:<depth>``, ``data:<dataset>``, ``scale:<scale>``, ``exp:<experiment>``; ``job_type`` = the
task (``train``, or a figure's diagnostic such as ``credit_traces``); ``group`` =
``<experiment>-<scale>`` (``logger.group`` overrides it); the nested config (wandb shows it
flattened: ``model.width``, ``algo.name``, ...). Tags accumulate: every experiment that opens
a run adds its tags to those recorded in ``<run_dir>/wandb/pcalm-tags.json`` and the run is
opened with the union (wandb replaces a run's tags by the list it is given), so one grid cell
reached from two experiments is one wandb run with both ``exp:`` tags (it stays in the group
it was first tracked in; ``experiments/dashboard.py`` adds the tag to runs another experiment
trained). The figure's summary
run (``open_summary_run``, ``experiments/dashboard.py``) holds the figure, its table and the
table's CSV as an artifact.

``logger=online`` without an API key or without a network fails in one line (``TrackingError``)
suggesting ``logger=offline``; the time wandb may take to reach its server is
``PCALM_WANDB_INIT_TIMEOUT`` seconds (default 20).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MODES = ("none", "offline", "online")
DEFAULT_PROJECT = "pcalm"
TAGS_FILE = "pcalm-tags.json"  # under <run_dir>/wandb/: every tag the run was ever opened with
# under <run_dir>/wandb/: the run's whole history and summary are in wandb (pcalm/runs/wandb_log.py)
LOGGED_FILE = "pcalm-logged.json"
INIT_TIMEOUT_ENV = "PCALM_WANDB_INIT_TIMEOUT"
DEFAULT_INIT_TIMEOUT_S = 20.0
LAYER_KEY = "grad_cosine/layer_{:02d}"  # one metric per layer (1 = input layer)


class TrackingError(ValueError):
    """wandb could not start a run (no key, no network): one line, suggesting what to do."""


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

    def note(self, d: Mapping[str, Any]) -> None:
        pass

    def log_figure(self, key: str, png: str | os.PathLike) -> None:
        pass

    def log_table(self, key: str, csv_path: str | os.PathLike, artifact: str,
                  extra_files: tuple = ()) -> None:
        pass


class WandbTracker(Tracker):
    """Forwards to one wandb run object (never to the global ``wandb.run``, so several
    trackers can be open in one process)."""

    def __init__(self, run: Any, run_dir: Path | None = None):
        self.run = run
        self.run_dir = run_dir  # where pcalm.runs.wandb_log marks a run wholly logged
        self.summarised = False

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(dict(metrics), step=int(step))

    def summary(self, d: Mapping[str, Any]) -> None:
        """Final values into the run summary; the gradient alignment (measured once, after
        training) also as metrics at the last step: ``grad_cosine``, ``grad_rel_error`` and
        one ``grad_cosine/layer_NN`` per layer, plus a ``grad_cosine_per_layer`` Table."""
        if self.run is None:
            return
        self.summarised = True
        d = dict(d)
        layers = d.pop("grad_cosine_per_layer", None)
        metrics = {k: d[k] for k in ("grad_cosine", "grad_rel_error") if k in d}
        if layers is not None:
            metrics.update({LAYER_KEY.format(i): float(c) for i, c in enumerate(layers, 1)})
        self.run.summary.update(d)  # nested (provenance): wandb shows provenance.commit etc.
        if metrics:
            import wandb

            if layers is not None:
                metrics["grad_cosine_per_layer"] = wandb.Table(
                    columns=["layer", "cosine"],
                    data=[[i, float(c)] for i, c in enumerate(layers, 1)])
            step = d.get("steps")
            self.run.log(metrics, **({"step": int(step)} if isinstance(step, int) else {}))
            self.run.summary.update({k: v for k, v in metrics.items()
                                     if k != "grad_cosine_per_layer"})

    def note(self, d: Mapping[str, Any]) -> None:
        """Plain values into the run summary (e.g. how many of a figure's runs are in wandb)."""
        if self.run is not None:
            self.run.summary.update(dict(d))

    def log_figure(self, key: str, png: str | os.PathLike) -> None:
        """A figure (PNG) as an image."""
        import wandb

        self.run.log({key: wandb.Image(str(png))})

    def log_table(self, key: str, csv_path: str | os.PathLike, artifact: str,
                  extra_files: tuple = ()) -> None:
        """A collected table as a wandb Table, and its CSV file (with ``extra_files``, those
        that exist) as an artifact of type ``table``."""
        import pandas as pd
        import wandb

        frame = pd.read_csv(csv_path)
        frame = frame.astype(object).where(frame.notna(), None)  # NaN: empty cells
        self.run.log({key: wandb.Table(dataframe=frame)})
        art = wandb.Artifact(artifact, type="table")
        for path in (csv_path, *extra_files):
            if Path(path).is_file():
                art.add_file(str(path))
        self.run.log_artifact(art)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            run, self.run = self.run, None  # idempotent even if finish itself raises
            run_id = str(getattr(run, "id", ""))
            mode = str(getattr(getattr(run, "settings", None), "mode", ""))
            run.finish(exit_code=exit_code)
            if exit_code == 0 and self.summarised and self.run_dir is not None:
                mark_logged(self.run_dir, run_id, mode)  # its whole history and summary went


def in_wandb(run_dir: str | os.PathLike) -> bool:
    """Whether the run's whole history and summary went to wandb (online or offline)."""
    return (Path(run_dir) / "wandb" / LOGGED_FILE).is_file()


def mark_logged(run_dir: str | os.PathLike, run_id: str, mode: str) -> None:
    """Record that the run in ``run_dir`` is wholly in wandb (atomically)."""
    path = Path(run_dir) / "wandb" / LOGGED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"run_id": run_id, "mode": mode}), encoding="utf-8")
    os.replace(tmp, path)


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


def run_meta(config: Mapping[str, Any]) -> dict[str, Any]:
    """The wandb tags, job_type and group of a run config (see the module docstring)."""
    logger = config.get("logger") or {}
    experiment = str(config.get("name") or "default")
    scale = logger.get("scale")
    task = (config.get("task") or {}).get("name", "train")
    model, algo, data = (config.get(k) or {} for k in ("model", "algo", "data"))
    tags = [f"algo:{algo['name']}" if "name" in algo else None,
            f"act:{model['activation']}" if "activation" in model else None,
            f"N:{model['width']}" if "width" in model else None,
            f"L:{model['depth']}" if "depth" in model else None,
            f"data:{data['name']}" if "name" in data else None,
            f"scale:{scale}" if scale else None,
            f"exp:{experiment}"]
    group = logger.get("group") or (f"{experiment}-{scale}" if scale else experiment)
    return {"tags": [t for t in tags if t], "job_type": task, "group": group}


def recorded(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``{"tags": [...], "group": ...}``: what the run in ``run_dir`` was opened with so far
    (``{}`` if it was never tracked)."""
    path = Path(run_dir) / "wandb" / TAGS_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def recorded_tags(run_dir: str | os.PathLike) -> list[str]:
    """Every tag the run in ``run_dir`` was opened with so far (empty if never tracked)."""
    tags = recorded(run_dir).get("tags")
    return [str(t) for t in tags] if isinstance(tags, list) else []


def _record(run_dir: Path, tags: list[str], group: str | None) -> None:
    path = run_dir / "wandb" / TAGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"tags": tags, "group": group}), encoding="utf-8")
    os.replace(tmp, path)


# What the WANDB_MODE environment variable may say (wandb's own modes; "dryrun" is offline).
WANDB_ENV_MODES = ("online", "offline", "disabled", "dryrun")


def effective_mode(logger_cfg: Mapping[str, Any]) -> str:
    """none | offline | online | disabled: what a run with this logger section will do."""
    mode = logger_cfg.get("mode", "none")
    if mode not in MODES:
        raise ValueError(f"bad value logger.mode={mode!r}: allowed: {', '.join(MODES)}")
    if mode == "none":
        return "none"
    env = os.environ.get("WANDB_MODE")
    if env and env not in WANDB_ENV_MODES:
        raise ValueError(f"bad value WANDB_MODE={env!r} (environment): allowed: "
                         f"{', '.join(WANDB_ENV_MODES)}, or unset")
    return env or mode


def _init_timeout() -> float:
    text = os.environ.get(INIT_TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_INIT_TIMEOUT_S
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise TrackingError(f"bad value {INIT_TIMEOUT_ENV}={text!r}: allowed: seconds > 0")
    return value


def _init(wandb: Any, mode: str, **kwargs) -> Any:
    """``wandb.init``, any failure turned into one line that suggests ``logger=offline``."""
    timeout = _init_timeout()
    try:
        return wandb.init(mode=mode, settings=wandb.Settings(init_timeout=timeout), **kwargs)
    except Exception as err:  # wandb's UsageError, CommError, AuthenticationError, ...
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        first = lines[0] if lines else type(err).__name__
        if mode != "online":
            raise TrackingError(f"wandb could not start a {mode} run: {first}") from None
        if "api key" in first.lower() or "api_key" in first.lower() or "login" in first.lower():
            why = "no wandb API key (set WANDB_API_KEY or run `wandb login`)"
        elif any(w in first.lower() for w in ("timed out", "timeout", "deadline", "connect")):
            why = f"wandb's server not reached within {timeout:g} s ({first[:160]})"
        else:
            why = first[:200]
        raise TrackingError(f"logger=online: {why}; use logger=offline (runs stay in each run "
                            "folder; upload later with `make wandb-sync`)") from None


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
    ``group`` (the experiment name when ``logger.group`` is unset) gets ``-<scale>`` appended
    when ``logger.scale`` is known; tags and job_type come from ``run_meta(config)``.
    """
    if effective_mode(logger_cfg) == "none":
        return NullTracker()
    run_dir = Path(run_dir)
    meta = run_meta({**config, "logger": logger_cfg})
    scale = logger_cfg.get("scale")
    if not logger_cfg.get("group") and group and scale and not group.endswith(f"-{scale}"):
        group = f"{group}-{scale}"
    if not logger_cfg.get("group"):  # a run stays in the group it was first tracked in
        group = recorded(run_dir).get("group") or group or meta["group"]
    return _open_run(logger_cfg, run_dir, meta["tags"], group=group or meta["group"],
                     job_type=meta["job_type"], name=run_name, id=run_id, config=dict(config))


def _open_run(logger_cfg: Mapping[str, Any], run_dir: Path, tags, *, group: str,
              **init) -> Tracker:
    """One wandb run in ``run_dir``, opened with ``tags`` plus every tag it had before (wandb
    replaces a run's tags by the list it is given), resumed if it exists; records what it was
    opened with for the next time."""
    mode = effective_mode(logger_cfg)
    os.environ.setdefault("WANDB_SILENT", "true")
    wandb = _import_wandb(mode)
    run_dir.mkdir(parents=True, exist_ok=True)
    tags = sorted(set(recorded_tags(run_dir)) | set(tags))
    run = _init(
        wandb, mode,
        project=logger_cfg.get("project") or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
        entity=logger_cfg.get("entity") or os.environ.get("WANDB_ENTITY") or None,
        group=group, tags=tags, resume="allow", dir=str(run_dir), reinit=_reinit(wandb), **init,
    )
    _record(run_dir, tags, group)
    return WandbTracker(run, run_dir)


def summary_run_id(experiment: str, scale: str) -> str:
    """The wandb id of an experiment's summary run at one scale (stable: reruns continue it)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{experiment}-{scale}-summary")


def open_summary_run(logger_cfg: Mapping[str, Any], experiment: str, scale: str,
                     run_dir: str | os.PathLike, config: Mapping[str, Any] | None = None,
                     ) -> Tracker:
    """The dashboard entry point of an experiment at one scale: one wandb run (job_type
    ``figure``, same group as its runs, tags ``exp:``/``scale:``/``summary``) that holds the
    figure, the collected table and the table's CSV as an artifact."""
    if effective_mode(logger_cfg) == "none":
        return NullTracker()
    return _open_run(logger_cfg, Path(run_dir), {f"exp:{experiment}", f"scale:{scale}", "summary"},
                     group=logger_cfg.get("group") or f"{experiment}-{scale}", job_type="figure",
                     name=f"{experiment}-{scale}", id=summary_run_id(experiment, scale),
                     config=dict(config or {"experiment": experiment, "scale": scale}))


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
