"""The paper's per-cell activity step η_h = 1/λ_max (SPEC §4 grid rule).

Two tables feed `algo.state_lr: table`, in this order:

1. the authors' published table (configs/authors_eta_best_by_cell.csv, shipped unchanged:
   150 cells, both datasets × linear/ReLU/tanh × N, L ∈ {8 … 128}); its `eta_best` is used
   verbatim wherever it has the cell;
2. our recomputation (configs/eta_table.csv, `make eta-table`) for every other cell
   (N ≥ 256, depth 4, synthetic data, ...).

Every resolved run records which one it used (`state_lr_source`: authors | pcalm | config).

Our λ_max is the top eigenvalue of the Gauss–Newton inference Hessian in z of the freshly
initialised net, on the seed's first training batch of 64, maximised over the batch's
samples and taken as the median over seeds 0–2 (`pcalm.core.eta_recipe.cell_lambda_max`;
this module only reads and writes the tables, and never imports torch).

Both tables are validated when read (header, every value finite and in range, η_h = 1/λ_max
to the written precision): a corrupt table is a one-line EtaTableError naming the file, the
line and the fix, never a silently different η_h.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from pcalm.names import ACTIVATION_ALIASES, ACTIVATION_NAMES, canonical_activation

TABLE_COLUMNS = ("data", "activation", "width", "depth", "lambda_max", "state_lr", "seeds")
WRITTEN_COLUMNS = (*TABLE_COLUMNS, "recipe")  # recipe: how λ_max was computed (power16 ...)
AUTHORS_COLUMNS = ("dataset", "activation", "N", "L", "lambda_max_total_gn_median",
                   "eta_best_1_over_lambda_median")
AUTHORS_TABLE_NAME = "authors_eta_best_by_cell.csv"
# η_h·λ_max must be 1 to the precision the tables are written with (6 decimals in ours, full
# doubles in the authors'): a value cut short ("0.22" for 0.2259) fails this check.
CONSISTENCY = 2e-5
STATE_LR_RANGE = (1e-3, 2.0)  # η_h well outside this is no table value but a corruption
ACTIVATIONS = (*ACTIVATION_NAMES, *ACTIVATION_ALIASES)
# Rows of our table written before it had a `recipe` column were computed by Lanczos with
# 60 steps (pcalm.core.eta_recipe.recipe_name("lanczos")).
LEGACY_RECIPE = "lanczos60"

SOURCE_AUTHORS, SOURCE_OURS, SOURCE_CONFIG = "authors", "pcalm", "config"


class EtaTableError(ValueError):
    """A missing, corrupt or incomplete table; one line saying how to fix it."""


# ------------------------------------------------------------------ reading the tables


def _rows(path: Path, columns: tuple[str, ...], fix: str):
    """(line number, row) of a CSV whose header holds `columns`; one-line errors."""
    if not path.is_file():
        raise EtaTableError(f"no eta table at {path}: {fix}")
    # utf-8-sig: a byte-order mark (an editor's, e.g. Excel's) is not part of the first column
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        try:
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                raise EtaTableError(f"{path}, line 1: bad header (missing column {missing[0]}, "
                                    f"expected {','.join(columns)}): {fix}")
            for row in reader:
                yield reader.line_num, row
        except (UnicodeDecodeError, csv.Error) as err:
            raise EtaTableError(f"{path}, line {reader.line_num + 1}: not UTF-8 CSV "
                                f"({type(err).__name__}): {fix}") from None


def _unique(path: Path, seen: dict[tuple, int], key: tuple, line: int, fix: str) -> tuple:
    """`key`, remembered at `line`; a cell listed twice is refused naming both lines (which
    row would win is not a choice a table should make silently)."""
    if key in seen:
        raise EtaTableError(f"{path}, lines {seen[key]} and {line}: the cell "
                            f"{' '.join(map(str, key))} is listed twice: {fix}")
    seen[key] = line
    return key


def _field(path: Path, line: int, row: dict, column: str, kind, fix: str):
    text = row.get(column)
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise EtaTableError(f"{path}, line {line}: bad {column} {text!r}: {fix}") from None
    if kind is float and not math.isfinite(value):
        raise EtaTableError(f"{path}, line {line}: {column} {text!r} is not finite: {fix}")
    return value


def _activation(path: Path, line: int, row: dict, fix: str) -> str:
    """The row's activation under its canonical name (`linear` is `identity`)."""
    name = row.get("activation")
    if name not in ACTIVATIONS:
        raise EtaTableError(f"{path}, line {line}: bad activation {name!r} (allowed: "
                            f"{', '.join(ACTIVATIONS)}): {fix}")
    return canonical_activation(name)


