"""Fetch MNIST / Fashion-MNIST's official files into a data root, once per machine.

    fetch("fashion_mnist", root, mirrors)   # no-op when the four files are there

Each missing file is downloaded as ``<root>/<MNIST|FashionMNIST>/raw/<name>.gz`` (torchvision's
layout, the ``.gz`` kept: pcalm.data reads it as it is), trying the mirrors in order until one
gives bytes whose *uncompressed* MD5 is the expected one (the same table pcalm.data enforces
when loading, so a file that lands here also loads). Safe for the concurrent jobs of a sweep:

- a file is written under a temporary name in the same folder and renamed into place only
  once complete and verified, so no reader ever sees a half-written file under its real name;
- downloads into one folder happen under an exclusive ``flock`` on ``raw/.download.lock``
  (the idea of pcalm.runs.folder.RunLock): the second process waits, finds the files present and
  downloads nothing.

Every failure is a :class:`pcalm.data.DataError` with one line: offline, it names the missing
files, each mirror tried and why it failed, and the offline ways to get the files.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

from pcalm.atomic import fsync_dir  # the one way this project persists a rename
from pcalm.data import (
    FOLDERS,
    MAX_IDX_BYTES,
    MD5,
    DataError,
    missing_files,
    official_size,
    raw_dir,
)

URL_SCHEMES = ("https://", "http://", "file://")
TIMEOUT_S = 30.0  # per connection attempt and per read: a dead mirror costs this much, once
# The whole download (every file, every mirror) ends by then, however slowly a mirror drips:
# the four official files are 55 MB at most, minutes on any working link.
DEADLINE_S = 1800.0
_CHUNK = 1 << 16
LOCK_NAME = ".download.lock"
FILE_MODE = 0o644  # a data file as any tool writes one under the usual umask
OFFLINE_HINT = (
    "offline: copy the files from a connected machine (`make data` there) and set PCALM_DATA "
    "(or data.root=) to the folder holding MNIST/raw and FashionMNIST/raw, or for Fashion-MNIST "
    "`apt-get install dataset-fashion-mnist` (found by itself); see docs/DATA.md"
)


class _Failed(Exception):
    """One mirror did not give a good file; the message is the reason, a few words."""


def check_mirrors(mirrors, key: str = "data.mirrors") -> list[str]:
    """`mirrors` as a list of URL strings, or DataError naming the bad value."""
    if isinstance(mirrors, (str, bytes)) or not isinstance(mirrors, Sequence):
        raise DataError(f"bad value {key}={mirrors!r}: allowed: a list of URLs "
                        f"({', '.join(URL_SCHEMES)}) of folders holding the .gz files, or []")
    for url in mirrors:
        if not isinstance(url, str) or not url.startswith(URL_SCHEMES):
            raise DataError(f"bad value {key} entry {url!r}: allowed: a URL starting with "
                            f"{', '.join(URL_SCHEMES)}")
    return list(mirrors)


def fetch(
    name: str,
    root: str | os.PathLike | None,
    mirrors: Sequence[str],
    files: Mapping[str, str] | None = None,
    *,
    timeout: float = TIMEOUT_S,
    deadline: float = DEADLINE_S,
    sizes: Mapping[str, int] | None = None,
    say: Callable[[str], None] | None = None,
) -> list[Path]:
    """Download the dataset's missing files into ``raw_dir(name, root)``; return the new paths.

    ``files`` maps each IDX base name to the MD5 of its uncompressed bytes (default: the
    official table ``pcalm.data.MD5``; tests pass their own). Files already present (plain or
    .gz, or in Debian's folder) are not fetched again, nor checked here: loading checks them.
    No ``mirrors`` (``data.mirrors: []``) turns downloading off.

    Bounded in time, size and memory: the whole call ends within ``deadline`` seconds (plus
    one ``timeout``); ``sizes`` maps each base name to its uncompressed size (default: the
    official sizes, ``pcalm.data.official_size``), and a mirror announcing or sending more
    than that (compressed, or after gunzip) is dropped as soon as it does. Each rejected
    mirror is said (``say``) with its reason before the next is tried. ``.part`` files a
    killed download left are removed once the folder's lock is held.
    """
    if name not in FOLDERS:
        raise DataError(f"nothing to download for dataset {name!r}: allowed: "
                        f"{', '.join(FOLDERS)}")
    files = dict(MD5[FOLDERS[name]] if files is None else files)
    mirrors = check_mirrors(mirrors)
    if not _missing(name, root, files):  # nothing to do but sweep up a dead download's part
        _remove_stale_parts(raw_dir(name, root), older_than=deadline + timeout)
        return []
    if not mirrors:
        return []  # downloads off ([]): the loader names what is missing
    say = say or _stderr
    folder = raw_dir(name, root)
    _make_folder(folder, name)
    ends = time.monotonic() + deadline
    with _folder_lock(folder, say):
        _remove_stale_parts(folder)
        todo = _missing(name, root, files)  # another process may have fetched them meanwhile
        limits = {b: (sizes or {}).get(b) or official_size(b) or MAX_IDX_BYTES for b in todo}
        return [_fetch_file(folder, base, files[base], mirrors, todo,
                            _Limits(timeout, ends, limits[base]), say) for base in todo]


@dataclass(frozen=True)
class _Limits:
    """What one file's download may take: seconds per read, the monotonic end of the whole
    download, and its uncompressed size (the compressed file may exceed it only by gzip's
    overhead on incompressible data)."""

    timeout: float
    ends: float
    size: int

    @property
    def compressed(self) -> int:
        return self.size + self.size // 1000 + 1024

    def left(self) -> float:
        return self.ends - time.monotonic()


def _remove_stale_parts(folder: Path, older_than: float = 0.0) -> None:
    """Only the holder of the folder's lock downloads, so every ``.part`` there is a dead
    download's (a SIGTERM or a kill mid-stream): remove them before they pile up. Without
    the lock (every file already there), only those older than `older_than` seconds: no
    download lives that long."""
    now = time.time()
    for stale in folder.glob(".*.part"):
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime >= older_than:
                stale.unlink()


def _missing(name: str, root, files: Mapping[str, str]) -> list[str]:
    """What to fetch into raw/: nothing if every file is found (raw/ or Debian's folder),
    else all that raw/ lacks, since the loader reads a dataset from one folder only."""
    if not [b for b in missing_files(name, root) if b in files]:
        return []
    folder = raw_dir(name, root)
    return [b for b in files
            if not ((folder / b).is_file() or (folder / f"{b}.gz").is_file())]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _make_folder(folder: Path, name: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {folder} to download {name} into: "
                        f"{exc.strerror or exc}; {OFFLINE_HINT}") from None


@contextlib.contextmanager
def _folder_lock(folder: Path, say: Callable[[str], None]) -> Iterator[None]:
    """Hold the folder's download lock (kernel flock: dropped when its holder dies, however)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the atomic rename still keeps files whole
        yield
        return
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another process downloading into {folder}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the flock


def _fetch_file(folder: Path, base: str, md5: str, mirrors: list[str], todo: list[str],
                limits: _Limits, say: Callable[[str], None]) -> Path:
    """Try each mirror in turn for ``base``.gz; DataError (one line) when none gives it."""
    tried, rejected = [], []
    for mirror in mirrors:
        url = mirror + ("" if mirror.endswith("/") else "/") + f"{base}.gz"
        try:
            path = _download(url, folder / f"{base}.gz", md5, limits, say)
        except _Failed as why:
            tried.append(f"{mirror} ({why})")
            rejected.append(f"rejected {url}: {why}; trying the next")
            continue
        for line in rejected:  # a later mirror worked: say why the earlier ones did not
            say(line)
        return path
    names = ", ".join(f"{b}.gz" for b in todo[todo.index(base):])
    raise DataError(f"cannot download {folder.parent.name} files {names} into {folder}: "
                    f"tried {'; '.join(tried)}; {OFFLINE_HINT}")


def _download(url: str, dest: Path, md5: str, limits: _Limits,
              say: Callable[[str], None]) -> Path:
    """Fetch ``url`` to a temporary file beside ``dest``, verify it, rename it to ``dest``."""
    if limits.left() <= 0:
        raise _Failed("the download's deadline passed")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        os.chmod(tmp, FILE_MODE)  # mkstemp makes it private (0600); others' jobs read it too
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, limits, say)
            out.flush()
            os.fsync(out.fileno())  # the bytes reach the disk before the name does
        found = _gunzip_md5(Path(tmp), limits.size)
        if found != md5:
            raise _Failed(f"MD5 mismatch: {found} of the uncompressed file, expected {md5}")
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        return dest
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # gone already after a successful rename


def _stream(url: str, out, limits: _Limits, say: Callable[[str], None]) -> None:
    """Copy the body of ``url`` into ``out``, with a progress bar; _Failed if short, refused,
    larger than ``limits.compressed`` (announced or sent) or past the deadline.

    ``read1`` returns what one receive brings, so a mirror dripping a byte at a time is
    checked against the deadline at every byte, not only when a whole chunk has arrived."""
    from tqdm import tqdm

    cap = limits.compressed
    try:
        with urlopen(url, timeout=max(0.01, min(limits.timeout, limits.left()))) as response:
            total = _content_length(response)
            if total is not None and total > cap:
                raise _Failed(f"it announces {total} bytes, more than the {cap} expected")
            size = f" ({_megabytes(total)})" if total else ""
            say(f"downloading {url}{size}")
            # disable=None: a bar on a terminal, nothing in a SLURM log or a test's pipe.
            with tqdm(total=total, unit="B", unit_scale=True, leave=False, disable=None,
                      file=sys.stderr) as bar:
                written = 0
                read = getattr(response, "read1", response.read)
                while chunk := read(_CHUNK):
                    out.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
                    if written > cap:
                        raise _Failed(f"it sent more than the {cap} bytes expected")
                    if limits.left() <= 0:
                        raise _Failed(f"too slow: {written} bytes when the download's "
                                      "deadline passed")
    except HTTPError as exc:
        raise _Failed(f"HTTP {exc.code}") from None
    except URLError as exc:
        raise _Failed(_reason(exc.reason)) from None
    except (OSError, http.client.HTTPException) as exc:  # reset, timeout, bad status line
        raise _Failed(_reason(exc)) from None
    # http.client returns a short body without raising when the server closes early.
    if total is not None and written != total:
        raise _Failed(f"connection closed after {written} of {total} bytes")


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _reason(exc) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:120]


def _gunzip_md5(path: Path, cap: int) -> str:
    """MD5 of the file's uncompressed bytes, streamed; _Failed if it is no complete gzip file
    or expands beyond ``cap`` bytes (a gzip bomb stops there)."""
    digest = hashlib.md5()
    size = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                size += len(chunk)
                if size > cap:
                    raise _Failed(f"it expands beyond the {cap} bytes expected")
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise _Failed(f"not a complete gzip file: {_reason(exc)}") from None
    return digest.hexdigest()
