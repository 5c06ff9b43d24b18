"""CUDA graphs: a whole training step captured once and replayed, checked once against eager.

On CUDA (`compile=auto` or `on`) the step of `pcalm.core.loop` (weights prep, forward, T
inference steps, weight grads; the compiled step of `pcalm.core.compiled` for `on`) is captured
in a CUDA graph on static buffers and replayed for every batch. Each new capture is checked
once against the eager loop (per model, in float64, leaving out diverging models): a mismatch
raises `ReplayMismatch`, and a failed capture raises too; `pcalm.core.paths` (the one owner of
the failure registry) then falls back to eager for that shape, so a run is slower at worst,
never wrong. `release_graphs` frees a net's captures (the Trainer's, when its run ends).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch

from pcalm.core.compiled import loop_compiled
from pcalm.core.loop import Output, Plan, Workspace
from pcalm.core.model import ResidualMLP

_GRAPHS: OrderedDict = OrderedDict()
GRAPH_CACHE_SIZE = 4


class GraphRunner:
    """A whole training step (weights prep, forward, T inference steps, weight grads)
    captured once in a CUDA graph on static buffers; each call copies x, y in and replays.

    The graph reads the parameters in place (Adam updates them in place, so their storage
    stays put); the cache key holds their data pointers, so new storage → a new capture.
    """

    @torch.no_grad()
    def __init__(self, net: ResidualMLP, x, y, plan: Plan, compiled: bool, key: tuple,
                 on_compile_failure: Callable[[Exception], None] | None = None):
        self.x, self.y = x.clone(), y.clone()
        self.plan = plan
        self.ws = Workspace(net, self.x, self.y, plan)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            if compiled:  # the first call compiles; if that fails, capture the eager loop
                try:
                    self._body(True)
                except Exception as err:
                    if on_compile_failure is not None:
                        on_compile_failure(err)
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
            loop_compiled(ws) if compiled else ws.loop_eager(None)
        return ws.weight_grads(), ws.loss

    @torch.no_grad()
    def run(self, x, y, want_state: bool) -> Output:
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        grads, loss = self.out
        state = None
        if want_state and self.plan.kind != "bp":
            state = self.ws._state(self.ws.R)
        path = "compiled_graph" if self.compiled else "graph"
        return Output(tuple(g.clone() for g in grads), loss.clone(), state, path)


def graph_runner(net: ResidualMLP, x, y, plan: Plan, compiled: bool, key: tuple,
                 on_compile_failure: Callable[[Exception], None] | None = None) -> GraphRunner:
    """The cached capture for this net's storage and this shape, or a new, checked one.

    `compiled`: capture the compiled step (the caller leaves out a shape whose compile failed);
    a compile that fails in the warm-up is reported to `on_compile_failure` and the eager loop
    is captured instead. A mismatching first replay raises `ReplayMismatch`."""
    compiled = compiled and plan.kind != "bp"
    pointers = tuple(p.data_ptr() for p in (net.w_in, net.w_hidden, net.w_out))
    runner = _GRAPHS.get((pointers, key, compiled))
    if runner is None:
        runner = GraphRunner(net, x, y, plan, compiled, key, on_compile_failure)
        check_first_replay(runner, net, x, y, plan, key)
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
def check_first_replay(runner: GraphRunner, net: ResidualMLP, x, y, plan: Plan,
                        key: tuple) -> None:
    """Replay once on inputs other than the captured ones and compare with the eager loop;
    a mismatch raises `ReplayMismatch` (`pcalm.core.paths` then turns graphs *and* compile off
    for this shape: eager is the reference).

    Once per capture (one per run), so a faulty capture on an untested GPU / driver /
    torch version costs speed, never a silently wrong run.
    """
    px, py = _probe_inputs(x, y)
    got = runner.run(px, py, want_state=False)
    ws = Workspace(net, px, py, plan)
    ws.prepare_weights()
    ws.forward(None)
    if plan.kind != "bp":
        ws.loop_eager(None)
    errors = replay_errors([*got.grads, got.loss], [*ws.weight_grads(), ws.loss],
                           net.num_models is not None)
    for name, error in errors.items():
        if not error <= REPLAY_TOLERANCE:
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


def release_graphs(net: ResidualMLP | None = None) -> int:
    """Drop the cached CUDA graphs (and their buffers) of `net`, or all; returns how many.

    A graph keeps its net, its static buffers and its memory pool alive: the Trainer
    releases its own when a run ends, so a sweep job's finished runs hold no GPU memory.
    """
    dead = [k for k, r in _GRAPHS.items() if net is None or r.ws.net is net]
    for k in dead:
        del _GRAPHS[k]
    return len(dead)


def drop_graphs(key: tuple) -> None:
    """Forget the captures of a shape whose graph path failed (they hold memory)."""
    for k in [k for k in _GRAPHS if k[1] == key]:
        del _GRAPHS[k]
