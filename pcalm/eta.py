"""The paper's per-cell activity step η_h = 1/λ_max (SPEC §4 grid rule).

λ_max is the top eigenvalue of the Gauss–Newton inference Hessian in z of the freshly
initialised net, on the seed's first training batch of 64, maximised over the batch's
samples and taken as the median over seeds 0–2. `make eta-table` writes the table once per
dataset to configs/eta_table.csv; grid configs then say `algo.state_lr: table`.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Iterable
from pathlib import Path

import torch

from pcalm.model import ACTIVATION_ALIASES, ResidualMLP

TABLE_COLUMNS = ("data", "activation", "width", "depth", "lambda_max", "state_lr", "seeds")
DEFAULT_SEEDS = (0, 1, 2)
HESSIAN_BATCH = 64


class EtaTableError(ValueError):
    """A missing table or cell; one line saying how to make it."""


def _canonical_activation(name: str) -> str:
    return ACTIVATION_ALIASES.get(name, name)


def first_batch(x_train: torch.Tensor, seed: int, batch: int = HESSIAN_BATCH) -> torch.Tensor:
    """The seed's first training batch, in the training loop's epoch-0 order."""
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    return x_train[order[:batch]]


def cell_lambda_max(
    x_train: torch.Tensor, activation: str, width: int, depth: int,
    seeds: Iterable[int] = DEFAULT_SEEDS, rho: float = 1.0,
) -> float:
    """Median over seeds of λ_max of the inference Hessian at initialisation."""
    from pcalm.diagnostics import hessian_lambda_max  # diagnostics imports algorithms

    values = []
    for seed in seeds:
        net = ResidualMLP(x_train.shape[1], width, depth, activation=activation, seed=seed,
                          dtype=torch.float64)
        values.append(hessian_lambda_max(net, first_batch(x_train, seed).double(), rho=rho))
    return statistics.median(values)


def load_table(path: Path | str) -> dict[tuple, float]:
    """{(data, activation, width, depth): state_lr} from a table CSV."""
    path = Path(path)
    if not path.is_file():
        raise EtaTableError(f"no eta table at {path}: run `make eta-table` to compute it")
    with path.open(newline="") as f:
        return {
            (r["data"], r["activation"], int(r["width"]), int(r["depth"])): float(r["state_lr"])
            for r in csv.DictReader(f)
        }


def lookup_state_lr(table_path: Path | str | None, data: str, activation: str,
                    width: int, depth: int) -> float:
    """η_h for a grid cell; a cell the table lacks is an error, never a silent default."""
    if table_path is None:
        raise EtaTableError("algo.state_lr=table needs an eta table path")
    table = load_table(table_path)
    key = (data, _canonical_activation(activation), width, depth)
    if key not in table:
        raise EtaTableError(
            f"no eta_h for cell data={data} activation={activation} N={width} L={depth} in "
            f"{table_path}: add it with `make eta-table DATA={data}` (or set algo.state_lr)"
        )
    return table[key]


def write_table(path: Path | str, rows: list[dict]) -> None:
    """Merge `rows` into the table at `path` (same cell → replaced), written atomically."""
    from pcalm.results import atomic_write_text

    path = Path(path)
    existing = {}
    if path.is_file():
        with path.open(newline="") as f:
            for r in csv.DictReader(f):
                existing[(r["data"], r["activation"], int(r["width"]), int(r["depth"]))] = r
    for r in rows:
        existing[(r["data"], r["activation"], int(r["width"]), int(r["depth"]))] = r
    lines = [",".join(TABLE_COLUMNS)]
    for key in sorted(existing):
        r = existing[key]
        lines.append(",".join(str(r[c]) for c in TABLE_COLUMNS))
    atomic_write_text(path, "\n".join(lines) + "\n")
