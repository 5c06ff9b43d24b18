"""Speed table for the hot path → stdout and results/bench.csv (`make bench`, which runs
scripts/bench.py: the command line of `main`).

    python scripts/bench.py                        # the target cell + projection, ~2–3 min (CPU)
    python scripts/bench.py --widths 32 128 --depths 32 128 --models 1,2,4,8,16
    python scripts/bench.py --device cuda --full   # every Fig. 2 cell at T = 2L

Per cell (N, L, B, T): ms for one weight-gradient computation (forward pass, T inference
steps, weight gradients: what a training step costs besides Adam's < 1 %) for BP, PC and
PC-ALM on the fast path (`--compile`), PC-ALM ÷ BP and PC-ALM ÷ (T × BP); PC-ALM's baselines
side by side: the naive per-layer version (pcalm/core/naive.py), the previous stacked eager
loop, and the fast loop eager and compiled; and the vectorised throughput: Trainer-style
training steps (weight gradients + Adam) of M stacked models, in models·steps per second,
for a uniform PC-ALM stack and for the mixed PC + PC-ALM stack the sweep trains (half PC,
half PC-ALM, each model its own η_h), the latter also compiled (does compile pay for large
stacks?). Every timing says which path actually ran it (`*_path`: graph | compiled_graph |
compiled | eager): a capture or compile that fails falls back, and the row says so.
Matmuls run in IEEE float32 (`float32_matmul`), whatever the process had set.

Projection of the paper-scale Fig. 2 grid (N, L ∈ {8, …, 128}, T = 2L, B = 64, 937 steps,
3 activations × 3 seeds × BP/PC/PC-ALM = 675 runs) on this device: every cell is measured
briefly in the stacks the sweep trains it in (`sweep.max_stack=auto`: BP's 3 seeds as one
stack of 3, PC's and PC-ALM's as one mixed stack of 6): BP, and the mixed stack at a short
budget T_s = min(2L, 16); forward pass and weight gradients cost about a BP step and the
rest grows with T, so t(2L) = t_BP + (t(T_s) − t_BP) · 2L / T_s (`--full`: measured at
T = 2L directly).
ReLU is measured; identity and tanh are scaled by their measured cost relative to ReLU at
one middle cell. Training steps only (evaluations and data loading are extra).

Timings are the best of `--repeats` runs after warm-up (timeit's advice: the minimum is the
least disturbed by other load on the machine); CUDA timings synchronise the device.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from pcalm.atomic import atomic_write_text
from pcalm.core import algorithms, naive
from pcalm.core.algorithms import make_algorithm, stack_algorithms
from pcalm.core.device import resolve_device
from pcalm.sweeps import bench_shapes, cost
from pcalm.sweeps.bench_shapes import batch, net_for

REPO = Path(__file__).resolve().parents[2]

GRID = [8, 16, 32, 64, 128]
GRID_STEPS, GRID_SEEDS, GRID_ACTS = 937, 3, ("identity", "tanh", "relu")
GRID_SHORT_T = 16  # the grid's budget when not --full; per-step cost is then scaled to 2L
GRID_MID = (32, 32)  # (N, L) where identity's and tanh's cost relative to ReLU is measured


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[32])
    p.add_argument("--depths", type=int, nargs="+", default=[64])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--budget", default="64", help="T: an integer, or 2L (default 64)")
    p.add_argument("--models", default="1,2,4,8", help="model counts for the vectorised path")
    p.add_argument("--activation", default="relu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--compile", default="auto", choices=algorithms.COMPILE_MODES,
                   help="the fast path's mode for the BP/PC/PC-ALM columns and the grid")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--min-time", type=float, default=MIN_TIME,
                   help="seconds each timing repeats for at least (more tries for cheap calls)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="cpu: this process's CPU time instead of wall time, for a machine "
                   "busy with other work (meaningful with --threads 1 on a CPU device)")
    p.add_argument("--no-naive", action="store_true", help="skip the slow baselines")
    p.add_argument("--no-compiled", action="store_true", help="skip the compiled column")
    p.add_argument("--no-grid", action="store_true", help="skip the Fig. 2 projection")
    p.add_argument("--full", action="store_true", help="grid cells measured at T = 2L")
    p.add_argument("--grid-sizes", default=None,
                   help="N and L values of the projected grid (default: Fig. 2's 8,...,128)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="skip the sweep plans' cost model (pcalm/sweeps/cost.py) at the end")
    p.add_argument("--grid-models", type=int, default=GRID_SEEDS)
    p.add_argument("--no-shapes", action="store_true",
                   help="skip the CPU goals table (four shapes, quiet / loaded / JAX peer)")
    p.add_argument("--shapes-only", action="store_true",
                   help="only the CPU goals table (pcalm/sweeps/bench_shapes.py)")
    p.add_argument("--shape-rounds", type=int, default=3,
                   help="interleaved rounds per shape of the CPU goals table")
    p.add_argument("--jax-python", default=None,
                   help="python of a JAX install, for the peer column (or PCALM_JAX_PYTHON)")
    p.add_argument("--jax-peer", default=None,
                   help="the JAX peer script, e.g. ../shared/bench/jax_peer.py (or "
                   "PCALM_JAX_PEER)")
    p.add_argument("--out", type=Path, default=None, help="default: results/bench.csv")
    return p.parse_args(argv)


# -- timing --------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


MIN_TIME = 0.3  # seconds: short calls repeat until this much time is spent (--min-time)
MAX_REPEATS = 200


def best_time(fn, device, repeats: int, warmup: int = 2, min_time: float | None = None) -> float:
    """Best time of `fn()` in seconds: at least `repeats` runs after `warmup`, and more (up
    to MAX_REPEATS) until MIN_TIME is spent, so cheap cells get many tries at a quiet slot."""
    for _ in range(warmup):
        fn()
    best, spent, runs = float("inf"), 0.0, 0
    min_time = MIN_TIME if min_time is None else min_time
    while runs < repeats or (spent < min_time and runs < MAX_REPEATS):
        _sync(device)
        start = clock()
        fn()
        _sync(device)
        took = clock() - start
        best, spent, runs = min(best, took), spent + took, runs + 1
    return best


def algo(name, mode, **options):
    a = make_algorithm(name, **options)
    a.compile_mode = mode
    return a


def grads_time(name, net, x, y, mode, device, repeats, warmup=2, min_time=None,
               **options) -> tuple[float, str]:
    """Best seconds of one weight-gradient computation, and the path that ran it."""
    return algo_time(algo(name, mode, **options), net, x, y, device, repeats, warmup, min_time)


def algo_time(a, net, x, y, device, repeats, warmup=2, min_time=None) -> tuple[float, str]:
    seconds = best_time(lambda: a.stacked_weight_grads(net, x, y), device, repeats, warmup,
                        min_time)
    return seconds, a.last_path


def mixed_stack(m: int, mode: str, **options):
    """The stack the sweep trains a Fig. 2 cell's PC and PC-ALM runs in (one per seed):
    the first half of the models PC, the rest PC-ALM, so the options are per-model tensors
    (`pcalm.core.algorithms.Stacked`)."""
    members = [make_algorithm("pc" if k < m // 2 else "pcalm", **options) for k in range(m)]
    a = stack_algorithms(members)
    a.compile_mode = mode
    return a


def train_step_fn(a, net, x, y):
    """A Trainer.train_step: stacked weight gradients, then Adam (all M models at once);
    `a.last_path` says which path the last call ran."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    params = (net.w_in, net.w_hidden, net.w_out)

    def step():
        *grads, _ = a.stacked_weight_grads(net, x, y)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()

    return step


