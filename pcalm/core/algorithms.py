"""BP, PC and PC-ALM: how each turns a batch into weight gradients (SPEC §4).

    algo = make_algorithm("pcalm", budget=64, state_lr=0.25)
    grads = algo.weight_grads(net, x, y)      # list shaped like net.weights

PC and PC-ALM share one inference loop (`run_inference`, THE hot path). Each primal step is
two batched matmuls over all hidden layers: one for ∂𝓛/∂z and one for the residuals r, which
are at once the dual update of this step and the errors of the next. No autograd, no loop
over layers, no allocation per step. How it is made fast (ARCHITECTURE "Performance"):

- Layout: the loop works on layer-major buffers ``[L-1, M, B, N]`` (M models, 1 if the net
  is not stacked), so the L-2 hidden layers of all M models form one contiguous batch of
  ``(L-2)·M`` matrices for ``torch.bmm``. The predictions f_l(z_{l-1}) live in one buffer
  whose first slot is the fixed a_in W_1 x, so r = z − f is one ``baddbmm`` and one
  subtraction (computed as the forward pass is, so on the CPU r = 0 there bit for bit and
  credit that has not arrived yet is exactly 0, not rounding noise), and the
  credit buffer has an extra zero slot ``E[L-1] = 0`` (ε_l − ε_{l+1} is one subtraction).
- The readout is folded into the same step: ∂ℓ/∂z_{L-1} fills the top slot of the matmul
  output Q (Q_l = a_h ε_{l+1} W_{l+1}, Q_{L-1} = −a_out e W_L), so z ← z + η(D ⊙ Q + ε_next − ε)
  with D = φ'(z) for every layer at once.
- φ(z) and φ'(z) are computed once per step, in place; every op writes into a buffer
  (``bmm(out=)``, ``baddbmm_``, ``addcmul_``, ``add_``), which also makes the loop capturable
  in a CUDA graph.
- ``compile``: ``off`` = the eager loop above; ``on`` = a torch.compile'd functional step
  (elementwise work fused around the two matmuls), cached per shape, dtype, device and
  activation. On CUDA (``auto`` or ``on``) the whole training step (forward, T steps, weight
  grads) is captured once in a CUDA graph (static buffers) and replayed: the eager loop for
  ``auto``, the compiled step for ``on`` (see `CUDA_AUTO_COMPILE`); on CPU ``auto`` is what
  `CPU_AUTO_COMPILE` says (measured: see its comment). Each new capture is checked once
  against the eager loop (per model, in float64, leaving out diverging models); a failed
  capture or a mismatch falls back to eager with a warning, so a run is slower at worst,
  never wrong. `release_graphs` frees a net's captures (the Trainer's, when its run ends).
- With an ``observer`` (diagnostics) the eager loop runs and hands out copies of the state.
- A stack whose models differ in η_h, ρ or α (`stack_algorithms`; PC members as PC-ALM with
  α = 0) carries them as ``[1, M, 1, 1]`` tensors: the same loop with one more elementwise
  op per step, on every path (the compiled step takes them as ``[M, 1, 1]`` coefficients).
- A path that fails (a capture out of memory, a compile error, a replay mismatch) is turned
  off for that shape only (`_disabled`); `Algorithm.last_path` says which path a call ran.
- BP runs in the same buffers (forward pass, then the adjoint layer by layer), so it too is
  captured in a CUDA graph on GPU.
- Inputs the fast loop does not take (e.g. x with extra batch dims) run the previous stacked
  eager loop (`pcalm.core.naive.stacked_eager_inference`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import torch

from pcalm.core import energy, naive
from pcalm.core.model import ResidualMLP

WEIGHT_CREDITS = ("pre_dual", "post_dual")
COMPILE_MODES = ("auto", "on", "off")

# What `compile=auto` picks on a CPU. Measured with scripts/bench.py on the 2-core CPU box
# (torch 2.13, inductor + gcc 12; a machine shared with other jobs, best of >= 5): N=32,
# L=64, B=64, T=64, ReLU, float32, one PC-ALM weight-gradient computation: the eager fast
# loop 19-25 ms wall at 2 threads (35 ms CPU time at 1 thread); the compiled step 28-49 ms
# (its two matmuls are the same MKL calls, and the ~0.1 ms dynamo/AOT overhead of each call
# outweighs what fusing the elementwise work saves); the first compile of a shape 5-20 s.
# So auto = eager on a CPU; `train.compile=on` still compiles there.
CPU_AUTO_COMPILE = False
# What `compile=auto` picks on CUDA, where the whole step is captured in a CUDA graph either
# way: the eager loop's ~13 small kernels per inference step, or the compiled step's fewer,
# fused ones. Not measured on a GPU yet (`make gpu-check` reports both: `pcalm_ms` and
# `compiled_pcalm_ms`, and `compile_s`). Chosen by arithmetic: every grid cell is a new shape,
# and one inductor compile per shape (5-20 s on the CPU above) outweighs what fusing can save
# in a one-epoch run (937 steps x T = 2L inference steps: at most ~240k steps at L = 128, a few
# seconds of kernels); with graphs, launch overhead is gone without it.
CUDA_AUTO_COMPILE = False


# -- float32 matmul precision ----------------------------------------------------------------

FLOAT32_MATMUL = "ieee"  # what training and the bench pin: full float32, no TF32 / bf16


def _matmul_backends() -> list:
    """cuBLAS's and oneDNN's (CPU) matmul settings, where torch (>= 2.9) has per-backend
    float32 precisions."""
    mkldnn = getattr(torch.backends, "mkldnn", None)
    found = (torch.backends.cuda.matmul, getattr(mkldnn, "matmul", None))
    return [b for b in found if b is not None and hasattr(b, "fp32_precision")]


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """Run the body with IEEE float32 matmuls (CUDA and CPU), then restore what was set.

    A user's ``torch.set_float32_matmul_precision("high")`` (TF32 on CUDA) would otherwise
    change every number of a run, and the graph's replay check would still pass (both sides
    would use it). torch >= 2.9: its per-backend API (mixing it with the legacy one makes
    torch raise, so the legacy one is used only where the new one is missing).
    """
    backends = _matmul_backends()
    if not backends:
        saved = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(saved)
        return
    saved = [b.fp32_precision for b in backends]
    for b in backends:
        b.fp32_precision = FLOAT32_MATMUL
    try:
        yield
    finally:
        for b, value in zip(backends, saved):
            b.fp32_precision = value


def float32_matmul_precision(device: torch.device) -> str:
    """The float32 matmul precision in force on `device` now: ieee | tf32 | bf16 (torch >=
    2.9; "none" = the default, IEEE), or the legacy highest | high | medium."""
    backends = _matmul_backends()
    if not backends:
        return torch.get_float32_matmul_precision()
    value = backends[0 if device.type == "cuda" else -1].fp32_precision
    return FLOAT32_MATMUL if value == "none" else value


@dataclass
class InferenceState:
    """Where inference ended: states z, multipliers λ, credit ε = ρr + λ, output error e."""

    z: torch.Tensor
    lam: torch.Tensor | None
    eps: torch.Tensor
    e: torch.Tensor
    forward_loss: torch.Tensor  # ℓ at the forward pass, per model: the training loss


# observer(step, state) sees the state after every primal step (step 0 = forward pass);
# diagnostics use it for credit traces. None on the hot path. The state is a copy.
Observer = Callable[[int, InferenceState], None]


class Algorithm:
    """Base class: one rule for the weight gradient of a batch.

    ``compile_mode`` (auto | on | off, not an algorithm option: it changes no number beyond
    float tolerance) picks the execution path; the Trainer sets it from ``train.compile``.
    """

    name = ""
    compile_mode = "auto"
    # The path the last call ran (eager | compiled | graph | compiled_graph): what the
    # Trainer records in a run's summary and the bench in each row. Not a dataclass field.
    last_path: str | None = None

    def _run(self, net, x, y, plan, observer=None, want_state=False) -> _Output:
        out = _execute(net, x, y, plan, self.compile_mode, observer, want_state)
        self.last_path = out.path
        return out

    def stacked_weight_grads(self, net: ResidualMLP, x, y):
        """(g_in, g_hidden, g_out, forward_loss): grads shaped like the stacked parameters."""
        raise NotImplementedError

    def weight_grads(self, net: ResidualMLP, x: torch.Tensor, y: torch.Tensor):
        """Batch-mean weight gradients, a list shaped like `net.weights`."""
        g_in, g_hidden, g_out, _ = self.stacked_weight_grads(net, x, y)
        return [g_in, *g_hidden.unbind(-3), g_out]

    def options(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass
class BP(Algorithm):
    """Backprop of ℓ = ½‖ŷ − y‖² (batch mean) at the forward pass."""

    name = "bp"

    def stacked_weight_grads(self, net, x, y):
        out = self._run(net, x, y, _Plan("bp"))
        return out.grads + (out.loss,)


@dataclass
class PC(Algorithm):
    """Predictive coding: z ← forward pass, then `budget` steps z ← z − η_h ∂F/∂z."""

    budget: int = 64
    state_lr: float = 0.25
    name = "pc"

    def __post_init__(self):
        _check_positive_int("budget", self.budget)
        _check_positive_float("state_lr", self.state_lr)

    def _plan(self) -> _Plan:
        return _Plan("pc", self.budget, float(self.state_lr))

    def infer(self, net, x, y, observer: Observer | None = None) -> InferenceState:
        return self._run(net, x, y, self._plan(), observer, want_state=True).state

    def stacked_weight_grads(self, net, x, y):
        out = self._run(net, x, y, self._plan())
        return out.grads + (out.loss,)


@dataclass
class PCALM(PC):
    """PC-ALM: PC plus layer-local multipliers λ with dual ascent λ ← λ + α r (SPEC §4).

    `inner_steps` primal steps per dual update (primal budget = budget × inner_steps);
    `weight_credit`: the λ of the last primal step (`pre_dual`) or one more dual update
    first (`post_dual`).
    """

    rho: float = 1.0
    alpha: float = 1.0
    inner_steps: int = 1
    weight_credit: str = "pre_dual"
    name = "pcalm"

    def __post_init__(self):
        super().__post_init__()
        _check_positive_float("rho", self.rho)
        if not _is_number(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha must be a number >= 0, got {self.alpha!r}")
        _check_positive_int("inner_steps", self.inner_steps)
        if self.weight_credit not in WEIGHT_CREDITS:
            allowed = ", ".join(WEIGHT_CREDITS)
            raise ValueError(f"unknown weight_credit {self.weight_credit!r}: allowed: {allowed}")

    def _plan(self) -> _Plan:
        return _Plan("pcalm", self.budget, float(self.state_lr), float(self.rho),
                     float(self.alpha), self.inner_steps, self.weight_credit == "post_dual")


@dataclass
class Stacked(Algorithm):
    """PC / PC-ALM members of a model stack that differ in η_h, ρ or α (one member per model,
    in stack order): one inference loop with those options as per-model tensors. A PC
    member is PC-ALM with α = 0 and ρ = 1 (λ stays 0: ε = r, exactly PC). Built by
    `stack_algorithms`, which checks that the members share budget, inner steps and
    weight credit."""

    members: tuple[Algorithm, ...] = ()
    name = "stacked"

    def _plan(self) -> _Plan:
        forms = [_as_pcalm(a) for a in self.members]
        shared = forms[0]  # budget, inner steps and weight credit agree (stack_algorithms)
        return _Plan("pcalm", shared.budget, tuple(float(a.state_lr) for a in forms),
                     tuple(float(a.rho) for a in forms), tuple(float(a.alpha) for a in forms),
                     shared.inner_steps, shared.weight_credit == "post_dual")

    infer = PC.infer
    stacked_weight_grads = PC.stacked_weight_grads


def _as_pcalm(algo: Algorithm) -> PCALM:
    """PC as the PC-ALM that computes exactly what it does; PC-ALM as it is."""
    if isinstance(algo, PCALM):
        return algo
    if isinstance(algo, PC):
        return PCALM(budget=algo.budget, state_lr=algo.state_lr, rho=1.0, alpha=0.0)
    raise ValueError(f"algorithm {algo.name!r} cannot share a stack with PC / PC-ALM members")


def stack_algorithms(algos: list[Algorithm]) -> Algorithm:
    """One algorithm for a model stack whose m-th model trains with ``algos[m]``.

    Equal members: that algorithm. PC / PC-ALM members that differ only in η_h, ρ, α (or
    PC vs PC-ALM): a `Stacked` one. Anything else (BP beside PC, other budgets, inner steps
    or weight credit) is a ValueError naming the difference.
    """
    if all(a == algos[0] for a in algos):
        return algos[0]
    forms = [_as_pcalm(a) for a in algos]
    for key in ("budget", "inner_steps", "weight_credit"):
        values = sorted({str(getattr(f, key)) for f in forms})
        if len(values) > 1:
            raise ValueError(f"a stack's algorithms must share {key}, got {', '.join(values)}")
    return Stacked(members=tuple(algos))


def run_inference(
    net: ResidualMLP,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    budget: int,
    state_lr: float,
    rho: float = 1.0,
    alpha: float | None = None,
    inner_steps: int = 1,
    post_dual: bool = False,
    observer: Observer | None = None,
    compile: str = "auto",
) -> InferenceState:
    """Inference from the forward pass. alpha=None is PC (no multipliers at all).

    PC-ALM: λ ← 0; for t = 1..T: `inner_steps` primal steps z ← z − η_h ∂𝓛/∂z, then
    (except after the last, unless post_dual) λ ← λ + α r with r after the primal step.
    `compile`: auto | on | off (see the module docstring); an observer forces eager.
    """
    kind = "pc" if alpha is None else "pcalm"
    plan = _Plan(kind, budget, float(state_lr), float(rho),
                 None if alpha is None else float(alpha), inner_steps, post_dual)
    return _execute(net, x, y, plan, compile, observer, want_state=True).state


# -- the fast path -----------------------------------------------------------------------

@dataclass(frozen=True)
class _Plan:
    """What one training step computes: BP, or PC / PC-ALM inference with its options."""

    kind: str  # bp | pc | pcalm
    budget: int = 0
    state_lr: float | tuple[float, ...] = 0.0  # a tuple: one value per model of a stack
    rho: float | tuple[float, ...] = 1.0
    alpha: float | tuple[float, ...] | None = None  # None: no multipliers (PC)
    inner_steps: int = 1
    post_dual: bool = False

    @property
    def has_lam(self) -> bool:
        return self.kind == "pcalm"

    @property
    def per_model(self) -> bool:
        """Options that differ between the models of a stack (`stack_algorithms`)."""
        return isinstance(self.state_lr, tuple)


@dataclass
class _Output:
    grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
    loss: torch.Tensor
    state: InferenceState | None = None
    path: str = "eager"  # eager | compiled | graph | compiled_graph: what computed it


def _fast_shapes_ok(net: ResidualMLP, x: torch.Tensor, y: torch.Tensor) -> bool:
    """The fast loop takes x [B, D] (or [M, B, D] for a stack of M) and y like it."""
    m = net.num_models
    dims_ok = x.dim() == 2 or (m is not None and x.dim() == 3 and x.shape[0] == m)
    return (
        dims_ok and y.dim() == x.dim() and x.shape[-1] == net.input_dim
        and y.shape[-1] == net.output_dim and y.shape[:-1] == x.shape[:-1]
        and x.dtype == y.dtype == net.w_in.dtype and x.device == net.w_in.device
        and x.shape[-2] >= 1
    )


def _execute(net: ResidualMLP, x, y, plan: _Plan, mode: str, observer: Observer | None = None,
             want_state: bool = False) -> _Output:
    """One training step's computation (grads, loss; the final state if asked) on the best
    path; `_Output.path` says which path ran."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}: allowed: {', '.join(COMPILE_MODES)}")
    with torch.no_grad():
        if not _fast_shapes_ok(net, x, y):
            return _reference(net, x, y, plan, observer)
        key = _shape_key(net, x, y, plan)
        path = "eager" if observer is not None else _resolve_path(mode, x.device, key)
        if path in ("graph", "compiled_graph"):
            try:
                runner = _graph_runner(net, x, y, plan, path == "compiled_graph", key)
                return runner.run(x, y, want_state)
            except Exception as err:  # a failed capture must not stop a run: fall back
                _disable("graph", key, err)
                _drop_graphs(key)
                path = _resolve_path(mode, x.device, key)
        return _run_workspace(net, x, y, plan, path, key, observer, want_state)


