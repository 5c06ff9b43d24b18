"""The checks of `make gpu-check` (scripts/gpu_check.sh runs them as stages).

    python3 scripts/gpu_check.py env  [--dir D]     # torch, CUDA, GPU, matmul precision
    python3 scripts/gpu_check.py quick [--dir D]    # the CUDA path at realistic sizes
    python3 scripts/gpu_check.py quick --cpu        # the same checks, tiny, on the CPU (no
                                                    # graphs: checks this script only)

Made for a bare GPU machine: python3 with torch, numpy, pandas, pyyaml and pytest, without
hydra, omegaconf, submitit or wandb; nothing here imports them (tests/test_gpu_check.py
runs this script with them blocked). Each check is independent (a failure prints its
traceback and the next one runs) and appends one row to D/quick.csv as soon as it ends,
so a stage cut short by its timeout still leaves what it measured. Exit status: 0 if every
check passed, 1 if one failed, 2 if there is no CUDA device (without --cpu).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from pcalm.core import algorithms
from pcalm.core import graphs as graph_capture
from pcalm.core.algorithms import make_algorithm, stack_algorithms
from pcalm.core.model import ResidualMLP
from pcalm.core.native import fused
from pcalm.data import Dataset
from pcalm.runs.train import Trainer

REPO = Path(__file__).resolve().parent.parent

FALLBACK = "pcalm: the .* inference path failed"  # pcalm.core.paths.disable's warning


class Check:
    """Where checks write (D/quick.csv), the device, and sizes: `big` on a GPU, `small` on
    the CPU (--cpu)."""

    def __init__(self, out: Path, cpu: bool):
        self.out, self.cpu = out, cpu
        self.device = torch.device("cpu" if cpu else "cuda")
        self.failed = 0

    def size(self, big, small):
        return small if self.cpu else big

    def path(self, compiled: bool, native_loop: bool = True) -> str:
        """The path `auto` (False) or `on` (True) must run here. On the CPU every check's net
        is at most 32 wide, so `auto` runs the native loop wherever a C compiler built it and
        the check's algorithm and net are ones it takes (`native_loop`: PC or PC-ALM on a
        linear or ReLU net; not BP, not tanh)."""
        if self.cpu:
            native = fused.library() is not None and native_loop
            return "compiled" if compiled else ("native" if native else "eager")
        return "compiled_graph" if compiled else "graph"

    def sync(self) -> None:
        if not self.cpu:
            torch.cuda.synchronize()

    def run(self, name: str, fn) -> None:
        start = time.perf_counter()
        try:
            detail, ok = fn(), True
        except Exception:
            detail, ok = traceback.format_exc().strip().splitlines()[-1], False
            print(f"[{name}] FAILED:\n{traceback.format_exc()}", flush=True)
        seconds = time.perf_counter() - start
        self.failed += not ok
        print(f"[{name}] {'ok' if ok else 'FAILED'} in {seconds:.1f} s: {detail}", flush=True)
        path = self.out / "quick.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["check", "ok", "seconds", "device", "detail"])
            writer.writerow([name, ok, f"{seconds:.2f}", self.device_name(), detail])

    def device_name(self) -> str:
        return "cpu" if self.cpu else torch.cuda.get_device_name(0)


def batch(c: Check, m, b, d=784, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    lead = () if m is None else (m,)
    x = torch.randn(*lead, b, d, generator=g)
    y = F.one_hot(torch.randint(0, classes, (*lead, b), generator=g), classes).float()
    return x.to(c.device), y.to(c.device)


def mixed(m: int, budget: int, state_lr=0.25, mode="auto"):
    """Fig. 2's stack: half PC, half PC-ALM."""
    algo = stack_algorithms([make_algorithm("pc" if k < m // 2 else "pcalm", budget=budget,
                                            state_lr=state_lr) for k in range(m)])
    algo.compile_mode = mode
    return algo