# -- the main table ------------------------------------------------------------------------

def measure_cell(args, n, l, t, device, dtype) -> dict:
    b, act, r = args.batch, args.activation, args.repeats
    net = net_for(n, l, act, device, dtype)
    x, y = batch(None, b, device, dtype)
    opts = {"budget": t, "state_lr": 0.25}
    row = {"device": device_name(device), "threads": torch.get_num_threads(), "clock": args.clock,
           "compile": args.compile, "float32_matmul": algorithms.float32_matmul_precision(device),
           "dtype": args.dtype, "activation": act, "N": n, "L": l, "B": b, "T": t}
    for name, options in (("bp", {}), ("pc", opts), ("pcalm", opts)):
        seconds, row[f"{name}_path"] = grads_time(name, net, x, y, args.compile, device, r,
                                                  **options)
        row[f"{name}_ms"] = 1e3 * seconds
    row["pcalm_over_bp"] = row["pcalm_ms"] / row["bp_ms"]
    row["pcalm_over_T_bp"] = row["pcalm_ms"] / (t * row["bp_ms"])
    # PC-ALM's baselines, side by side in this run.
    if not args.no_naive:
        row["naive_pcalm_ms"] = 1e3 * best_time(
            lambda: naive.layerwise_weight_grads("pcalm", net, x, y, **opts), device, 2, 1)
        row["prev_eager_pcalm_ms"] = 1e3 * best_time(
            lambda: naive.stacked_eager_weight_grads("pcalm", net, x, y, **opts), device, r)
    row["eager_pcalm_ms"] = 1e3 * grads_time("pcalm", net, x, y, "off", device, r, **opts)[0]
    if not args.no_compiled:
        row.update(compiled_columns(algo("pcalm", "on", **opts), net, x, y, device, r))
    for m in args.model_counts:
        row.update(stack_columns(args, n, l, t, m, device, dtype, opts))
    algorithms.release_graphs()  # this cell's captures hold memory the next cell needs
    return row