def _run_workspace(net, x, y, plan: _Plan, path: str, key: tuple, observer,
                   want_state: bool) -> _Output:
    """The loop without a CUDA graph: eager, or the compiled step (eager if that fails)."""
    ws = _Workspace(net, x, y, plan)
    ws.prepare_weights()
    ws.forward(observer)
    if plan.kind == "bp":
        path = "eager"
    elif path == "compiled":
        try:
            ws.loop_compiled()
        except Exception as err:
            _disable("compiled", key, err)
            path = "eager"
            ws.forward(None)
            ws.loop_eager(None)
    else:
        ws.loop_eager(observer)
    out = ws.output(want_state)
    out.path = path
    return out


# Paths that failed in this process, per shape: ("graph" | "compiled", _shape_key). One
# diverging cell or one capture out of memory must not send every later cell of a sweep job
# to the (much slower) eager loop, so only the failing shape is turned off.
_disabled: set[tuple[str, tuple]] = set()
GRAPH_DEVICE_TYPES = ("cuda",)  # where `auto` / `on` capture CUDA graphs


def _shape_key(net: ResidualMLP, x, y, plan: _Plan) -> tuple:
    """What a captured graph or a compiled step depends on, besides where the weights live."""
    return (tuple(net.w_in.shape), tuple(net.w_hidden.shape), tuple(net.w_out.shape),
            net.act.name, net.a_in, net.a_hidden, net.a_out, tuple(x.shape), tuple(y.shape),
            x.dtype, x.device, plan)


