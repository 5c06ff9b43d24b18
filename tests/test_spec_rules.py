"""Every rule of SPEC §1–4 and §7 pinned against a value computed in the test.

The expected values come from closed forms or from tests/oracle.py (plain torch written from
SPEC.md, importing nothing of pcalm's math), never from the code under test. Each test names
the planted change it is there to catch.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from pcalm.core import energy
from pcalm.core.model import ResidualMLP
from pcalm.data import Dataset
from tests import oracle

pytestmark = pytest.mark.usefixtures("one_thread")

ACTS = ["identity", "tanh", "relu"]


def _data(n, d, seed, c=10, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    labels = torch.randint(0, c, (n,), generator=g)
    return x, labels


# ------------------------------------------------------------------ §1 model


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("gamma0", [1.0, 0.5, 3.0])
def test_muPC_scalings_and_forward_pass(act, gamma0):
    """a_1 = 1/sqrt(D), a_h = 1/sqrt(N L), a_L = 1/(γ0 N); φ on every hidden input but the
    first layer's; residual skips on hidden layers only. Catches a wrong power of γ0, N or
    L in any scale, a φ on x, a missing skip."""
    d, n, depth = 7, 5, 4
    net = ResidualMLP(d, n, depth, output_dim=3, activation=act, gamma0=gamma0, seed=2,
                      dtype=torch.float64)
    want = (1 / math.sqrt(7), 1 / math.sqrt(20), 1 / (gamma0 * 5))
    assert (net.a_in, net.a_hidden, net.a_out) == pytest.approx(want, rel=1e-15)
    x, _ = _data(6, d, 0)
    h_want, y_want = oracle.forward(net.weights, x, act, oracle.scales(d, n, depth, gamma0))
    h, y_hat = net.forward_states(x)
    torch.testing.assert_close(h, torch.stack(h_want), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(y_hat, y_want, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(net(x), y_want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("act", ACTS)
def test_activation_derivatives_are_autograd_s_including_at_zero(act):
    """φ' of each activation equals autograd's, also at z = 0 (relu: φ'(0) = 0)."""
    from pcalm.core.model import get_activation

    z = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.7], dtype=torch.float64, requires_grad=True)
    phi = get_activation(act)
    fn, _ = oracle.PHI[act]
    torch.testing.assert_close(phi.fn(z), fn(z))
    (want,) = torch.autograd.grad(fn(z).sum(), z)
    torch.testing.assert_close(phi.deriv(z.detach()), want, rtol=1e-15, atol=0)


def test_sp_parameterisation_has_unit_scales_and_pytorch_init():
    """`sp`: all a = 1, weights U(±1/sqrt(fan_in)) (nn.Linear's default)."""
    net = ResidualMLP(400, 64, 3, activation="tanh", param="sp", seed=0, dtype=torch.float64)
    assert (net.a_in, net.a_hidden, net.a_out) == (1.0, 1.0, 1.0)
    x, _ = _data(4, 400, 1)
    torch.testing.assert_close(net(x), oracle.forward(net.weights, x, "tanh", (1, 1, 1))[1])
    for w in net.weights:
        bound = 1 / math.sqrt(w.shape[-1])
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.99 * bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    # drawn from the seed, in the order W_1, W_2..W_{L-1}, W_L
    g = torch.Generator().manual_seed(0)
    for w, shape, fan_in in ((net.w_in, (64, 400), 400), (net.w_hidden, (1, 64, 64), 64),
                             (net.w_out, (10, 64), 64)):
        want = (torch.rand(shape, generator=g) * 2 - 1) / math.sqrt(fan_in)
        torch.testing.assert_close(w.detach(), want.double(), rtol=0, atol=1e-7)


