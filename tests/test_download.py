"""Data on first use (issue 15): pcalm.download fetches missing MNIST / Fashion-MNIST files.

No test reaches the internet: the mirrors are HTTP servers on 127.0.0.1 started here, serving
small IDX files made here, whose MD5s (of the uncompressed bytes, computed here with hashlib)
are passed in; a refused mirror is a port nothing listens on.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pcalm import data
from pcalm.data import DataError, load_dataset, make_fake_idx_root, read_idx
from pcalm.download import LOCK_NAME, fetch
from tests.conftest import REPO

BASES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# torchvision 0.29.1, torchvision/datasets/mnist.py: MNIST.mirrors and FashionMNIST.mirrors.
TORCHVISION_MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "http://yann.lecun.com/exdb/mnist/"],
    "fashion_mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.routes[path] = (mode, body)`; counts each GET in `server.hits`."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        srv = self.server
        with srv.lock:
            srv.hits[self.path] += 1
        mode, body = srv.routes.get(self.path, ("404", b""))
        if mode == "404":
            self.send_error(404)
            return
        self.send_response(200)
        if mode == "huge-length":  # announces a terabyte
            self.send_header("Content-Length", str(10**12))
        elif not mode.startswith("no-length"):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode in ("no-length-drip", "no-length-flood", "huge-length"):
            self._hostile(mode)
        elif mode in ("truncate", "no-length-truncate"):
            self.wfile.write(body[: len(body) // 2])  # then the connection closes
        elif mode == "slow":  # long enough that a second process arrives meanwhile
            for i in range(0, len(body), max(1, len(body) // 4)):
                self.wfile.write(body[i : i + max(1, len(body) // 4)])
                self.wfile.flush()
                time.sleep(0.15)
        else:
            self.wfile.write(body)
        self.close_connection = True

    def _hostile(self, mode: str) -> None:
        """A byte every 0.1 s (drip), or 64 kB blocks without end (flood, huge-length),
        until the client hangs up; at most 60 s, so a broken client cannot hang the suite."""
        ends = time.monotonic() + 60
        block = b"\x1f" if mode == "no-length-drip" else b"\0" * 65536
        try:
            while time.monotonic() < ends:
                self.wfile.write(block)
                self.wfile.flush()
                if mode == "no-length-drip":
                    time.sleep(0.1)
        except OSError:  # the client gave up: what a bounded downloader does
            pass

    def log_message(self, *args):  # keep the test output clean
        pass


class LocalMirror:
    """An HTTP server on 127.0.0.1 in a thread; `url(prefix)` is a mirror folder URL."""

    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.routes, self.httpd.hits = {}, collections.Counter()
        self.httpd.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def url(self, prefix: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{prefix}/"

    def serve(self, prefix: str, files: dict[str, bytes], mode: str = "ok") -> str:
        for name, body in files.items():
            self.httpd.routes[f"/{prefix}/{name}"] = (mode, body)
        return self.url(prefix)

    def hits(self, prefix: str, name: str) -> int:
        return self.httpd.hits[f"/{prefix}/{name}"]

    def total_hits(self) -> int:
        return sum(self.httpd.hits.values())

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mirror():
    server = LocalMirror()
    yield server
    server.close()


@pytest.fixture
def gz_files(tmp_path) -> dict[str, bytes]:
    """The four .gz files of a small test-made MNIST: name.gz -> bytes."""
    src = make_fake_idx_root(tmp_path / "src", n_train=100, n_test=50, datasets=("MNIST",),
                             gz=True)
    return {f"{b}.gz": (src / "MNIST" / "raw" / f"{b}.gz").read_bytes() for b in BASES}


def md5_table(gz: dict[str, bytes]) -> dict[str, str]:
    """base name -> MD5 of the uncompressed bytes, computed independently of pcalm."""
    return {name[:-3]: hashlib.md5(gzip.decompress(body)).hexdigest() for name, body in gz.items()}


def refused_url() -> str:
    """A URL on a port nothing listens on (bound, then closed): the connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def raw_listing(root: Path) -> list[str]:
    raw = root / "MNIST" / "raw"
    return sorted(p.name for p in raw.iterdir()) if raw.is_dir() else []


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg
    return msg


# ------------------------------------------------------------------------------ fetch()


