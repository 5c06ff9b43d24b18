"""BP, PC and PC-ALM: how each turns a batch into weight gradients (SPEC §4).

    algo = make_algorithm("pcalm", budget=64, state_lr=0.25)
    grads = algo.weight_grads(net, x, y)      # list shaped like net.weights

PC and PC-ALM share one inference loop (`run_inference`, THE hot path). Each primal step is
two batched matmuls over all hidden layers: one for ∂𝓛/∂z and one for the residuals r, which
are at once the dual update of this step and the errors of the next. No autograd, no loop
over layers, no allocation per step (ARCHITECTURE.md "Performance"):

- The step itself, SPEC §4 on one page: `pcalm.core.loop`. The machinery around it:
  `pcalm.core.compiled` (torch.compile), `pcalm.core.graphs` (CUDA graphs, checked once
  against eager) and `pcalm.core.paths` (which path runs, and which failed for which shape).
  A path that fails falls back to eager, so a run is slower at worst, never wrong.
- A stack whose models differ in η_h, ρ or α (`stack_algorithms`; PC members as PC-ALM with
  α = 0) runs one loop with those options as per-model tensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, fields

import torch

from pcalm.core.graphs import REPLAY_TOLERANCE as REPLAY_TOLERANCE
from pcalm.core.graphs import ReplayMismatch as ReplayMismatch
from pcalm.core.graphs import release_graphs as release_graphs
from pcalm.core.graphs import replay_errors as replay_errors
from pcalm.core.loop import InferenceState as InferenceState
from pcalm.core.loop import Observer as Observer
from pcalm.core.loop import Output, Plan
from pcalm.core.model import ResidualMLP
from pcalm.core.paths import COMPILE_MODES as COMPILE_MODES
from pcalm.core.paths import execute
from pcalm.errors import is_finite_number, is_int_at_least
from pcalm.names import INFERENCE_ALGORITHMS

WEIGHT_CREDITS = ("pre_dual", "post_dual")


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

    def _run(self, net, x, y, plan, observer=None, want_state=False) -> Output:
        out = execute(net, x, y, plan, self.compile_mode, observer, want_state)
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
        out = self._run(net, x, y, Plan("bp"))
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

    def _plan(self) -> Plan:
        return Plan("pc", self.budget, float(self.state_lr))

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
        if not is_finite_number(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha must be a number >= 0, got {self.alpha!r}")
        _check_positive_int("inner_steps", self.inner_steps)
        if self.weight_credit not in WEIGHT_CREDITS:
            allowed = ", ".join(WEIGHT_CREDITS)
            raise ValueError(f"unknown weight_credit {self.weight_credit!r}: allowed: {allowed}")

    def _plan(self) -> Plan:
        return Plan("pcalm", self.budget, float(self.state_lr), float(self.rho),
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

    def _plan(self) -> Plan:
        forms = [_as_pcalm(a) for a in self.members]
        shared = forms[0]  # budget, inner steps and weight credit agree (stack_algorithms)
        return Plan("pcalm", shared.budget, tuple(float(a.state_lr) for a in forms),
                     tuple(float(a.rho) for a in forms), tuple(float(a.alpha) for a in forms),
                     shared.inner_steps, shared.weight_credit == "post_dual")

    infer = PC.infer
    stacked_weight_grads = PC.stacked_weight_grads


# The stack rule, written once. The models of one `Stacked` algorithm may differ in
# PER_MODEL_OPTIONS (per-model tensors in the loop) and must agree in SHARED_BY_A_STACK;
# PC takes part as the PC-ALM with ρ = 1, α = 0, which computes exactly what PC does.
PER_MODEL_OPTIONS = ("state_lr", "rho", "alpha")
SHARED_BY_A_STACK = ("budget", "inner_steps", "weight_credit")


def stack_form(name: str, options: dict) -> dict:
    """What algorithm `name` with `options` must share with the other members of a stack:
    for PC / PC-ALM the SHARED_BY_A_STACK values of its PC-ALM form (defaults filled in);
    for any other algorithm its name and every option (it stacks only with its equals)."""
    if name not in INFERENCE_ALGORITHMS:
        return {"name": name, **options}
    form = {f.name: f.default for f in fields(PCALM)} | dict(options)
    return {"name": "|".join(INFERENCE_ALGORITHMS), **{k: form[k] for k in SHARED_BY_A_STACK}}


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
    for key in SHARED_BY_A_STACK:
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
    """Inference from the forward pass (SPEC §4); returns the final `InferenceState`.

    z ← forward pass, λ ← 0; then for t = 1..T (T = `budget`)::

        `inner_steps` times:  z ← z − η_h ∂𝓛_ρ/∂z      (∂𝓛_ρ/∂z: SPEC §3, with ε = ρ r + λ)
        then, except after the last t unless `post_dual`:  λ ← λ + α r   (r after the step)

    Main arguments: `net` (a `ResidualMLP`, maybe a stack of M models), `x` [B, D] or
    [M, B, D], `y` [B, C] or [M, B, C], `budget` T ≥ 1, `state_lr` η_h > 0.
    Other arguments: `rho` ρ > 0; `alpha` α ≥ 0, or None for PC (no multipliers at all: λ ≡ 0,
    and ε = ρ r); `inner_steps` k ≥ 1 primal steps per dual update; `post_dual`: one more
    dual update before the weights are credited; `observer(step, state)` sees a copy of the
    state after every primal step (step 0 = the forward pass; forces the eager loop);
    `compile`: auto | on | off (`pcalm.core.paths`).
    """
    kind = "pc" if alpha is None else "pcalm"
    plan = Plan(kind, budget, float(state_lr), float(rho),
                 None if alpha is None else float(alpha), inner_steps, post_dual)
    return execute(net, x, y, plan, compile, observer, want_state=True).state


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


def _check_positive_int(name: str, value) -> None:
    if not is_int_at_least(value, 1):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_positive_float(name: str, value) -> None:
    if not is_finite_number(value) or value <= 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
