"""The training loop: batches → algorithm's weight gradients → Adam, with evaluations.

One loop trains a *stack* of M same-shape models at once (configs that differ only in
`train.seed`): every tensor carries a leading model dimension, each model sees its own
data order, and nothing mixes across models, so model m's numbers equal a lone run's.
A single run is a stack of one. Device-agnostic: CUDA when present (`train.device=auto`).
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from pcalm.core.algorithms import (
    BP,
    float32_matmul_precision,
    ieee_float32,
    release_graphs,
    stack_algorithms,
)
from pcalm.core.device import DTYPES, resolve_device
from pcalm.core.diagnostics import grad_alignment
from pcalm.core.model import ResidualMLP
from pcalm.core.native import fused
from pcalm.core.optim import make_adam
from pcalm.data import ALIGNMENT_RULE, Dataset, alignment_batches, epoch_order
from pcalm.runs import build
from pcalm.runs.build import stack_key
from pcalm.runs.provenance import now

EVAL_CHUNK = 2000


def learning_rate(cfg: dict) -> float:
    """Adam lr = η0 · γ0² · sqrt(N/L) (SPEC §4), the same for BP, PC and PC-ALM."""
    m = cfg["model"]
    return cfg["train"]["eta0"] * m["gamma0"] ** 2 * math.sqrt(m["width"] / m["depth"])


def evaluation_steps(steps_per_epoch: int, epochs: int, evals_per_epoch: int) -> set[int]:
    """Step 0 and `evals_per_epoch` evenly spaced steps per epoch, the last one included.
    More evaluations than steps mean every step (asking for 1e9 costs no more than that)."""
    evals = min(evals_per_epoch, steps_per_epoch)
    points = {0}
    for epoch in range(epochs):
        for k in range(1, evals + 1):
            points.add(epoch * steps_per_epoch + round(k * steps_per_epoch / evals))
    return points


@torch.no_grad()
def evaluate(net: ResidualMLP, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Test accuracy, MSE (½‖ŷ−y‖²) and cross-entropy of softmax(ŷ), one value per model."""
    correct = mse = ce = 0.0
    for start in range(0, len(x), EVAL_CHUNK):
        xb, lb = x[start : start + EVAL_CHUNK], labels[start : start + EVAL_CHUNK]
        y_hat = net(xb)  # [M, n, C]
        y = F.one_hot(lb, y_hat.shape[-1]).to(y_hat.dtype)
        correct = correct + (y_hat.argmax(-1) == lb).sum(-1).to(torch.float64)
        mse = mse + 0.5 * (y_hat - y).pow(2).sum((-2, -1)).double()
        logp = torch.log_softmax(y_hat.double(), -1)
        ce = ce - logp.gather(-1, lb.expand(*y_hat.shape[:-1]).unsqueeze(-1)).sum((-2, -1))
    n = len(x)
    return {"test_acc": correct / n, "test_mse": mse / n, "test_ce": ce / n}


def _alignment_summary(batches: list[dict]) -> dict:
    """The summary's alignment keys: the authors' batch (the first), and the spread of the
    whole-network cosine over the further batches (sample sd; NaN with fewer than two)."""
    first, rest = batches[0], [b["cosine"] for b in batches[1:]]
    mean = sum(rest) / len(rest) if rest else math.nan
    sd = (math.sqrt(sum((c - mean) ** 2 for c in rest) / (len(rest) - 1))
          if len(rest) > 1 else math.nan)
    return {"grad_cosine": first["cosine"], "grad_rel_error": first["rel_error"],
            "grad_cosine_per_layer": first["cosine_per_layer"],
            "grad_cosine_spread_mean": mean, "grad_cosine_spread_sd": sd,
            "grad_cosine_spread_batches": len(rest), "alignment_batch": ALIGNMENT_RULE}


