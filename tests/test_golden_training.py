"""Golden training check: the real Trainer against every step recomputed in the test.

A tiny float64 training (synthetic data, 2 epochs of 4 steps, evaluations every 2 steps) runs
through pcalm.runs.train.Trainer for BP, PC and PC-ALM. The test then redoes it from SPEC.md alone
(tests/oracle.py): the init drawn from the seed, the data order of each epoch, the weight
gradients (autograd of ℓ for BP; inference by autograd of the energy for PC / PC-ALM), Adam
by `torch.optim.Adam` with the SPEC constants and lr = η0 γ0² sqrt(N/L), the evaluations on
the test split and the post-training alignment to BP. Final weights and every logged number
must agree to ~1e-10.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcalm.data import Dataset
from pcalm.runs.config import resolve_run_config
from pcalm.runs.train import Trainer
from tests import oracle
from tests.conftest import base_config

pytestmark = pytest.mark.usefixtures("one_thread")

D, N, L, C = 12, 6, 4, 10
GAMMA0 = 1.5
N_TRAIN, N_TEST, BATCH, EPOCHS, EVALS = 37, 23, 9, 2, 2  # 37 // 9 = 4 steps, 1 sample dropped
TOL = 1e-10


def _dataset() -> Dataset:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(N_TRAIN + N_TEST, D, generator=g, dtype=torch.float64)
    labels = torch.randint(0, C, (N_TRAIN + N_TEST,), generator=g)
    return Dataset("synthetic", x[:N_TRAIN], labels[:N_TRAIN], x[N_TRAIN:], labels[N_TRAIN:])


def _config(tmp_path, algo: dict, act: str, seed: int, eta0: float) -> dict:
    raw = base_config(tmp_path, tmp_path, algo=algo, data={"name": "synthetic"},
                      model={"width": N, "depth": L, "activation": act, "gamma0": GAMMA0},
                      train={"epochs": EPOCHS, "batch_size": BATCH, "eta0": eta0, "seed": seed,
                             "dtype": "float64", "evals_per_epoch": EVALS})
    return resolve_run_config(raw)


def _init(seed: int) -> list[torch.Tensor]:
    """SPEC §1: W ~ N(0, 1), drawn (float32, upcast) from one generator seeded by the seed."""
    g = torch.Generator().manual_seed(seed)
    w_in = torch.randn(N, D, generator=g)
    hidden = torch.randn(L - 2, N, N, generator=g)
    w_out = torch.randn(C, N, generator=g)
    return [w.double() for w in (w_in, *hidden.unbind(0), w_out)]


def _grads(algo: dict, weights, x, y, act, a):
    if algo["name"] == "bp":
        return oracle.bp_grads(weights, x, y, act, a)
    return oracle.inference_grads(
        weights, x, y, act, a, algo=algo["name"], budget=algo["budget"],
        state_lr=algo["state_lr"], rho=algo.get("rho", 1.0), alpha=algo.get("alpha", 1.0),
        inner_steps=algo.get("inner_steps", 1),
        post_dual=algo.get("weight_credit") == "post_dual")


def _metrics(weights, data: Dataset, act, a) -> dict:
    y_hat = oracle.forward(weights, data.x_test, act, a)[1]
    y = F.one_hot(data.y_test, C).double()
    return {"test_acc": (y_hat.argmax(-1) == data.y_test).double().mean().item(),
            "test_mse": oracle.loss(y_hat, y).item(),
            "test_ce": -(y_hat.log_softmax(-1) * y).sum(-1).mean().item()}


def golden_run(algo: dict, act: str, seed: int, eta0: float, data: Dataset):
    """The whole training redone by hand: (final weights, evaluation rows, summary bits)."""
    a = oracle.scales(D, N, L, GAMMA0)
    lr = eta0 * GAMMA0**2 * math.sqrt(N / L)
    params = [torch.nn.Parameter(w) for w in _init(seed)]
    adam = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
    steps_per_epoch = N_TRAIN // BATCH
    rows = [{"step": 0, "epoch": 0.0, "samples": 0, "train_loss": math.nan,
             **_metrics([p.detach() for p in params], data, act, a)}]
    losses = []
    step = 0
    for epoch in range(EPOCHS):
        order = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(seed + epoch))
        for i in range(steps_per_epoch):
            idx = order[i * BATCH:(i + 1) * BATCH]
            x, y = data.x_train[idx], F.one_hot(data.y_train[idx], C).double()
            grads, loss = _grads(algo, [p.detach() for p in params], x, y, act, a)
            for p, g in zip(params, grads):
                p.grad = g.clone()
            adam.step()
            losses.append(loss.item())
            step += 1
            if step % (steps_per_epoch // EVALS) == 0:  # evenly spaced, the last included
                rows.append({"step": step, "epoch": step / steps_per_epoch,
                             "samples": step * BATCH, "train_loss": sum(losses) / len(losses),
                             **_metrics([p.detach() for p in params], data, act, a)})
                losses = []
    weights = [p.detach() for p in params]
    extra = {"lr": lr, "steps": step}
    if algo["name"] != "bp":  # alignment to BP on the authors' batch (SPEC §7): the first
        # min(64, n_train) samples of numpy's default_rng(seed) shuffle of arange(n_train)
        order = np.arange(len(data.x_train))
        np.random.default_rng(seed).shuffle(order)
        first = torch.as_tensor(order[:64])
        x = data.x_train[first]
        y = F.one_hot(data.y_train[first], C).double()
        g_algo = torch.cat([g.reshape(-1) for g in _grads(algo, weights, x, y, act, a)[0]])
        g_bp = torch.cat([g.reshape(-1) for g in oracle.bp_grads(weights, x, y, act, a)[0]])
        extra["grad_cosine"] = (g_algo @ g_bp / (g_algo.norm() * g_bp.norm())).item()
        extra["grad_rel_error"] = ((g_algo - g_bp).norm() / g_bp.norm()).item()
    return weights, rows, extra


BP = {"name": "bp"}
PC = {"name": "pc", "budget": 5, "state_lr": 0.2}
PCALM = {"name": "pcalm", "budget": 5, "state_lr": 0.2, "rho": 1.3, "alpha": 0.7,
         "inner_steps": 1, "weight_credit": "pre_dual"}
CASES = {
    "bp-tanh": [(BP, 0, 1e-2)],
    "pc-tanh": [(PC, 1, 1e-2)],
    "pcalm-tanh": [(PCALM, 2, 1e-2)],
    "pcalm-post_dual-inner2": [(dict(PCALM, weight_credit="post_dual", inner_steps=2), 0, 1e-2)],
    # a mixed stack (PC and PC-ALM, own seeds, η_h and η0) trains each model as alone
    "stack-pc-pcalm": [(PC, 0, 1e-2), (dict(PCALM, state_lr=0.15), 3, 4e-3)],
}


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("case", list(CASES))
def test_trainer_matches_the_golden_recomputation(tmp_path, case, act):
    if act == "relu" and case not in ("bp-tanh", "pcalm-tanh"):
        pytest.skip("relu: one BP and one PC-ALM case are enough")
    data = _dataset()
    members = CASES[case]
    configs = [_config(tmp_path, algo, act, seed, eta0) for algo, seed, eta0 in members]
    trainer = Trainer(configs, data)
    summaries = trainer.run()
    got_weights = trainer.net.weights
    for m, ((algo, seed, eta0), summary) in enumerate(zip(members, summaries)):
        weights, rows, extra = golden_run(algo, act, seed, eta0, data)
        for got, want in zip(got_weights, weights):
            torch.testing.assert_close(got.detach()[m], want, rtol=TOL, atol=TOL)
        got_rows = trainer.state.rows[m]
        assert [r["step"] for r in got_rows] == [r["step"] for r in rows] == [0, 2, 4, 6, 8]
        for got, want in zip(got_rows, rows):
            assert set(want) <= set(got)
            for key, value in want.items():
                if isinstance(value, float) and math.isnan(value):
                    assert math.isnan(got[key]), (key, got["step"])
                else:
                    assert got[key] == pytest.approx(value, rel=TOL, abs=TOL), (key, got["step"])
        assert summary["status"] == "complete" and summary["steps"] == extra["steps"] == 8
        assert summary["lr"] == pytest.approx(extra["lr"], rel=1e-14)
        for key in ("test_acc", "test_mse", "test_ce", "train_loss"):
            assert summary[key] == pytest.approx(rows[-1][key], rel=TOL, abs=TOL), key
        if algo["name"] == "bp":
            assert "grad_cosine" not in summary
        else:
            assert summary["grad_cosine"] == pytest.approx(extra["grad_cosine"], rel=1e-9)
            assert summary["grad_rel_error"] == pytest.approx(extra["grad_rel_error"],
                                                              rel=1e-9)
            assert abs(summary["grad_cosine"] - 1) > 1e-4  # not BP compared with itself


def test_a_diverging_model_stops_alone_and_reports_nan(tmp_path):
    """A stack whose first model blows up (η_h = 1e100: the states overflow in the first
    step) and whose second trains normally: the second still matches its golden run to
    1e-10 (a divergence check summed over the whole stack would stop it too); the first is
    `diverged` at step 1, with NaN test metrics in every row from then on; every row reaches
    the on_eval hook as (model index, row)."""
    data = _dataset()
    blowing_up = dict(PC, state_lr=1e100)
    configs = [_config(tmp_path, blowing_up, "tanh", 0, 1e-2),
               _config(tmp_path, dict(PCALM), "tanh", 2, 1e-2)]
    seen = []
    trainer = Trainer(configs, data)
    summaries = trainer.run(on_eval=lambda m, row: seen.append((m, row)))
    weights, rows, extra = golden_run(PCALM, "tanh", 2, 1e-2, data)
    for got, want in zip(trainer.net.weights, weights):
        torch.testing.assert_close(got.detach()[1], want, rtol=TOL, atol=TOL)
    assert [r["test_acc"] for r in trainer.state.rows[1]] == pytest.approx(
        [r["test_acc"] for r in rows], abs=TOL)
    bad, good = summaries
    assert (bad["status"], bad["diverged"], bad["diverged_step"]) == ("diverged", True, 1)
    assert (good["status"], good["diverged"], good["diverged_step"]) == ("complete", False, None)
    first = trainer.state.rows[0]
    start = _metrics(_init(0), data, "tanh", oracle.scales(D, N, L, GAMMA0))
    assert first[0]["step"] == 0
    assert first[0]["test_mse"] == pytest.approx(start["test_mse"], rel=TOL)  # before step 1
    for row in first[1:]:
        assert all(math.isnan(row[k]) for k in ("test_acc", "test_mse", "test_ce", "train_loss"))
    assert sorted((m, r["step"]) for m, r in seen) == sorted(
        (m, r["step"]) for m in (0, 1) for r in trainer.state.rows[m])
    assert all(row is trainer.state.rows[m][[r["step"] for r in trainer.state.rows[m]]
                                            .index(row["step"])] for m, row in seen)