@contextlib.contextmanager
def no_fallback():
    """A fallback to another path is an error here (the path asked for did not run)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=FALLBACK)
        yield


def best_ms(c: Check, fn, n=3) -> float:
    fn()
    best = float("inf")
    for _ in range(n):
        c.sync()
        t = time.perf_counter()
        fn()
        c.sync()
        best = min(best, 1e3 * (time.perf_counter() - t))
    return best


def compare(c: Check, algo, net, x, y, want_path: str) -> str:
    """algo's path vs the eager loop on two batches: worst replay error, speeds."""
    eager = copy.copy(algo)
    eager.compile_mode = "off"
    errors = []
    with no_fallback():
        for xs, ys in ((x, y), (x.flip(-2), y.flip(-2))):  # a capture, then a replay
            got = algo.stacked_weight_grads(net, xs, ys)
            want = eager.stacked_weight_grads(net, xs, ys)
            errors.append(max(algorithms.replay_errors([*got], [*want], True).values()))
    if algo.last_path != want_path:
        raise AssertionError(f"ran {algo.last_path}, not {want_path}")
    if max(errors) > algorithms.REPLAY_TOLERANCE:
        raise AssertionError(f"relative error {max(errors):.1e} vs eager")
    fast = best_ms(c, lambda: algo.stacked_weight_grads(net, x, y))
    slow = best_ms(c, lambda: eager.stacked_weight_grads(net, x, y), 2)
    return (f"{algo.last_path}: rel err {max(errors):.1e}, {fast:.1f} ms vs eager "
            f"{slow:.1f} ms")


def check_realistic(c: Check, label: str, algo, m: int) -> str:
    n, depth = c.size(128, 8), c.size(128, 6)
    algorithms.release_graphs()
    net = ResidualMLP(784, n, depth, activation="relu", seed=list(range(m)), device=c.device)
    x, y = batch(c, m, 64)
    return f"{label} M={m} N={n} L={depth}: " + compare(c, algo, net, x, y,
                                                        c.path(False, label != "bp"))


def config(seed: int, algo: dict, n: int, depth: int, device: str) -> dict:
    """A run config as pcalm.runs.config resolves it (what the Trainer reads), without Hydra."""
    return {"name": "gpu-check", "task": {"name": "train"},
            "model": {"width": n, "depth": depth, "activation": "relu", "param": "mupc",
                      "gamma0": 1.0},
            "algo": algo, "data": {"name": "synthetic", "root": None, "train_size": None,
                                   "test_size": None, "verify": False},
            "train": {"epochs": 1, "batch_size": 64, "eta0": 0.001 * (1 + seed), "seed": seed,
                      "device": device, "dtype": "float32", "evals_per_epoch": 1,
                      "threads": None, "progress": "off", "checkpoint_every": 10 ** 6,
                      "compile": "auto"},
            "logger": {"mode": "none"}, "results_dir": "unused"}


def trainer(c: Check, m: int, n: int, depth: int, steps: int) -> Trainer:
    """A mixed PC + PC-ALM stack of m (per-model η0 too: StackedAdam) on random data."""
    g = torch.Generator().manual_seed(0)
    data = Dataset("synthetic", torch.randn(64 * steps, 784, generator=g),
                   torch.randint(0, 10, (64 * steps,), generator=g),
                   torch.randn(200, 784, generator=g), torch.randint(0, 10, (200,), generator=g))
    algos = [{"name": "pc", "budget": 2 * depth, "state_lr": 0.25}] * (m // 2) + [
        {"name": "pcalm", "budget": 2 * depth, "state_lr": 0.25, "rho": 1.0, "alpha": 1.0,
         "inner_steps": 1, "weight_credit": "pre_dual"}] * (m - m // 2)
    cfgs = [config(k, a, n, depth, c.device.type) for k, a in enumerate(algos)]
    return Trainer(cfgs, data, c.device)


def check_sync_free(c: Check) -> str:
    """Trainer.train_step + batch_at make no host sync (a per-step sync stalls the GPU)."""
    t = trainer(c, 6, c.size(64, 8), c.size(32, 5), 40)
    losses = [t.train_step(*t.batch_at(0))]  # capture and first-replay check here
    c.sync()
    if not c.cpu:
        torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 30):
            losses.append(t.train_step(*t.batch_at(step)))
    finally:
        if not c.cpu:
            torch.cuda.set_sync_debug_mode(0)
    trend = torch.stack(losses).mean(1).tolist()
    if t.algo.last_path != c.path(False):
        raise AssertionError(f"ran {t.algo.last_path}")
    algorithms.release_graphs(t.net)
    return (f"{type(t.optimizer).__name__}, 29 steps without a host sync; loss "
            f"{trend[0]:.3f} -> {trend[-1]:.3f}")


def check_diverging(c: Check, mode: str) -> str:
    """One model at η_h = 2.5 (the η_h sweep's diverging cells) beside a healthy one."""
    algorithms.release_graphs()
    algo = stack_algorithms([make_algorithm("pcalm", budget=32, state_lr=lr)
                             for lr in (2.5, 0.2)])
    algo.compile_mode = mode
    net = ResidualMLP(784, 32, 16, activation="tanh", seed=[0, 1], device=c.device)
    x, y = batch(c, 2, 32)
    with no_fallback():
        g = algo.stacked_weight_grads(net, x, y)
    if algo.last_path != c.path(mode == "on", native_loop=False):  # tanh
        raise AssertionError(f"ran {algo.last_path}")
    return (f"{algo.last_path}: diverging model max|g_in| {g[0][0].abs().max().item():.1e}, "
            f"healthy {g[0][1].abs().max().item():.1e}")


