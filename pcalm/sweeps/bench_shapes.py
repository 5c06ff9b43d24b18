"""The CPU speed goals, measured: `make bench`'s last table (scripts/bench.py --shapes-only).

One PC-ALM weight-gradient call (forward pass, T inference steps, weight gradients; ReLU,
B = 64, float32) at four shapes, on one torch thread:

- **quiet**: the median over rounds of each round's median call, on the path
  `train.compile=auto` takes (`path`: the native loop for N ≤ 32 where a C compiler is at
  hand), and beside it, in the same rounds, the eager loop's (`eager_ms`);
- **loaded**: the same while one busy process (`while True: pass`) competes for the cores —
  the goal is at most LOAD_GOAL × quiet;
- **the JAX peer** (a careful JAX user's PC-ALM step, outside this project: `--jax-python`
  and `--jax-peer`, or PCALM_JAX_PYTHON / PCALM_JAX_PEER), measured in rounds interleaved
  with pcalm's (pcalm, JAX, pcalm, JAX, …) so that load on a shared machine hits both alike;
  the speed-up is the median of the per-round ratios JAX ÷ pcalm. Goals: SPEEDUP_GOAL × at
  every shape (more at N = 32, L = 64), and at most STEP_GOAL_US µs per inference step at
  N = 8, L = 32 (pcalm's call time ÷ T, which charges the forward pass and weight gradients
  to the steps too).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from pcalm.core.algorithms import make_algorithm
from pcalm.core.model import ResidualMLP

INPUT_DIM, CLASSES, BATCH = 784, 10, 64
SHAPES = ((32, 64, 64), (8, 32, 64), (8, 128, 256), (128, 16, 32))  # (N, L, T)
SPEEDUP_GOAL = {(32, 64, 64): 4.0}  # pcalm's speed-up over the JAX peer; other shapes: 2.0
DEFAULT_SPEEDUP_GOAL = 2.0
STEP_GOAL_US = {(8, 32, 64): 40.0}  # µs per inference step
LOAD_GOAL = 1.5  # loaded ÷ quiet
STATE_LR = 0.25  # the JAX peer's η_h


def batch(models, b, device, dtype, seed=0):
    """A random batch (x [M?, B, D], one-hot y) of `models` stacked nets (None: one net)."""
    gen = torch.Generator().manual_seed(seed)
    lead = () if models is None else (models,)
    x = torch.randn(*lead, b, INPUT_DIM, generator=gen)
    y = torch.nn.functional.one_hot(torch.randint(0, CLASSES, (*lead, b), generator=gen),
                                    CLASSES)
    return x.to(device, dtype), y.to(device, dtype)


def net_for(n, l, act, device, dtype, models=None):
    """The benchmarked net: seed 0, or seeds 0 … M−1 for a stack of `models`."""
    seed = 0 if models is None else list(range(models))
    return ResidualMLP(INPUT_DIM, n, l, output_dim=CLASSES, activation=act, seed=seed,
                       dtype=dtype, device=device)


def pcalm_call(n: int, l: int, t: int, mode: str = "auto") -> Callable[[], object]:
    """One PC-ALM weight-gradient call at (N, L, T), the JAX peer's shape and step sizes, on
    the path `train.compile=mode` picks (auto: the native loop where it runs; off: eager).
    The call's `.algo.last_path` says which path ran."""
    net = net_for(n, l, "relu", "cpu", torch.float32)
    x, y = batch(None, BATCH, "cpu", torch.float32)
    algo = make_algorithm("pcalm", budget=t, state_lr=STATE_LR)
    algo.compile_mode = mode

    def call():
        return algo.stacked_weight_grads(net, x, y)

    call.algo = algo
    return call


def median_ms(call: Callable[[], object], reps: int, warmup: int = 2) -> float:
    """The median wall time of `call()` in ms over `reps` calls after `warmup`."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


@contextmanager
def busy_process() -> Iterator[subprocess.Popen]:
    """One process spinning on a core for as long as the block runs."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # scheduled before the timing starts
        yield proc
    finally:
        proc.kill()
        proc.wait()


