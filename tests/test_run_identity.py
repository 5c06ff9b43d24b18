"""A run's identity covers the data it saw; post-training alignment uses the authors' batch."""

import math

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


def test_post_training_alignment_uses_the_first_64_training_samples(tmp_path, one_thread):
    g = torch.Generator().manual_seed(0)
    x_train, x_test = torch.randn(200, 784, generator=g), 3 * torch.randn(100, 784, generator=g)
    y_train, y_test = torch.randint(0, 10, (200,), generator=g), torch.randint(0, 10, (100,),
                                                                               generator=g)
    data = Dataset("synthetic", x_train, y_train, x_test, y_test)
    cfg = base_config(tmp_path, tmp_path, model={"width": 8, "depth": 4},
                      train={"dtype": "float64", "batch_size": 50, "evals_per_epoch": 1},
                      data={"name": "synthetic"})
    trainer = Trainer([resolve_run_config(cfg)], data)
    summary = trainer.run()[0]
    onehot = torch.nn.functional.one_hot

    def cosine_on(x, labels):
        y = onehot(labels, 10).double()
        local = [w[0] for w in trainer.algo.weight_grads(trainer.net, x.double()[None],
                                                         y[None])]
        return _cosine(local, _plain_bp_grads(trainer.net, x.double(), y))

    on_train = cosine_on(x_train[:64], y_train[:64])
    assert summary["grad_cosine"] == pytest.approx(on_train, abs=1e-12)
    # per layer: W_1, each W_l of the residual blocks, W_L
    y64 = onehot(y_train[:64], 10).double()
    local = [w[0] for w in trainer.algo.weight_grads(trainer.net, x_train[:64].double()[None],
                                                     y64[None])]
    g_in, g_hidden, g_out = _plain_bp_grads(trainer.net, x_train[:64].double(), y64)
    per_layer = [_cosine([a], [b]) for a, b in zip(local, [g_in, *g_hidden, g_out])]
    assert len(per_layer) == 4
    assert summary["grad_cosine_per_layer"] == pytest.approx(per_layer, abs=1e-12)
    assert abs(on_train - cosine_on(x_test[:64], y_test[:64])) > 1e-4  # the batch matters
    assert abs(on_train - cosine_on(x_train[64:128], y_train[64:128])) > 1e-4