def compiled_columns(a, net, x, y, device, repeats) -> dict:
    """The compiled step's first call (compile_s: inductor, or its on-disk cache) and best
    time; NaN ms when it did not run compiled (the path column says what ran)."""
    start = time.perf_counter()
    a.stacked_weight_grads(net, x, y)
    _sync(device)
    compile_s = time.perf_counter() - start
    seconds, path = algo_time(a, net, x, y, device, repeats)
    return {"compile_s": compile_s, "compiled_pcalm_path": path,
            "compiled_pcalm_ms": 1e3 * seconds if "compiled" in path else float("nan")}


def stack_columns(args, n, l, t, m, device, dtype, opts) -> dict:
    """Training steps of M stacked models: uniform PC-ALM, and (M >= 2) the sweep's mixed
    PC + PC-ALM stack, also compiled unless --no-compiled; models·steps/s and the path."""
    stack = net_for(n, l, args.activation, device, dtype, models=m)
    xm, ym = batch(m, args.batch, device, dtype)
    variants = {"pcalm": algo("pcalm", args.compile, **opts)}
    if m >= 2:
        variants["mixed"] = mixed_stack(m, args.compile, **opts)
        if not args.no_compiled:
            variants["compiled_mixed"] = mixed_stack(m, "on", **opts)
    cols = {}
    for label, a in variants.items():
        seconds = best_time(train_step_fn(a, stack, xm, ym), device, args.repeats)
        cols[f"{label}_model_steps_per_s_m{m}"] = m / seconds
        cols[f"{label}_path_m{m}"] = a.last_path
    return cols


# -- the Fig. 2 projection -----------------------------------------------------------------

