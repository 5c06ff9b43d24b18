"""Run identity and run folders on disk (tables of finished runs: pcalm.analysis.tables).

One run = one folder ``<results_dir>/runs/<run_id>/`` holding

- ``config.yaml``   the full config (including the keys that do not change the numbers);
- ``metrics.csv``   one row per evaluation, rewritten whole at each evaluation;
- ``checkpoint.pt`` the latest resumable state, deleted once the run is complete;
- ``summary.json``  the final numbers, written LAST. Its presence marks the run complete.

Every file is written atomically (temp file in the same directory, fsync, ``os.replace``), so
a job killed at any instant leaves either the old file or the new one, never half of one.
A folder without a valid ``summary.json`` (a JSON object whose ``status`` is ``complete`` or
``diverged``) is incomplete and gets re-run; temp files a kill left behind are removed when
the folder is prepared again. Whoever trains a run holds its lock (``RunLock``: an exclusive
``flock`` on ``<results_dir>/locks/<run_id>.lock``, released by the kernel however the process
ends), so two sweeps on one results folder never train the same run at once.

Nothing here imports Hydra: configs are plain nested dicts. torch is imported lazily (only the
checkpoint functions need it) so that table building and plotting stay light.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pcalm.atomic import atomic_torch_save, atomic_write_json, atomic_write_text

# Dotted config keys that do not change the numbers, so two configs differing only here are the
# same run. A key names its whole subtree ("logger" drops the whole logger section).
NON_NUMERIC_KEYS: tuple[str, ...] = (
    "name",
    "state_lr_source",  # where algo.state_lr came from; the value itself is in the id
    "state_lr_multiple",  # k of `algo.state_lr: table*k`; the value k/λ_max is in the id
    "data.root",
    "data.mirrors",  # where files come from; the MD5s checked on download and load fix what
    "train.device",
    "train.threads",
    "train.progress",
    "train.checkpoint_every",
    "train.compile",
    "logger",
    "results_dir",
    "hydra",
    "sweep",
    "launcher",
)

RUN_ID_LENGTH = 12
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
METRICS_HASH = "metrics_sha256"  # summary key: the SHA-256 of the final metrics.csv
CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "summary.json"
ARRAYS_FILE = "arrays.npz"
LOCKS_DIR = "locks"
SUMMARY_STATUSES = ("complete", "diverged")  # what a finished run's summary.json says


# --------------------------------------------------------------------------------------------
# Run identity
# --------------------------------------------------------------------------------------------


def plain(obj: Any) -> Any:
    """Return ``obj`` as plain JSON/YAML types: dicts with str keys, lists, scalars.

    Tuples (and other sequences, e.g. an OmegaConf ListConfig) become lists and paths become
    strings, so YAML/JSON writers and the hash see the same thing whatever container type the
    caller happened to build.
    """
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        return [plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item) and not isinstance(obj, (str, bytes)):
        return obj.item()  # numpy / torch scalars
    return obj


def _normalise_numbers(obj: Any) -> Any:
    """Turn integral floats into ints so ``1`` and ``1.0`` hash alike.

    bool is left alone (it is an int subclass, but ``True`` and ``1`` are different settings).
    Non-integral floats keep their exact value: json writes the shortest round-trip repr, so
    0.25 and 0.2500001 hash differently, as they should.
    """
    if isinstance(obj, dict):
        return {k: _normalise_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_normalise_numbers(v) for v in obj]
    if isinstance(obj, float) and math.isfinite(obj) and obj.is_integer():
        return int(obj)
    return obj


def _drop_keys(config: Mapping, dotted_keys: Iterable[str]) -> dict:
    """Return a copy of ``config`` without the given dotted keys (each with its subtree)."""
    out = plain(config)
    for key in dotted_keys:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def canonical_json(config: Mapping) -> str:
    """The canonical text a run id is hashed from: numeric keys only, sorted, compact."""
    numeric = _normalise_numbers(_drop_keys(config, NON_NUMERIC_KEYS))
    return json.dumps(numeric, sort_keys=True, separators=(",", ":"), allow_nan=True)


def run_id(config: Mapping) -> str:
    """Short sha256 (12 hex digits) of the config's number-changing part.

    Unknown keys count as number-changing: forgetting to list a cosmetic key only costs a
    re-run, while wrongly ignoring a real one would silently merge two different runs.
    """
    digest = hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()
    return digest[:RUN_ID_LENGTH]


# --------------------------------------------------------------------------------------------
# Arrays a diagnostic task stored
# --------------------------------------------------------------------------------------------


def load_arrays(folder: str | os.PathLike) -> dict:
    """The arrays a diagnostic task stored in a run folder (``arrays.npz``), as a dict."""
    import numpy as np

    with np.load(Path(folder) / ARRAYS_FILE) as data:
        return {k: data[k] for k in data.files}


# --------------------------------------------------------------------------------------------
# Run folders
# --------------------------------------------------------------------------------------------


def read_json(path: Path) -> Any | None:
    """Parsed JSON at ``path``, or None if it is absent or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_summary(obj: Any) -> bool:
    """True iff ``obj`` is a finished run's summary: a dict whose ``status`` is one of
    SUMMARY_STATUSES (``[]``, ``{}`` or any other JSON means the run is incomplete)."""
    return isinstance(obj, dict) and obj.get("status") in SUMMARY_STATUSES