def _cell_entry(path: Path, line: int, key: tuple, lam: float, eta: float, fix: str) -> tuple:
    """Check one cell's (λ_max, η_h): positive, in range, and η_h = 1/λ_max."""
    if key[2] < 1 or key[3] < 2:
        raise EtaTableError(f"{path}, line {line}: bad cell N={key[2]} L={key[3]}: {fix}")
    low, high = STATE_LR_RANGE
    if not low <= eta <= high:
        raise EtaTableError(f"{path}, line {line}: η_h {eta} outside [{low}, {high}]: {fix}")
    if lam <= 0 or abs(eta * lam - 1) > CONSISTENCY:
        raise EtaTableError(f"{path}, line {line}: η_h {eta} is not 1/λ_max (λ_max {lam}): "
                            f"the file is damaged; {fix}")
    return key


def load_table(path: Path | str) -> dict[tuple, float]:
    """{(data, activation, width, depth): state_lr} from our table (configs/eta_table.csv)."""
    path = Path(path)
    fix = "restore it (git checkout configs/eta_table.csv) or rerun `make eta-table`"
    table, seen = {}, {}
    for line, r in _rows(path, TABLE_COLUMNS, fix):
        key = (r["data"], _activation(path, line, r, fix),
               _field(path, line, r, "width", int, fix), _field(path, line, r, "depth", int, fix))
        lam = _field(path, line, r, "lambda_max", float, fix)
        eta = _field(path, line, r, "state_lr", float, fix)
        key = _unique(path, seen, _cell_entry(path, line, key, lam, eta, fix), line, fix)
        table[key] = eta
    return table


def load_authors_table(path: Path | str) -> dict[tuple, float]:
    """{(data, activation, width, depth): eta_best} from the authors' published table, the
    values verbatim (`linear` is our `identity`)."""
    path = Path(path)
    fix = f"restore it from the project (git checkout configs/{AUTHORS_TABLE_NAME})"
    table, seen = {}, {}
    for line, r in _rows(path, AUTHORS_COLUMNS, fix):
        key = (r["dataset"], _activation(path, line, r, fix),
               _field(path, line, r, "N", int, fix), _field(path, line, r, "L", int, fix))
        lam = _field(path, line, r, "lambda_max_total_gn_median", float, fix)
        eta = _field(path, line, r, "eta_best_1_over_lambda_median", float, fix)
        key = _unique(path, seen, _cell_entry(path, line, key, lam, eta, fix), line, fix)
        table[key] = eta
    return table


def lookup_state_lr(table_path: Path | str | None, data: str, activation: str,
                    width: int, depth: int,
                    authors_path: Path | str | None = None) -> tuple[float, str]:
    """(η_h, source) for a grid cell: the authors' value where their table has the cell,
    else ours; a cell neither has is an error, never a silent default."""
    key = (data, canonical_activation(activation), width, depth)
    if authors_path is not None:
        authors = load_authors_table(authors_path)
        if key in authors:
            return authors[key], SOURCE_AUTHORS
    if table_path is None:
        raise EtaTableError("algo.state_lr=table needs an eta table path")
    table = load_table(table_path)
    if key not in table:
        raise EtaTableError(
            f"no eta_h for cell data={data} activation={activation} N={width} L={depth} in "
            f"{table_path}: add it with `make eta-table DATA={data}` (or set algo.state_lr)"
        )
    return table[key], SOURCE_OURS


def write_table(path: Path | str, rows: list[dict]) -> None:
    """Merge `rows` into the table at `path` (same cell → replaced), written atomically."""
    from pcalm.atomic import atomic_write_text

    path = Path(path)
    existing = {}
    if path.is_file():
        load_table(path)  # never merge into a damaged table
        with path.open(newline="", encoding="utf-8-sig") as f:
            for r in csv.DictReader(f):
                existing[(r["data"], r["activation"], int(r["width"]), int(r["depth"]))] = r
    for r in rows:
        existing[(r["data"], r["activation"], int(r["width"]), int(r["depth"]))] = r
    lines = [",".join(WRITTEN_COLUMNS)]
    for key in sorted(existing):
        # rows written before recipes were recorded were computed with the exact λ_max
        row = {**existing[key], "recipe": existing[key].get("recipe") or LEGACY_RECIPE}
        lines.append(",".join(str(row[c]) for c in WRITTEN_COLUMNS))
    atomic_write_text(path, "\n".join(lines) + "\n")
