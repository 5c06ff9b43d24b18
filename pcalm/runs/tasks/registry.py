"""What a run computes: the registry of tasks, by name. `train` (the default) trains the net;
the other tasks compute a figure's diagnostics (credit traces, alignment curves, linear
dynamics, ...) and store them in the run folder like any run, so sweeps, skip-if-done and
collection treat them alike.

A task is a function `(cfg, dataset | None) -> (summary: dict, arrays: dict[str, ndarray])`
carrying its spec (pcalm/runs/tasks/spec.py: name, whether it needs data, its parameters' defaults).
`arrays` land in the run folder's `arrays.npz`; `summary` in `summary.json`. Task parameters
live in the config's `task` section beside `name`; each task validates its own (ConfigError,
one line). A new task is written in pcalm/runs/tasks/figures.py and listed in FIGURE_TASKS here.
"""

from __future__ import annotations

from pcalm.runs.tasks import figures as figure_tasks
from pcalm.runs.tasks.spec import Task

FIGURE_TASKS = (
    figure_tasks.scalar_dynamics,  # figure 1
    figure_tasks.credit_traces,  # figure 3
    figure_tasks.linear_dynamics,  # figure 4
    figure_tasks.alignment_curve,  # figure 5
    figure_tasks.credit_routes,  # figures 8, 9
)

TASKS: dict[str, Task] = {
    "train": Task("train", None, True, {}),
    **{fn.task.name: fn.task for fn in FIGURE_TASKS},
}