# Evaluations a run may plan in all (a row each in metrics.csv, kept in memory and checkpoints).
MAX_EVALUATIONS = 100_000
# Copies of the weights training holds: the weights, their gradients, Adam's two moments, and
# the inference loop's states and buffers (a few per layer and sample, counted apart below).
WEIGHT_COPIES = 4


def check_schedule(train: dict, n_train: int) -> None:
    """At most MAX_EVALUATIONS evaluations in all (an evaluation at most once per step): a
    schedule past that would fill the memory before the first step (ValueError, one line)."""
    steps = max(1, n_train // train["batch_size"])
    evals = min(train["evals_per_epoch"], steps)
    if train["epochs"] * evals > MAX_EVALUATIONS:
        raise ValueError(f"bad value train.epochs={train['epochs']}: allowed: epochs × "
                         f"evaluations per epoch ({evals}) at most "
                         f"{MAX_EVALUATIONS} evaluations")


def memory_estimate(cfg: dict, input_dim: int, classes: int, models: int) -> int:
    """Bytes a stack of `models` runs needs at least: WEIGHT_COPIES × the weights
    (784·N + (L−2)·N² + N·C per model) plus the inference states and buffers (≈ 8 per layer
    per sample of a batch, N each), in train.dtype."""
    m, t = cfg["model"], cfg["train"]
    width, depth = m["width"], m["depth"]
    weights = input_dim * width + (depth - 2) * width * width + width * classes
    states = 8 * depth * t["batch_size"] * width
    return models * (WEIGHT_COPIES * weights + states) * DTYPES[t["dtype"]].itemsize


def _available_memory(device: torch.device) -> int | None:
    """Free bytes on `device` (CUDA: the driver's count; CPU: physical memory), or None."""
    try:
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[0]
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None


def check_memory(cfg: dict, input_dim: int, classes: int, models: int,
                 device: torch.device) -> None:
    """Refuse (ValueError, one line with the numbers) a net that cannot fit, before any
    allocation: model.width=100000 would ask for tens of GB and fail deep inside torch."""
    need = memory_estimate(cfg, input_dim, classes, models)
    have = _available_memory(device)
    if have is not None and need > have:
        m = cfg["model"]
        raise ValueError(f"bad value model.width={m['width']} (model.depth={m['depth']}): "
                         f"needs about {need / 1e9:.1f} GB for {models} model(s), {device} has "
                         f"{have / 1e9:.1f} GB; allowed: a smaller width, depth or stack")


@dataclass
class TrainState:
    """Everything a resumed run needs besides the config (saved in checkpoints)."""

    step: int = 0
    rows: list[list[dict]] = field(default_factory=list)  # per model, one row per evaluation
    loss_sum: list[float] = field(default_factory=list)
    loss_count: int = 0
    diverged_step: list[int | None] = field(default_factory=list)
    seconds: float = 0.0  # training time so far, over every resume
    attempts: int = 0  # how many times training started or resumed (preemptions, requeues)
    started: str | None = None  # when the run first started (provenance.now())
    # training steps per compute path (eager | compiled | graph | compiled_graph), so the
    # summary says which path made the numbers (a failed capture falls back mid-run)
    path_steps: dict[str, int] = field(default_factory=dict)


class Trainer:
    """Trains a stack of configs (equal but for the seed) on one dataset.

    Hooks: `on_eval(model_index, row)` after each evaluation (wandb logging),
    `save_checkpoint(payload)` every `train.checkpoint_every` steps.
    """

    def __init__(self, configs: list[dict], dataset: Dataset, device: torch.device | None = None):
        keys = {stack_key(c) for c in configs}
        if len(keys) != 1:
            raise ValueError("a stack's configs may differ only in train.seed, train.eta0, "
                             "algo.state_lr, algo.rho, algo.alpha and pc vs pcalm")
        self.configs = configs
        self.cfg = configs[0]
        self.data = dataset
        self.device = device or resolve_device(self.cfg["train"]["device"])
        self.seeds = [c["train"]["seed"] for c in configs]
        dtype = DTYPES[self.cfg["train"]["dtype"]]
        check_memory(self.cfg, dataset.input_dim, dataset.num_classes, len(configs), self.device)
        check_schedule(self.cfg["train"], len(dataset.x_train))
        self.net = build.net(self.cfg, dataset.input_dim, dataset.num_classes, self.seeds,
                             self.device)
        self.algo = stack_algorithms([build.algorithm(c) for c in configs])
        self.algo.compile_mode = self.cfg["train"].get("compile", "auto")  # same numbers
        self.optimizer = make_adam(self.net.parameters(), [learning_rate(c) for c in configs])
        self.x_train = dataset.x_train.to(self.device, dtype)
        self.y_train = dataset.y_train.to(self.device)
        self.x_test = dataset.x_test.to(self.device, dtype)
        self.y_test = dataset.y_test.to(self.device)
        t = self.cfg["train"]
        self.batch = t["batch_size"]
        self.steps_per_epoch = len(self.x_train) // self.batch  # drop the last partial batch
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"bad value train.batch_size={self.batch}: larger than the {len(self.x_train)} "
                "training samples"
            )
        self.total_steps = self.steps_per_epoch * t["epochs"]
        self.eval_steps = evaluation_steps(self.steps_per_epoch, t["epochs"], t["evals_per_epoch"])
        m = len(configs)
        self.state = TrainState(rows=[[] for _ in range(m)], loss_sum=[0.0] * m,
                                diverged_step=[None] * m)
        self._order_epoch, self._order = -1, None
        self._pending_losses: list[tuple[int, torch.Tensor]] = []

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint_payload(self) -> dict:
        return {"seeds": self.seeds, "net": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(), "state": self.state.__dict__,
                "threads": torch.get_num_threads()}  # float32 sums depend on the thread count

    def restore(self, payload: dict) -> None:
        if payload.get("seeds") != self.seeds:
            raise ValueError("checkpoint belongs to another stack")
        state = TrainState(**payload["state"])
        self._check_within_plan(state)
        self.net.load_state_dict(payload["net"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if payload.get("threads"):  # resume with the thread count the run started with
            torch.set_num_threads(int(payload["threads"]))
        if "native" in state.path_steps and self.device.type == "cpu" and \
                fused.library() is None:
            warnings.warn(f"resuming a run that trained on the native loop, which is not "
                          f"available here ({fused.failure()}): the eager loop goes on, equal "
                          "to float rounding, so the run is not bit-identical to an "
                          "uninterrupted one", stacklevel=2)
        self.state = state

    def _check_within_plan(self, state: TrainState) -> None:
        """A checkpoint must describe a point of this run's plan: 0 <= step <= total steps,
        one list of rows per model, and no
        evaluation rows beyond the evaluations planned up to that step. Anything else (a
        tampered or foreign checkpoint) would turn a few real steps into a "complete" run."""
        step, m = state.step, len(self.seeds)
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= self.total_steps:
            raise ValueError(f"checkpoint at step {step!r}, outside this run's plan of "
                             f"{self.total_steps} steps")
        planned = len([s for s in self.eval_steps if s <= step])
        if (len(state.rows) != m or len(state.diverged_step) != m or len(state.loss_sum) != m
                or any(len(rows) > planned for rows in state.rows)):
            raise ValueError(f"checkpoint rows do not fit {m} models with {planned} "
                             f"evaluations up to step {step}")

    # -- the loop ----------------------------------------------------------------------
    def batch_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Model m's batch at `step`: its seed's order of that epoch (`data.epoch_order`)."""
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch != self._order_epoch:
            orders = [epoch_order(len(self.x_train), s, epoch) for s in self.seeds]
            self._order, self._order_epoch = torch.stack(orders).to(self.device), epoch
        idx = self._order[:, index * self.batch : (index + 1) * self.batch]  # [M, B]
        x = self.x_train[idx]
        y = F.one_hot(self.y_train[idx], self.data.num_classes).to(x.dtype)
        return x, y

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step for every model; returns the forward-pass training loss per model."""
        g_in, g_hidden, g_out, loss = self.algo.stacked_weight_grads(self.net, x, y)
        path = self.algo.last_path
        self.state.path_steps[path] = self.state.path_steps.get(path, 0) + 1
        # A run diverges when its loss or its gradients stop being finite (e.g. η_h far
        # above 2/λ_max blows the states up); such a model's loss is reported as NaN.
        grads_finite = torch.isfinite(
            g_in.sum((-2, -1)) + g_hidden.sum((-3, -2, -1)) + g_out.sum((-2, -1))
        )
        loss = torch.where(grads_finite, loss, torch.nan)
        for p, g in zip((self.net.w_in, self.net.w_hidden, self.net.w_out),
                        (g_in, g_hidden, g_out)):
            p.grad = g
        self.optimizer.step()
        return loss

    def run(self, on_eval: Callable[[int, dict], None] | None = None,
            save_checkpoint: Callable[[dict], None] | None = None,
            progress: bool = False) -> list[dict]:
        """Train to the end (or from a restored state); returns one summary per model.

        Under IEEE float32 matmuls whatever the process set (`ieee_float32`); the run's CUDA
        graphs are released when it ends, however it ends.
        """
        try:
            with ieee_float32():
                return self._run(on_eval, save_checkpoint, progress)
        finally:
            release_graphs(self.net)

    def _run(self, on_eval, save_checkpoint, progress: bool) -> list[dict]:
        s = self.state
        s.started = s.started or now()
        s.attempts += 1
        self._clock = time.time()
        if s.step == 0 and not s.rows[0]:
            self._evaluate(0, on_eval)
        every = self.cfg["train"]["checkpoint_every"]
        bar = _progress_bar(self.total_steps, s.step, progress, self.cfg)
        while s.step < self.total_steps and not all(d is not None for d in s.diverged_step):
            x, y = self.batch_at(s.step)
            loss = self.train_step(x, y)
            s.step += 1
            self._pending_losses.append((s.step, loss.detach()))
            if s.step in self.eval_steps:
                self._evaluate(s.step, on_eval)
                if bar is not None:
                    bar.set_postfix(test_acc=f"{s.rows[0][-1]['test_acc']:.4f}")
            if save_checkpoint is not None and s.step % every == 0 and s.step < self.total_steps:
                self._flush_losses()
                self._tick()
                save_checkpoint(self.checkpoint_payload())
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        self._flush_losses()
        self._tick()
        return self._summaries(s.seconds)

    def _tick(self) -> None:
        """Add the time since the last tick to the run's total (kept across resumes)."""
        clock = time.time()
        self.state.seconds += clock - self._clock
        self._clock = clock

    def _flush_losses(self) -> None:
        """Fold the per-step losses kept on the device into the state: one host sync per
        evaluation or checkpoint, not per step (a per-step `.cpu()` stalls a GPU)."""
        if not self._pending_losses:
            return
        steps = [step for step, _ in self._pending_losses]
        values = torch.stack([v for _, v in self._pending_losses]).double().cpu().tolist()
        self._pending_losses = []
        s = self.state
        for step, row in zip(steps, values):
            for m, v in enumerate(row):
                if s.diverged_step[m] is None and not math.isfinite(v):
                    s.diverged_step[m] = step
                s.loss_sum[m] += v
            s.loss_count += 1

    def _evaluate(self, step: int, on_eval) -> None:
        self._flush_losses()
        s = self.state
        metrics = {k: v.cpu().tolist() for k, v in evaluate(self.net, self.x_test, self.y_test)
                   .items()}
        for m in range(len(self.seeds)):
            row = {"step": step, "epoch": step / self.steps_per_epoch,
                   "samples": step * self.batch,
                   "train_loss": s.loss_sum[m] / s.loss_count if s.loss_count else math.nan}
            row.update({k: v[m] for k, v in metrics.items()})
            if s.diverged_step[m] is not None:
                row.update(test_acc=math.nan, test_mse=math.nan, test_ce=math.nan)
            s.rows[m].append(row)
            if on_eval is not None:
                on_eval(m, row)
        s.loss_sum, s.loss_count = [0.0] * len(self.seeds), 0

    def _alignment(self) -> list[dict | None]:
        """Gradient alignment to BP after training (per model), as the authors measure it
        (SPEC §7): on the first 64 samples of the seed's `authors_order` of the training
        split, plus the mean and sd over the next 8 batches of 64 of that order (the
        metric's own batch-to-batch noise)."""
        if isinstance(self.algo, BP):
            return [None] * len(self.seeds)
        n = len(self.x_train)
        per_seed = [alignment_batches(n, s) for s in self.seeds]  # same count per seed
        # Once per run: the eager loop, not a CUDA graph (a capture of a shape used once
        # would cost more than it saves, and hold its memory).
        algo, bp = copy.copy(self.algo), BP()
        algo.compile_mode = bp.compile_mode = "off"
        measured = [[] for _ in self.seeds]  # per model, one alignment per batch
        for k in range(len(per_seed[0])):
            idx = torch.as_tensor(np.stack([b[k] for b in per_seed]), device=self.device)
            x = self.x_train[idx]  # [M, B, D]: each model on its own seed's batch
            y = F.one_hot(self.y_train[idx], self.data.num_classes).to(x.dtype)
            grads = algo.weight_grads(self.net, x, y)
            reference = bp.weight_grads(self.net, x, y)
            for m in range(len(self.seeds)):
                measured[m].append(grad_alignment([g[m] for g in grads],
                                                  [r[m] for r in reference]))
        return [_alignment_summary(batches) for batches in measured]

    def _summaries(self, seconds: float) -> list[dict]:
        s = self.state
        alignment = self._alignment()
        summaries = []
        for m in range(len(self.seeds)):
            last = s.rows[m][-1] if s.rows[m] else {}
            diverged = s.diverged_step[m] is not None
            summary = {
                "status": "diverged" if diverged else "complete",
                "diverged": diverged,
                "diverged_step": s.diverged_step[m],
                "steps": s.step,
                "test_acc": math.nan if diverged else last.get("test_acc", math.nan),
                "test_mse": math.nan if diverged else last.get("test_mse", math.nan),
                "test_ce": math.nan if diverged else last.get("test_ce", math.nan),
                "train_loss": last.get("train_loss", math.nan),
                "lr": learning_rate(self.configs[m]),
                "wall_time_s": seconds,
                "attempts": s.attempts,
                "device": str(self.device),
                "models_in_stack": len(self.seeds),
                **self._path_summary(),
            }
            if alignment[m] is not None and not diverged:
                summary.update(alignment[m])
            summaries.append(summary)
        return summaries


    def _path_summary(self) -> dict:
        """Which compute path trained the run (the most used first, "+"-joined if a
        fallback happened mid-run), its step counts, and the float32 matmul precision."""
        steps = self.state.path_steps
        order = sorted(steps, key=lambda p: -steps[p])
        return {"compute_path": "+".join(order) or None, "compute_path_steps": dict(steps),
                "float32_matmul": float32_matmul_precision(self.device)}


def _progress_bar(total: int, initial: int, progress, cfg: dict):
    mode = cfg["train"]["progress"]
    show = mode == "on" or (mode == "auto" and progress and sys.stderr.isatty())
    if not show:
        return None
    from tqdm import tqdm

    m = cfg["model"]
    desc = f"{cfg['algo']['name']} N={m['width']} L={m['depth']} {m['activation']}"
    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)
