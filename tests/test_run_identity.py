"""A run's identity covers the data it saw; post-training alignment uses the authors' batch."""

import math

import numpy as np
import pytest
import torch

from pcalm.data import DataError, Dataset, make_fake_idx_root, read_idx, write_idx
from pcalm.runs.config import resolve_run_config
from pcalm.runs.folder import run_id
from pcalm.runs.runner import execute
from pcalm.runs.train import Trainer
from tests.conftest import base_config


def test_other_files_get_another_run_id(tmp_path, results_dir):
    a = make_fake_idx_root(tmp_path / "a", n_train=200, n_test=50, seed=0)
    b = make_fake_idx_root(tmp_path / "b", n_train=200, n_test=50, seed=0)
    same = [resolve_run_config(base_config(r, results_dir)) for r in (a, b)]
    assert run_id(same[0]) == run_id(same[1])  # equal bytes, another folder: the same run
    labels = read_idx(b / "FashionMNIST/raw/train-labels-idx1-ubyte").copy()
    labels[:20] = (labels[:20] + 1) % 10  # the same sizes, other labels
    write_idx(b / "FashionMNIST/raw/train-labels-idx1-ubyte", labels)
    changed = resolve_run_config(base_config(b, results_dir))
    assert run_id(changed) != run_id(same[0])


def test_official_names_refuse_other_files_unless_told(tmp_path, results_dir):
    root = make_fake_idx_root(tmp_path / "fake", n_train=200, n_test=50)
    cfg = resolve_run_config(base_config(root, results_dir, data={"verify": True}))
    assert "checksum" not in cfg["data"]  # the official data's id: the dataset's name
    with pytest.raises(DataError) as err:
        execute([cfg], progress=False, say=lambda s: None)
    assert "MD5 mismatch" in str(err.value) and "data.verify=false" in str(err.value)
    assert not (results_dir / "runs").exists()


def test_files_changed_after_planning_are_refused(tmp_path, results_dir):
    root = make_fake_idx_root(tmp_path / "fake", n_train=200, n_test=50)
    cfg = resolve_run_config(base_config(root, results_dir))
    labels = read_idx(root / "FashionMNIST/raw/t10k-labels-idx1-ubyte").copy()
    write_idx(root / "FashionMNIST/raw/t10k-labels-idx1-ubyte", (labels + 1) % 10)
    with pytest.raises(DataError) as err:
        execute([cfg], progress=False, say=lambda s: None)
    assert "changed since this run was planned" in str(err.value)


def _plain_bp_grads(net, x, y):
    """∂/∂W of ½‖ŷ − y‖² (batch mean) by autograd through SPEC §1's forward pass."""
    w_in, w_hidden, w_out = (w.detach().clone().requires_grad_() for w in
                             (net.w_in[0], net.w_hidden[0], net.w_out[0]))
    d, n, depth = x.shape[1], w_in.shape[0], w_hidden.shape[0] + 2
    h = x @ w_in.T / math.sqrt(d)
    for l in range(depth - 2):
        h = h + torch.relu(h) @ w_hidden[l].T / math.sqrt(n * depth)
    y_hat = torch.relu(h) @ w_out.T / n
    loss = 0.5 * (y_hat - y).pow(2).sum() / len(x)
    return torch.autograd.grad(loss, (w_in, w_hidden, w_out))


def _cosine(a, b):
    a, b = torch.cat([g.reshape(-1) for g in a]), torch.cat([g.reshape(-1) for g in b])
    return float(a @ b / (a.norm() * b.norm()))


def _numpy_order(n, seed):
    order = np.arange(n)
    np.random.default_rng(seed).shuffle(order)
    return order


def test_post_training_alignment_uses_the_authors_batch_of_the_seeds_order(tmp_path,
                                                                          one_thread):
    """SPEC §7: the authors measure the post-training cosine on x_train[:64] after
    numpy.random.default_rng(seed) shuffled arange(n_train) in place; the next batches of
    64 of that order give the metric's spread. Recomputed here with numpy and plain
    autograd BP, for seed 5 (a file-order batch, or seed 0's, fails)."""
    g = torch.Generator().manual_seed(0)
    x_train, x_test = torch.randn(200, 784, generator=g), 3 * torch.randn(100, 784, generator=g)
    y_train, y_test = torch.randint(0, 10, (200,), generator=g), torch.randint(0, 10, (100,),
                                                                               generator=g)
    data = Dataset("synthetic", x_train, y_train, x_test, y_test)
    cfg = base_config(tmp_path, tmp_path, model={"width": 8, "depth": 4},
                      train={"dtype": "float64", "batch_size": 50, "evals_per_epoch": 1,
                             "seed": 5},
                      data={"name": "synthetic"})
    trainer = Trainer([resolve_run_config(cfg)], data)
    summary = trainer.run()[0]
    onehot = torch.nn.functional.one_hot

    def grads_on(x, labels):
        x, y = x.double(), onehot(labels, 10).double()
        local = [w[0] for w in trainer.algo.weight_grads(trainer.net, x[None], y[None])]
        g_in, g_hidden, g_out = _plain_bp_grads(trainer.net, x, y)
        return local, [g_in, *g_hidden, g_out]

    def cosine_on(rows):
        rows = torch.as_tensor(rows)
        return _cosine(*grads_on(x_train[rows], y_train[rows]))

    order = _numpy_order(200, 5)
    on_authors = cosine_on(order[:64])
    assert summary["alignment_batch"] == "authors_seed_order"
    assert summary["grad_cosine"] == pytest.approx(on_authors, abs=1e-12)
    local, bp = grads_on(x_train[torch.as_tensor(order[:64])], y_train[torch.as_tensor(order[:64])])
    per_layer = [_cosine([a], [b]) for a, b in zip(local, bp)]
    assert len(per_layer) == 4  # W_1, each W_l of the residual blocks, W_L
    assert summary["grad_cosine_per_layer"] == pytest.approx(per_layer, abs=1e-12)
    # the spread: the next full batches of 64 of that order (200 samples hold two more)
    spread = [cosine_on(order[64:128]), cosine_on(order[128:192])]
    assert summary["grad_cosine_spread_batches"] == 2
    assert summary["grad_cosine_spread_mean"] == pytest.approx(np.mean(spread), abs=1e-12)
    assert summary["grad_cosine_spread_sd"] == pytest.approx(np.std(spread, ddof=1),
                                                             abs=1e-12)
    # the batch matters, far beyond the 1e-12 above: the file order, seed 0's order and
    # the test split all give another cosine
    for rows in (np.arange(64), _numpy_order(200, 0)[:64]):
        assert abs(on_authors - cosine_on(rows)) > 1e-6
    assert abs(on_authors - _cosine(*grads_on(x_test[:64], y_test[:64]))) > 1e-6
