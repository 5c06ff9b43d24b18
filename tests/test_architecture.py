"""The package's import graph has no cycle, and the task registry is an explicit list.

Every import counts, the ones inside functions too: a late import only hides a cycle.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pcalm
from pcalm import figure_tasks
from pcalm.tasks import FIGURE_TASKS, TASKS

PACKAGE = Path(pcalm.__file__).resolve().parent


def import_graph() -> dict[str, set[str]]:
    """pcalm module → the pcalm modules it imports (anywhere in its source)."""
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name in modules:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "pcalm":
                    deps |= {a.name for a in node.names if a.name in modules}
                elif node.module.startswith("pcalm."):
                    deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names
                         if a.name.startswith("pcalm.")}
        graph[name] = deps - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_figure_tasks_stand_below_config_and_train():
    deps = import_graph()["figure_tasks"]
    assert not deps & {"config", "train", "tasks", "runner", "cli"}, deps


def test_the_registry_lists_every_figure_task_and_nothing_registers_itself():
    marked = {fn.task.name for _, fn in inspect.getmembers(figure_tasks, inspect.isfunction)
              if hasattr(fn, "task")}
    assert marked == {fn.task.name for fn in FIGURE_TASKS}, \
        "a task of pcalm/figure_tasks.py is missing from FIGURE_TASKS in pcalm/tasks.py"
    assert set(TASKS) == {"train"} | marked
    source = (PACKAGE / "tasks.py").read_text(encoding="utf-8")
    assert "noqa: E402,F401" not in source  # no import kept only for its side effect