def test_a_stack_of_models_computes_each_model_as_alone():
    """ResidualMLP(seed=[s1, s2]) holds the two nets of seeds s1, s2: same weights, same
    hidden states and outputs (model dimension first)."""
    x, _ = _data(5, 7, 0)
    stack = ResidualMLP(7, 4, 5, output_dim=3, activation="tanh", seed=[3, 8],
                        dtype=torch.float64)
    h, y_hat = stack.forward_states(x)
    assert h.shape == (2, 4, 5, 4) and y_hat.shape == (2, 5, 3)
    for m, seed in enumerate((3, 8)):
        alone = ResidualMLP(7, 4, 5, output_dim=3, activation="tanh", seed=seed,
                            dtype=torch.float64)
        h_want, y_want = oracle.forward(alone.weights, x, "tanh", oracle.scales(7, 4, 5))
        torch.testing.assert_close(h[m], torch.stack(h_want), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(y_hat[m], y_want, rtol=1e-13, atol=1e-13)


def test_init_is_standard_normal_drawn_from_the_seed():
    """W ~ N(0, 1) i.i.d. (the scale lives in the a's), drawn from one generator seeded by
    the seed in the order W_1, W_2..W_{L-1}, W_L. Catches an init scale (1/sqrt(fan_in), 2×)
    or a different seed."""
    d, n, depth, seed = 784, 64, 4, 5
    net = ResidualMLP(d, n, depth, seed=seed)
    g = torch.Generator().manual_seed(seed)
    want = [torch.randn(n, d, generator=g), torch.randn(depth - 2, n, n, generator=g),
            torch.randn(10, n, generator=g)]
    for w, expected in zip((net.w_in, net.w_hidden, net.w_out), want):
        assert torch.equal(w.detach(), expected)
    flat = torch.cat([w.detach().reshape(-1) for w in net.weights]).double()
    assert flat.numel() > 50_000
    assert abs(flat.mean().item()) < 0.01 and flat.std().item() == pytest.approx(1, abs=0.01)


# ------------------------------------------------------------------ §1 loss and metrics


def test_loss_is_half_squared_error_summed_over_classes_mean_over_batch():
    y_hat = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    # sample 1: ½(1 + 4) = 2.5, sample 2: ½(0 + 1) = 0.5 → mean 1.5
    assert energy.mse_loss(y_hat, y).item() == 1.5


def test_evaluate_computes_the_spec_metrics():
    """test MSE = ½‖ŷ − y‖² averaged over samples (with its ½), CE of softmax(ŷ), accuracy."""
    from pcalm.runs.train import evaluate

    net = ResidualMLP(9, 6, 3, activation="tanh", gamma0=0.2, seed=1, dtype=torch.float64)
    x, labels = _data(37, 9, 3)
    got = evaluate(net, x, labels)
    y_hat = oracle.forward(net.weights, x, "tanh", oracle.scales(9, 6, 3, 0.2))[1]
    y = F.one_hot(labels, 10).double()
    assert got["test_mse"].item() == pytest.approx(oracle.loss(y_hat, y).item(), rel=1e-12)
    ce = -(y_hat.log_softmax(-1) * y).sum(-1).mean()
    assert got["test_ce"].item() == pytest.approx(ce.item(), rel=1e-12)
    acc = (y_hat.argmax(-1) == labels).double().mean()
    assert got["test_acc"].item() == acc.item()
    assert 0 < acc < 1  # a value that an off-by-one in the count would change


# ------------------------------------------------------------------ §4 Adam and lr


def test_adam_constants_and_update():
    """β = (0.9, 0.999), ε = 1e-8, bias-corrected, no weight decay — for torch's Adam (one
    lr) and for StackedAdam (an lr per model). The tiny gradients make ε visible."""
    from pcalm.core.optim import StackedAdam, make_adam

    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    scale = torch.tensor([1.0, 1e-8, 30.0], dtype=torch.float64).view(-1, 1, 1)
    steps = [[torch.randn(3, 4, 5, generator=g, dtype=torch.float64) * scale]
             for _ in range(7)]
    for lrs in ([0.01, 0.01, 0.01], [0.01, 0.002, 0.05]):
        p = torch.nn.Parameter(p0.clone())
        opt = make_adam([p], lrs)
        assert isinstance(opt, StackedAdam if len(set(lrs)) > 1 else torch.optim.Adam)
        for (grad,) in steps:
            p.grad = grad.clone()
            opt.step()
        for m, lr in enumerate(lrs):
            (want,) = oracle.adam([p0[m]], [[s[0][m]] for s in steps], lr)
            torch.testing.assert_close(p.detach()[m], want, rtol=1e-12, atol=1e-14)


def _cfg(tmp_path, width=8, depth=2, gamma0=3.0, eta0=1e-3, algo=None, **train):
    from pcalm.runs.config import resolve_run_config
    from tests.conftest import base_config

    raw = base_config(tmp_path, tmp_path, model={"width": width, "depth": depth,
                                                 "activation": "tanh", "gamma0": gamma0},
                      data={"name": "synthetic"},
                      train={"eta0": eta0, "dtype": "float64", **train},
                      **({"algo": algo} if algo else {}))
    return resolve_run_config(raw)


def _dataset(n_train=70, n_test=23, d=12, seed=0):
    x, y = _data(n_train + n_test, d, seed)
    return Dataset("synthetic", x[:n_train].float(), y[:n_train], x[n_train:].float(),
                   y[n_train:])


@pytest.mark.parametrize("width, depth, gamma0, eta0, lr", [
    (8, 2, 3.0, 1e-3, 1e-3 * 9 * 2),
    (32, 8, 0.5, 2e-3, 2e-3 * 0.25 * 2),
    (16, 4, 1.0, 1e-3, 1e-3 * 2),
])
def test_learning_rate_rule(tmp_path, width, depth, gamma0, eta0, lr):
    """lr = η0 · γ0² · sqrt(N/L), and it is the lr the Trainer's Adam uses. Catches lr
    without γ0², with γ0 instead of γ0², or sqrt(L/N)."""
    from pcalm.runs.train import Trainer, learning_rate

    cfg = _cfg(tmp_path, width, depth, gamma0, eta0, evals_per_epoch=1)  # 2 steps an epoch
    assert learning_rate(cfg) == pytest.approx(lr, rel=1e-14)
    trainer = Trainer([cfg], _dataset())
    opt = trainer.optimizer
    assert type(opt) is torch.optim.Adam
    (group,) = opt.param_groups
    assert group["lr"] == pytest.approx(lr, rel=1e-14)
    assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
    assert group["weight_decay"] == 0 and not group["amsgrad"]


# ------------------------------------------------------------------ §4 data order


def test_epochs_reshuffle_with_seed_plus_epoch_and_drop_the_last_batch(tmp_path):
    """Epoch e's order is randperm(n, Generator().manual_seed(seed + e)); steps cut it into
    consecutive batches; the last partial batch is dropped. Catches the same shuffle every
    epoch, a seed other than seed + epoch, or a kept partial batch."""
    from pcalm.runs.train import Trainer

    data = _dataset(n_train=70)
    seed, batch = 3, 16
    cfg = _cfg(tmp_path, seed=seed, batch_size=batch, epochs=2, evals_per_epoch=1)
    trainer = Trainer([cfg], data)
    assert trainer.steps_per_epoch == 70 // 16 == 4 and trainer.total_steps == 8
    x_train = data.x_train.double()
    for step in range(8):
        epoch, i = divmod(step, 4)
        order = torch.randperm(70, generator=torch.Generator().manual_seed(seed + epoch))
        idx = order[i * batch:(i + 1) * batch]
        x, y = trainer.batch_at(step)
        torch.testing.assert_close(x.reshape(batch, -1), x_train[idx], rtol=0, atol=0)
        assert torch.equal(y.reshape(batch, -1), F.one_hot(data.y_train[idx], 10).double())
    first, second = trainer.batch_at(0)[0], trainer.batch_at(4)[0]
    assert not torch.equal(first, second)  # epoch 1 is a new order
    trainer.run()
    assert trainer.state.step == 8


def test_figure_tasks_and_the_eta_recipe_see_the_training_runs_first_batch(tmp_path):
    """The figure tasks' first batch (`build.first_batch`: inputs, one-hot targets) and the
    η recipe's Hessian batch are the first samples of the seed's epoch-0 order, the batch a
    training run starts from. Computed here with torch.randperm; catches a task or the
    recipe drawing its own order (another seed, file order, numpy's generator)."""
    from pcalm.core import eta_recipe
    from pcalm.runs import build

    data = _dataset(n_train=70)
    seed, batch = 5, 16
    cfg = _cfg(tmp_path, seed=seed, batch_size=batch)
    order = torch.randperm(70, generator=torch.Generator().manual_seed(seed))[:batch]
    x, y = build.first_batch(cfg, data, torch.float64, torch.device("cpu"))
    torch.testing.assert_close(x, data.x_train[order].double(), rtol=0, atol=0)
    assert torch.equal(y, F.one_hot(data.y_train[order], 10).double())
    torch.testing.assert_close(eta_recipe.first_batch(data.x_train, seed, batch).double(),
                               data.x_train[order].double(), rtol=0, atol=0)


def test_metrics_are_measured_on_the_test_split(tmp_path):
    """Each evaluation row's test_* are the metrics of the current net on the TEST split
    (not the training split), and the summary reports the last row."""
    from pcalm.runs.train import Trainer

    data = _dataset(n_train=64, n_test=29)
    cfg = _cfg(tmp_path, width=6, depth=3, gamma0=1.0, batch_size=32, epochs=1,
               evals_per_epoch=1, eta0=0.05, algo={"name": "bp"})
    trainer = Trainer([cfg], data)
    a = oracle.scales(12, 6, 3)
    x_test, x_train = data.x_test.double(), data.x_train.double()

    def metrics(weights, x, labels):
        y_hat = oracle.forward(weights, x, "tanh", a)[1]
        y = F.one_hot(labels, 10).double()
        return {"test_mse": oracle.loss(y_hat, y).item(),
                "test_acc": (y_hat.argmax(-1) == labels).double().mean().item(),
                "test_ce": -(y_hat.log_softmax(-1) * y).sum(-1).mean().item()}

    initial = [w.detach().clone() for w in trainer.net.weights]
    summary = trainer.run()[0]
    final = [w.detach()[0] for w in trainer.net.weights]
    rows = trainer.state.rows[0]
    assert [r["step"] for r in rows] == [0, 2]
    for row, weights in ((rows[0], initial), (rows[1], final)):
        want = metrics([w.reshape(w.shape[-2:]) for w in weights], x_test, data.y_test)
        train_split = metrics([w.reshape(w.shape[-2:]) for w in weights], x_train,
                              data.y_train)
        for key, value in want.items():
            assert row[key] == pytest.approx(value, rel=1e-12), key
        assert row["test_mse"] != pytest.approx(train_split["test_mse"], rel=1e-3)
    for key in ("test_mse", "test_acc", "test_ce"):
        assert summary[key] == rows[-1][key]


# ------------------------------------------------------------------ §4 the inference Hessian


def _hessian_net(act, width=5, depth=4, d=6, seed=0):
    return ResidualMLP(d, width, depth, output_dim=3, activation=act, gamma0=0.7, seed=seed,
                       dtype=torch.float64)


def test_the_oracle_hessian_is_the_gauss_newton_form_of_autograd():
    """Check the test's own closed form: JᵀJ of the residual and readout maps (autograd)."""
    net = _hessian_net("tanh")
    a = (net.a_in, net.a_hidden, net.a_out)
    x, _ = _data(2, 6, 1)
    w = [t.detach() for t in net.weights]
    h, _ = oracle.forward(w, x, "tanh", a)
    rho = 1.7
    for b in range(2):
        z0 = torch.cat([t[b] for t in h])

        def res(z, b=b):
            zs = z.reshape(len(h), -1)
            r = [zs[0] - a[0] * w[0] @ x[b]]
            for l in range(1, len(h)):
                r.append(zs[l] - zs[l - 1] - a[1] * w[l] @ torch.tanh(zs[l - 1]))
            return torch.cat(r)

        def out(z):
            return a[2] * w[-1] @ torch.tanh(z.reshape(len(h), -1)[-1])

        jr = torch.autograd.functional.jacobian(res, z0)
        jo = torch.autograd.functional.jacobian(out, z0)
        want = jo.T @ jo + rho * jr.T @ jr
        got = oracle.gauss_newton_hessians(w, x, "tanh", a, rho)[b]
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", ACTS)
def test_hessian_vector_product_has_readout_and_constraint_terms(act):
    """diagnostics.hessian_vector_product is H = PᵀP + ρRᵀR per sample. Catches a missing
    readout term, a missing ρ, a missing φ'."""
    from pcalm.core.diagnostics import hessian_vector_product

    net = _hessian_net(act)
    x, _ = _data(3, 6, 2)
    rho = 1.7
    a = (net.a_in, net.a_hidden, net.a_out)
    hess = oracle.gauss_newton_hessians([w.detach() for w in net.weights], x, act, a, rho)
    h, _ = net.forward_states(x)
    v = torch.randn(h.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    got = hessian_vector_product(net, h, v, rho)  # [L-1, B, N]
    flat_v = v.transpose(0, 1).reshape(3, -1)
    want = (hess @ flat_v[..., None])[..., 0].reshape(3, *h.shape[::2]).transpose(0, 1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_hessian_lambda_max_is_the_largest_per_sample_eigenvalue(act):
    """λ_max = max over the batch of each sample's largest Hessian eigenvalue, accurate to
    1e-9 on a net whose state dimension (7 × 16 = 112) exceeds the default iteration count:
    catches a mean or median over samples, the readout term dropped, or too few Lanczos
    iterations."""
    from pcalm.core.diagnostics import hessian_lambda_max

    net = ResidualMLP(20, 16, 8, activation=act, seed=1, dtype=torch.float64)
    x, _ = _data(12, 20, 5)
    a = (net.a_in, net.a_hidden, net.a_out)
    per_sample = torch.linalg.eigvalsh(
        oracle.gauss_newton_hessians([w.detach() for w in net.weights], x, act, a))[:, -1]
    assert per_sample.max() - per_sample.min() > 1e-3  # the max is a real choice
    got = hessian_lambda_max(net, x)
    assert got == pytest.approx(per_sample.max().item(), rel=1e-9)
    rho = 2.5
    hess = oracle.gauss_newton_hessians([w.detach() for w in net.weights], x, act, a, rho)
    assert hessian_lambda_max(net, x, rho=rho) == pytest.approx(
        torch.linalg.eigvalsh(hess)[:, -1].max().item(), rel=1e-9)


def test_hessian_lambda_max_default_iterations_converge_on_a_deep_net():
    """At N = 8, L = 64 (state dimension 504, a near-degenerate top of the spectrum) the
    default solver is within 1e-6 of the dense eigenvalue (measured: 60 Lanczos steps
    1e-7, 40 steps 1e-4): catches a cut iteration count."""
    from pcalm.core.diagnostics import hessian_lambda_max

    net = ResidualMLP(20, 8, 64, activation="relu", seed=1, dtype=torch.float64)
    x, _ = _data(4, 20, 5)
    a = (net.a_in, net.a_hidden, net.a_out)
    hess = oracle.gauss_newton_hessians([w.detach() for w in net.weights], x, "relu", a)
    want = torch.linalg.eigvalsh(hess)[:, -1].max().item()
    assert hessian_lambda_max(net, x) == pytest.approx(want, rel=1e-6)


def test_hessian_lambda_max_of_a_float32_net_is_computed_in_float64():
    """A float32 net (the training dtype) gets the same λ_max as its float64 copy."""
    from pcalm.core.diagnostics import hessian_lambda_max

    net32 = ResidualMLP(20, 8, 6, activation="tanh", seed=2)
    net64 = ResidualMLP(20, 8, 6, activation="tanh", seed=2, dtype=torch.float64)
    x, _ = _data(6, 20, 1, dtype=torch.float32)
    for method in ("lanczos", "power"):
        assert hessian_lambda_max(net32, x, method=method) == pytest.approx(
            hessian_lambda_max(net64, x.double(), method=method), rel=1e-12)
    assert net32.w_in.dtype == torch.float32  # left as it was
    with pytest.raises(ValueError, match="bad λ_max method 'exact': allowed: lanczos, power"):
        hessian_lambda_max(net64, x, method="exact")


def test_linear_hessian_and_iteration_matrix():
    """Identity net, one sample: H = PᵀP + ρRᵀR and SPEC §6's block M, built in the test."""
    from pcalm.core.diagnostics import iteration_matrix, linear_hessian

    net = _hessian_net("identity", width=3, depth=4)
    a = (net.a_in, net.a_hidden, net.a_out)
    x, _ = _data(1, 6, 0)
    rho, eta, alpha = 1.3, 0.2, 0.6
    h = oracle.gauss_newton_hessians([w.detach() for w in net.weights], x, "identity", a, rho)[0]
    torch.testing.assert_close(linear_hessian(net, rho), h, rtol=1e-13, atol=1e-13)
    n, layers = 3, 3
    R = torch.eye(n * layers, dtype=torch.float64)
    for l in range(1, layers):
        R[l * n:(l + 1) * n, (l - 1) * n:l * n] = -(torch.eye(n) + a[1] * net.weights[l].detach())
    eye = torch.eye(n * layers, dtype=torch.float64)
    want = torch.cat([torch.cat([eye - eta * h, -eta * R.T], 1),
                      torch.cat([alpha * R @ (eye - eta * h), eye - alpha * eta * R @ R.T], 1)])
    torch.testing.assert_close(iteration_matrix(net, eta, rho, alpha), want, rtol=1e-13,
                               atol=1e-13)


# ------------------------------------------------------------------ §4, §7 the paper grid


def _authors_eta(data: str) -> dict:
    """{(activation, N, L): η_h} of the authors' published table, read in the test."""
    import csv

    from tests.conftest import REPO

    with (REPO / "configs" / "authors_eta_best_by_cell.csv").open(newline="") as f:
        return {({"linear": "identity"}.get(r["activation"], r["activation"]), int(r["N"]),
                 int(r["L"])): float(r["eta_best_1_over_lambda_median"])
                for r in csv.DictReader(f) if r["dataset"] == data}


@pytest.mark.parametrize("experiment, data", [("figure2", "fashion_mnist"),
                                              ("figure2_mnist", "mnist")])
def test_the_paper_grid_follows_the_grid_rule(experiment, data, tmp_path, monkeypatch):
    """SPEC §7 Fig. 2 at paper scale: N, L ∈ {8 … 128}, three activations, BP / PC / PC-ALM,
    seeds 0–2 (675 runs), full data, batch 64, one epoch, α = ρ = 1, k = 1, pre_dual; and
    §4's grid rule: T = 2L and η_h = the published 1/λ_max of the cell, the same for PC and
    PC-ALM; BP has neither."""
    from pcalm.sweeps.grid import load_sweep

    monkeypatch.setenv("PCALM_RESULTS", str(tmp_path))
    sweep = load_sweep([f"experiment={experiment}", "scale=paper", "data.verify=true"])
    configs = sweep.configs
    sizes = [8, 16, 32, 64, 128]
    assert len(configs) == 675
    cells = {(c["algo"]["name"], c["model"]["activation"], c["model"]["width"],
              c["model"]["depth"], c["train"]["seed"]) for c in configs}
    assert cells == set(itertools.product(["bp", "pc", "pcalm"], ACTS, sizes, sizes, [0, 1, 2]))
    eta = _authors_eta(data)
    for c in configs:
        m, t, algo = c["model"], c["train"], c["algo"]
        assert c["data"]["name"] == data
        assert c["data"]["train_size"] is None and c["data"]["test_size"] is None
        assert (t["batch_size"], t["epochs"], t["eta0"]) == (64, 1, 1e-3)
        assert (m["param"], m["gamma0"]) == ("mupc", 1.0)
        if algo["name"] == "bp":
            assert set(algo) == {"name"}
            continue
        assert algo["budget"] == 2 * m["depth"]
        assert algo["state_lr"] == eta[(m["activation"], m["width"], m["depth"])]
        if algo["name"] == "pcalm":
            assert (algo["rho"], algo["alpha"], algo["inner_steps"], algo["weight_credit"]) \
                == (1.0, 1.0, 1, "pre_dual")


# ------------------------------------------------------------------ §6 credit traces


@pytest.mark.parametrize("algo", ["pc", "pcalm"])
def test_credit_traces_are_the_credit_against_the_bp_adjoint(algo):
    """Fig. 3's data: after each primal step t (t = 0: the forward pass), per hidden layer,
    ‖ε_l(t)‖/‖δ_l‖ and cos(ε_l(t), −δ_l), with ε = ρr + λ (the λ of that step) and δ the
    BP adjoint ∂ℓ/∂h_l — recomputed by autograd from SPEC §2 and §4."""
    from pcalm.core.algorithms import make_algorithm
    from pcalm.core.diagnostics import credit_traces

    net = ResidualMLP(9, 5, 5, activation="tanh", seed=3, dtype=torch.float64)
    x, labels = _data(4, 9, 7)
    y = F.one_hot(labels, 10).double()
    eta, budget = 0.3, 6
    rho, alpha = (1.0, 0.0) if algo == "pc" else (1.4, 0.6)
    options = {} if algo == "pc" else {"rho": rho, "alpha": alpha}
    got = credit_traces(make_algorithm(algo, budget=budget, state_lr=eta, **options), net, x, y)

    w = [t.detach() for t in net.weights]
    a = (net.a_in, net.a_hidden, net.a_out)
    phi = torch.tanh
    # δ_l = ∂ℓ/∂h_l per sample (ℓ summed over the batch), by autograd along the forward pass
    h = [(a[0] * x @ w[0].T).requires_grad_(True)]
    for l in range(1, len(w) - 1):
        h[-1].retain_grad()
        h.append(h[-1] + a[1] * phi(h[-1]) @ w[l].T)
    h[-1].retain_grad()
    (0.5 * ((a[2] * phi(h[-1]) @ w[-1].T - y) ** 2).sum()).backward()
    deltas = [t.grad for t in h]
    h = [t.detach() for t in h]
    target = [-d for d in deltas]

    def residuals(z):
        r = [z[0] - a[0] * x @ w[0].T]
        for l in range(1, len(z)):
            r.append(z[l] - z[l - 1] - a[1] * phi(z[l - 1]) @ w[l].T)
        return r

    z, lam = [t.clone() for t in h], [torch.zeros_like(t) for t in h]
    rows_norm, rows_cos = [], []

    def record(z, lam):
        eps = [rho * r + ll for r, ll in zip(residuals(z), lam)]
        rows_norm.append([e.norm() / t.norm() for e, t in zip(eps, target)])
        # where no credit has arrived yet ε is 0 (our residuals there are rounding noise)
        rows_cos.append([(e * t).sum() / (e.norm() * t.norm())
                         if e.norm() > 1e-12 * t.norm() else torch.tensor(0.0)
                         for e, t in zip(eps, target)])

    record(z, lam)
    for t in range(budget):
        zr = [v.clone().requires_grad_(True) for v in z]
        grads = torch.autograd.grad(oracle.lagrangian(w, x, y, zr, lam, rho, "tanh", a), zr)
        z = [v - eta * x.shape[0] * g for v, g in zip(z, grads)]  # per-sample step
        record(z, lam)
        if t < budget - 1:
            lam = [ll + alpha * r for ll, r in zip(lam, residuals(z))]
    want_norm = torch.tensor([[v.item() for v in row] for row in rows_norm], dtype=torch.float64)
    want_cos = torch.tensor([[v.item() for v in row] for row in rows_cos], dtype=torch.float64)
    assert got["norm_ratio"].shape == (budget + 1, 4)
    torch.testing.assert_close(got["norm_ratio"], want_norm, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got["cosine"], want_cos, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ §6 alignment to BP


def test_grad_alignment_whole_network_and_per_layer():
    """cos and relative error over the whole parameter vector and per layer, by hand; a
    zero reference (or gradient) gives NaN, not a number."""
    from pcalm.core.diagnostics import grad_alignment

    g = [torch.tensor([[1.0, 0.0]]), torch.tensor([3.0, 4.0])]
    ref = [torch.tensor([[1.0, 1.0]]), torch.tensor([3.0, 0.0])]
    got = grad_alignment(g, ref)
    # whole: g = (1, 0, 3, 4), ref = (1, 1, 3, 0): g·ref = 10, |g| = √26, |ref| = √11
    assert got["cosine"] == pytest.approx(10 / math.sqrt(26 * 11), rel=1e-6)
    assert got["rel_error"] == pytest.approx(math.sqrt(0 + 1 + 0 + 16) / math.sqrt(11),
                                             rel=1e-6)
    assert got["cosine_per_layer"] == pytest.approx([1 / math.sqrt(2), 3 / 5], rel=1e-6)
    assert got["rel_error_per_layer"] == pytest.approx([1 / math.sqrt(2), 4 / 3], rel=1e-6)
    zero = grad_alignment([torch.zeros(2)], [torch.zeros(2)])
    assert all(math.isnan(zero[k]) for k in ("cosine", "rel_error"))
    assert math.isnan(grad_alignment([torch.ones(2)], [torch.zeros(2)])["rel_error"])


@pytest.mark.parametrize("kwargs", [{"activation": "relu"}, {"seed": [0, 1]}])
def test_linear_system_needs_one_identity_net(kwargs):
    from pcalm.core.diagnostics import linear_system

    net = ResidualMLP(4, 3, 3, **{"activation": "identity", **kwargs})
    with pytest.raises(ValueError, match="linear_system needs a single identity-activation net"):
        linear_system(net)
