"""The λ_max recipe behind η_h = 1/λ_max (SPEC §4), every step recomputed in the test, on
small real-format IDX files the test writes (no real data needed).

Recipe: for each seed 0–2, the freshly initialised float64 net (W ~ N(0, 1) from the seed)
and the seed's first batch of 64 in the training loop's epoch-0 order (randperm seeded by
the seed); per sample the top eigenvalue of the Gauss–Newton inference Hessian
H = PᵀP + ρRᵀR at the forward pass; the max over the batch; the median over seeds. The
eigenvalue is exact (`lanczos`) or a fixed number of power-iteration steps (`power`).
"""

from __future__ import annotations

import statistics

import pytest
import torch

from pcalm.core import eta_recipe as eta
from pcalm.data import load_dataset, make_fake_idx_root
from tests import oracle

pytestmark = pytest.mark.usefixtures("one_thread")

N_TRAIN = 200


@pytest.fixture(scope="module")
def x_train(tmp_path_factory):
    root = make_fake_idx_root(tmp_path_factory.mktemp("idx"), n_train=N_TRAIN, n_test=20,
                              datasets=("FashionMNIST",))
    return load_dataset("fashion_mnist", root, verify=False).x_train


def _init(seed: int, d: int, n: int, depth: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w_in, hidden, w_out = (torch.randn(n, d, generator=g),
                           torch.randn(depth - 2, n, n, generator=g),
                           torch.randn(10, n, generator=g))
    return [w.double() for w in (w_in, *hidden.unbind(0), w_out)]


def _batch(x, seed: int, size: int = 64):
    """The seed's first batch in the epoch-0 order of the training loop (SPEC §4)."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[order[:size]].double()


def _power(hess: torch.Tensor, seed: int, layers: int, n: int, iters: int) -> torch.Tensor:
    """Per-sample power iteration from v0 ~ N(0, I) (drawn [L-1, B, N] from the seed), the
    estimate ‖H v_{k-1}‖ after `iters` products."""
    batch = hess.shape[0]
    v = torch.randn(layers, batch, n, generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64).transpose(0, 1).reshape(batch, -1)
    v = v / v.norm(dim=1, keepdim=True)
    for _ in range(iters):
        hv = (hess @ v[..., None])[..., 0]
        estimate = hv.norm(dim=1)
        v = hv / estimate[:, None]
    return estimate


def _per_seed(x, act, n, depth, rho=1.0, batch_of=_batch, method="lanczos", iters=None):
    values = []
    for seed in (0, 1, 2):
        a = oracle.scales(x.shape[1], n, depth)
        xb = batch_of(x, seed)
        hess = oracle.gauss_newton_hessians(_init(seed, x.shape[1], n, depth), xb, act, a, rho)
        if method == "lanczos":
            per_sample = torch.linalg.eigvalsh(hess)[:, -1]
        else:
            per_sample = _power(hess, seed, depth - 1, n, iters)
        values.append(per_sample.max().item())  # the stiffest sample sets stability
    return values


@pytest.mark.parametrize("act, n, depth", [("relu", 8, 8), ("tanh", 6, 5)])
def test_exact_recipe(x_train, act, n, depth):
    """Exact λ_max: median over seeds of the batch max. Catches the max or mean over seeds,
    a mean over the batch, another batch (the first 64 rows, or another seed's order), a
    missing readout term, a wrong ρ."""
    values = _per_seed(x_train, act, n, depth)
    want = statistics.median(values)
    assert max(values) - min(values) > 1e-3 * want  # median, max and min are apart
    got = eta.cell_lambda_max(x_train, act, n, depth, method="lanczos")
    assert got == pytest.approx(want, rel=1e-10)
    # the data enter: another batch gives another value
    first_rows = statistics.median(_per_seed(x_train, act, n, depth,
                                             batch_of=lambda x, s: x[:64].double()))
    assert abs(first_rows - want) > 1e-4 * want
    rho = 2.0
    got_rho = eta.cell_lambda_max(x_train, act, n, depth, rho=rho, method="lanczos")
    assert got_rho == pytest.approx(statistics.median(_per_seed(x_train, act, n, depth, rho)),
                                    rel=1e-10)


def test_the_batch_is_the_training_loops_first_batch(x_train):
    for seed in (0, 4):
        torch.testing.assert_close(eta.first_batch(x_train, seed).double(),
                                   _batch(x_train, seed), rtol=0, atol=0)
    assert eta.HESSIAN_BATCH == 64


def test_default_recipe_is_power_iteration_with_its_step_count(x_train):
    """The table's recipe: the same steps with the estimate after exactly 17 power steps, the
    count that reproduces the authors' table (README). Written out, not read from
    eta.POWER_ITERS: an edited constant must fail here. Catches one step more or fewer."""
    assert eta.LAMBDA_METHOD == "power"
    k = 17
    want = statistics.median(_per_seed(x_train, "relu", 8, 8, method="power", iters=k))
    got = eta.cell_lambda_max(x_train, "relu", 8, 8)
    assert got == pytest.approx(want, rel=1e-10)
    for other in (k - 1, k + 1):
        near = statistics.median(_per_seed(x_train, "relu", 8, 8, method="power", iters=other))
        assert abs(near - want) > 1e-6 * want  # the step count is visible at this precision
    exact = statistics.median(_per_seed(x_train, "relu", 8, 8))
    assert got < exact  # power iteration converges from below


def test_power_traces_are_the_recipe_after_each_step(x_train):
    """`make eta-table --choose-iters` picks the step count from these traces: entry k−1 is
    the recipe's value after k power steps (median over seeds of the batch max)."""
    iters = 5
    got = eta.cell_power_traces(x_train, "tanh", 6, 5, iters)
    want = [statistics.median(_per_seed(x_train, "tanh", 6, 5, method="power", iters=k))
            for k in range(1, iters + 1)]
    assert got == pytest.approx(want, rel=1e-10)
    assert len(set(got)) == iters  # each step moves the estimate


def test_linear_cells_reproduce_the_published_table_without_real_data(x_train):
    """A linear net's Hessian does not depend on x (SPEC §4), so the test's IDX files give
    the real cell's λ_max: within a few percent of the authors' 0.19710 at N = L = 8 (their
    random init, not ours)."""
    assert 1 / eta.cell_lambda_max(x_train, "identity", 8, 8) == pytest.approx(0.19710,
                                                                               rel=0.05)
    other = x_train * 3 + 1
    assert eta.cell_lambda_max(other, "identity", 8, 8) == pytest.approx(
        eta.cell_lambda_max(x_train, "identity", 8, 8), rel=1e-9)


def _committed_linear_cells(max_size: int = 256) -> list[tuple]:
    """Linear rows of configs/eta_table.csv small enough to recompute in a test."""
    import csv

    from tests.conftest import REPO

    with (REPO / "configs" / "eta_table.csv").open(newline="") as f:
        return [(r["data"], int(r["width"]), int(r["depth"]), float(r["lambda_max"]),
                 r["recipe"]) for r in csv.DictReader(f)
                if r["activation"] == "identity" and int(r["width"]) * int(r["depth"]) <= max_size]


@pytest.mark.parametrize("data, width, depth, lam, recipe", _committed_linear_cells())
def test_the_code_reproduces_the_committed_table(x_train, data, width, depth, lam, recipe):
    """The committed η table is what the code computes: its linear cells (the Hessian does
    not depend on x there) recomputed on the test's IDX files with the row's recipe, to the
    six decimals written."""
    import re

    method, iters = re.fullmatch(r"([a-z]+)(\d+)", recipe).groups()
    got = eta.cell_lambda_max(x_train, "identity", width, depth, method=method,
                              iters=int(iters))
    assert got == pytest.approx(lam, abs=1.5e-6)
