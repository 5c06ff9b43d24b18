"""What a run computes. `train` (the default) trains the net; the other tasks compute a
figure's diagnostics (credit traces, alignment curves, linear dynamics, ...) and store them in
the run folder like any run, so sweeps, skip-if-done and collection treat them alike.

A task is a function `(cfg, dataset | None) -> (summary: dict, arrays: dict[str, ndarray])`,
registered with `@register(name, needs_data=...)`. `arrays` land in the run folder's
`arrays.npz`; `summary` in `summary.json`. Task parameters live in the config's `task`
section beside `name`; each task validates its own (ConfigError, one line).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    fn: Callable | None  # None for `train`, which the runner handles itself
    needs_data: bool
    params: dict  # parameter name -> default


TASKS: dict[str, Task] = {"train": Task("train", None, True, {})}


def register(name: str, needs_data: bool = True, **params):
    """Register a diagnostic task with its parameters' defaults."""

    def wrap(fn: Callable) -> Callable:
        TASKS[name] = Task(name, fn, needs_data, params)
        return fn

    return wrap
from pcalm import figure_tasks  # noqa: E402,F401  (registers the figure tasks)
