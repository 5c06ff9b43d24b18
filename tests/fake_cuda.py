"""CUDA graphs stubbed out on the CPU, for the tests of the graph runner's logic.

`install(monkeypatch)` (a test module's `fake_cuda` fixture) replaces torch.cuda's streams,
graph capture and CUDAGraph with stand-ins, lets `cpu` devices take the graph path, and gives each
test an empty graph cache and no disabled paths. Inside a capture, any host round-trip or
host-to-device copy fails the test. `FakeGraph` replays by re-running the captured body.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import torch

from pcalm.core import compiled as compile_cache
from pcalm.core import graphs as graph_capture
from pcalm.core import paths as path_choice


class FakeGraph:
    """Stands in for torch.cuda.CUDAGraph on the CPU: replay re-runs the captured body and
    writes into the outputs captured the first time (what a real replay does in place).

    Faults to plant: `stale` (replay leaves the captured outputs as they are), `ignores_y`
    (replay reads the targets it was captured with, not the new ones), `noise` (a relative
    perturbation of every output, as another path's rounding would give)."""

    stale = False
    ignores_y = False
    noise = 0.0

    def __init__(self):
        self.runner = None
        self.captured_y = None

    def replay(self):
        if self.stale:
            return
        r = self.runner
        new_y = r.y.clone()
        if self.ignores_y:
            r.y.copy_(self.captured_y)
        fresh = r._body(r.compiled)
        r.y.copy_(new_y)
        for old, new in zip(flat(r.out), flat(fresh)):
            old.copy_(new * (1 + self.noise))


def flat(out):
    grads, loss = out
    return [*grads, loss]


class Captures(list):
    """The graphs captured so far, and the stubs' current-stream state (`streams`)."""

    def __init__(self):
        super().__init__()
        self.streams = Streams()


class Streams:
    """torch.cuda's current stream, as the stubs see it."""

    def __init__(self):
        self.default = Stream("default")
        self.current = self.default


class Stream:
    def __init__(self, name="side"):
        self.name = name

    def wait_stream(self, other):
        pass


def install(monkeypatch) -> Captures:
    """CUDA graphs stubbed out on the CPU; returns the list of captured graphs (with
    `.streams`: the stubs' current-stream state)."""
    graphs = Captures()
    streams = graphs.streams

    @contextlib.contextmanager
    def capture(graph):
        def forbidden(*args, **kwargs):
            raise AssertionError("host round-trip or host-to-device copy inside the graph")

        streams.current = Stream("capture")  # as torch.cuda.graph's __enter__ does
        with monkeypatch.context() as m:
            for name in ("tensor", "as_tensor"):
                m.setattr(torch, name, forbidden)
            for name in ("item", "tolist", "cpu", "numpy"):
                m.setattr(torch.Tensor, name, forbidden)
            yield
        streams.current = streams.default
        graphs.append(graph)

    @contextlib.contextmanager
    def on_stream(stream):
        before, streams.current = streams.current, stream
        try:
            yield
        finally:
            streams.current = before

    def set_stream(stream):
        streams.current = stream

    real_check = graph_capture.check_first_replay

    def check_wired(runner, *args):  # the fake graph learns which runner it replays
        runner.graph.runner = runner
        runner.graph.captured_y = runner.y.clone()
        real_check(runner, *args)

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", on_stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: streams.current)
    monkeypatch.setattr(torch.cuda, "set_stream", set_stream)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(graph_capture, "check_first_replay", check_wired)
    monkeypatch.setattr(graph_capture, "_GRAPHS", OrderedDict())
    monkeypatch.setattr(path_choice, "_disabled", set())
    monkeypatch.setattr(path_choice, "GRAPH_DEVICE_TYPES", ("cuda", "cpu"))
    return graphs


def plain_compiled(monkeypatch) -> dict:
    """The compiled step swapped for the plain Python function torch.compile would trace:
    the compiled path's logic in milliseconds (its compile is tested in the slow suite)."""
    steps = {(act, lam): compile_cache.functional_step(act, lam)
             for act in ("identity", "tanh", "relu") for lam in (False, True)}
    monkeypatch.setattr(compile_cache, "_COMPILED", steps)
    return steps
