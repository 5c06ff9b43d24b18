"""Download MNIST and Fashion-MNIST into a data root (torchvision's layout), then verify them.

    python scripts/fetch_data.py [--root data] [--mirror URL ...]

The root defaults to $PCALM_DATA, else ./data. Only missing files are fetched (about 12 MB for
MNIST, 31 MB for Fashion-MNIST, kept as .gz), from the mirrors of configs/data/<name>.yaml
(`--mirror` replaces them), by pcalm.download: the same downloader a run uses when its files
are missing. No torchvision needed. Exits 0 when both datasets load with verified MD5s, 1
otherwise, with one line; a prepared root needs no network. Offline sources: docs/DATA.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from pcalm.data import DataError, clear_cache, load_dataset, resolve_data_root
from pcalm.download import fetch

REPO = Path(__file__).resolve().parents[1]

DATASETS = ("mnist", "fashion_mnist")


def config_mirrors(name: str) -> list[str]:
    """The dataset's `mirrors` from configs/data/<name>.yaml (one list, used by runs too)."""
    return yaml.safe_load((REPO / "configs" / "data" / f"{name}.yaml").read_text())["mirrors"]


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


def download(root: Path, mirrors: list[str] | None) -> list[Path]:
    """Fetch what each dataset lacks; DataError (one line) if a file cannot be had."""
    fetched = []
    for name in DATASETS:
        fetched += fetch(name, root, config_mirrors(name) if mirrors is None else mirrors)
    return fetched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="data root (default: $PCALM_DATA or ./data)")
    parser.add_argument("--mirror", action="append", default=None, metavar="URL",
                        help="a folder URL holding the .gz files; repeat for more (default: "
                             "each dataset's data.mirrors in configs/data/)")
    args = parser.parse_args(argv)
    root = resolve_data_root(args.root)
    try:
        fetched = download(root, args.mirror)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    error = verify(root)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 1
    what = f"downloaded {len(fetched)} files" if fetched else "nothing to download"
    print(f"data OK: MNIST and Fashion-MNIST under {root} (MD5 verified), {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