def _describe(key: tuple) -> str:
    hidden, act, x_shape, plan = key[1], key[3], key[7], key[11]
    return f"{plan.kind} w_hidden {list(hidden)} {act} x {list(x_shape)}"


def _disable(path: str, key: tuple, err: Exception) -> None:
    if (path, key) not in _disabled:
        warnings.warn(f"pcalm: the {path} inference path failed for {_describe(key)} "
                      f"({type(err).__name__}: {err}); this shape runs without it from now on",
                      stacklevel=3)
    _disabled.add((path, key))


def release_graphs(net: ResidualMLP | None = None) -> int:
    """Drop the cached CUDA graphs (and their buffers) of `net`, or all; returns how many.

    A graph keeps its net, its static buffers and its memory pool alive: the Trainer
    releases its own when a run ends, so a sweep job's finished runs hold no GPU memory.
    """
    dead = [k for k, r in _GRAPHS.items() if net is None or r.ws.net is net]
    for k in dead:
        del _GRAPHS[k]
    return len(dead)


def _drop_graphs(key: tuple) -> None:
    """Forget the captures of a shape whose graph path failed (they hold memory)."""
    for k in [k for k in _GRAPHS if k[1] == key]:
        del _GRAPHS[k]


def _resolve_path(mode: str, device: torch.device, key: tuple | None = None) -> str:
    """eager | compiled | graph (the eager loop captured) | compiled_graph, leaving out the
    paths that failed for this shape (`key`). CPU runs never touch a CUDA API."""
    if mode == "off":
        return "eager"
    graphs = device.type in GRAPH_DEVICE_TYPES and ("graph", key) not in _disabled
    want = mode == "on" or (CUDA_AUTO_COMPILE if graphs else CPU_AUTO_COMPILE)
    compiled = want and ("compiled", key) not in _disabled
    if graphs:
        return "compiled_graph" if compiled else "graph"
    return "compiled" if compiled else "eager"


