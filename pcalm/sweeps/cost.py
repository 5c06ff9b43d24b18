"""Projected wall time of a run: a cost model of the training step, calibrated on a device.

A training step of one model costs (seconds)

    BP:        c0 + cL·L + cW·W
    PC/PC-ALM: a0 + aL·L + aW·W + T·k·(b0 + bE·E + bF·F)

with W = B·(D·N + N²·(L−2) + N·C) multiply-adds of a forward pass, E = B·N·(L−1) state
entries and F = B·N²·(L−2) multiply-adds of one inference step. The terms in L are the
sequential layer loops (forward pass, backprop); b0 is the fixed cost of one inference step
(a handful of kernel launches: what dominates narrow nets). An evaluation costs
ceil(n_test / chunk) forward passes, e0 + eL·L + eW·W at the chunk's batch size.

`calibrate` fits the coefficients by timing the real hot path (pcalm.core.algorithms) at a few
cells, in about ten seconds, once on the eager loop and once on the native loop (the path a
training run of a linear or ReLU net takes on a CPU for N ≤ 64: pcalm.core.native; its own
a- and b-terms). `make
bench` and the first sweep plan on a device do it and store the result
(results/cost/<device>.json), so later plans on that device are instant. A tanh net's step
costs a measured factor more than a ReLU net's (tanh and 1 − φ² against a clamp and a sign;
`tanh_bp`, `tanh_pc`, timed at one cell). PC is
costed as PC-ALM (the same loop with α = 0). A run's projection = steps × step + evaluations
+ a start-up term per run (s0: resolve the config, build the net, write the folder).

Diagnostic tasks (Figures 1, 3, 4, 5, 8, 9; pcalm.runs.tasks.figures) are priced by their work on
the same coefficients: the inference steps they run on one batch, at the task's shape, plus
one weight-gradient per observed point (a PC step without inference), plus the equilibrium
solve of a credit_routes PC run (`EQUILIBRIUM_STEPS` inference-step equivalents for the
Newton solver, measured at N = 32, L = 64; its plain budget ⌈2L²/η_h⌉ steps for the plain one).

A job adds a start-up term j0: a fresh Python process importing torch and pcalm and loading
the data (`job_seconds`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

INPUT_DIM, OUTPUT_DIM = 784, 10
EVAL_CHUNK = 2000  # pcalm.runs.train.EVAL_CHUNK
FULL_SIZES = {"mnist": (60000, 10000), "fashion_mnist": (60000, 10000),
              "synthetic": (6000, 1000)}
# (N, L) cells timed for the fit: narrow and wide, shallow and deep.
CALIBRATION_CELLS = ((8, 8), (8, 32), (8, 128), (16, 128), (32, 32), (64, 64), (128, 16))
CALIBRATION_BUDGETS = (4, 36)  # two T per cell: the slope is the per-inference-step cost
# Start-up terms (s) when a stored model predates them: a job's process start (import torch,
# pcalm; load a dataset) and a run's own (config, net, folder writes), measured on the 2-core
# development CPU.
DEFAULT_STARTUP = (6.0, 0.5)
# The Newton equilibrium solve of a ReLU PC run at L = 64 (pcalm.core.equilibrium), in
# inference steps of work: measured on one thread of the 2-core development CPU at N = 32 and
# N = 128 (Fashion-MNIST's first batch, seed 0, tol 1e-6): 70 and 98 Newton steps, 1,793 and
# 2,957 CG iterations of four layer sweeps in float64, 20.8 s and 147 s of CPU — 48,000 and
# 46,000 times the model's inference step at those shapes.
EQUILIBRIUM_STEPS = 47000


def forward_macs(batch: int, width: int, depth: int) -> float:
    return batch * (INPUT_DIM * width + width * width * max(depth - 2, 0) + width * OUTPUT_DIM)


@dataclass
class CostModel:
    """Seconds per training step and per evaluation chunk on one device (see module doc)."""

    device: str  # the CPU model or GPU name (pcalm.runs.provenance.device_name)
    kind: str  # cpu | cuda
    threads: int
    bp: tuple[float, float, float]  # c0, cL, cW
    step: tuple[float, float, float]  # a0, aL, aW: a PC/PC-ALM step without inference
    inference: tuple[float, float, float]  # b0, bE, bF: one inference step
    evaluation: tuple[float, float, float]  # e0, eL, eW: one evaluation chunk
    startup: tuple[float, float] = DEFAULT_STARTUP  # j0 per job, s0 per run
    # The native loop's own a- and b-terms (pcalm.core.native: a training run's path on a CPU
    # for N ≤ native_max_width), fitted on the calibration cells it runs; None: not measured
    # (no C compiler, a GPU, or a model stored before it), and the eager terms price it.
    native_step: tuple[float, float, float] | None = None
    native_inference: tuple[float, float, float] | None = None
    native_max_width: int = 0
    # A tanh net's step over a ReLU net's on the eager loop (tanh and φ' = 1 − φ² cost more
    # than a clamp and a sign): BP's and PC-ALM's, timed at one cell; 1.0 in older models.
    tanh_bp: float = 1.0
    tanh_pc: float = 1.0

    def _native(self, width: int, activation: str) -> bool:
        """Whether a training run of this width and activation takes the native loop (not
        tanh: pcalm.core.native.fused.ACT_CODES)."""
        return (self.native_inference is not None and width <= self.native_max_width
                and activation != "tanh")

    def _inference_step(self, width: int, depth: int, batch: int, models: int = 1,
                        terms: tuple[float, float, float] | None = None) -> float:
        """b0 + bE·E + bF·F: one inference step (module doc); `terms`: another path's b."""
        b0, b_e, b_f = terms or self.inference
        elements = models * batch * width * (depth - 1)
        return b0 + b_e * elements + b_f * elements * width * max(depth - 2, 0) / (depth - 1)

    def _weight_gradient(self, width: int, depth: int, batch: int) -> float:
        """a0 + aL·L + aW·W: the forward pass and weight gradients of a PC step."""
        a0, a_l, a_w = self.step
        return a0 + a_l * depth + a_w * forward_macs(batch, width, depth)

    def step_seconds(self, cfg: dict, models: int = 1) -> float:
        """One training step of a stack of `models` such runs: the fixed and per-layer costs
        (launches, Python) are paid once, the work on tensors once per model."""
        m, a, t = cfg["model"], cfg["algo"], cfg["train"]
        n, depth, batch = m["width"], m["depth"], t["batch_size"]
        w = models * forward_macs(batch, n, depth)
        tanh = m.get("activation", "relu") == "tanh"
        if a["name"] == "bp":
            c0, c_l, c_w = self.bp
            return (c0 + c_l * depth + c_w * w) * (self.tanh_bp if tanh else 1.0)
        native = self._native(n, m.get("activation", "relu"))  # a training step's loop
        a0, a_l, a_w = self.native_step if native else self.step
        per_step = self._inference_step(n, depth, batch, models,
                                        self.native_inference if native else None)
        steps = a["budget"] * a.get("inner_steps", 1)
        return (a0 + a_l * depth + a_w * w + steps * per_step) * (self.tanh_pc if tanh else 1.0)

    def run_seconds(self, cfg: dict, models: int = 1) -> float:
        """Projected wall time of one run (start-up included), or of a stack of `models` like
        it; a diagnostic task by its work (`task_seconds`)."""
        if cfg.get("task", {}).get("name", "train") != "train":
            return self.startup[1] + self.task_seconds(cfg)
        d, t, m = cfg["data"], cfg["train"], cfg["model"]
        full_train, full_test = FULL_SIZES.get(d["name"], (60000, 10000))
        n_train, n_test = d.get("train_size") or full_train, d.get("test_size") or full_test
        per_epoch = n_train // t["batch_size"]
        steps = per_epoch * t["epochs"]
        # at most one evaluation per step (pcalm.runs.train.evaluation_steps), plus step 0
        evals = min(t["evals_per_epoch"], max(per_epoch, 1)) * t["epochs"] + 1
        chunks = evals * math.ceil(n_test / EVAL_CHUNK)
        e0, e_l, e_w = self.evaluation
        chunk = min(n_test, EVAL_CHUNK)
        eval_s = chunks * (e0 + e_l * m["depth"]
                           + e_w * models * forward_macs(chunk, m["width"], m["depth"]))
        return self.startup[1] + steps * self.step_seconds(cfg, models) + eval_s

    def task_seconds(self, cfg: dict) -> float:
        """A diagnostic task's work: inference steps × one step at its shape, plus one weight
        gradient per observed point, plus a PC credit_routes run's equilibrium solve."""
        steps, observed, width, depth, batch = task_work(cfg)
        per_step = self._inference_step(width, depth, batch)
        tanh = self.tanh_pc if cfg["model"].get("activation") == "tanh" else 1.0
        return tanh * (steps * per_step + observed * self._weight_gradient(width, depth, batch))

    def stack_seconds(self, stack: list[dict]) -> float:
        """A stack trains as long as its most expensive member would, carrying the others."""
        return max(self.run_seconds(c, len(stack)) for c in stack)

    def job_seconds(self, units: list[list[dict]]) -> float:
        """A job: its process start-up j0, then its stacks one after another."""
        return self.startup[0] + sum(self.stack_seconds(unit) for unit in units)

    # -- storage ------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        from pcalm.atomic import atomic_write_json

        atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> CostModel | None:
        """The stored model, or None if absent or unreadable (then calibrate again)."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            startup = tuple(float(v) for v in raw.get("startup", DEFAULT_STARTUP))
            if len(startup) != 2:
                return None
            native = {k: tuple(float(v) for v in raw[k]) if raw.get(k) else None
                      for k in ("native_step", "native_inference")}
            return cls(raw["device"], raw["kind"], int(raw["threads"]),
                       *(tuple(float(v) for v in raw[k]) for k in
                         ("bp", "step", "inference", "evaluation")), startup=startup,
                       native_max_width=int(raw.get("native_max_width", 0)), **native,
                       tanh_bp=float(raw.get("tanh_bp", 1.0)),
                       tanh_pc=float(raw.get("tanh_pc", 1.0)))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def task_work(cfg: dict) -> tuple[float, float, int, int, int]:
    """(inference steps, observed points, N, L, B) of a diagnostic task (pcalm.runs.tasks.figures);
    its defaults are the registered ones when the config leaves a key out."""
    from pcalm.runs.tasks.registry import TASKS

    task = {**TASKS[cfg["task"]["name"]].params, **cfg["task"]}
    m, a = cfg["model"], cfg["algo"]
    width, depth, batch = m["width"], m["depth"], cfg["train"]["batch_size"]
    name = task["name"]
    budget = float(a.get("budget", 0) or 0) * a.get("inner_steps", 1)
    if name == "scalar_dynamics":
        return budget, 0.0, 1, 2, 1
    if name == "linear_dynamics":
        return budget, 0.0, width, depth, 1
    t_max = float(task["steps_per_layer"] * depth)
    if name == "credit_traces":
        return t_max, 0.0, width, depth, batch
    observed = float(task["points"]) + 1
    if name == "alignment_curve":
        runs = 2 if a["name"] == "pcalm" and task.get("pc_reference") else 1
        return runs * t_max, runs * observed, width, depth, batch
    if name == "credit_routes":
        steps = t_max
        solver = task.get("equilibrium_solver", "newton")
        if a["name"] == "pc" and solver != "none":
            if solver == "newton":
                steps += EQUILIBRIUM_STEPS
            else:
                eta = float(a["state_lr"]) if isinstance(a.get("state_lr"), (int, float)) else 0.25
                steps += math.ceil(task["equilibrium_diffusion_times"] * depth**2 / eta)
        return steps, observed, width, depth, batch
    raise ValueError(f"no cost model for task {name!r}")


def run_work(cfg: dict) -> str:
    """What one run will compute, in words: `937 training steps × T = 64 inference steps`,
    or a diagnostic task's inference steps on one batch."""
    if cfg.get("task", {}).get("name", "train") != "train":
        steps, observed, *_ = task_work(cfg)
        return (f"task {cfg['task']['name']}: {steps:,.0f} inference steps on one batch, "
                f"{observed:,.0f} weight gradients")
    d, t, a = cfg["data"], cfg["train"], cfg["algo"]
    n_train = d.get("train_size") or FULL_SIZES.get(d["name"], (60000, 10000))[0]
    steps = (n_train // t["batch_size"]) * t["epochs"]
    work = f"{steps:,} training steps"
    if a["name"] != "bp":
        work += f" × T = {a['budget'] * a.get('inner_steps', 1):,} inference steps"
    return work


def plan_line(cfg: dict, model: CostModel | None) -> str:
    """One line a run prints before it starts: its work, and its projected wall time where a
    cost model of this device is stored (a sweep's `--dry-run` or `make bench` stores one)."""
    width, depth = cfg["model"]["width"], cfg["model"]["depth"]
    head = f"plan: N = {width:,}, L = {depth:,}, {run_work(cfg)}"
    if model is None:
        return (f"{head}; projected time unknown (no stored cost model for this device: "
                "a sweep's --dry-run or `make bench` stores one)")
    return (f"{head}; projected {describe_seconds(model.run_seconds(cfg))} on {model.device}, "
            f"{model.threads} thread(s)")


def device_key(device_name: str, threads: int) -> str:
    """A file name for a device and thread count: `Intel-Xeon-...-2t`."""
    safe = "".join(c if c.isalnum() else "-" for c in device_name).strip("-")
    return f"{'-'.join(filter(None, safe.split('-')))}-{threads}t"


def model_path(results_dir: Path, device, threads: int) -> Path:
    from pcalm.runs.provenance import device_name

    return Path(results_dir) / "cost" / f"{device_key(device_name(device), threads)}.json"


def stored_models(results_dir: Path, kind: str) -> list[CostModel]:
    """Every stored cost model of a device kind (cpu | cuda), newest first."""
    paths = sorted((Path(results_dir) / "cost").glob("*.json"), key=lambda p: -p.stat().st_mtime)
    models = (CostModel.load(p) for p in paths)
    return [m for m in models if m is not None and m.kind == kind]


def cached_or_calibrated(results_dir: Path, device, threads: int, say=print) -> CostModel:
    """The device's stored cost model, calibrated (and stored) first if there is none."""
    from pcalm.runs.provenance import device_name

    path = model_path(results_dir, device, threads)
    model = CostModel.load(path)
    if model is None:
        say(f"calibrating the cost model on {device_name(device)}, {threads} thread(s) "
            "(once per device, ~10 s)...")
        model = calibrate(device, threads)
        model.save(path)
    return model


# ------------------------------------------------------------------------- calibration


def _best_time(fn, repeats: int = 5, sync=lambda: None) -> float:
    fn()
    sync()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def _fit(rows: list[list[float]], seconds: list[float]) -> tuple[float, ...]:
    """Non-negative least squares of seconds ≈ rows · c in relative error (every cell counts
    alike, small ones included): the best unconstrained fit on each subset of the terms,
    keeping the best one whose coefficients are all ≥ 0 (three terms: eight subsets)."""
    import itertools

    import torch

    a = torch.tensor(rows, dtype=torch.float64)
    b = torch.tensor(seconds, dtype=torch.float64)
    a, b = a / b[:, None], torch.ones_like(b)
    best, best_err = (0.0,) * a.shape[1], math.inf
    for k in range(1, a.shape[1] + 1):
        for subset in itertools.combinations(range(a.shape[1]), k):
            sub = a[:, list(subset)]
            coef = torch.linalg.lstsq(sub, b[:, None]).solution[:, 0]
            if bool((coef < 0).any()):
                continue
            err = float((sub @ coef - b).pow(2).sum())
            if err < best_err:
                full = [0.0] * a.shape[1]
                for i, c in zip(subset, coef.tolist()):
                    full[i] = c
                best, best_err = tuple(full), err
    return best


def _time_loop(net, x, y, mode: str, sync) -> tuple[float, float]:
    """(a PC-ALM step without inference, one inference step) on the path `mode` picks: the
    slope between two budgets, and the intercept."""
    from pcalm.core.algorithms import make_algorithm

    times = []
    for budget in CALIBRATION_BUDGETS:
        algo = make_algorithm("pcalm", budget=budget, state_lr=0.2)
        algo.compile_mode = mode
        times.append(_best_time(lambda a=algo: a.stacked_weight_grads(net, x, y), sync=sync))
    per_step = max(times[1] - times[0], 1e-9) / (CALIBRATION_BUDGETS[1] - CALIBRATION_BUDGETS[0])
    return max(times[0] - CALIBRATION_BUDGETS[0] * per_step, 1e-9), per_step


def _time_cell(n: int, depth: int, x, y, x_eval, sync,
               native: bool) -> dict[str, tuple[list, float]]:
    """One calibration cell's timings, each with its row of the fit (see the module doc);
    the native loop's too where it runs (`native`)."""
    import torch

    from pcalm.core.algorithms import make_algorithm
    from pcalm.core.model import ResidualMLP

    net = ResidualMLP(INPUT_DIM, n, depth, seed=[0], device=x.device)
    batch, w = x.shape[-2], forward_macs(x.shape[-2], n, depth)
    bp = make_algorithm("bp")
    t_bp = _best_time(lambda: bp.stacked_weight_grads(net, x, y), sync=sync)
    t_step, per_step = _time_loop(net, x, y, "off", sync)
    with torch.no_grad():
        t_eval = _best_time(lambda: net(x_eval), sync=sync)
    inference_row = [1.0, batch * n * (depth - 1), batch * n * n * max(depth - 2, 0)]
    cell = {
        "bp": ([1.0, depth, w], t_bp),
        "step": ([1.0, depth, w], t_step),
        "inference": (inference_row, per_step),
        "evaluation": ([1.0, depth, forward_macs(EVAL_CHUNK, n, depth)], t_eval),
    }
    if native:
        t_step, per_step = _time_loop(net, x, y, "auto", sync)
        cell.update(native_step=([1.0, depth, w], t_step),
                    native_inference=(inference_row, per_step))
    return cell


def calibrate(device, threads: int) -> CostModel:
    """Time BP, PC-ALM at two budgets (eager and native), and an evaluation at
    CALIBRATION_CELLS, and fit; and a tanh net's step over a ReLU net's at one cell."""
    import torch

    from pcalm.runs.provenance import device_name

    device = torch.device(device)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 64, INPUT_DIM, generator=g).to(device)
        y = torch.nn.functional.one_hot(torch.randint(0, 10, (1, 64), generator=g), 10)
        y = y.to(device, torch.float32)
        x_eval = torch.randn(1, EVAL_CHUNK, INPUT_DIM, generator=g).to(device)
        limit = native_width_limit(device)
        cells = [_time_cell(n, depth, x, y, x_eval, sync, native=n <= limit)
                 for n, depth in CALIBRATION_CELLS]
        tanh_bp, tanh_pc = _tanh_factors(x, y, sync)
    finally:
        torch.set_num_threads(before)
    fits = {term: _fit([c[term][0] for c in cells], [c[term][1] for c in cells])
            for term in ("bp", "step", "inference", "evaluation")}
    for term in ("native_step", "native_inference"):
        rows = [c[term] for c in cells if term in c]
        if rows:
            fits[term] = _fit([r[0] for r in rows], [r[1] for r in rows])
    startup = (_process_startup(), DEFAULT_STARTUP[1])
    return CostModel(device_name(device), device.type, threads, **fits, startup=startup,
                     native_max_width=limit if "native_inference" in fits else 0,
                     tanh_bp=tanh_bp, tanh_pc=tanh_pc)


