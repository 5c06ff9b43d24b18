"""Which path runs a training step, and the one registry of paths that failed.

A step runs on one of five paths, all computing `pcalm.core.loop`'s numbers (to float
tolerance): ``eager`` (the in-place loop), ``native`` (the same loop fused in C, CPU only:
`pcalm.core.native`), ``compiled`` (`pcalm.core.compiled`), ``graph`` and ``compiled_graph``
(`pcalm.core.graphs`, CUDA only). ``compile`` = off: eager; on: compiled (captured in a graph
on CUDA); auto: a graph on CUDA; on a CPU the native loop for nets up to `NATIVE_MAX_WIDTH`
wide when a C compiler is at hand, else eager (`CPU_AUTO_COMPILE`, `CUDA_AUTO_COMPILE`). With
an observer (diagnostics) the eager loop runs. Inputs the fast loop
does not take (e.g. x with extra batch dims) run the previous stacked eager loop
(`pcalm.core.naive.stacked_eager_inference`).

A path that fails (a capture out of memory, a compile error, a replay mismatch) is turned off
for that shape only: this module is the only writer of that registry (`_disabled`, through
`disable`); `Algorithm.last_path` says which path a call ran.
"""

from __future__ import annotations

import warnings

import torch

from pcalm.core import energy, naive
from pcalm.core.compiled import loop_compiled
from pcalm.core.graphs import ReplayMismatch, drop_graphs, graph_runner
from pcalm.core.loop import InferenceState, Observer, Output, Plan, Workspace
from pcalm.core.model import ResidualMLP
from pcalm.core.native import fused as native

COMPILE_MODES = ("auto", "on", "off")

# What `compile=auto` picks on a CPU. Measured with scripts/bench.py on the 2-core CPU box
# (torch 2.13, inductor + gcc 12; a machine shared with other jobs, best of >= 5): N=32,
# L=64, B=64, T=64, ReLU, float32, one PC-ALM weight-gradient computation: the eager fast
# loop 19-25 ms wall at 2 threads (35 ms CPU time at 1 thread); the compiled step 28-49 ms
# (its two matmuls are the same MKL calls, and the ~0.1 ms dynamo/AOT overhead of each call
# outweighs what fusing the elementwise work saves); the first compile of a shape 5-20 s.
# So auto does not compile on a CPU (it runs the native loop, below, or the eager one);
# `train.compile=on` still compiles there.
CPU_AUTO_COMPILE = False
# What `compile=auto` picks on CUDA, where the whole step is captured in a CUDA graph either
# way: the eager loop's ~13 small kernels per inference step, or the compiled step's fewer,
# fused ones. Not measured on a GPU yet (`make gpu-check` reports both: `pcalm_ms` and
# `compiled_pcalm_ms`, and `compile_s`). Chosen by arithmetic: every grid cell is a new shape,
# and one inductor compile per shape (5-20 s on the CPU above) outweighs what fusing can save
# in a one-epoch run (937 steps x T = 2L inference steps: at most ~240k steps at L = 128, a few
# seconds of kernels); with graphs, launch overhead is gone without it.
CUDA_AUTO_COMPILE = False
# The widest net `compile=auto` runs on the native loop on a CPU. Measured on the 2-core CPU
# box (AMD EPYC, AVX-512; one thread, as sweeps run nets below N = 256; PC-ALM, ReLU, B = 64;
# the loop alone, CPU time, median of 9 interleaved calls): native over eager 4.0x at N = 8,
# L = 32 (21 vs 85 µs per inference step), 3.6x at N = 8, L = 128, 1.6x at N = 16, L = 64,
# 1.4x at N = 32, L = 64, 1.25-1.35x at N = 64 (L = 32, 64), and 0.70x at N = 128, L = 16,
# where MKL's blocked matmuls win.
NATIVE_MAX_WIDTH = 64


def fast_shapes_ok(net: ResidualMLP, x: torch.Tensor, y: torch.Tensor) -> bool:
    """The fast loop takes x [B, D] (or [M, B, D] for a stack of M) and y like it."""
    m = net.num_models
    dims_ok = x.dim() == 2 or (m is not None and x.dim() == 3 and x.shape[0] == m)
    return (
        dims_ok and y.dim() == x.dim() and x.shape[-1] == net.input_dim
        and y.shape[-1] == net.output_dim and y.shape[:-1] == x.shape[:-1]
        and x.dtype == y.dtype == net.w_in.dtype and x.device == net.w_in.device
        and x.shape[-2] >= 1
    )