def test_good_download_lands_gz_verified_and_loads(tmp_path, mirror, gz_files, monkeypatch):
    root, table = tmp_path / "root", md5_table(gz_files)
    said = []
    got = fetch("mnist", root, [mirror.serve("a", gz_files)], table, say=said.append)
    raw = root / "MNIST" / "raw"
    assert got == [raw / f"{b}.gz" for b in BASES]
    assert raw_listing(root) == sorted([LOCK_NAME, *gz_files])  # no temporary file left
    for name, body in gz_files.items():
        assert (raw / name).read_bytes() == body  # kept gzipped, byte for byte
        assert (raw / name).stat().st_mode & 0o777 == 0o644  # readable by others' jobs
    assert [line.split()[0] for line in said] == ["downloading"] * 4
    # The loader reads them and, told these are the official MD5s, verifies them.
    monkeypatch.setitem(data.MD5, "MNIST", table)
    data.clear_cache()
    ds = load_dataset("mnist", root, verify=True)
    labels = np.frombuffer(gzip.decompress(gz_files["train-labels-idx1-ubyte.gz"])[8:], np.uint8)
    assert ds.y_train.tolist() == labels.tolist()
    # Present files are not fetched again.
    assert fetch("mnist", root, [mirror.url("a")], table) == []
    assert mirror.total_hits() == 4


def test_corrupt_download_goes_to_the_next_mirror(tmp_path, mirror, gz_files):
    root, table = tmp_path / "root", md5_table(gz_files)
    images = "train-images-idx3-ubyte.gz"
    raw_bytes = bytearray(gzip.decompress(gz_files[images]))
    raw_bytes[-1] ^= 0xFF  # a valid gzip file of other bytes: only the MD5 tells
    bad = mirror.serve("bad", {images: gzip.compress(bytes(raw_bytes))})
    good = mirror.serve("good", gz_files)
    fetch("mnist", root, [bad, good], table, say=lambda s: None)
    assert (root / "MNIST/raw" / images).read_bytes() == gz_files[images]
    assert mirror.hits("bad", images) == 1 and mirror.hits("good", images) == 1


@pytest.mark.parametrize("body", ["other-bytes", "not-gzip"])
def test_corrupt_everywhere_is_one_line_and_leaves_no_file(tmp_path, mirror, gz_files, body):
    root, table = tmp_path / "root", md5_table(gz_files)
    images = "train-images-idx3-ubyte.gz"
    junk = gzip.compress(b"\0" * 100) if body == "other-bytes" else b"<html>not here</html>"
    url = mirror.serve("bad", {**gz_files, images: junk})
    with pytest.raises(DataError) as excinfo:
        fetch("mnist", root, [url], table, say=lambda s: None)
    msg = one_line(excinfo)
    assert url in msg and images in msg
    assert (table["train-images-idx3-ubyte"] in msg) == (body == "other-bytes")
    assert raw_listing(root) == [LOCK_NAME]  # nothing that looks like a data file


@pytest.mark.parametrize("failure", ["404", "refused"])
def test_a_failing_mirror_falls_through_to_the_next(tmp_path, mirror, gz_files, failure):
    root, table = tmp_path / "root", md5_table(gz_files)
    first = mirror.url("missing") if failure == "404" else refused_url()
    fetch("mnist", root, [first, mirror.serve("good", gz_files)], table, say=lambda s: None)
    assert raw_listing(root) == sorted([LOCK_NAME, *gz_files])
    assert mirror.hits("missing", "train-images-idx3-ubyte.gz") == (failure == "404")


@pytest.mark.parametrize("mode", ["truncate", "no-length-truncate"])
def test_interrupted_download_leaves_no_partial_file_and_a_retry_completes(
        tmp_path, mirror, gz_files, mode):
    root, table = tmp_path / "root", md5_table(gz_files)
    images = "train-images-idx3-ubyte.gz"
    url = mirror.serve("m", {images: gz_files[images]}, mode=mode)
    mirror.serve("m", {k: v for k, v in gz_files.items() if k != images})
    with pytest.raises(DataError) as excinfo:
        fetch("mnist", root, [url], table, say=lambda s: None)
    msg = one_line(excinfo)
    half = len(gz_files[images]) // 2
    # Either check catches it: the byte count when the server sent one, else the gzip end.
    reason = (f"connection closed after {half} of {len(gz_files[images])} bytes"
              if mode == "truncate" else "not a complete gzip file")
    assert msg.startswith(f"cannot download MNIST files {images},") and reason in msg
    assert raw_listing(root) == [LOCK_NAME]  # no partial file, under any name
    mirror.serve("m", {images: gz_files[images]})  # the server recovers
    fetch("mnist", root, [url], table, say=lambda s: None)
    assert (root / "MNIST/raw" / images).read_bytes() == gz_files[images]
    assert raw_listing(root) == sorted([LOCK_NAME, *gz_files])