def _tanh_factors(x, y, sync, cell=(32, 32)) -> tuple[float, float]:
    """A tanh net's BP and PC-ALM (eager) step time over a ReLU net's, at one cell."""
    from pcalm.core.algorithms import make_algorithm
    from pcalm.core.model import ResidualMLP

    times = {}
    for act in ("relu", "tanh"):
        net = ResidualMLP(INPUT_DIM, *cell, activation=act, seed=[0], device=x.device)
        bp, pcalm = make_algorithm("bp"), make_algorithm("pcalm", budget=36, state_lr=0.2)
        pcalm.compile_mode = "off"
        times[act] = [_best_time(lambda a=a, n=net: a.stacked_weight_grads(n, x, y), sync=sync)
                      for a in (bp, pcalm)]
    return tuple(t / r for t, r in zip(times["tanh"], times["relu"]))


def native_width_limit(device) -> int:
    """The widest net a training run takes the native loop on, on `device`: 0 off a CPU or
    without a C compiler (pcalm.core.paths)."""
    from pcalm.core import paths
    from pcalm.core.native import fused

    if device.type != "cpu" or fused.library() is None:
        return 0
    return paths.NATIVE_MAX_WIDTH


def _process_startup() -> float:
    """Seconds for a fresh Python to import torch and pcalm's run machinery (a job's start),
    plus a second for loading a dataset."""
    import subprocess
    import sys

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, pcalm.runs.runner"], check=False,
                   capture_output=True, timeout=300)
    return time.perf_counter() - start + 1.0


def describe_seconds(seconds: float) -> str:
    """`45 s`, `12 min`, `2.3 h`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