def is_valid(summary: Mapping) -> bool:
    """True iff a finished run's numbers can back a claim: it did not diverge and, if it
    reports a test accuracy, that accuracy is a finite number. Tables carry this as ``valid``,
    so a diverged run or a missing accuracy shows wherever the table goes."""
    if summary.get("status") != "complete" or summary.get("diverged") is True:
        return False
    acc = summary.get("test_acc", 0.0)
    return _is_number(acc) and math.isfinite(acc)


class ResultsDirError(ValueError):
    """A results folder that cannot hold results; the message is one line."""


def check_results_dir(results_dir: str | os.PathLike) -> Path:
    """``results_dir`` (as a Path), after checking that a file can be written in it.

    ResultsDirError (one line naming the path, what is wrong and what is allowed) for a path
    that is a file, read-only, or anywhere no folder can be made (e.g. under /proc). Folders
    made for the check are removed again: a check leaves nothing behind.
    """
    path = Path(results_dir).expanduser()
    allowed = "allowed: a folder you can write to (results_dir=... or PCALM_RESULTS)"
    made = [p for p in (path, *path.parents) if not p.exists()]
    blocking = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        what = "it is a file" if blocking == path else f"{str(blocking)!r} is a file"
        raise ResultsDirError(f"bad value results_dir={str(path)!r}: {what}; {allowed}")
    step = "cannot make the folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        step = "cannot write in it"
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ResultsDirError(f"bad value results_dir={str(path)!r}: {step} ({reason}); "
                              f"{allowed}") from None
    finally:
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
    return path


def inside(results_dir: str | os.PathLike, *parts: str) -> Path:
    """``results_dir/parts...``, refused (ResultsDirError) if it would lie outside
    ``results_dir`` (a name such as ``../../x``): every file pcalm writes stays under it."""
    root = Path(results_dir).expanduser().resolve()
    path = root.joinpath(*parts).resolve()
    if path != root and root not in path.parents:
        raise ResultsDirError(f"bad path {'/'.join(parts)!r}: it leaves results_dir {str(root)!r};"
                              " allowed: names of letters, digits, '_', '-' and '.'")
    return path