def jax_peer(python: str | None, peer: str | None) -> tuple[str, str] | None:
    """(python, script) of the JAX peer when both are given and exist, else None."""
    python = python or os.environ.get("PCALM_JAX_PYTHON")
    peer = peer or os.environ.get("PCALM_JAX_PEER")
    if python and peer and Path(python).is_file() and Path(peer).is_file():
        return python, peer
    return None


def jax_ms(peer: tuple[str, str], n: int, l: int, t: int) -> float:
    """The peer's own median ms per call (it compiles first and times 7 calls)."""
    done = subprocess.run([*peer, str(n), str(l), str(BATCH), str(t)], capture_output=True,
                          text=True, timeout=900)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the JAX peer failed at N={n} L={l} T={t}: {why}")
    return float(lines[-1])


def measure_shape(n: int, l: int, t: int, rounds: int, reps: int,
                  peer: tuple[str, str] | None) -> dict:
    """One row of the table (module doc): quiet and loaded pcalm, the peer interleaved."""
    call, eager = pcalm_call(n, l, t), pcalm_call(n, l, t, mode="off")
    quiet, eager_ms, peer_ms, ratios = [], [], [], []
    for _ in range(rounds):
        quiet.append(median_ms(call, reps))
        eager_ms.append(median_ms(eager, reps))
        if peer is not None:
            peer_ms.append(jax_ms(peer, n, l, t))
            ratios.append(peer_ms[-1] / quiet[-1])
    with busy_process():
        loaded = median_ms(call, reps)
    row = {"N": n, "L": l, "T": t, "B": BATCH, "threads": torch.get_num_threads(),
           "path": call.algo.last_path or "", "pcalm_ms": statistics.median(quiet),
           "eager_ms": statistics.median(eager_ms), "loaded_ms": loaded}
    row["us_per_step"] = 1e3 * row["pcalm_ms"] / t
    row["loaded_over_quiet"] = loaded / row["pcalm_ms"]
    row["load_goal_met"] = row["loaded_over_quiet"] <= LOAD_GOAL
    goal_us = STEP_GOAL_US.get((n, l, t))
    row["step_goal_us"] = goal_us if goal_us is not None else ""
    row["step_goal_met"] = "" if goal_us is None else row["us_per_step"] <= goal_us
    row["speedup_goal"] = SPEEDUP_GOAL.get((n, l, t), DEFAULT_SPEEDUP_GOAL)
    if peer is None:
        row.update(jax_ms="", speedup_over_jax="", speedup_goal_met="")
    else:
        row["jax_ms"] = statistics.median(peer_ms)
        row["speedup_over_jax"] = statistics.median(ratios)
        row["speedup_goal_met"] = row["speedup_over_jax"] >= row["speedup_goal"]
    return row


def measure(shapes=None, rounds: int = 3, reps: int = 7, peer=None,
            say: Callable[[str], None] = print) -> list[dict]:
    """Every shape's row (default: SHAPES), on one torch thread (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = []
        for n, l, t in shapes or SHAPES:
            rows.append(measure_shape(n, l, t, rounds, reps, peer))
            say(f"  measured N={n} L={l} T={t}")
        return rows
    finally:
        torch.set_num_threads(threads)


def verdict(row: dict) -> str:
    """What the row says about its goals, in words."""
    def met(ok) -> str:
        return "met" if ok else "missed"

    parts = [f"load {row['loaded_over_quiet']:.2f}× ({met(row['load_goal_met'])}, goal ≤ "
             f"{LOAD_GOAL}×)"]
    if row["step_goal_us"] != "":
        parts.append(f"{row['us_per_step']:.0f} µs/step ({met(row['step_goal_met'])}, goal ≤ "
                     f"{row['step_goal_us']:.0f})")
    if row["speedup_over_jax"] != "":
        parts.append(f"{row['speedup_over_jax']:.2f}× JAX ({met(row['speedup_goal_met'])}, "
                     f"goal ≥ {row['speedup_goal']:.0f}×)")
    return "; ".join(parts)