_CHILD = """
import json, sys, time
from pathlib import Path
from pcalm.data import read_idx
from pcalm.download import fetch
root, url, table, me, other = sys.argv[1:]
Path(me).touch()
while not Path(other).exists():  # start fetching together with the other process
    time.sleep(0.01)
said = []
paths = fetch("mnist", root, [url], json.loads(table), say=said.append)
raw = Path(root) / "MNIST" / "raw"
shapes = {p.name: list(read_idx(p).shape) for p in sorted(raw.glob("*.gz"))}
print(json.dumps({"fetched": len(paths), "said": said, "shapes": shapes}))
"""


def test_two_processes_fetching_at_once_download_each_file_once(tmp_path, mirror, gz_files):
    root, table = tmp_path / "root", md5_table(gz_files)
    url = mirror.serve("m", gz_files, mode="slow")
    marks = [str(tmp_path / f"ready{i}") for i in range(2)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(root), url, json.dumps(table),
                               marks[i], marks[1 - i]], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    results = [json.loads(out) for out, _ in outs]
    assert all(mirror.hits("m", name) == 1 for name in gz_files)  # downloaded once
    assert sorted(r["fetched"] for r in results) == [0, 4]  # by one of the two
    waiter = next(r for r in results if r["fetched"] == 0)
    assert any(line.startswith("waiting for another process") for line in waiter["said"])
    expected = {name: list(read_idx(tmp_path / "src/MNIST/raw" / name).shape) for name in gz_files}
    assert all(r["shapes"] == expected for r in results)  # both read complete files


def test_offline_is_one_line_naming_files_mirrors_and_the_offline_options(tmp_path, gz_files):
    root, table = tmp_path / "root", md5_table(gz_files)
    mirrors = [refused_url(), refused_url().replace("/mnist/", "/other/")]
    said = []
    with pytest.raises(DataError) as excinfo:
        fetch("mnist", root, mirrors, table, say=said.append)
    msg = one_line(excinfo)
    assert said == []  # the error is the only line the user sees
    assert all(f"{b}.gz" in msg for b in BASES)
    assert all(m in msg for m in mirrors)
    assert "PCALM_DATA" in msg and "dataset-fashion-mnist" in msg
    assert raw_listing(root) == [LOCK_NAME]


def test_files_debian_already_has_are_not_downloaded(tmp_path, mirror, monkeypatch):
    debian = tmp_path / "debian"
    src = make_fake_idx_root(tmp_path / "src", n_train=100, n_test=50,
                             datasets=("FashionMNIST",), gz=True)
    debian.mkdir()
    for b in BASES:
        (debian / f"{b}.gz").write_bytes((src / "FashionMNIST/raw" / f"{b}.gz").read_bytes())
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", debian)
    assert fetch("fashion_mnist", tmp_path / "root", [mirror.url("m")], {b: "x" for b in BASES}) \
        == []
    assert mirror.total_hits() == 0 and not (tmp_path / "root").exists()


def test_bad_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(DataError) as excinfo:
        fetch("synthetic", tmp_path, ["http://127.0.0.1/"])
    assert one_line(excinfo) == ("nothing to download for dataset 'synthetic': allowed: "
                                 "mnist, fashion_mnist")
    with pytest.raises(DataError) as excinfo:
        fetch("mnist", tmp_path, ["ftp://example.org/"])
    assert "'ftp://example.org/'" in one_line(excinfo)
    assert fetch("mnist", tmp_path, []) == []  # no mirrors: downloads off, nothing touched
    assert not (tmp_path / "MNIST").exists()


# ---------------------------------------------------------------------- config and run id


def test_config_mirrors_are_torchvisions_in_its_order():
    from pcalm.cli import compose, run_config

    for name, expected in TORCHVISION_MIRRORS.items():
        assert run_config(compose([f"data={name}"]))["data"]["mirrors"] == expected
    assert run_config(compose(["data=synthetic"]))["data"]["mirrors"] == []


def test_bad_mirrors_value_is_a_one_line_config_error():
    from pcalm.cli import compose, run_config
    from pcalm.runs.config import ConfigError

    with pytest.raises(ConfigError) as excinfo:
        run_config(compose(["data=mnist", "data.mirrors=[yann.lecun.com/exdb/mnist/]"]))
    assert one_line(excinfo) == ("bad value data.mirrors entry 'yann.lecun.com/exdb/mnist/': "
                                 "allowed: a URL starting with https://, http://, file://")