def confined(results_dir: str | os.PathLike, path: Path) -> Path:
    """``path`` if neither it nor a folder between it and ``results_dir`` is a symlink, nor a
    file where a folder belongs; else ResultsDirError (one line). What pcalm writes or deletes
    in a run folder or a lock must not land at a symlink's target outside results_dir."""
    root = Path(results_dir)
    node = path
    while node != root and root in node.parents:
        if node.is_symlink():
            raise ResultsDirError(f"refusing {path}: {node} is a symlink; allowed: plain "
                                  "folders and files under results_dir")
        node = node.parent
    inside(root, *path.relative_to(root).parts)
    return path


class RunLock:
    """The exclusive lock of one run, taken by the process that trains it.

    ``fcntl.flock`` on ``<results_dir>/locks/<run_id>.lock``: the kernel drops it when its
    holder exits, killed or not, so a lock is never stale. The lock file itself stays (removing
    it would let two processes lock two different files of one name). Without fcntl (Windows)
    every acquire succeeds: there, one sweep per results folder at a time.
    """

    def __init__(self, results_dir: str | os.PathLike, rid: str):
        self.results_dir = Path(results_dir)
        self.path = self.results_dir / LOCKS_DIR / f"{rid}.lock"
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; False (without waiting) if another process holds it and not
        ``blocking``."""
        try:
            import fcntl
        except ImportError:
            return True
        confined(self.results_dir, self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_NOFOLLOW: a planted symlink must not create or lock a file elsewhere
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as err:
            raise ResultsDirError(f"cannot open the lock {self.path} ({err.strerror}): a lock "
                                  "must be a plain file under results_dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _rows_to_csv(rows: list[Mapping]) -> str:
    """CSV text for ``rows``; columns = union of keys in first-seen order, blanks for gaps."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class RunFolder:
    """The folder of one run: ``<results_dir>/runs/<run_id>``, and its files' life cycle.

    Life cycle: ``prepare()`` → ``write_metrics()``/``save_checkpoint()`` as training goes →
    ``write_summary()`` last (which also deletes the checkpoint). ``exists_complete()`` lets
    a sweep skip finished runs.
    """

    def __init__(self, results_dir: str | os.PathLike, config: Mapping):
        self.config = plain(config)
        self.id = run_id(self.config)
        self.results_dir = Path(results_dir)
        self.path = self.results_dir / "runs" / self.id

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> RunFolder:
        """The RunFolder of an existing folder, read from its ``config.yaml``.

        The folder name stays the id even if the stored config now hashes differently (e.g.
        after NON_NUMERIC_KEYS changed), so the table keeps pointing at files that exist.
        """
        path = Path(path)
        config = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8")) or {}
        folder = cls(path.parent.parent, config)
        if folder.id != path.name:
            warnings.warn(
                f"{path}: config.yaml hashes to {folder.id}, not the folder name; "
                "using the folder name as the run id",
                stacklevel=2,
            )
        folder.id, folder.path = path.name, path
        return folder

    # file locations -------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    # life cycle -----------------------------------------------------------------------------
    def exists_complete(self) -> bool:
        """True iff ``summary.json`` holds a valid summary (``is_summary``): the run finished
        and need not re-run. Absent, torn, ``[]`` or any other JSON: incomplete."""
        return is_summary(read_json(self.summary_path))

    def prepare(self) -> RunFolder:
        """Create the folder and write the full config (cosmetic keys included) to config.yaml.

        Temp files of atomic writes that a kill interrupted (``.metrics.csv.*.tmp`` ...) are
        removed: only the process holding the run's lock prepares its folder, so none of them
        is being written. A folder that is a symlink, or lies outside results_dir through one,
        is refused (ResultsDirError) before anything is written or removed in it.
        """
        confined(self.results_dir, self.path)
        if self.path.exists() and not self.path.is_dir():
            raise ResultsDirError(f"refusing {self.path}: a file where a run folder belongs; "
                                  "move it away and run again")
        self.path.mkdir(parents=True, exist_ok=True)
        confined(self.results_dir, self.path)  # a symlink planted meanwhile
        for name in (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, SUMMARY_FILE):
            target = self.path / name
            if target.is_symlink() or (target.exists() and not target.is_file()):
                raise ResultsDirError(f"refusing {target}: not a plain file (a folder or a "
                                      "symlink); move it away and run again")
        for stray in self.path.glob(".*.tmp"):
            stray.unlink(missing_ok=True)
        try:
            atomic_write_text(self.config_path, yaml.safe_dump(self.config, sort_keys=False))
        except BaseException:  # a full disk: no empty folder stays behind
            self.discard_if_bare()
            raise
        return self

    def discard_if_bare(self) -> None:
        """Remove the folder if it holds nothing but ``config.yaml`` (a run that failed before
        writing anything), so a failure never leaves an empty-looking run behind. Never
        through a symlink: what lies outside results_dir is not ours to remove."""
        try:
            confined(self.results_dir, self.path)
            names = {p.name for p in self.path.iterdir()}
        except (ResultsDirError, OSError):
            return
        if names <= {CONFIG_FILE}:
            with contextlib.suppress(OSError):
                self.config_path.unlink(missing_ok=True)
                self.path.rmdir()

    def write_metrics(self, rows: list[Mapping]) -> None:
        """Rewrite ``metrics.csv`` with all rows so far (few rows, so rewriting is cheap and
        a crash can never leave a torn last line)."""
        atomic_write_text(self.metrics_path, _rows_to_csv(rows))

    def save_checkpoint(self, state: Mapping) -> None:
        """Save the resumable training state to ``checkpoint.pt`` atomically."""
        atomic_torch_save(self.checkpoint_path, dict(state))

    def load_checkpoint(self) -> dict | None:
        """The saved training state, or None if there is none or it cannot be read.

        A corrupt checkpoint only costs a restart, so it warns instead of crashing the job.
        ``weights_only=True``: a checkpoint holds only tensors and plain Python values (ints,
        floats, strings, lists, dicts), so nothing in a results folder (shared, or planted) can
        run code when it is loaded — a pickle that tries is refused, with a warning, and the
        run starts over. Tensors land on the CPU; the caller moves them.
        """
        if not self.checkpoint_path.exists():
            return None
        import torch

        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as err:  # any unreadable file means "start over"
            warnings.warn(
                f"{self.checkpoint_path}: unreadable checkpoint ({type(err).__name__}: {err}); "
                "starting the run from scratch",
                stacklevel=2,
            )
            return None
        if not isinstance(state, dict):
            warnings.warn(f"{self.checkpoint_path}: not a dict; ignoring it", stacklevel=2)
            return None
        return state

    def write_summary(self, summary: Mapping) -> None:
        """Write ``summary.json`` (the completion mark, so LAST), then drop the checkpoint.
        It records the SHA-256 of the run's final ``metrics.csv`` (`metrics_sha256`), so that
        another run's file copied in later is caught (`audit_run`)."""
        summary = dict(summary)
        if self.metrics_path.is_file():
            summary[METRICS_HASH] = file_sha256(self.metrics_path)
        atomic_write_json(self.summary_path, summary)
        self.checkpoint_path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"