def check_short_budget(c: Check, mode: str) -> str:
    """T = 4 < L − 1 = 15: credit never reaches the first layers (gradient ~0 there)."""
    algorithms.release_graphs()
    algo = make_algorithm("pcalm", budget=4, state_lr=0.25)
    algo.compile_mode = mode
    net = ResidualMLP(784, 32, 16, activation="tanh", seed=[0, 1, 2], device=c.device)
    x, y = batch(c, 3, 32)
    return compare(c, algo, net, x, y, c.path(mode == "on", native_loop=False))  # tanh


def check_memory(c: Check) -> str:
    """Three runs one after the other (a sweep job): each releases its graphs; memory
    returns to where it was."""
    n, depth, m = c.size(128, 8), c.size(128, 6), c.size(16, 2)
    algorithms.release_graphs()
    base = 0 if c.cpu else torch.cuda.memory_allocated()
    notes = []
    for k in range(3):
        t = trainer(c, m, n, depth, 3)
        t.run()
        left = len(graph_capture._GRAPHS)
        del t
        if not c.cpu:
            notes.append(f"run {k}: {(torch.cuda.memory_allocated() - base) / 2 ** 30:.2f} GiB "
                         f"left, peak {torch.cuda.max_memory_allocated() / 2 ** 30:.2f} GiB, "
                         f"{left} graphs cached")
        if left:
            raise AssertionError(f"{left} graphs still cached after run {k}")
    return f"M={m} N={n} L={depth}: " + "; ".join(notes or ["no graphs left after each run"])


def quick(c: Check, compiled: bool = True) -> None:
    t2 = 2 * c.size(128, 6)
    c.run("A1 realistic uniform pcalm", lambda: check_realistic(
        c, "pcalm", make_algorithm("pcalm", budget=t2, state_lr=0.25), 8))
    c.run("A2 realistic mixed pc+pcalm", lambda: check_realistic(c, "mixed", mixed(6, t2), 6))
    c.run("A3 realistic bp", lambda: check_realistic(c, "bp", make_algorithm("bp"), 8))
    c.run("B sync-free training steps", lambda: check_sync_free(c))
    c.run("C1 diverging model, auto", lambda: check_diverging(c, "auto"))
    c.run("D1 T < L-1, auto", lambda: check_short_budget(c, "auto"))
    c.run("E memory across runs", lambda: check_memory(c))
    if not compiled:
        print("compiled checks skipped (--no-compile)", flush=True)
        return
    # torch.compile last: inductor's first compile of each shape takes seconds to minutes
    c.run("C2 diverging model, compiled", lambda: check_diverging(c, "on"))
    c.run("D2 T < L-1, compiled", lambda: check_short_budget(c, "on"))
    c.run("F mixed stack, compiled", lambda: check_realistic_compiled(c))


def check_realistic_compiled(c: Check) -> str:
    n, depth = c.size(64, 8), c.size(32, 6)
    algorithms.release_graphs()
    net = ResidualMLP(784, n, depth, activation="relu", seed=list(range(6)), device=c.device)
    x, y = batch(c, 6, 64)
    start = time.perf_counter()
    detail = compare(c, mixed(6, 2 * depth, mode="on"), net, x, y, c.path(True))
    return f"M=6 N={n} L={depth} (incl. compile, {time.perf_counter() - start:.0f} s): {detail}"


def env(c: Check) -> None:
    from pcalm.core.algorithms import float32_matmul_precision

    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, python {sys.version.split()[0]}")
    print(f"device: {c.device_name()}; float32 matmul now: "
          f"{float32_matmul_precision(c.device)} (training pins ieee)")
    if not c.cpu:
        free, total = torch.cuda.mem_get_info()
        print(f"memory: {free / 2 ** 30:.1f} of {total / 2 ** 30:.1f} GiB free")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=["env", "quick"])
    p.add_argument("--dir", type=Path, default=REPO / "results" / "gpu-check")
    p.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (no graphs)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile checks")
    args = p.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device (torch {torch.__version__} sees none); "
              "--cpu runs the checks on the CPU", file=sys.stderr)
        return 2
    args.dir.mkdir(parents=True, exist_ok=True)
    c = Check(args.dir, args.cpu)
    with algorithms.ieee_float32():
        if args.stage == "env":
            env(c)
        else:
            quick(c, compiled=not args.no_compile)
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