@pytest.mark.parametrize("experiment", ["figure2", "figure2_mnist"])
def test_mirrors_leave_the_committed_reference_run_ids_unchanged(experiment):
    from pcalm.runs.folder import run_id
    from pcalm.sweeps.grid import load_sweep

    table = REPO / "results" / "reference" / "tables" / f"{experiment}-paper.csv"
    recorded = set(pd.read_csv(table, usecols=["run_id"]).run_id)
    # data.verify=true as in the recorded runs (the test suite sets PCALM_DATA_VERIFY=false)
    configs = load_sweep([f"experiment={experiment}", "scale=paper", "data.verify=true"]).configs
    assert all(c["data"]["mirrors"] == TORCHVISION_MIRRORS[c["data"]["name"]] for c in configs)
    assert recorded <= {run_id(c) for c in configs}
    moved = {**configs[0], "data": {**configs[0]["data"], "mirrors": ["file:///elsewhere/"]}}
    assert run_id(moved) == run_id(configs[0])


# ------------------------------------------------------------------ runs and sweeps use it


def test_a_run_with_missing_data_downloads_it_and_trains(tmp_path, mirror, monkeypatch):
    """The default config, data.root empty: the run fetches, verifies, loads and trains."""
    from pcalm.cli import compose, run_config
    from pcalm.runs.runner import execute

    src = make_fake_idx_root(tmp_path / "src", n_train=200, n_test=50,
                             datasets=("FashionMNIST",), gz=True)
    gz = {f"{b}.gz": (src / "FashionMNIST/raw" / f"{b}.gz").read_bytes() for b in BASES}
    monkeypatch.setitem(data.MD5, "FashionMNIST", md5_table(gz))  # these are "official" now
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    url = mirror.serve("fashion", gz)
    cfg = run_config(compose([
        f"data.root={tmp_path / 'root'}", "data.verify=true", f"data.mirrors=[{url}]",
        f"results_dir={tmp_path / 'results'}", "model.width=8", "model.depth=4", "algo=bp",
        "train.batch_size=50", "train.evals_per_epoch=1", "train.progress=off",
        "train.device=cpu", "train.threads=1"]))
    assert cfg["data"]["name"] == "fashion_mnist"  # the default dataset
    outcome = execute([cfg], progress=False, say=lambda s: None)
    assert len(outcome.trained) == 1
    assert all(mirror.hits("fashion", name) == 1 for name in gz)
    for name, body in gz.items():
        assert (tmp_path / "root/FashionMNIST/raw" / name).read_bytes() == body


