"""Atomic file output: a file is either its old content or its new one, never half of one.

Every writer writes a temp file in the target's directory (so ``os.replace`` is a rename within
one filesystem), fsyncs it, renames it over the target, and fsyncs the directory entry
(``fsync_dir``). Run folders, tables, manifests, caches and downloads all write through here.
torch and numpy are imported only by the writers that need them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any


def fsync_dir(directory: Path) -> None:
    """Persist a rename: fsync the directory entry (best effort; not possible on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _written_temp(path: Path, write: Callable[[IO], None], binary: bool) -> str:
    """A fsynced temp file beside ``path`` holding what ``write(fileobj)`` wrote; removed
    again if writing fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from colleagues
        mode = "wb" if binary else "w"
        with os.fdopen(fd, mode, **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # also KeyboardInterrupt / SystemExit: never leave the temp behind
        _remove(tmp)
        raise
    return tmp


def _remove(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], binary: bool) -> None:
    """Write ``path`` via ``write(fileobj)`` on a same-directory temp file, then rename.

    Same directory so ``os.replace`` is a rename within one filesystem, which is atomic. On any
    error the temp file is removed and the final name keeps its previous content (or absence).
    """
    path = Path(path)
    tmp = _written_temp(path, write, binary)
    try:
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_texts(files: Mapping[Path, str]) -> None:
    """Write several files as one: every new content goes to a temp file first (fsynced), and
    only when all are written are they renamed over their targets. A failure while writing
    (a full disk) removes the temps and leaves every target as it was — never a new table
    beside an old one. (The renames themselves allocate nothing.)"""
    temps: dict[Path, str] = {}
    try:
        for path, text in files.items():
            temps[Path(path)] = _written_temp(Path(path), lambda f, t=text: f.write(t), False)
        for path, tmp in temps.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps.values():
            _remove(tmp)
        raise
    for directory in {path.parent for path in temps}:
        fsync_dir(directory)


def _json_default(obj: Any) -> Any:
    """Let json write numpy/torch scalars and arrays, and paths, that summaries often hold."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (NaN/inf allowed, as Python does)."""

    def write(f: IO) -> None:
        json.dump(obj, f, indent=2, default=_json_default)
        f.write("\n")

    atomic_write(path, write, binary=False)


def atomic_save_arrays(path: str | os.PathLike, arrays: Mapping[str, Any]) -> None:
    """``numpy.savez`` the named arrays to ``path`` atomically (a task's traces, curves...)."""
    import numpy as np

    atomic_write(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}),
                  binary=True)


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically (torch imported only when needed)."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f), binary=True)