def grid_projection(args, device, dtype) -> tuple[list[dict], dict]:
    """Seconds per training step of each grid cell, in the sweep's stacks → totals: BP's
    `grid-models` seeds stacked, and PC's and PC-ALM's seeds as one mixed stack of twice as
    many (what `sweep.max_stack=auto` trains them in)."""
    m, b, r = args.grid_models, args.batch, max(2, min(args.repeats, 3))
    rows = []
    # Activation cost relative to ReLU, measured at one middle cell (the mixed stack, short budget).
    rel = {}
    xm, ym = batch(2 * m, b, device, dtype)
    for a in GRID_ACTS:
        net = net_for(*GRID_MID, a, device, dtype, models=2 * m)
        stack = mixed_stack(2 * m, args.compile, budget=16, state_lr=0.25)
        rel[a] = algo_time(stack, net, xm, ym, device, 3 * r, min_time=4 * MIN_TIME)[0]
    rel = {a: rel[a] / rel["relu"] for a in GRID_ACTS}
    sizes = [int(v) for v in args.grid_sizes.split(",")] if args.grid_sizes else GRID
    for n in sizes:
        for l in sizes:
            rows.append(grid_cell(args, n, l, m, r, device, dtype, rel))
            algorithms.release_graphs()
    total = sum(row["cell_s"] for row in rows)
    method = (f"all {len(rows)} cells measured in the sweep's stacks (BP: {m} seeds; "
              f"PC + PC-ALM: one mixed stack of {2 * m}), "
              + ("at T=2L" if args.full else f"PC/PC-ALM at T=min(2L,{GRID_SHORT_T}), "
                 "t(2L) = t_BP + (t(T) - t_BP)·2L/T")
              + "; identity/tanh scaled by measured cost relative to ReLU at "
              + "N={},L={} ".format(*GRID_MID)
              + "(" + ", ".join(f"{a} {rel[a]:.2f}" for a in GRID_ACTS) + ")")
    return rows, {"total_s": total, "method": method, "relative": rel}


def grid_cell(args, n, l, m, r, device, dtype, rel) -> dict:
    t_full = 2 * l
    row = {"N": n, "L": l, "T": t_full, "models": m, "pc_pcalm_models": 2 * m}
    x, y = batch(m, args.batch, device, dtype)
    net = net_for(n, l, "relu", device, dtype, models=m)
    row["bp_s"], row["bp_path"] = grads_time("bp", net, x, y, args.compile, device, r, warmup=1)
    t_short = t_full if args.full else min(t_full, GRID_SHORT_T)
    x2, y2 = batch(2 * m, args.batch, device, dtype)
    net2 = net_for(n, l, "relu", device, dtype, models=2 * m)
    stack = mixed_stack(2 * m, args.compile, budget=t_short, state_lr=0.25)
    sec, row["pc_pcalm_path"] = algo_time(stack, net2, x2, y2, device, r, warmup=1)
    bp2 = grads_time("bp", net2, x2, y2, args.compile, device, r, warmup=1)[0]
    # forward + weight grads cost about one BP step (of the same stack); the rest scales with T
    row["pc_pcalm_s"] = bp2 + max(sec - bp2, 0) * t_full / t_short
    # One cell's runs: 937 steps × (BP's stack + the PC/PC-ALM stack), each step training
    # every seed at once; × the activations (relative cost) × seeds / m stacks.
    per_act = GRID_STEPS * (row["bp_s"] + row["pc_pcalm_s"])
    row["cell_s"] = per_act * sum(rel.values()) * GRID_SEEDS / m
    return row


def shapes_section(args, out: Path) -> None:
    """The CPU goals table (pcalm/sweeps/bench_shapes.py) → stdout and `out`
    (results/bench_shapes.csv by default)."""
    peer = bench_shapes.jax_peer(args.jax_python, args.jax_peer)
    print("\nCPU goals: one PC-ALM weight-gradient call (ReLU, B = 64, 1 thread), quiet, beside "
          "one busy process, and against the JAX peer "
          f"({'interleaved rounds' if peer else 'not configured: --jax-python, --jax-peer'}):",
          flush=True)
    try:
        rows = bench_shapes.measure(rounds=args.shape_rounds, peer=peer)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(table(rows, ["N", "L", "T", "path", "pcalm_ms", "eager_ms", "us_per_step", "loaded_ms",
                       "loaded_over_quiet", "jax_ms", "speedup_over_jax"]))
    for r in rows:
        print(f"  N={r['N']} L={r['L']} T={r['T']}: {bench_shapes.verdict(r)}")
    atomic_write_text(out, to_csv(rows))
    print(f"wrote {out}")


# -- output --------------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def table(rows: list[dict], columns: list[str]) -> str:
    cells = [[c for c in columns]] + [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells)


