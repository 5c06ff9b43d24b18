"""What a task is: a function `(cfg, dataset | None) -> (summary, arrays)` with its spec.

`@task_spec(name, needs_data=..., **defaults)` only attaches a `Task` to the function (as
`fn.task`); it registers nothing. The registry is pcalm/runs/tasks/registry.py, which lists
the tasks.
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


def task_spec(name: str, needs_data: bool = True, **params):
    """Mark `fn` as the task `name` with its parameters' defaults (`fn.task`)."""

    def wrap(fn: Callable) -> Callable:
        fn.task = Task(name, fn, needs_data, params)
        return fn

    return wrap


# The name the figure tasks were written with; it only marks, as task_spec does.
register = task_spec
