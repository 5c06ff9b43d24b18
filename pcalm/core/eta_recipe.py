"""The η recipe: λ_max of the inference Hessian of a grid cell, from which η_h = 1/λ_max
(SPEC §4 grid rule; `make eta-table` writes configs/eta_table.csv with it).

λ_max is the top eigenvalue of the Gauss–Newton inference Hessian in z of the freshly
initialised net (`pcalm.core.diagnostics.hessian_lambda_max`), on the seed's first
training batch of 64 (the training runs' epoch-0 order, `pcalm.data.epoch_order`),
maximised over the batch's samples and taken as the median over seeds 0–2. Reading and
validating the tables is `pcalm.runs.eta`'s (torch-free) job.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

import torch

from pcalm.core.diagnostics import hessian_lambda_max, hessian_power_trace
from pcalm.core.model import ResidualMLP
from pcalm.data import epoch_order

DEFAULT_SEEDS = (0, 1, 2)
HESSIAN_BATCH = 64
# The recipe that reproduces the authors' table best (`make eta-table` reports how well):
# plain power iteration, POWER_ITERS steps per sample from a random start, max over the
# batch, median over seeds. The exact λ_max (Lanczos, method="lanczos") runs 2.5–4 % above
# their values at L ≥ 32, so they evidently stopped a power iteration early.
LAMBDA_METHOD = "power"
POWER_ITERS = 17
LANCZOS_ITERS = 60


def first_batch(x_train: torch.Tensor, seed: int, batch: int = HESSIAN_BATCH) -> torch.Tensor:
    """The seed's first training batch, in the training loop's epoch-0 order."""
    return x_train[epoch_order(len(x_train), seed)[:batch]]


def recipe_name(method: str = LAMBDA_METHOD, iters: int | None = None) -> str:
    """`power16`, `lanczos60`: how a table's λ_max was computed."""
    return f"{method}{iters or (POWER_ITERS if method == 'power' else LANCZOS_ITERS)}"


def cell_lambda_max(
    x_train: torch.Tensor, activation: str, width: int, depth: int,
    seeds: Iterable[int] = DEFAULT_SEEDS, rho: float = 1.0, method: str = LAMBDA_METHOD,
    iters: int | None = None,
) -> float:
    """Median over seeds of λ_max of the inference Hessian at initialisation, on each seed's
    first training batch (pcalm.core.diagnostics.hessian_lambda_max with `method`, `iters`)."""
    iters = iters or (POWER_ITERS if method == "power" else LANCZOS_ITERS)
    values = []
    for seed in seeds:
        net = ResidualMLP(x_train.shape[1], width, depth, activation=activation, seed=seed,
                          dtype=torch.float64)
        values.append(hessian_lambda_max(net, first_batch(x_train, seed).double(), rho=rho,
                                         method=method, iters=iters, seed=seed))
    return statistics.median(values)


def cell_power_traces(x_train: torch.Tensor, activation: str, width: int, depth: int,
                      iters: int, seeds: Iterable[int] = DEFAULT_SEEDS) -> list[float]:
    """The power-iteration recipe's λ_max after k = 1 … iters steps (one run per seed):
    median over seeds of the batch max, for choosing the step count."""
    per_seed = []
    for seed in seeds:
        net = ResidualMLP(x_train.shape[1], width, depth, activation=activation, seed=seed,
                          dtype=torch.float64)
        trace = hessian_power_trace(net, first_batch(x_train, seed).double(), iters=iters,
                                    seed=seed)
        per_seed.append(trace.max(dim=1).values.tolist())
    return [statistics.median(column) for column in zip(*per_seed)]