def to_csv(rows: list[dict]) -> str:
    columns = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def hms(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h}h{rest // 60:02d}m{rest % 60:02d}s"


def main(argv=None) -> None:
    with algorithms.ieee_float32():  # the numbers (and speeds) training gets: trainer.run pins it
        run(parse_args(argv))


def run(args) -> None:
    global clock, MIN_TIME
    args.model_counts = [int(v) for v in args.models.split(",") if v.strip()]
    clock, MIN_TIME = CLOCK[args.clock], args.min_time
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device, option="--device")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    dtype = getattr(torch, args.dtype)
    results = Path(os.environ.get("PCALM_RESULTS", REPO / "results"))
    out = args.out or results / "bench.csv"
    print(f"device: {device_name(device)}; torch {torch.__version__}; {args.dtype}; "
          f"--compile {args.compile} (each row names the path that ran); "
          f"clock: {args.clock}; load average {_load()}", flush=True)

    shapes_out = out.with_name(out.stem + "_shapes.csv")
    if args.shapes_only:
        shapes_section(args, shapes_out)
        return
    rows = []
    for n in args.widths:
        for l in args.depths:
            t = 2 * l if args.budget == "2L" else int(args.budget)
            rows.append(measure_cell(args, n, l, t, device, dtype))
            print(f"  measured N={n} L={l} T={t}", flush=True)
    main_cols = ["N", "L", "B", "T", "bp_ms", "pc_ms", "pcalm_ms", "pcalm_over_bp",
                 "pcalm_over_T_bp", "pcalm_path"]
    base_cols = ["naive_pcalm_ms", "prev_eager_pcalm_ms", "eager_pcalm_ms",
                 "compiled_pcalm_ms", "compile_s", "compiled_pcalm_path"]
    vec_cols = [c for m in args.model_counts for c in (
        f"pcalm_model_steps_per_s_m{m}", f"mixed_model_steps_per_s_m{m}",
        f"compiled_mixed_model_steps_per_s_m{m}", f"mixed_path_m{m}",
        f"compiled_mixed_path_m{m}") if c in rows[0]]
    print("\nms per weight-gradient computation (forward, T steps, weight grads), best of "
          f"{args.repeats}:")
    print(table(rows, main_cols))
    print("\nPC-ALM baselines (ms) — naive per-layer, previous stacked eager, fast eager, "
          "compiled (+ first-call compile s):")
    print(table(rows, ["N", "L", "T"] + [c for c in base_cols if c in rows[0]]))
    print("\nvectorised training steps (grads + Adam), models·steps per second: uniform "
          "PC-ALM, the sweep's mixed PC + PC-ALM stack, and that compiled:")
    print(table(rows, ["N", "L", "T"] + vec_cols))

    if not args.no_grid:
        print("\nprojecting the paper-scale Fig. 2 grid (measuring its cells)…",
              flush=True)
        grid_rows, proj = grid_projection(args, device, dtype)
        print(table(grid_rows, ["N", "L", "T", "models", "pc_pcalm_models", "bp_s",
                                "pc_pcalm_s", "cell_s", "pc_pcalm_path"]))
        print(f"\nprojected Fig. 2 grid (675 runs, 937 steps each) on {device_name(device)}: "
              f"{proj['total_s']:.0f} s = {hms(proj['total_s'])}\n  method: {proj['method']}")
        for r in rows:
            r["fig2_grid_projected_s"] = proj["total_s"]
            r["fig2_grid_method"] = proj["method"]
        atomic_write_text(out.with_name(out.stem + "_grid.csv"), to_csv(grid_rows))
    atomic_write_text(out, to_csv(rows))
    print(f"\nwrote {out}")
    if device.type == "cpu" and not args.no_shapes:
        shapes_section(args, shapes_out)
    # The sweep plans' cost model (pcalm/sweeps/cost.py) for this device and thread count: stored
    # here so that `--dry-run` and every sweep plan project wall times without measuring.
    if args.no_calibrate:
        return
    threads = torch.get_num_threads()
    model = cost.calibrate(device, threads)
    model.save(cost.model_path(results, device, threads))
    print(f"wrote {cost.model_path(results, device, threads)} (sweep plans' cost model)")