def _reference(net, x, y, plan: _Plan, observer) -> _Output:
    """Any input shape the fast loop does not take: the previous stacked eager path."""
    if plan.per_model:
        raise ValueError(f"a stack with per-model options takes x of shape [M, B, "
                         f"{net.input_dim}] or [B, {net.input_dim}], not {list(x.shape)}")
    if plan.kind == "bp":
        h, delta, e = energy.backprop(net, x, y)
        grads = energy.weight_grads(net, x, h, -delta, e)
        return _Output(grads, energy.mse_loss(e + y, y))
    obs = None
    if observer is not None:
        def obs(step, s):
            observer(step, InferenceState(*s))
    z, lam, eps, e, loss = naive.stacked_eager_inference(
        net, x, y, budget=plan.budget, state_lr=plan.state_lr, rho=plan.rho, alpha=plan.alpha,
        inner_steps=plan.inner_steps, post_dual=plan.post_dual, observer=obs,
    )
    grads = energy.weight_grads(net, x, z, eps, e)
    return _Output(grads, loss, InferenceState(z, lam, eps, e, loss))


class _Workspace:
    """Buffers and the in-place loop for one (net, batch, plan); see the module docstring.

    Layer-major buffers (M = models, 1 for a lone net; K = L-2 hidden weight layers):
        z, F [L-1, M, B, N]  states z_1 … z_{L-1}; predictions f_l(z_{l-1}), F[0] = a_in W_1 x
        E [L, M, B, N]     E[:L-1] = ε_1 … ε_{L-1} (r while a step is under way), E[L-1] = 0
        P, D, Q, lam [L-1, M, B, N]   φ(z), φ'(z), matmul output, multipliers
        e [M, B, C]        output error ŷ − y
        W, WT [K, M, N, N] a_h W_l and W_lᵀ for l = 2 … L-1; Wo_neg = −a_out W_L, WoT = W_Lᵀ
    """

    def __init__(self, net: ResidualMLP, x: torch.Tensor, y: torch.Tensor, plan: _Plan):
        self.net, self.plan = net, plan
        self.stacked = net.num_models is not None
        m = net.num_models or 1
        L, N, C = net.depth, net.width, net.output_dim
        K, B, D = L - 2, x.shape[-2], net.input_dim
        self.m, self.L, self.K, self.B = m, L, K, B
        self.act = net.act.name
        self.a_in, self.a_h, self.a_out = net.a_in, net.a_hidden, net.a_out
        new = _allocator(net.w_in)
        lead = (lambda w: w) if self.stacked else (lambda w: w.unsqueeze(0))
        # x, y: [M, B, ·], or [B, ·] shared by all models
        self.x3 = x if x.dim() == 3 else x.unsqueeze(0).expand(m, B, D)
        self.y3 = y if y.dim() == 3 else y.unsqueeze(0).expand(m, B, C)
        self.w_in_t = lead(net.w_in).transpose(-1, -2)  # [M, D, N]
        self.wh = lead(net.w_hidden).transpose(0, 1)  # [K, M, N, N], a view
        self.w_out = lead(net.w_out)  # [M, C, N]
        self.W, self.WT = new(K, m, N, N), new(K, m, N, N)
        self.Wo_neg, self.WoT = new(m, C, N), new(m, N, C)
        self.z, self.F, self.E = new(L - 1, m, B, N), new(L - 1, m, B, N), new(L, m, B, N)
        self.Q = new(L - 1, m, B, N)
        self.P = self.z if self.act == "identity" else new(L - 1, m, B, N)
        self.D = None if self.act == "identity" else new(L - 1, m, B, N)
        self.lam = new(L - 1, m, B, N) if plan.has_lam else None
        self.e = new(m, B, C)
        self.loss = None
        self.one = torch.ones((), dtype=net.w_in.dtype, device=net.w_in.device)
        # Per-model η_h, ρ, α of a mixed stack as [1, M, 1, 1] tensors (None: scalars); and
        # the compiled step's coefficients (η_h, ρ, α (0: no dual update), a_h, a_out). Made
        # here so that nothing is copied to the device while a CUDA graph is captured.
        self.eta_m = self.rho_m = self.alpha_m = None
        if plan.per_model:
            self.eta_m, self.rho_m, self.alpha_m = (
                self._per_model(v) for v in (plan.state_lr, plan.rho, plan.alpha))
        self.coef = {dual: self._compiled_coefficients(dual) for dual in (False, True)}
        # Views used every step, made once (flattened (layer, model) batches for bmm).
        def flat(t):  # [K, M, ...] → [K·M, ...], a view (every buffer is contiguous)
            return t.view(K * m, *t.shape[2:])

        self.z_below, self.F_above = flat(self.z[:K]), flat(self.F[1:])
        self.R = self.E[: L - 1]  # r, then ε = ρ r + λ in place
        self.E_above = flat(self.E[1 : K + 1])  # ε_2 … ε_{L-1}, and r_2 … r_{L-1}
        self.P_below = flat(self.P[:K])  # φ(z_1) … φ(z_{L-2})
        self.Q_hidden, self.Q_top = flat(self.Q[:K]), self.Q[L - 2]
        self.P_top = self.P[L - 2]
        self.W3, self.WT3 = flat(self.W), flat(self.WT)

    def _compiled_coefficients(self, dual: bool) -> tuple[torch.Tensor, ...]:
        """(η_h, ρ, α or 0, a_h, a_out) for the compiled step: 0-d tensors, or [M, 1, 1] for
        a mixed stack's per-model options (they broadcast against [·, M, B, N] and [M, B, N])."""
        def scalar(v):
            return torch.tensor(float(v), dtype=self.z.dtype, device=self.z.device)

        if self.eta_m is None:
            p = self.plan
            eta, rho, alpha = (scalar(v) for v in (p.state_lr, p.rho, p.alpha or 0.0))
        else:
            eta, rho, alpha = (t.view(self.m, 1, 1) for t in (self.eta_m, self.rho_m,
                                                                self.alpha_m))
        return (eta, rho, alpha if dual else torch.zeros_like(alpha), scalar(self.a_h),
                scalar(self.a_out))

    def _per_model(self, values: tuple[float, ...]) -> torch.Tensor:
        if len(values) != self.m:
            raise ValueError(f"per-model options for {len(values)} models, but the net is a "
                             f"stack of {self.m}")
        return torch.tensor(values, dtype=self.z.dtype, device=self.z.device).view(1, -1, 1, 1)

    # -- pieces -------------------------------------------------------------------------
    def prepare_weights(self) -> None:
        """Scaled / transposed copies of the weights, in the loop's layout (cheap: once a call)."""
        torch.mul(self.wh, self.a_h, out=self.W)
        self.WT.copy_(self.wh.transpose(-1, -2))
        torch.mul(self.w_out, -self.a_out, out=self.Wo_neg)
        self.WoT.copy_(self.w_out.transpose(-1, -2))

    def _phi(self, z: torch.Tensor, out: torch.Tensor) -> None:
        if self.act == "relu":
            torch.clamp_min(z, 0, out=out)
        elif self.act == "tanh":
            torch.tanh(z, out=out)
        # identity: P aliases z

    def _phi_all(self) -> None:
        """P = φ(z), D = φ'(z) for every layer; φ'(0) = 0 for ReLU as autograd's."""
        self._phi(self.z, self.P)
        if self.act == "relu":
            torch.sign(self.P, out=self.D)
        elif self.act == "tanh":
            torch.addcmul(self.one, self.P, self.P, value=-1, out=self.D)

    def _readout(self) -> None:
        """e = a_out φ(z_{L-1}) W_Lᵀ − y."""
        torch.baddbmm(self.y3, self.P_top, self.WoT, beta=-1, alpha=self.a_out, out=self.e)

    def _residuals(self) -> None:
        """r = z − f(z_below) for all layers, into R (= E[:L-1])."""
        if self.K:  # f_l = z_{l-1} + a_h φ(z_{l-1}) W_lᵀ, exactly as in `forward`
            torch.baddbmm(self.z_below, self.P_below, self.WT3, alpha=self.a_h, out=self.F_above)
        torch.sub(self.z, self.F, out=self.R)

    def _credit(self, dual: bool) -> None:
        """R holds r: dual ascent λ ← λ + α r if `dual`, then ε = ρ r + λ in place."""
        p = self.plan
        if self.rho_m is not None:  # a mixed stack (always with λ; a PC member has α = 0)
            if dual:
                self.lam.addcmul_(self.R, self.alpha_m)
            torch.addcmul(self.lam, self.R, self.rho_m, out=self.R)
        elif self.lam is not None:
            if dual:
                self.lam.add_(self.R, alpha=p.alpha)
            torch.add(self.lam, self.R, alpha=p.rho, out=self.R)
        elif p.rho != 1:
            self.R.mul_(p.rho)

    def _observed_credit(self) -> torch.Tensor:
        if self.rho_m is not None:
            return torch.addcmul(self.lam, self.R, self.rho_m)
        if self.lam is not None:
            return torch.add(self.lam, self.R, alpha=self.plan.rho)
        return self.R * self.plan.rho

    def _public(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """[L-1, M, ...] → [M, L-1, ...] (or [L-1, ...] for a lone net), as a fresh tensor."""
        if t is None:
            return None
        t = t.transpose(0, 1) if self.stacked else t[:, 0]
        return t.clone(memory_format=torch.contiguous_format)

    def _state(self, eps: torch.Tensor) -> InferenceState:
        e = self.e.clone() if self.stacked else self.e[0].clone()
        return InferenceState(self._public(self.z), self._public(self.lam), self._public(eps),
                              e, self.loss.clone())

    # -- the computation ----------------------------------------------------------------
    def forward(self, observer: Observer | None) -> None:
        """z ← forward pass (and φ, φ', e, ℓ); ε ← ρ r (λ = 0); BP: ε ← −δ (the adjoint)."""
        z, P, F = self.z, self.P, self.F
        torch.baddbmm(F[0], self.x3, self.w_in_t, beta=0, alpha=self.a_in, out=F[0])
        z[0].copy_(F[0])
        for l in range(self.K):  # sequential by nature
            self._phi(z[l], P[l])
            torch.baddbmm(z[l], P[l], self.WT[l], alpha=self.a_h, out=z[l + 1])
        self._phi_all()
        self._readout()
        self.loss = 0.5 * self.e.pow(2).sum(-1).mean(-1)
        if not self.stacked:
            self.loss = self.loss[0]
        self.E[self.L - 1].zero_()
        if self.plan.kind == "bp":
            self._backprop()
            return
        self._residuals()
        if self.lam is not None:
            self.lam.zero_()
        self._credit(False)
        if observer is not None:
            observer(0, self._state(self.R))

    def _backprop(self) -> None:
        """E[l] = −δ_l (BP's adjoint, SPEC §5)::

            −δ_{L-1} = −a_out φ'(h_{L-1}) ⊙ W_Lᵀ e
            −δ_l     = −δ_{l+1} + a_h φ'(h_l) ⊙ W_{l+1}ᵀ (−δ_{l+1})
        """
        E, D, Q = self.E, self.D, self.Q
        top = self.L - 2
        torch.bmm(self.e, self.Wo_neg, out=Q[top])
        if D is None:
            E[top].copy_(Q[top])
        else:
            torch.mul(D[top], Q[top], out=E[top])
        for l in range(self.K - 1, -1, -1):
            torch.bmm(E[l + 1], self.W[l], out=Q[l])
            if D is None:
                torch.add(E[l + 1], Q[l], out=E[l])
            else:
                torch.addcmul(E[l + 1], D[l], Q[l], out=E[l])

    def primal_step(self) -> None:
        """z ← z − η ∂𝓛/∂z (all layers, readout included); then φ, φ', r, e at the new z."""
        eta = self.plan.state_lr
        if self.K:
            torch.bmm(self.E_above, self.W3, out=self.Q_hidden)  # a_h ε_{l+1} W_{l+1}
        torch.bmm(self.e, self.Wo_neg, out=self.Q_top)  # −a_out e W_L
        z = self.z
        if self.eta_m is not None:  # a mixed stack: Q ← D ⊙ Q + ε_next − ε, z ← z + η_m Q
            if self.D is not None:
                self.Q.mul_(self.D)
            self.Q.add_(self.E[1:]).sub_(self.E[:-1])
            z.addcmul_(self.Q, self.eta_m)
        else:
            if self.D is None:
                z.add_(self.Q, alpha=eta)
            else:
                z.addcmul_(self.D, self.Q, value=eta)
            z.add_(self.E[1:], alpha=eta)
            z.sub_(self.E[:-1], alpha=eta)
        self._phi_all()
        self._residuals()
        self._readout()

    def loop_eager(self, observer: Observer | None) -> None:
        p = self.plan
        step = 0
        for t in range(p.budget):
            for i in range(p.inner_steps):
                self.primal_step()
                dual = (self.lam is not None and i == p.inner_steps - 1
                        and (t < p.budget - 1 or p.post_dual))
                if observer is not None:
                    step += 1
                    observer(step, self._state(self._observed_credit()))
                self._credit(dual)

    def loop_compiled(self) -> None:
        """The same loop with a torch.compile'd functional step; results copied back."""
        p = self.plan
        step = _compiled_step(self.act, p.has_lam)
        coef = self.coef
        z, eps, lam, e = self.z, self.R, self.lam, self.e
        weights = (self.F[0], self.W, self.WT, self.Wo_neg, self.WoT, self.y3)
        for t in range(p.budget):
            for i in range(p.inner_steps):
                dual = (lam is not None and i == p.inner_steps - 1
                        and (t < p.budget - 1 or p.post_dual))
                z, eps, lam, e = step(z, eps, lam, e, *weights, coef[dual])
        self.z.copy_(z)
        self.R.copy_(eps)
        self.e.copy_(e)
        if lam is not None:
            self.lam.copy_(lam)
        self._phi_all()

    def weight_grads(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SPEC §3 at the final (z, ε, e), shaped like (w_in, w_hidden, w_out)."""
        b, m, K = self.B, self.m, self.K
        eps1 = self.E[0]
        g_in = torch.matmul(eps1.transpose(-1, -2), self.x3).mul_(-self.a_in / b)
        g_hidden = torch.bmm(self.E_above.transpose(-1, -2), self.P_below)
        g_hidden = g_hidden.mul_(-self.a_h / b).reshape(K, m, *g_hidden.shape[1:])
        g_out = torch.bmm(self.e.transpose(-1, -2), self.P_top).mul_(self.a_out / b)
        if self.stacked:
            return g_in, g_hidden.transpose(0, 1).contiguous(), g_out
        return g_in[0], g_hidden[:, 0].contiguous(), g_out[0]

    def output(self, want_state: bool) -> _Output:
        state = self._state(self.R) if want_state and self.plan.kind != "bp" else None
        return _Output(self.weight_grads(), self.loss, state)


def _allocator(like: torch.Tensor):
    def new(*shape):
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    return new


# -- torch.compile ------------------------------------------------------------------------

def _functional_step(act: str, has_lam: bool):
    """One primal step and the credit update as a pure function, for torch.compile.

    coef = (η_h, ρ, α (0 when this step has no dual update), a_h, a_out): tensors, so one
    graph serves every value and both kinds of step; η_h, ρ, α are 0-d, or [M, 1, 1] for a
    stack whose models differ in them (`Stacked`).
    """

    def phi(z):
        return torch.relu(z) if act == "relu" else torch.tanh(z) if act == "tanh" else z

    def dphi_times(z, q):  # φ'(z) ⊙ q
        if act == "relu":
            return torch.where(z > 0, q, 0)
        return (1 - torch.tanh(z) ** 2) * q if act == "tanh" else q

    def step(z, eps, lam, e, bottom, W, WT, Wo_neg, WoT, y, coef):
        # No cat of matmul outputs (inductor would copy them): top and hidden layers are
        # updated apart, and the pieces are pointwise results written straight into place.
        eta, rho, alpha, a_h, a_out = coef
        hidden = z.shape[0] > 1
        q_top = dphi_times(z[-1], torch.matmul(e, Wo_neg))
        z_top = (z[-1] + eta * (q_top - eps[-1])).unsqueeze(0)
        if hidden:
            q = dphi_times(z[:-1], torch.matmul(eps[1:], W))
            z = torch.cat([z[:-1] + eta * (q + eps[1:] - eps[:-1]), z_top])
        else:
            z = z_top
        p = phi(z)
        r = (z[0] - bottom).unsqueeze(0)
        if hidden:
            r = torch.cat([r, z[1:] - (z[:-1] + a_h * torch.matmul(p[:-1], WT))])
        e = a_out * torch.matmul(p[-1], WoT) - y
        if has_lam:
            lam = lam + alpha * r
            eps = rho * r + lam
        else:
            eps = rho * r
        return z, eps, lam, e

    return step


_COMPILED: dict = {}
# Shapes one compiled step keeps (dynamo's per-function limit), and all steps together
# (dynamo's accumulated limit, 256 by default): past either, dynamo silently runs the step
# uncompiled. Every grid cell is a new shape (and a mixed stack another, its coefficients
# being [M, 1, 1]); there are 3 activations × PC/PC-ALM = 6 variants.
RECOMPILE_LIMIT = 1024
ACCUMULATED_RECOMPILE_LIMIT = 8 * RECOMPILE_LIMIT


def _raise_dynamo_limits() -> None:
    import torch._dynamo.config as dynamo_config

    limits = {"recompile_limit": RECOMPILE_LIMIT, "cache_size_limit": RECOMPILE_LIMIT,
              "accumulated_recompile_limit": ACCUMULATED_RECOMPILE_LIMIT,
              "accumulated_cache_size_limit": ACCUMULATED_RECOMPILE_LIMIT}
    for name, limit in limits.items():  # older / newer torch spell them differently
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), limit))


def _compiled_step(act: str, has_lam: bool):
    """torch.compile'd step, one per variant; dynamo caches one graph per shape/dtype/device."""
    key = (act, has_lam)
    if key not in _COMPILED:
        _raise_dynamo_limits()
        fn = _functional_step(act, has_lam)
        _COMPILED[key] = torch.compile(fn, dynamic=False, fullgraph=True)
    return _COMPILED[key]


# -- CUDA graphs --------------------------------------------------------------------------

_GRAPHS: OrderedDict = OrderedDict()
GRAPH_CACHE_SIZE = 4


class _GraphRunner:
    """A whole training step (weights prep, forward, T inference steps, weight grads)
    captured once in a CUDA graph on static buffers; each call copies x, y in and replays.

    The graph reads the parameters in place (Adam updates them in place, so their storage
    stays put); the cache key holds their data pointers, so new storage → a new capture.
    """

    @torch.no_grad()
    def __init__(self, net: ResidualMLP, x, y, plan: _Plan, compiled: bool, key: tuple):
        self.x, self.y = x.clone(), y.clone()
        self.plan = plan
        self.ws = _Workspace(net, self.x, self.y, plan)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            if compiled:  # the first call compiles; if that fails, capture the eager loop
                try:
                    self._body(True)
                except Exception as err:
                    _disable("compiled", key, err)
                    compiled = False
            for _ in range(2):  # warm-up: cuBLAS handles, allocator pools, dynamo caches
                self._body(compiled)
        torch.cuda.current_stream().wait_stream(side)
        self.compiled = compiled
        self.graph = torch.cuda.CUDAGraph()
        previous = torch.cuda.current_stream()
        try:
            with torch.cuda.graph(self.graph):
                self.out = self._body(compiled)
        finally:  # torch's graph.__exit__ ends the capture first: if that raises, the
            torch.cuda.set_stream(previous)  # capture stream would stay current

    def _body(self, compiled: bool):
        ws = self.ws
        ws.prepare_weights()
        ws.forward(None)
        if self.plan.kind != "bp":
            ws.loop_compiled() if compiled else ws.loop_eager(None)
        return ws.weight_grads(), ws.loss

    @torch.no_grad()
    def run(self, x, y, want_state: bool) -> _Output:
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        grads, loss = self.out
        state = None
        if want_state and self.plan.kind != "bp":
            state = self.ws._state(self.ws.R)
        path = "compiled_graph" if self.compiled else "graph"
        return _Output(tuple(g.clone() for g in grads), loss.clone(), state, path)


def _graph_runner(net: ResidualMLP, x, y, plan: _Plan, compiled: bool,
                  key: tuple) -> _GraphRunner:
    """The cached capture for this net's storage and this shape, or a new, checked one."""
    compiled = compiled and plan.kind != "bp" and ("compiled", key) not in _disabled
    pointers = tuple(p.data_ptr() for p in (net.w_in, net.w_hidden, net.w_out))
    runner = _GRAPHS.get((pointers, key, compiled))
    if runner is None:
        runner = _GraphRunner(net, x, y, plan, compiled, key)
        _check_first_replay(runner, net, x, y, plan, key)
        # Under what was captured: a compile that failed in warm-up captured the eager loop,
        # and the next call (compile now off for this shape) must find it.
        _GRAPHS[(pointers, key, runner.compiled)] = runner
        while len(_GRAPHS) > GRAPH_CACHE_SIZE:
            _GRAPHS.popitem(last=False)
    _GRAPHS.move_to_end((pointers, key, runner.compiled))
    return runner


# A new capture's first replay must match the eager loop to this relative error (per
# gradient tensor and model, in norm). float32 compiled vs eager differ by ~1e-5 at N=32,
# L=64, T=128 (CPU, measured); a capture that reads a wrong buffer is off by O(1).
REPLAY_TOLERANCE = 1e-3
# A layer's gradient that is (almost) exactly zero on the eager loop (credit that has not
# reached it: T < L-1) may carry rounding noise on another path: its error is taken relative
# to at least this fraction of the model's whole gradient norm.
LAYER_SCALE_FLOOR = 1e-2
GRAD_NAMES = ("w_in", "w_hidden", "w_out", "loss")


class ReplayMismatch(RuntimeError):
    """A captured graph's replay disagrees with the eager loop."""


def _probe_inputs(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs unlike the captured (x, y), both of them: a replay that ignored either would
    return the captured numbers. A flip or roll keeps the sum; the shift changes it, so the
    probe differs from any input."""
    return x.flip(-1) - 0.5, y.roll(1, -1) - 0.5


@torch.no_grad()
def _check_first_replay(runner: _GraphRunner, net: ResidualMLP, x, y, plan: _Plan,
                        key: tuple) -> None:
    """Replay once on inputs other than the captured ones and compare with the eager loop;
    on a mismatch, turn graphs *and* compile off for this shape (eager is the reference).

    Once per capture (one per run), so a faulty capture on an untested GPU / driver /
    torch version costs speed, never a silently wrong run.
    """
    px, py = _probe_inputs(x, y)
    got = runner.run(px, py, want_state=False)
    ws = _Workspace(net, px, py, plan)
    ws.prepare_weights()
    ws.forward(None)
    if plan.kind != "bp":
        ws.loop_eager(None)
    errors = replay_errors([*got.grads, got.loss], [*ws.weight_grads(), ws.loss],
                           net.num_models is not None)
    for name, error in errors.items():
        if not error <= REPLAY_TOLERANCE:
            _disabled.add(("compiled", key))
            raise ReplayMismatch(f"the CUDA graph's {name} differs from the eager loop by "
                                 f"{error:.1e} (relative; allowed {REPLAY_TOLERANCE:.0e})")


def replay_errors(got: list[torch.Tensor], want: list[torch.Tensor],
                  stacked: bool) -> dict[str, float]:
    """Per tensor (w_in, w_hidden, w_out, loss): the largest relative error ‖got − want‖ /
    ‖want‖ over the models of the stack, in float64 (a float32 squared norm overflows for
    a diverging model), so each model counts at its own scale. A model the eager loop
    (`want`) calls diverging is left out: non-finite, or non-finite on the other path while
    beyond √max of its dtype (where the two paths may overflow at different steps). A model
    with no such excuse that is non-finite on one path only has error inf."""
    g = [_per_model_rows(t, stacked) for t in got]
    w = [_per_model_rows(t, stacked) for t in want]
    w_all, g_all = torch.cat(w, 1), torch.cat(g, 1)
    huge = w_all.abs().amax(1) > torch.finfo(want[0].dtype).max ** 0.5
    diverging = ~torch.isfinite(w_all).all(1) | (~torch.isfinite(g_all).all(1) & huge)
    whole = torch.cat(w[:-1], 1).norm(dim=1)  # the model's whole gradient
    errors = {}
    for i, (name, gi, wi) in enumerate(zip(GRAD_NAMES, g, w)):
        scale = wi.norm(dim=1)
        if i < len(GRAD_NAMES) - 1:
            scale = torch.maximum(scale, LAYER_SCALE_FLOOR * whole)
        error = (gi - wi).norm(dim=1) / scale.clamp_min(torch.finfo(torch.float64).tiny)
        error = torch.where(diverging, 0.0, error.nan_to_num(nan=math.inf))
        errors[name] = error.max().item()
    return errors


def _per_model_rows(t: torch.Tensor, stacked: bool) -> torch.Tensor:
    """[M, ·] float64 rows, one per model (one row for a lone net)."""
    t = t.double()
    return t.reshape(t.shape[0], -1) if stacked else t.reshape(1, -1)


# -- construction -------------------------------------------------------------------------

ALGORITHMS: dict[str, type[Algorithm]] = {"bp": BP, "pc": PC, "pcalm": PCALM}


def algorithm_options(name: str) -> list[str]:
    """The option names `make_algorithm(name, ...)` accepts."""
    return [f.name for f in fields(_lookup(name))]  # type: ignore[arg-type]


def make_algorithm(name: str, **options) -> Algorithm:
    """Build `bp`, `pc` or `pcalm` with SPEC §4 defaults; bad names/options → ValueError."""
    cls = _lookup(name)
    allowed = algorithm_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for algorithm {name!r}: "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    return cls(**options)


def _lookup(name: str) -> type[Algorithm]:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}: allowed: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_positive_float(name: str, value) -> None:
    if not _is_number(value) or value <= 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
