"""Tests for pcalm.data: IDX reading, normalisation, subsets, errors, MD5 and synthetic data."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pcalm import data
from pcalm.data import DataError, load_dataset, make_fake_idx_root, read_idx, write_idx

N_TRAIN, N_TEST = 600, 200


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    return make_fake_idx_root(tmp_path_factory.mktemp("fake"), N_TRAIN, N_TEST, seed=0)


def _single_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def _ridge_accuracy(ds: data.Dataset, reg: float = 10.0) -> float:
    """Test accuracy of closed-form ridge regression onto one-hot labels (learnability probe)."""
    x, xt = ds.x_train.double(), ds.x_test.double()
    onehot = torch.nn.functional.one_hot(ds.y_train, 10).double()
    w = torch.linalg.solve(x.T @ x + reg * torch.eye(x.shape[1], dtype=x.dtype), x.T @ onehot)
    return ((xt @ w).argmax(1) == ds.y_test).double().mean().item()


# --------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    for name, array in (("img", images), ("lab", labels)):
        path = write_idx(tmp_path / f"{name}-ubyte{suffix}", array)
        raw = path.read_bytes()
        assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
        back = read_idx(path)
        assert back.dtype == np.uint8 and back.shape == array.shape
        np.testing.assert_array_equal(back, array)
    header = data.encode_idx(images)[:16]
    assert header == bytes([0, 0, 8, 3]) + (7).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2


def test_parse_idx_rejects_malformed():
    good = data.encode_idx(np.zeros((3, 2, 2), np.uint8))
    cases = {
        "magic": b"\x01\x00" + good[2:],
        "dtype code": good[:2] + b"\x0d" + good[3:],
        "truncated": good[:-1],
        "oversized": good + b"\x00",
        "header": good[:3],
    }
    for what, blob in cases.items():
        with pytest.raises(DataError) as excinfo:
            data.parse_idx(blob, f"/x/{what}")
        assert f"/x/{what}" in _single_line_error(excinfo)


# ----------------------------------------------------------------------------- loading


@pytest.mark.parametrize("name,folder", [("fashion_mnist", "FashionMNIST"), ("mnist", "MNIST")])
def test_load_fake_shapes_and_normalisation(fake_root, name, folder):
    ds = load_dataset(name, fake_root, verify=False)
    assert ds.name == name and ds.num_classes == 10 and ds.input_dim == 784
    assert ds.x_train.shape == (N_TRAIN, 784) and ds.x_test.shape == (N_TEST, 784)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    raw = fake_root / folder / "raw"
    mean, std = data.NORMALISATION[name]
    pixels = read_idx(raw / "train-images-idx3-ubyte").reshape(N_TRAIN, 784) / 255.0
    torch.testing.assert_close(ds.x_train, torch.tensor((pixels - mean) / std, dtype=torch.float32))
    labels = read_idx(raw / "t10k-labels-idx1-ubyte")
    assert torch.equal(ds.y_test, torch.from_numpy(labels.astype(np.int64)))
    ds64 = load_dataset(name, fake_root, dtype=torch.float64, verify=False)
    assert ds64.x_test.dtype == torch.float64
    torch.testing.assert_close(ds64.x_train.float(), ds.x_train)


def test_normalisation_constants():
    assert data.NORMALISATION == {"mnist": (0.1307, 0.3081), "fashion_mnist": (0.2860, 0.3530)}


def test_gz_files_load_like_plain(tmp_path, fake_root):
    gz_root = make_fake_idx_root(tmp_path, N_TRAIN, N_TEST, seed=0, datasets=("MNIST",), gz=True)
    assert (gz_root / "MNIST/raw/train-images-idx3-ubyte.gz").is_file()
    a = load_dataset("mnist", gz_root, verify=False)
    b = load_dataset("mnist", fake_root, verify=False)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)


def test_fake_data_is_learnable(fake_root):
    # Other (end-to-end) tests train on these files: they must be far above chance.
    assert _ridge_accuracy(load_dataset("fashion_mnist", fake_root, verify=False)) > 0.8


# ----------------------------------------------------------------------------- subsets


def test_subset_is_balanced_shuffled_and_drawn_from_split(fake_root):
    full = load_dataset("fashion_mnist", fake_root, verify=False)
    ds = load_dataset("fashion_mnist", fake_root, train_size=200, test_size=57, seed=3,
                      verify=False)
    assert ds.x_train.shape == (200, 784) and ds.x_test.shape == (50, 784)
    assert torch.bincount(ds.y_train, minlength=10).tolist() == [20] * 10
    assert torch.bincount(ds.y_test, minlength=10).tolist() == [5] * 10
    assert not torch.equal(ds.y_train, ds.y_train.sort().values)  # shuffled, not class-sorted
    # Every subset row is a row of the full split, with its own label.
    match = torch.cdist(ds.x_train, full.x_train).argmin(1)
    assert torch.equal(full.x_train[match], ds.x_train)
    assert torch.equal(full.y_train[match], ds.y_train)
    assert len(set(match.tolist())) == 200


def test_subset_determinism(fake_root):
    kw = dict(train_size=100, test_size=30)
    a = load_dataset("mnist", fake_root, seed=1, **kw, verify=False)
    b = load_dataset("mnist", fake_root, seed=1, **kw, verify=False)
    c = load_dataset("mnist", fake_root, seed=2, **kw, verify=False)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    # The test subset does not depend on train_size.
    d = load_dataset("mnist", fake_root, seed=1, train_size=300, test_size=30, verify=False)
    assert torch.equal(a.x_test, d.x_test)


@pytest.mark.parametrize("size", [None, N_TRAIN])
def test_full_split_keeps_file_order(fake_root, size):
    ds = load_dataset("mnist", fake_root, train_size=size, verify=False)
    labels = read_idx(fake_root / "MNIST/raw/train-labels-idx1-ubyte")
    assert torch.equal(ds.y_train, torch.from_numpy(labels.astype(np.int64)))


@pytest.mark.parametrize("size", [0, -5, 5, 2.5, "100", True])
def test_bad_sizes(fake_root, size):
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", fake_root, train_size=size, verify=False)
    msg = _single_line_error(excinfo)
    assert "train_size" in msg and (repr(size) in msg or str(size) in msg)


def test_subset_larger_than_smallest_class(tmp_path):
    raw = tmp_path / "MNIST/raw"
    labels = np.repeat(np.arange(10, dtype=np.uint8), [20] * 9 + [5])
    for split in ("train", "t10k"):
        write_idx(raw / f"{split}-images-idx3-ubyte", np.zeros((len(labels), 28, 28), np.uint8))
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    assert load_dataset("mnist", tmp_path, train_size=50, verify=False).y_train.shape == (50,)
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path, train_size=150, verify=False)
    assert "class 9" in _single_line_error(excinfo) and "50" in str(excinfo.value)


# ------------------------------------------------------------------------------ errors


def test_unknown_dataset():
    with pytest.raises(DataError) as excinfo:
        load_dataset("foo")
    assert _single_line_error(excinfo) == (
        "unknown dataset 'foo': allowed: fashion_mnist, mnist, synthetic"
    )


def test_missing_file(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    for name, folder in (("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")):
        with pytest.raises(DataError) as excinfo:
            load_dataset(name, tmp_path, verify=False)
        msg = _single_line_error(excinfo)
        assert str(tmp_path / folder / "raw" / "train-images-idx3-ubyte") in msg
        assert "make data" in msg and "PCALM_DATA" in msg


def _copy_root(src: Path, dst: Path, folder: str = "MNIST") -> Path:
    for f in (src / folder / "raw").iterdir():
        (dst / folder / "raw").mkdir(parents=True, exist_ok=True)
        (dst / folder / "raw" / f.name).write_bytes(f.read_bytes())
    return dst


def test_truncated_file(tmp_path, fake_root):
    root = _copy_root(fake_root, tmp_path)
    path = root / "MNIST/raw/train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", root, verify=False)
    msg = _single_line_error(excinfo)
    assert str(path) in msg and "truncated" in msg


def test_truncated_gz_file(tmp_path):
    path = tmp_path / "MNIST/raw/train-labels-idx1-ubyte.gz"
    write_idx(path, np.arange(100, dtype=np.uint8) % 10)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert str(path) in _single_line_error(excinfo)


def test_wrong_magic(tmp_path, fake_root):
    root = _copy_root(fake_root, tmp_path)
    path = root / "MNIST/raw/t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", root, verify=False)
    msg = _single_line_error(excinfo)
    assert str(path) in msg and "magic" in msg


def test_count_mismatch_and_bad_labels(tmp_path, fake_root):
    root = _copy_root(fake_root, tmp_path)
    labels = root / "MNIST/raw/train-labels-idx1-ubyte"
    write_idx(labels, np.zeros(N_TRAIN - 1, np.uint8))
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", root, verify=False)
    assert "labels" in _single_line_error(excinfo)
    write_idx(labels, np.full(N_TRAIN, 11, np.uint8))
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", root, verify=False)
    assert "outside 0..9" in _single_line_error(excinfo)


# ------------------------------------------------------------------- roots and fallback


def test_resolve_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv("PCALM_DATA", raising=False)
    assert data.resolve_data_root(None) == Path("data")
    assert data.resolve_data_root("") == Path("data")
    monkeypatch.setenv("PCALM_DATA", str(tmp_path))
    assert data.resolve_data_root(None) == tmp_path
    assert data.resolve_data_root("elsewhere") == Path("elsewhere")


def test_env_root_is_used(monkeypatch, fake_root):
    monkeypatch.setenv("PCALM_DATA", str(fake_root))
    assert load_dataset("mnist", verify=False).x_train.shape == (N_TRAIN, 784)


def test_debian_fallback_for_fashion_mnist(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    make_fake_idx_root(tmp_path / "src", 100, 50, datasets=("FashionMNIST",), gz=True)
    (tmp_path / "src/FashionMNIST/raw").rename(debian)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", debian)
    empty = tmp_path / "empty"
    ds = load_dataset("fashion_mnist", empty, verify=False)
    assert ds.x_train.shape == (100, 784) and ds.x_test.shape == (50, 784)
    with pytest.raises(DataError):  # the fallback is for Fashion-MNIST only
        load_dataset("mnist", empty, verify=False)


# --------------------------------------------------------------------------------- MD5


def test_verify_md5_direct(tmp_path):
    labels = np.arange(30, dtype=np.uint8) % 10
    plain = write_idx(tmp_path / "lab-ubyte", labels)
    packed = write_idx(tmp_path / "lab-ubyte.gz", labels)
    good = hashlib.md5(plain.read_bytes()).hexdigest()
    data.verify_md5(plain, good)
    data.verify_md5(packed, good)  # MD5 of the uncompressed bytes
    with pytest.raises(DataError) as excinfo:
        data.verify_md5(packed, "0" * 32)
    msg = _single_line_error(excinfo)
    assert str(packed) in msg and "0" * 32 in msg and good in msg


def test_md5_checked_and_cached(tmp_path, fake_root, monkeypatch):
    root = _copy_root(fake_root, tmp_path)
    raw = root / "MNIST/raw"
    table = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in raw.iterdir()}
    monkeypatch.setitem(data.MD5, "MNIST", dict(table))
    calls = []
    real_verify = data.verify_md5
    monkeypatch.setattr(data, "verify_md5", lambda *a: calls.append(a[0]) or real_verify(*a))
    data.clear_cache()
    load_dataset("mnist", root)
    assert len(calls) == 4
    load_dataset("mnist", root)
    assert len(calls) == 4  # cached per (path, mtime, size)

    data.MD5["MNIST"]["t10k-images-idx3-ubyte"] = "f" * 32
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", root)
    msg = _single_line_error(excinfo)
    assert "MD5 mismatch" in msg and str(raw / "t10k-images-idx3-ubyte") in msg
    assert "f" * 32 in msg and table["t10k-images-idx3-ubyte"] in msg
    load_dataset("mnist", root, verify=False)  # the check can be switched off


def test_files_of_any_size_are_md5_checked(fake_root):
    """Small or truncated files under an official name are refused unless verify=False: a
    subset of other files must never pass for the official data (whose root is not in the
    run id)."""
    data.clear_cache()
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", fake_root)
    msg = _single_line_error(excinfo)
    assert "MD5 mismatch" in msg and "data.verify=false" in msg


def test_files_checksum_tracks_the_bytes(tmp_path, fake_root):
    root = _copy_root(fake_root, tmp_path)
    before = data.files_checksum("mnist", root)
    assert before == data.files_checksum("mnist", fake_root)
    labels = read_idx(root / "MNIST/raw/t10k-labels-idx1-ubyte").copy()
    labels[0] = (labels[0] + 1) % 10
    write_idx(root / "MNIST/raw/t10k-labels-idx1-ubyte", labels)
    assert data.files_checksum("mnist", root) != before


# ---------------------------------------------------------------------------- real data


def _real_root() -> Path:
    root = os.environ.get("PCALM_DATA", "")
    if not root:
        pytest.skip("real MNIST/Fashion-MNIST not available: PCALM_DATA is unset "
                    "(see docs/DATA.md)")
    for folder, files in data.MD5.items():
        for base in files:
            if not any((Path(root) / folder / "raw" / f"{base}{s}").is_file() for s in ("", ".gz")):
                pytest.skip(f"real data not available: PCALM_DATA={root} lacks {folder}/raw/{base}")
    return Path(root)


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist"])
def test_real_data(name):
    root = _real_root()
    data.clear_cache()
    ds = load_dataset(name, root)  # verify=True: the official files, MD5-checked
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert len(data._VERIFIED) == 4  # all four files MD5-checked
    assert abs(ds.x_train.mean().item()) < 0.01 and abs(ds.x_train.std().item() - 1) < 0.02
    assert ds.y_train.bincount().min() > 5000


# --------------------------------------------------------------------------- synthetic


def test_synthetic_defaults_and_determinism():
    a, b = load_dataset("synthetic"), load_dataset("synthetic", seed=0)
    assert a.x_train.shape == (6000, 784) and a.x_test.shape == (1000, 784)
    assert a.input_dim == 784 and a.y_train.dtype == torch.int64
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    c = load_dataset("synthetic", seed=1, train_size=500, test_size=100)
    assert c.x_train.shape == (500, 784) and not torch.equal(c.x_train, a.x_train[:500])
    # Same teacher for every seed.
    assert torch.equal(c.y_train, data.teacher_labels(c.x_train))
    assert abs(a.x_train.mean().item()) < 0.01 and abs(a.x_train.std().item() - 1) < 0.01
    d = load_dataset("synthetic", dtype=torch.float64)
    assert d.x_train.dtype == torch.float64 and torch.equal(d.y_train, a.y_train)


def test_synthetic_labels_balanced_and_learnable():
    ds = load_dataset("synthetic")
    for y in (ds.y_train, ds.y_test):
        assert y.bincount(minlength=10).min().item() >= 0.03 * len(y)
    assert _ridge_accuracy(ds, reg=1000.0) > 0.3  # chance is 0.1


def test_gzip_module_reads_written_gz(tmp_path):
    # The .gz files are ordinary gzip, readable by other tools.
    path = write_idx(tmp_path / "x.gz", np.ones((2, 28, 28), np.uint8))
    assert gzip.decompress(path.read_bytes())[:4] == bytes([0, 0, 8, 3])


def test_size_above_the_split_is_an_error(fake_root):
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", fake_root, train_size=N_TRAIN + 10, verify=False)
    msg = _single_line_error(excinfo)
    assert f"train_size={N_TRAIN + 10}" in msg and f"({N_TRAIN} samples)" in msg
    assert len(load_dataset("mnist", fake_root, train_size=N_TRAIN, verify=False).y_train) \
        == N_TRAIN  # the split's own size is the full split