# --------------------------------------------------------------------------------------------
# Checking a run folder before it reaches a table
# --------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def audit_run(folder: Path, summary: Mapping) -> str | None:
    """Why the finished-looking run in ``folder`` cannot be trusted, or None if it can.

    A table must hold only what training wrote, so a folder is refused when
    - it is a symlink (its files live outside results_dir);
    - its ``config.yaml`` is missing, not a mapping, or does not hash to the folder name
      (edited after the run: the numbers are not those of the config);
    - its summary has wrong types or ranges: ``diverged`` not a bool matching ``status``;
      ``steps`` not a whole number >= 0; a trained run's ``test_acc`` not a number, or a
      ``complete`` run's not finite in [0, 1];
    - a trained run's ``metrics.csv`` is missing, torn, header-only or another run's: its
      SHA-256 must be the summary's ``metrics_sha256`` (where recorded); it must have ``step``
      and ``test_acc`` columns, whole increasing steps, and a complete run's last row must be
      at the summary's ``steps`` with the summary's ``test_acc``.
    """
    if folder.is_symlink():
        return "the run folder is a symlink"
    try:
        config = yaml.safe_load((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return f"{CONFIG_FILE} is missing or unreadable"
    if not isinstance(config, dict):
        return f"{CONFIG_FILE} is not a mapping"
    found = run_id(config)
    if found != folder.name:
        return f"{CONFIG_FILE} hashes to {found}, not to the folder name (edited?)"
    reason = _audit_summary(summary, config)
    if reason is None and _task_name(config) == "train":
        reason = _audit_metrics(folder / METRICS_FILE, summary)
    return reason


def _task_name(config: Mapping) -> str:
    task = config.get("task")
    return task.get("name", "train") if isinstance(task, Mapping) else "train"


def _audit_summary(summary: Mapping, config: Mapping) -> str | None:
    diverged = summary.get("diverged", summary["status"] == "diverged")
    if not isinstance(diverged, bool) or diverged != (summary["status"] == "diverged"):
        return f"{SUMMARY_FILE}: diverged={diverged!r} does not match status={summary['status']!r}"
    steps = summary.get("steps", 0)
    if not _is_number(steps) or not math.isfinite(steps) or steps < 0 or steps != int(steps):
        return f"{SUMMARY_FILE}: steps={steps!r} is not a whole number >= 0"
    if _task_name(config) != "train":
        return None
    acc = summary.get("test_acc")
    if not _is_number(acc):
        return f"{SUMMARY_FILE}: test_acc={acc!r} is not a number"
    if not diverged and not (math.isfinite(acc) and 0 <= acc <= 1):
        return f"{SUMMARY_FILE}: test_acc={acc!r} of a complete run is not in [0, 1]"
    return None


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _audit_metrics(path: Path, summary: Mapping) -> str | None:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return f"{METRICS_FILE} is missing or unreadable"
    if not text.endswith("\n"):
        return f"{METRICS_FILE} is torn (no final newline)"
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "step" not in rows[0] or "test_acc" not in rows[0]:
        return f"{METRICS_FILE} has no rows with step and test_acc"
    try:
        steps = [int(r["step"]) for r in rows]
        last_acc = float(rows[-1]["test_acc"])
    except (TypeError, ValueError):
        return f"{METRICS_FILE} has a row whose step or test_acc is not a number"
    if any(b <= a for a, b in zip(steps, steps[1:])) or steps[0] < 0:
        return f"{METRICS_FILE}: steps are not increasing"
    if summary["status"] == "complete":
        if "steps" in summary and steps[-1] != summary["steps"]:
            return (f"{METRICS_FILE} ends at step {steps[-1]}, the summary at step "
                    f"{summary['steps']} (another run's, or torn)")
        if not math.isclose(last_acc, summary["test_acc"], rel_tol=1e-9, abs_tol=1e-12):
            return (f"{METRICS_FILE}'s last test_acc {last_acc!r} is not the summary's "
                    f"{summary['test_acc']!r} (another run's?)")
    recorded = summary.get(METRICS_HASH)  # runs written before it was recorded have none
    if recorded is not None and recorded != hashlib.sha256(text.encode("utf-8")).hexdigest():
        return (f"{METRICS_FILE} is not the file this run wrote (its SHA-256 differs from the "
                f"summary's {METRICS_HASH}: another run's, or edited)")
    return None


def iter_run_folders(results_dir: str | os.PathLike = "results") -> Iterator[RunFolder]:
    """Every run folder (complete or not) under ``<results_dir>/runs``, as RunFolder objects."""
    runs_dir = Path(results_dir) / "runs"
    if not runs_dir.is_dir():
        return
    for path in sorted(runs_dir.iterdir()):
        if (path / CONFIG_FILE).is_file():
            yield RunFolder.from_path(path)
