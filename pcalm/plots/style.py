"""Shared look of every figure: one colour per algorithm, labelled axes, settings on the
figure, PDF + PNG out. Figures read collected tables only (results/tables/), never train.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pcalm.analysis.grid import TableError, read_csv_table  # noqa: E402
from pcalm.analysis.stats import normalise  # noqa: E402
from pcalm.analysis.tables import default_tables_dir as default_tables  # noqa: E402,F401
from pcalm.atomic import fsync_dir  # noqa: E402
from pcalm.names import ACTIVATION_ALIASES, ALGORITHM_LABELS  # noqa: E402
from pcalm.names import ACTIVATION_LABELS as CANONICAL_LABELS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "figures"


ALGO_COLORS = {"bp": "#222222", "pc": "#1f77b4", "pcalm": "#d62728"}
ALGO_LABELS = ALGORITHM_LABELS
# a table may spell the identity `linear`: both read "linear" on a figure
ACTIVATION_LABELS = CANONICAL_LABELS | {alias: CANONICAL_LABELS[name]
                                        for alias, name in ACTIVATION_ALIASES.items()}

plt.rcParams.update({
    "figure.dpi": 110, "savefig.dpi": 150, "font.size": 9, "axes.titlesize": 9,
    "axes.labelsize": 9, "legend.fontsize": 8, "axes.spines.top": False,
    "axes.spines.right": False,
})


SCALES = ("smoke", "paper", "paper_cpu")


def check_scale(text: str) -> str:
    """`<scale>` or `<scale>-<variant>` (a table of an experiment with a changed setting, as
    `experiments/collect.py --print-scale` names it); the figure is then
    `<experiment>-<text>`. ValueError (one line) otherwise."""
    scale, dash, variant = text.partition("-")
    if scale not in SCALES or (dash and not variant) or "/" in variant:
        raise ValueError(
            f"bad value --scale={text!r}: allowed: {', '.join(SCALES)}, optionally followed by "
            "-<variant> as `experiments/collect.py --print-scale` prints it")
    return text


def read_table(tables: Path, experiment: str, scale: str, kind: str = "",
               needs: tuple[str, ...] = (), numbers: tuple[str, ...] = ()) -> pd.DataFrame:
    """results/tables/<experiment>-<scale>[-kind].csv with the columns `needs` and numbers in
    the columns `numbers` (and pcalm.analysis.grid's number columns); a TableError (one line
    naming the file and, where it applies, the column and value, and how to make the table)
    otherwise."""
    suffix = f"-{kind}" if kind else ""
    path = Path(tables) / f"{experiment}-{scale}{suffix}.csv"
    scale = scale.partition("-")[0]  # a variant's table comes from the same commands + ARGS
    if not path.is_file():
        raise TableError(f"no table {path}: run `make {experiment} SCALE={scale}` "
                         f"(or `make collect EXP={experiment} SCALE={scale}`)")
    frame = read_csv_table(path, f"rebuild it with `make collect EXP={experiment} "
                           f"SCALE={scale}`", needs, numbers)
    if frame is None:
        raise TableError(f"table {path} has no complete runs yet: run `make sweep "
                         f"EXP={experiment} SCALE={scale}`")
    return frame


def read_accuracies(tables: Path, experiment: str, scale: str,
                    needs: tuple[str, ...] = (), numbers: tuple[str, ...] = ()) -> pd.DataFrame:
    """A training table (`read_table`, with `test_acc` needed) normalised for drawing
    (pcalm.analysis.stats.normalise: a diverged run counts as chance). A run that did not
    diverge but has no test accuracy is a damaged table (collect refuses such folders), not
    chance: a TableError naming the run."""
    frame = read_table(tables, experiment, scale, needs=(*needs, "test_acc"),
                       numbers=(*numbers, "test_acc"))
    df = normalise(frame)
    lacking = df[~df["diverged"] & df["test_acc"].isna()]
    if len(lacking):
        who = lacking["run_id"].iloc[0] if "run_id" in lacking else f"row {lacking.index[0] + 2}"
        scale = scale.partition("-")[0]
        raise TableError(f"{Path(tables) / f'{experiment}-{scale}.csv'}: {len(lacking)} run(s) "
                         f"that did not diverge have no test_acc (first: {who}); allowed: a "
                         f"number; rebuild it with `make collect EXP={experiment} "
                         f"SCALE={scale}`")
    return df


MINUS = "\u2212"  # the typographic minus, as matplotlib draws tick labels


def signed(value: float, digits: int = 1) -> str:
    """`+1.2` / `−0.4` / `0.0`: a signed number with a true minus sign, and no sign on a
    value that rounds to zero (never `+0.0` or `-0.0`)."""
    text = f"{value:+.{digits}f}"
    if float(text) == 0:
        return f"{0:.{digits}f}"
    return text.replace("-", MINUS)


def diverged_note(df: pd.DataFrame) -> str:
    """` | k of n runs diverged (…)` when a table (normalised: boolean `diverged`) holds
    diverged runs, else nothing: every figure says how many of its runs diverged."""
    if "diverged" not in df or not df["diverged"].any():
        return ""
    return (f" | {int(df['diverged'].sum())} of {len(df)} runs diverged (non-finite loss; "
            "counted as chance, 10 %)")


def settings_note(fig, text: str, scale: str) -> None:
    """Write the scale and key settings on the figure (bottom-left, small)."""
    fig.text(0.005, 0.005, f"scale={scale} | {text}", fontsize=7, color="0.35",
             ha="left", va="bottom")


def check_out(out: Path | None) -> Path | None:
    """A figure path given by the user (no suffix) must lie in an existing folder: a typo in
    it would otherwise scatter figures over new folders. ValueError (one line) if not."""
    if out is not None and not Path(out).parent.is_dir():
        raise ValueError(f"bad value --out={str(out)!r}: its folder does not exist; "
                         "allowed: a path in an existing folder")
    return out


def save(fig, name: str, out: Path | None = None) -> Path:
    """Save figures/<name>.pdf and .png (or at `out`); returns the PNG path.

    `name` is `<experiment>-<scale>[-<variant>]`: a smoke figure never overwrites a paper one.
    Each file is written to a temporary name and renamed, so an interrupted save leaves the
    previous figure, never half a file.
    """
    base = Path(check_out(out)) if out is not None else FIGURES / name
    base.parent.mkdir(parents=True, exist_ok=True)
    try:
        for suffix in (".pdf", ".png"):
            final = base.with_suffix(suffix)
            partial = final.with_name(final.name + ".tmp")
            try:
                fig.savefig(partial, format=suffix[1:], bbox_inches="tight")
                os.replace(partial, final)
            finally:
                partial.unlink(missing_ok=True)
        fsync_dir(base.parent)
    finally:
        plt.close(fig)
    return base.with_suffix(".png")
