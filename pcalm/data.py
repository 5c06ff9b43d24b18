"""Datasets for pcalm: MNIST, Fashion-MNIST (IDX files) and a synthetic teacher task.

The image datasets are read from torchvision's on-disk layout,

    <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    <root>/FashionMNIST/raw/...

with a small numpy IDX reader (no torchvision needed; pcalm.download fetches the files, this
module only reads them). Full-size files are checked against the published MD5s, because a
silently different dataset makes every number wrong. See docs/DATA.md for where to get them.

Every failure a user can cause (missing, truncated or altered file, bad argument) raises
:class:`DataError` with a one-line message.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


class DataError(ValueError):
    """A data problem the user can fix; the message is one line."""


@dataclass
class Dataset:
    """A classification dataset held in memory as flat, normalised tensors."""

    name: str
    x_train: torch.Tensor = field(repr=False)  # [n_train, D] float
    y_train: torch.Tensor = field(repr=False)  # [n_train] int64, 0..num_classes-1
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    num_classes: int = 10

    @property
    def input_dim(self) -> int:
        """Number of input features D (784 for all built-in datasets)."""
        return int(self.x_train.shape[1])


DATASETS = ("fashion_mnist", "mnist", "synthetic")
IMAGE_DATASETS = ("fashion_mnist", "mnist")  # read from IDX files

# Folder names of torchvision's layout, under <root>/<folder>/raw.
FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}

# Pixel statistics of the training sets (after /255), the standard constants (SPEC §1).
NORMALISATION = {"mnist": (0.1307, 0.3081), "fashion_mnist": (0.2860, 0.3530)}

# Official number of items per split.
OFFICIAL_COUNTS = {"train": 60000, "t10k": 10000}

# MD5 of the *uncompressed* official files (docs/DATA.md); keyed by folder, then base name.
MD5 = {
    "MNIST": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

# Debian's package `dataset-fashion-mnist` installs the official files here, gzipped, under
# the same base names + ".gz". Used when the data root holds no Fashion-MNIST files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# Synthetic task: fixed teacher and input seeds (the teacher never depends on `seed`).
SYNTHETIC_DIM = 784
SYNTHETIC_HIDDEN = 64
SYNTHETIC_SIZES = (6000, 1000)
_TEACHER_SEED = 20260531
_SYNTH_TRAIN_SEED = 1_000_000
_SYNTH_TEST_SEED = 2_000_000

_IDX_UBYTE = 0x08
_MISSING_HINT = (
    "run `make data` (downloads the official files) or set PCALM_DATA / data.root to a folder "
    "holding MNIST/raw and FashionMNIST/raw (see docs/DATA.md)"
)


# ----------------------------------------------------------------------------- IDX format


def encode_idx(array: np.ndarray) -> bytes:
    """Return the IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian dims, data."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise DataError(f"IDX writer supports uint8 arrays only, got {array.dtype}")
    if array.ndim not in (1, 2, 3):
        raise DataError(f"IDX writer expects a 1-D, 2-D or 3-D array, got shape {array.shape}")
    header = bytes([0, 0, _IDX_UBYTE, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 array (1-D labels or 3-D images) as an IDX file; gzip if path ends in .gz."""
    path = Path(path)
    data = encode_idx(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        # mtime=0 keeps the .gz bytes reproducible.
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def parse_idx(data: bytes, path: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into a read-only uint8 array; `path` only names the source in errors."""
    if len(data) < 4:
        raise DataError(f"malformed IDX file {path}: {len(data)} bytes, shorter than the header")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or ndim == 0:
        raise DataError(f"malformed IDX file {path}: bad magic number 0x{data[:4].hex()}")
    if code != _IDX_UBYTE:
        raise DataError(f"unsupported IDX file {path}: dtype code 0x{code:02x} (need 0x08 ubyte)")
    start = 4 + 4 * ndim
    if len(data) < start:
        raise DataError(f"truncated IDX file {path}: header needs {start} bytes, got {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    expected = start + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "oversized"
        raise DataError(
            f"{what} IDX file {path}: header {shape} needs {expected} bytes, file has {len(data)}"
        )
    return np.frombuffer(data, np.uint8, offset=start).reshape(shape)


def official_size(base: str) -> int | None:
    """Bytes of the official uncompressed IDX file named `base` (header + items), or None
    for a name that is not one of the four: images are 16 + n·28·28, labels 8 + n."""
    split = next((s for s in OFFICIAL_COUNTS if base.startswith(s)), None)
    if split is None:
        return None
    n = OFFICIAL_COUNTS[split]
    if base.endswith("-images-idx3-ubyte"):
        return 16 + n * 28 * 28
    if base.endswith("-labels-idx1-ubyte"):
        return 8 + n
    return None


# Files with names outside the official four (tests, other IDX data) are read up to this size.
MAX_IDX_BYTES = 1 << 30


def size_cap(path: Path) -> int:
    """The most uncompressed bytes a data file may hold: its official size (a gzip bomb or a
    padded file stops there), else MAX_IDX_BYTES."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return official_size(name) or MAX_IDX_BYTES


def _read_bytes(path: Path) -> bytes:
    """Return the uncompressed bytes of a plain or gzipped file, streamed: reading stops one
    byte past `size_cap`, so a gzip file that expands beyond it never fills the memory."""
    cap = size_cap(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read(cap + 1)
        else:
            with path.open("rb") as f:
                data = f.read(cap + 1)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"corrupt gzip file {path}: {exc}") from None
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror or exc}") from None
    if len(data) > cap:
        raise DataError(f"oversized data file {path}: more than {cap} bytes uncompressed, the "
                        "size of the official file; re-download it (see docs/DATA.md)")
    return data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a plain or gzipped IDX file into a uint8 array."""
    path = Path(path)
    return parse_idx(_read_bytes(path), path)


# --------------------------------------------------------------------- caching + MD5 check

# Parsed arrays and verified MD5s, keyed by (path, mtime_ns, size) so that a rewritten file
# is read again; loading the same split many times in one process (sweeps) is then cheap.
_ARRAYS: OrderedDict[tuple, np.ndarray] = OrderedDict()
_ARRAY_CACHE_SIZE = 8
_VERIFIED: set[tuple] = set()
_CHECKSUMS: dict[tuple, str] = {}


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def verify_md5(path: str | os.PathLike, expected: str, data: bytes | None = None) -> None:
    """Check that the MD5 of the file's uncompressed bytes (or of `data`) equals `expected`."""
    found = hashlib.md5(_read_bytes(Path(path)) if data is None else data).hexdigest()
    if found != expected:
        raise DataError(
            f"MD5 mismatch for {path}: expected {expected}, found {found} "
            "(not the official file: re-download it, see docs/DATA.md; to train on other IDX files "
            "set data.verify=false, which puts their checksum in the run id)"
        )


def _load_idx(path: Path, expected_md5: str | None = None):
    """Read an IDX file through the in-process cache; check its MD5 if `expected_md5`."""
    key = _file_key(path)
    data = None
    array = _ARRAYS.get(key)
    if array is None:
        data = _read_bytes(path)
        array = parse_idx(data, path)
        _ARRAYS[key] = array
        while len(_ARRAYS) > _ARRAY_CACHE_SIZE:
            _ARRAYS.popitem(last=False)
    _ARRAYS.move_to_end(key)
    if expected_md5 is not None and (key, expected_md5) not in _VERIFIED:
        # parse_idx accepted the file only if its size matches the header exactly, so the
        # re-encoded array is byte-identical to the file: no need to keep the bytes around.
        verify_md5(path, expected_md5, data if data is not None else encode_idx(array))
        _VERIFIED.add((key, expected_md5))
    return array


def files_checksum(name: str, root: str | os.PathLike | None = None) -> str:
    """MD5 over the uncompressed bytes of a dataset's four IDX files (train images, labels,
    test images, labels): what identifies a run on files other than the official ones."""
    folder = _source_dir(name, resolve_data_root(root))
    digest = hashlib.md5()
    for split in OFFICIAL_COUNTS:
        for base in _base_names(split):
            path = _locate(folder, base)
            key = _file_key(path)
            if key not in _CHECKSUMS:
                _CHECKSUMS[key] = hashlib.md5(encode_idx(_load_idx(path))).hexdigest()
            digest.update(_CHECKSUMS[key].encode())
    return digest.hexdigest()


def clear_cache() -> None:
    """Forget cached arrays and MD5 results (tests; or to free memory)."""
    _ARRAYS.clear()
    _VERIFIED.clear()
    _CHECKSUMS.clear()


# ------------------------------------------------------------------------ locating files


def resolve_data_root(root: str | os.PathLike | None) -> Path:
    """Return the data root: `root` if given, else $PCALM_DATA, else "data" (relative to cwd)."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("PCALM_DATA", "")
    return Path(env).expanduser() if env else Path("data")


def _base_names(split: str) -> tuple[str, str]:
    return f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"


def _find(folder: Path, base: str) -> Path | None:
    """Return folder/base or folder/base.gz, whichever exists (uncompressed first)."""
    for candidate in (folder / base, folder / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _source_dir(name: str, root: Path) -> Path:
    """Folder holding the dataset's IDX files: the root's raw/ folder, or Debian's fallback."""
    raw = root / FOLDERS[name] / "raw"
    bases = [b for split in OFFICIAL_COUNTS for b in _base_names(split)]
    if name == "fashion_mnist" and not any(_find(raw, b) for b in bases):
        debian = Path(DEBIAN_FASHION_MNIST_DIR)
        if any(_find(debian, b) for b in bases):
            return debian
    return raw


def raw_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<MNIST|FashionMNIST>/raw``: where the dataset's files are read and downloaded."""
    return resolve_data_root(root) / FOLDERS[name] / "raw"


def missing_files(name: str, root: str | os.PathLike | None = None) -> list[str]:
    """Base names of the dataset's four IDX files that no source holds, plain or .gz (the
    root's raw/ folder, or Debian's for Fashion-MNIST): what a download must fetch."""
    folder = _source_dir(name, resolve_data_root(root))
    return [b for split in OFFICIAL_COUNTS for b in _base_names(split) if _find(folder, b) is None]


def _locate(folder: Path, base: str) -> Path:
    path = _find(folder, base)
    if path is None:
        raise DataError(f"missing data file {folder / base}: {_MISSING_HINT}")
    return path


# ------------------------------------------------------------------------------ loading


def _read_split(name: str, folder: Path, split: str, verify: bool) -> tuple[np.ndarray, ...]:
    """Read one split's (images [n, 28, 28], labels [n]) as uint8 arrays, checked."""
    arrays = []
    for base in _base_names(split):
        path = _locate(folder, base)
        expected = MD5[FOLDERS[name]][base] if verify else None
        arrays.append((path, _load_idx(path, expected)))
    (ipath, images), (lpath, labels) = arrays
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"bad image file {ipath}: shape {images.shape}, expected [n, 28, 28]")
    if labels.ndim != 1:
        raise DataError(f"bad label file {lpath}: shape {labels.shape}, expected [n]")
    if len(images) != len(labels):
        raise DataError(f"{ipath} has {len(images)} images but {lpath} has {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"bad label file {lpath}: label {int(labels.max())} outside 0..9")
    return images, labels


def _check_size(label: str, size) -> int | None:
    """Validate a subset size: None, or an int ≥ 10 (one sample per class at least)."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise DataError(f"{label}={size!r} is not an integer (use null for the full split)")
    if size < 10:
        raise DataError(f"{label}={size} must be at least 10 (size//10 samples per class)")
    return int(size)


def balanced_indices(labels: torch.Tensor, size: int | None, seed: int, label: str = "size"):
    """Indices of a class-balanced subset (size//10 per class), drawn and shuffled from `seed`.

    Returns None when `size` is None or covers the split (the caller keeps the full split
    in its original order).
    """
    n = len(labels)
    if size is not None and size > n:
        raise DataError(f"{label}={size} is larger than the split ({n} samples): allowed: "
                        f"10 … {n}, or null for the full split")
    if size is None or size == n:
        return None
    per_class = size // 10
    g = torch.Generator().manual_seed(int(seed))
    picks = []
    for c in range(10):
        members = torch.nonzero(labels == c).flatten()
        if len(members) < per_class:
            most = 10 * min(int((labels == k).sum()) for k in range(10))
            raise DataError(
                f"{label}={size} needs {per_class} samples of class {c} but the split has "
                f"{len(members)} (largest class-balanced size: {most})"
            )
        picks.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    chosen = torch.cat(picks)
    return chosen[torch.randperm(len(chosen), generator=g)]


def epoch_order(n_train: int, seed: int, epoch: int = 0) -> torch.Tensor:
    """THE training order of a run: the permutation of its `n_train` training samples in
    `epoch`, drawn by `torch.randperm` from a CPU generator seeded `seed + epoch`.

    The one definition of it: the training loop (`pcalm.runs.train.Trainer.batch_at`), the
    figure tasks' first batch and the η recipe's Hessian batch all read their samples from
    here, so the figure-task and η-table numbers stay those of the training runs' batches.
    """
    return torch.randperm(n_train, generator=torch.Generator().manual_seed(seed + epoch))


# The post-training gradient alignment is measured as the authors measure it (SPEC §7): on
# the first 64 samples of their per-seed order of the training split, plus the next 8
# batches of that order so a reader sees the metric's own batch-to-batch noise.
ALIGNMENT_BATCH = 64
ALIGNMENT_SPREAD_BATCHES = 8
ALIGNMENT_RULE = "authors_seed_order"  # recorded in each summary as `alignment_batch`


def authors_order(n_train: int, seed: int) -> np.ndarray:
    """The authors' order of a training split of `n_train` samples for `seed`: numpy's
    `default_rng(seed)` shuffling `arange(n_train)` in place (their loader, SPEC §7). It is
    not the training order of our runs (torch, seed + epoch); it only picks the batches on
    which the post-training gradient alignment is measured."""
    order = np.arange(n_train)
    np.random.default_rng(seed).shuffle(order)
    return order


def alignment_batches(n_train: int, seed: int, batch: int = ALIGNMENT_BATCH,
                      spread: int = ALIGNMENT_SPREAD_BATCHES) -> list[np.ndarray]:
    """Index arrays of the alignment batches for `seed`: first the authors' batch (the
    first min(batch, n_train) samples of `authors_order`), then up to `spread` further
    full batches of that order (fewer when the split is too small for them)."""
    order = authors_order(n_train, seed)
    batches = [order[:batch]]
    for k in range(1, spread + 1):
        if (k + 1) * batch > n_train:
            break
        batches.append(order[k * batch : (k + 1) * batch])
    return batches


def _to_tensors(images, labels, index, mean: float, std: float, dtype) -> tuple:
    """Select `index` (or all), flatten, scale to [0, 1] and standardise with (mean, std)."""
    y = torch.from_numpy(labels.astype(np.int64))
    if index is not None:
        images, y = images[index.numpy()], y[index]
    # Compute in float64 only when asked for it; float32 otherwise (half types are cast after).
    work = np.float64 if dtype == torch.float64 else np.float32
    x = torch.from_numpy(images.reshape(len(images), -1).astype(work))
    x.div_(255.0).sub_(mean).div_(std)
    return x.to(dtype), y


def _load_images(name, root, train_size, test_size, seed, dtype, verify) -> Dataset:
    folder = _source_dir(name, resolve_data_root(root))
    mean, std = NORMALISATION[name]
    tensors = []
    for split, size in (("train", train_size), ("t10k", test_size)):
        images, labels = _read_split(name, folder, split, verify)
        label = "train_size" if split == "train" else "test_size"
        # Each split gets its own generator so the test subset does not depend on train_size.
        index = balanced_indices(torch.from_numpy(labels.astype(np.int64)), size, seed, label)
        tensors += _to_tensors(images, labels, index, mean, std, dtype)
    return Dataset(name, *tensors)


# ------------------------------------------------------------------------------ synthetic


def synthetic_teacher() -> tuple[torch.Tensor, torch.Tensor]:
    """Weights (W1 [64, 784], W2 [10, 64]) of the fixed float64 teacher; seed-independent.

    Rows of W2 have unit norm so that the ten logits have equal variance and the argmax
    labels come out roughly balanced (≈ 8–11 % per class).
    """
    g = torch.Generator().manual_seed(_TEACHER_SEED)
    w1 = torch.randn(SYNTHETIC_HIDDEN, SYNTHETIC_DIM, generator=g, dtype=torch.float64)
    w2 = torch.randn(10, SYNTHETIC_HIDDEN, generator=g, dtype=torch.float64)
    return w1, w2 / w2.norm(dim=1, keepdim=True)


def teacher_labels(x: torch.Tensor) -> torch.Tensor:
    """Labels argmax(W2 tanh(W1 x / sqrt(784))) of the fixed teacher, computed in float64."""
    w1, w2 = synthetic_teacher()
    hidden = torch.tanh(x.to(torch.float64) @ w1.T / SYNTHETIC_DIM**0.5)
    return (hidden @ w2.T).argmax(dim=1)


def _synthetic_split(n: int, stream_seed: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # Draw in float32 whatever `dtype` is, so labels and values do not depend on dtype.
    g = torch.Generator().manual_seed(stream_seed)
    x = torch.randn(n, SYNTHETIC_DIM, generator=g, dtype=torch.float32)
    return x.to(dtype), teacher_labels(x)


def _load_synthetic(train_size, test_size, seed, dtype) -> Dataset:
    n_train = SYNTHETIC_SIZES[0] if train_size is None else train_size
    n_test = SYNTHETIC_SIZES[1] if test_size is None else test_size
    # Separate streams for train and test: the test set does not change with train_size.
    train = _synthetic_split(n_train, _SYNTH_TRAIN_SEED + int(seed), dtype)
    test = _synthetic_split(n_test, _SYNTH_TEST_SEED + int(seed), dtype)
    return Dataset("synthetic", *train, *test)


# --------------------------------------------------------------------------- entry point


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    verify: bool = True,
) -> Dataset:
    """Load a dataset as flat [n, 784] normalised inputs and int64 labels.

    - ``mnist`` / ``fashion_mnist``: IDX files under ``resolve_data_root(root)``; pixels /255
      then standardised with the fixed constants in ``NORMALISATION``. A size smaller than its
      split gives a class-balanced subset (size//10 per class) drawn and shuffled with a
      generator seeded by ``seed``; None (or ≥ the split) gives the full split in file order.
      ``verify`` checks the files against the official MD5s (whatever their size); with
      ``verify=False`` any real-format files load (a run's id then holds their checksum).
    - ``synthetic``: N(0, 1) inputs drawn from ``seed`` (defaults 6000 / 1000 samples),
      labelled by a fixed random 784-64-10 tanh teacher that is the same for every seed.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: allowed: {', '.join(DATASETS)}")
    train_size = _check_size("train_size", train_size)
    test_size = _check_size("test_size", test_size)
    if name == "synthetic":
        return _load_synthetic(train_size, test_size, seed, dtype)
    return _load_images(name, root, train_size, test_size, seed, dtype, verify)


# ------------------------------------------------------------------ test / demo helper


def make_fake_idx_root(
    root: str | os.PathLike,
    n_train: int = 600,
    n_test: int = 200,
    seed: int = 0,
    datasets: tuple[str, ...] = ("FashionMNIST", "MNIST"),
    gz: bool = False,
) -> Path:
    """Write small real-format IDX files into torchvision's layout under `root`; return root.

    Test / demo helper. Each class has its own random sparse prototype image; samples are the
    prototype with ~10 % of pixels flipped plus noise, so a small net learns them far above
    chance. Labels are balanced (n//10 per class, remainder spread) and shuffled.
    """
    root = Path(root)
    for folder in datasets:
        # Seed by folder name so a dataset's files do not depend on which others are written.
        rng = np.random.default_rng([seed, zlib.crc32(folder.encode())])
        prototypes = (rng.random((10, 28, 28)) < 0.25).astype(np.float64) * 255.0
        raw = root / folder / "raw"
        for split, n in (("train", n_train), ("t10k", n_test)):
            labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
            flips = rng.random((n, 28, 28)) < 0.1
            images = np.abs(prototypes[labels] - 255.0 * flips)
            images = np.clip(images + rng.normal(0.0, 30.0, images.shape), 0, 255)
            suffix = ".gz" if gz else ""
            img_base, lab_base = _base_names(split)
            write_idx(raw / (img_base + suffix), images.round().astype(np.uint8))
            write_idx(raw / (lab_base + suffix), labels)
    return root