def execute(net: ResidualMLP, x, y, plan: Plan, mode: str, observer: Observer | None = None,
             want_state: bool = False) -> Output:
    """One training step's computation (grads, loss; the final state if asked) on the best
    path; `Output.path` says which path ran."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}: allowed: {', '.join(COMPILE_MODES)}")
    with torch.no_grad():
        if not fast_shapes_ok(net, x, y):
            return reference(net, x, y, plan, observer)
        key = shape_key(net, x, y, plan)
        path = ("eager" if observer is not None
                else resolve_path(mode, x.device, key, width=net.width))
        if path in ("graph", "compiled_graph"):
            try:
                runner = graph_runner(net, x, y, plan, path == "compiled_graph", key,
                                      lambda err: disable("compiled", key, err))
                return runner.run(x, y, want_state)
            except Exception as err:  # a failed capture must not stop a run: fall back
                if isinstance(err, ReplayMismatch):  # compile off too: eager is the reference
                    _disabled.add(("compiled", key))
                disable("graph", key, err)
                drop_graphs(key)
                path = resolve_path(mode, x.device, key, width=net.width)
        return _run_workspace(net, x, y, plan, path, key, observer, want_state)


def _run_workspace(net, x, y, plan: Plan, path: str, key: tuple, observer,
                   want_state: bool) -> Output:
    """The loop without a CUDA graph: eager, native or the compiled step (eager if the
    native or compiled one fails, from a fresh forward pass)."""
    ws = Workspace(net, x, y, plan)
    ws.prepare_weights()
    if plan.kind == "bp" or (path == "native" and not native.takes(ws)):
        path = "eager"
    try:
        if path == "native":
            native.forward_native(ws)
            native.loop_native(ws)
        elif path == "compiled":
            ws.forward(None)
            loop_compiled(ws)
        else:
            ws.forward(observer)
            ws.loop_eager(observer)
    except Exception as err:
        if path == "eager":
            raise
        disable(path, key, err)
        path = "eager"
        ws.forward(None)
        ws.loop_eager(None)
    out = ws.output(want_state)
    out.path = path
    return out


# Paths that failed in this process, per shape: ("graph" | "compiled", shape_key). One
# diverging cell or one capture out of memory must not send every later cell of a sweep job
# to the (much slower) eager loop, so only the failing shape is turned off.
_disabled: set[tuple[str, tuple]] = set()
GRAPH_DEVICE_TYPES = ("cuda",)  # where `auto` / `on` capture CUDA graphs


def shape_key(net: ResidualMLP, x, y, plan: Plan) -> tuple:
    """What a captured graph or a compiled step depends on, besides where the weights live."""
    return (tuple(net.w_in.shape), tuple(net.w_hidden.shape), tuple(net.w_out.shape),
            net.act.name, net.a_in, net.a_hidden, net.a_out, tuple(x.shape), tuple(y.shape),
            x.dtype, x.device, plan)


def _describe(key: tuple) -> str:
    hidden, act, x_shape, plan = key[1], key[3], key[7], key[11]
    return f"{plan.kind} w_hidden {list(hidden)} {act} x {list(x_shape)}"


def disable(path: str, key: tuple, err: Exception) -> None:
    if (path, key) not in _disabled:
        warnings.warn(f"pcalm: the {path} inference path failed for {_describe(key)} "
                      f"({type(err).__name__}: {err}); this shape runs without it from now on",
                      stacklevel=3)
    _disabled.add((path, key))


def resolve_path(mode: str, device: torch.device, key: tuple | None = None,
                 width: int | None = None) -> str:
    """eager | native | compiled | graph (the eager loop captured) | compiled_graph, leaving
    out the paths that failed for this shape (`key`). `width`: the net's N, for the native
    loop (None: not a candidate). CPU runs never touch a CUDA API."""
    if mode == "off":
        return "eager"
    graphs = device.type in GRAPH_DEVICE_TYPES and ("graph", key) not in _disabled
    want = mode == "on" or (CUDA_AUTO_COMPILE if graphs else CPU_AUTO_COMPILE)
    compiled = want and ("compiled", key) not in _disabled
    if graphs:
        return "compiled_graph" if compiled else "graph"
    if compiled:
        return "compiled"
    if (mode == "auto" and device.type == "cpu" and device.type not in GRAPH_DEVICE_TYPES
            and width is not None
            and width <= NATIVE_MAX_WIDTH and ("native", key) not in _disabled
            and native.library() is not None):
        return "native"
    return "eager"


def reference(net, x, y, plan: Plan, observer) -> Output:
    """Any input shape the fast loop does not take: the previous stacked eager path."""
    if plan.per_model:
        raise ValueError(f"a stack with per-model options takes x of shape [M, B, "
                         f"{net.input_dim}] or [B, {net.input_dim}], not {list(x.shape)}")
    if plan.kind == "bp":
        h, delta, e = energy.backprop(net, x, y)
        grads = energy.weight_grads(net, x, h, -delta, e)
        return Output(grads, energy.mse_loss(e + y, y))
    obs = None
    if observer is not None:
        def obs(step, s):
            observer(step, InferenceState(*s))
    z, lam, eps, e, loss = naive.stacked_eager_inference(
        net, x, y, budget=plan.budget, state_lr=plan.state_lr, rho=plan.rho, alpha=plan.alpha,
        inner_steps=plan.inner_steps, post_dual=plan.post_dual, observer=obs,
    )
    grads = energy.weight_grads(net, x, z, eps, e)
    return Output(grads, loss, InferenceState(z, lam, eps, e, loss))
