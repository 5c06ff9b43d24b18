"""Shared look of every figure: one colour per algorithm, labelled axes, settings on the
figure, PDF + PNG out. Plot scripts read collected tables only (results/tables/), never train.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TABLES = Path(os.environ.get("PCALM_RESULTS", REPO / "results")) / "tables"
FIGURES = REPO / "figures"

ALGO_COLORS = {"bp": "#222222", "pc": "#1f77b4", "pcalm": "#d62728"}
ALGO_LABELS = {"bp": "BP", "pc": "PC", "pcalm": "PC-ALM"}
ACTIVATION_LABELS = {"identity": "linear", "linear": "linear", "tanh": "tanh", "relu": "ReLU"}

plt.rcParams.update({
    "figure.dpi": 110, "savefig.dpi": 150, "font.size": 9, "axes.titlesize": 9,
    "axes.labelsize": 9, "legend.fontsize": 8, "axes.spines.top": False,
    "axes.spines.right": False,
})


SCALES = ("smoke", "paper", "paper_cpu")


def scale_arg(text: str) -> str:
    """`<scale>` or `<scale>-<variant>` (a table of an experiment with a changed setting, as
    `scripts/collect.py --print-scale` names it); the figure is then `<experiment>-<text>`."""
    scale, _, variant = text.partition("-")
    if scale not in SCALES or (_ and not variant) or "/" in variant:
        raise argparse.ArgumentTypeError(
            f"bad value {text!r}: allowed: {', '.join(SCALES)}, optionally followed by "
            "-<variant> as `scripts/collect.py --print-scale` prints it")
    return text


def parse_args(description: str) -> argparse.Namespace:
    """The common CLI of plot scripts: --scale picks the table (results/tables/
    <experiment>-<scale>.csv) and names the figure (figures/<experiment>-<scale>.{pdf,png}),
    --out sets another figure path."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--scale", default="smoke", type=scale_arg,
                        help=f"{' | '.join(SCALES)} [-<variant>] (default: smoke)")
    parser.add_argument("--tables", type=Path, default=TABLES, help="collected tables folder")
    parser.add_argument("--out", type=Path, default=None, help="figure path without suffix")
    return parser.parse_args()


def read_table(tables: Path, experiment: str, scale: str, kind: str = "") -> pd.DataFrame:
    """results/tables/<experiment>-<scale>[-kind].csv, or a one-line exit saying how to make it."""
    suffix = f"-{kind}" if kind else ""
    path = Path(tables) / f"{experiment}-{scale}{suffix}.csv"
    scale = scale.partition("-")[0]  # a variant's table comes from the same commands + ARGS
    if not path.is_file():
        sys.exit(f"error: no table {path}: run `make {experiment} SCALE={scale}` "
                 f"(or `make collect EXP={experiment} SCALE={scale}`)")
    try:
        frame = pd.read_csv(path, encoding="utf-8")
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        sys.exit(f"error: {path}: not a readable CSV table ({reason}); rebuild it with "
                 f"`make collect EXP={experiment} SCALE={scale}`")
    if frame.empty:
        sys.exit(f"error: table {path} has no complete runs yet: run `make sweep "
                 f"EXP={experiment} SCALE={scale}`")
    return frame


MINUS = "\u2212"  # the typographic minus, as matplotlib draws tick labels


def signed(value: float, digits: int = 1) -> str:
    """`+1.2` / `−0.4` / `0.0`: a signed number with a true minus sign, and no sign on a
    value that rounds to zero (never `+0.0` or `-0.0`)."""
    text = f"{value:+.{digits}f}"
    if float(text) == 0:
        return f"{0:.{digits}f}"
    return text.replace("-", MINUS)


def settings_note(fig, text: str, scale: str) -> None:
    """Write the scale and key settings on the figure (bottom-left, small)."""
    fig.text(0.005, 0.005, f"scale={scale} | {text}", fontsize=7, color="0.35",
             ha="left", va="bottom")


def save(fig, name: str, out: Path | None = None) -> Path:
    """Save figures/<name>.pdf and .png (or at `out`); returns the PNG path.

    `name` is `<experiment>-<scale>[-<variant>]`: a smoke figure never overwrites a paper one.
    """
    base = Path(out) if out is not None else FIGURES / name
    base.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(base.with_suffix(".pdf"), bbox_inches="tight")
    fig.savefig(base.with_suffix(".png"), bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {base.with_suffix('.pdf')} and .png")
    return base.with_suffix(".png")