def test_a_sweep_fetches_in_its_planning_process_before_jobs_start(tmp_path, mirror):
    """experiments/sweep.py checks data before it launches jobs; missing files are fetched
    there (here the mirror has none: the sweep stops with the downloader's one line)."""
    url = mirror.url("empty")
    proc = subprocess.run(
        [sys.executable, "experiments/sweep.py", "experiment=figure2", "scale=smoke",
         f"data.root={tmp_path / 'root'}", "data.verify=true", f"data.mirrors=[{url}]",
         "--dry-run"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PCALM_RESULTS": str(tmp_path / "results")})
    assert proc.returncode == 2, proc.stdout + proc.stderr  # pcalm.cli.exit_with's code
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot download FashionMNIST files train-images-idx3-ubyte.gz")
    assert f"{url} (HTTP 404)" in last
    assert mirror.hits("empty", "train-images-idx3-ubyte.gz") == 1
    assert not (tmp_path / "results" / "sweeps").exists()  # no job was planned to disk


def test_make_data_script_uses_the_same_downloader(tmp_path):
    """scripts/fetch_data.py (make data): offline, one line and exit 1; no torchvision."""
    bad = refused_url()
    proc = subprocess.run([sys.executable, "scripts/fetch_data.py", "--root", str(tmp_path),
                           "--mirror", bad], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: cannot download MNIST files") and bad in line


@pytest.mark.skipif(not os.environ.get("PCALM_DATA"), reason="needs the real datasets "
                    "(set PCALM_DATA to a folder holding MNIST/raw and FashionMNIST/raw)")
def test_make_data_on_a_prepared_root_downloads_nothing():
    proc = subprocess.run([sys.executable, "scripts/fetch_data.py", "--mirror", refused_url()],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("(MD5 verified), nothing to download")



# ------------------------------------------------------------- a hostile mirror (issue 24)


def _one_rejection(tmp_path, mirror, gz_files, mode: str, body: bytes, **limits):
    """Fetch from a hostile mirror serving train-images (the rest is fine); returns the
    one-line error and what the downloader said."""
    root, table = tmp_path / "root", md5_table(gz_files)
    images = "train-images-idx3-ubyte.gz"
    url = mirror.serve("h", {images: body}, mode=mode)
    mirror.serve("h", {k: v for k, v in gz_files.items() if k != images})
    said = []
    with pytest.raises(DataError) as excinfo:
        fetch("mnist", root, [url], table, say=said.append, **limits)
    assert raw_listing(root) == [LOCK_NAME]  # nothing kept, no .part
    return one_line(excinfo), said


def test_a_dripping_mirror_is_dropped_at_the_whole_downloads_deadline(tmp_path, mirror,
                                                                        gz_files):
    """One byte every 0.1 s never trips the per-read timeout; the deadline ends it."""
    msg, said = _one_rejection(tmp_path, mirror, gz_files, "no-length-drip", b"", timeout=5,
                               deadline=1.0)
    assert "too slow" in msg and "deadline" in msg


def test_a_mirror_announcing_a_terabyte_is_dropped_before_writing(tmp_path, mirror, gz_files):
    msg, _ = _one_rejection(tmp_path, mirror, gz_files, "huge-length", b"")
    # the official train-images file is 16 + 60000·784 bytes uncompressed; the cap adds
    # gzip's worst-case overhead (0.1 % + 1 kB), computed here
    size = 16 + 60000 * 784
    assert f"announces {10**12} bytes, more than the {size + size // 1000 + 1024}" in msg


def test_a_mirror_sending_without_end_is_cut_at_the_size_cap(tmp_path, mirror, gz_files):
    sizes = {"train-images-idx3-ubyte": 100_000}
    msg, _ = _one_rejection(tmp_path, mirror, gz_files, "no-length-flood", b"", sizes=sizes)
    assert f"sent more than the {100_000 + 100 + 1024} bytes expected" in msg


def test_a_gzip_bomb_is_stopped_at_the_expected_size(tmp_path, mirror, gz_files):
    bomb = gzip.compress(b"\0" * 20_000_000)  # 20 MB of zeros in ~20 kB
    sizes = {"train-images-idx3-ubyte": 1_000_000}
    msg, _ = _one_rejection(tmp_path, mirror, gz_files, "ok", bomb, sizes=sizes)
    assert "expands beyond the 1000000 bytes expected" in msg


def test_a_rejected_mirror_is_said_with_its_reason_before_the_next(tmp_path, mirror, gz_files):
    root, table = tmp_path / "root", md5_table(gz_files)
    images = "train-images-idx3-ubyte.gz"
    bad = mirror.serve("bad", {images: gzip.compress(b"\0" * 100)})
    good = mirror.serve("good", gz_files)
    said = []
    fetch("mnist", root, [bad, good], table, say=said.append)
    rejected = [line for line in said if line.startswith(f"rejected {bad}{images}")]
    assert len(rejected) == 1 and rejected[0].startswith(f"rejected {bad}{images}: MD5 mismatch")
    assert rejected[0].endswith("; trying the next")


def test_stale_part_files_are_removed(tmp_path, mirror, gz_files):
    root, table = tmp_path / "root", md5_table(gz_files)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    stale = raw / ".train-images-idx3-ubyte.gz.x1y2.part"  # what a SIGTERM mid-stream leaves
    stale.write_bytes(b"\0" * 1000)
    fetch("mnist", root, [mirror.serve("good", gz_files)], table, say=lambda s: None)
    assert raw_listing(root) == sorted([LOCK_NAME, *gz_files])


def test_a_dead_downloads_part_goes_even_when_every_file_is_there(tmp_path, mirror, gz_files):
    """A complete folder takes no lock and downloads nothing, but a .part older than any
    live download (the deadline plus one read's timeout) is swept; a fresh one stays."""
    root, table = tmp_path / "root", md5_table(gz_files)
    fetch("mnist", root, [mirror.serve("good", gz_files)], table, say=lambda s: None)
    raw = root / "MNIST" / "raw"
    old, fresh = raw / ".train-images-idx3-ubyte.gz.a1.part", raw / ".t10k.gz.b2.part"
    old.write_bytes(b"\0" * 100)
    fresh.write_bytes(b"\0" * 100)
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert fetch("mnist", root, [mirror.serve("good", gz_files)], table, say=lambda s: None,
                 deadline=600, timeout=30) == []
    assert not old.exists() and fresh.exists()


def test_the_loader_streams_a_gzip_bomb_and_stops_at_the_official_size(tmp_path):
    """A labels file may hold 8 + 60000 bytes (the official size); a 30 MB bomb under its
    name is refused after reading at most one byte more, never decompressed whole."""
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\0" * 30_000_000))
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert one_line(excinfo).startswith(f"oversized data file {path}: more than 60008 bytes")
