"""The package's layout rules (ARCHITECTURE.md "Layout"), as tests.

The import graph has no cycle, no layer imports a layer above it, the task registry is an explicit
list, and table and plot work never imports torch. Every import counts, the ones inside functions
too: a late import only hides a cycle.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pcalm
from pcalm.runs.tasks import figures as figure_tasks
from pcalm.runs.tasks import registry
from pcalm.runs.tasks.registry import FIGURE_TASKS, TASKS

PACKAGE = Path(pcalm.__file__).resolve().parent
REPO = PACKAGE.parent


def module_names() -> dict[str, Path]:
    """Dotted name below pcalm (`core.loop`, `cli`, `runs.tasks`) → its source file."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            names[".".join(parts)] = path
    return names


def imported(tree: ast.AST, package: str = "") -> set[str]:
    """Every absolute module a source imports (`from a import b` counts `a` and `a.b`).
    `package` (dotted, for pcalm modules) resolves relative imports."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return found


def import_graph() -> dict[str, set[str]]:
    """pcalm module (dotted below pcalm) → the pcalm modules it imports, anywhere in its source."""
    modules = module_names()
    graph = {}
    for name, path in modules.items():
        package = "pcalm." + (name if path.stem == "__init__" else name.rpartition(".")[0])
        deps = {m.removeprefix("pcalm.") for m in imported(ast.parse(path.read_text("utf-8")),
                                                            package.rstrip("."))
                if m.startswith("pcalm.")}
        graph[name] = {d for d in deps if d in modules} - {name}
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


def top(name: str) -> str:
    return name.split(".")[0]


def offending(folder: str, allowed: set[str] | None = None, forbidden: set[str] = frozenset()):
    """Imports from `folder`'s modules that leave `allowed` (top-level names) or enter
    `forbidden`. The folder must exist: a rule about a missing folder is not yet true."""
    assert (PACKAGE / folder).is_dir(), f"pcalm/{folder}/ does not exist yet"
    bad = []
    for name, deps in import_graph().items():
        if top(name) != folder:
            continue
        for dep in deps:
            if top(dep) in forbidden or (allowed is not None and top(dep) not in allowed):
                bad.append(f"{name} → {dep}")
    return sorted(bad)


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_the_module_walk_sees_every_file():
    # a graph that lost the modules of a nested folder would pass every rule below
    assert len(module_names()) == len(list(PACKAGE.rglob("*.py"))) - 1  # pcalm/__init__.py
    assert any(import_graph().values())


def test_core_imports_only_core_and_the_shared_modules():
    assert offending("core", allowed={"core", "data", "names", "errors", "atomic"}) == []


def test_runs_never_import_sweeps_analysis_or_plots():
    assert offending("runs", forbidden={"sweeps", "analysis", "plots"}) == []


def test_sweeps_never_import_analysis_or_plots():
    assert offending("sweeps", forbidden={"analysis", "plots"}) == []


def test_a_sweep_job_never_imports_the_planner():
    # a SLURM job imports only what trains its runs: not the grid expander, Hydra glue or the
    # launchers (pcalm/sweeps/job.py groups its runs by the runs' own stack rule)
    graph = import_graph()
    assert graph["sweeps.job"] & {"sweeps.grid", "sweeps.plan", "sweeps.launchers", "cli"} \
        == set()
    assert graph["sweeps.processes"] == set()  # the submitting process imports it: stdlib only


def test_the_sweep_corridor_runs_one_way():
    # grid → launchers → plan; experiments/sweep.py calls them in that order
    graph = import_graph()
    assert "sweeps.plan" not in graph["sweeps.launchers"] | graph["sweeps.grid"]
    assert "sweeps.launchers" not in graph["sweeps.grid"]


def test_analysis_stands_below_plots_and_sweeps():
    assert offending("analysis", forbidden={"plots", "sweeps", "core"}) == []


def test_the_shared_modules_import_nothing_above_them():
    shared = {"data", "names", "errors", "atomic"}
    bad = [f"{m} → {d}" for m, deps in import_graph().items() if m in shared
           for d in deps if top(d) not in shared]
    assert bad == []


def test_subpackage_inits_import_nothing():
    # so that importing pcalm.runs.eta (a table reader) does not pull in runs/train.py and torch
    heavy = []
    for init in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(init.read_text("utf-8"))
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                     and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")
                     and not (isinstance(n, ast.Import) and n.names[0].name == "importlib")]
        if top_level:
            heavy.append(str(init.relative_to(REPO)))
    assert heavy == [], "an __init__.py imports eagerly (use a module __getattr__)"


def private_imports(path: Path) -> list[str]:
    """`from pcalm.x import _name` (a private name of another module)."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pcalm"):
            bad += [f"{path.relative_to(REPO)}: {node.module}.{a.name}" for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__") and isinstance(node.value, ast.Name) \
                and node.value.id in {"cli", "results", "runner", "algorithms", "slurm"} \
                and path.stem != node.value.id:
            bad.append(f"{path.relative_to(REPO)}: {node.value.id}.{node.attr}")
    return bad


def test_no_module_imports_another_modules_private_names():
    sources = [*PACKAGE.rglob("*.py"), *(REPO / "experiments").glob("*.py"),
               *(REPO / "scripts").glob("*.py")]
    bad = {b for path in sources for b in private_imports(path)}
    assert bad == set()


def entry_points() -> list[Path]:
    return sorted([*(REPO / "experiments").glob("*.py"), *(REPO / "scripts").glob("*.py")])


def path_tricks(paths) -> list[str]:
    return [str(p.relative_to(REPO)) for p in paths
            if any(t in p.read_text("utf-8") for t in ("sys.path.insert", "sys.path.append"))]


def test_entry_points_use_no_sys_path_tricks():
    assert path_tricks(entry_points()) == []


def test_entry_points_import_only_pcalm_never_each_other():
    siblings = {p.stem for p in entry_points()}
    bad = []
    for path in entry_points():
        deps = {top(m) for m in imported(ast.parse(path.read_text("utf-8")))}
        bad += [f"{path.relative_to(REPO)} → {d}" for d in deps & siblings]
    assert bad == []


def test_no_test_loads_an_entry_point_by_its_path():
    tests = Path(__file__).resolve().parent
    loads = re.compile(r"(spec_from_file_location|run_path)\(")
    bad = [p.name for p in [*tests.glob("test_*.py"), tests / "conftest.py"]
           if p.name != Path(__file__).name and loads.search(p.read_text("utf-8"))]
    assert bad == []


def imports_torch(module: str) -> bool:
    """Whether importing `module` in a fresh interpreter loads torch."""
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            "print('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=REPO)
    return out.stdout.strip() == "True"


def test_importing_pcalm_does_not_import_torch():
    assert not imports_torch("pcalm")


def test_the_torch_check_sees_torch():
    assert imports_torch("pcalm.core.model")  # else the tests below prove nothing


def test_importing_the_analysis_does_not_import_torch():
    assert (PACKAGE / "analysis").is_dir(), "pcalm/analysis/ does not exist yet"
    assert not imports_torch("pcalm.analysis.tables")
    for module in ("pcalm.analysis.stats", "pcalm.analysis.grid", "pcalm.analysis.claims",
                   "pcalm.analysis.scorecard"):
        assert not imports_torch(module), module


def test_the_eta_tables_and_the_shared_words_do_not_import_torch():
    """A plot reading λ_max through the validated η-table reader stays torch-free; the
    recipe that computes λ_max (core/eta_recipe.py) is torch's side."""
    assert not imports_torch("pcalm.runs.eta")
    assert not imports_torch("pcalm.names")


def test_importing_the_plots_does_not_import_torch():
    assert (PACKAGE / "plots").is_dir(), "pcalm/plots/ does not exist yet"
    assert not imports_torch("pcalm.plots")
    # every figure module, with what it imports (the η figure reads the η table only when it
    # draws, through pcalm.runs.eta, which still carries the λ_max recipe)
    modules = sorted(f"pcalm.plots.{p.stem}" for p in (PACKAGE / "plots").glob("*.py"))
    code = (f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}]; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_plots_never_import_sweeps_or_core():
    assert offending("plots", forbidden={"sweeps", "core"}) == []


def test_every_figure_has_a_plotting_function_and_twins_share_one():
    from pcalm.plots import FIGURES, plotting_function

    figures = {p.stem for p in (REPO / "configs" / "experiment").glob("figure*.yaml")}
    assert set(FIGURES) == figures
    assert plotting_function("figure7") is plotting_function("figure6")
    assert plotting_function("figure9") is plotting_function("figure8")
    assert plotting_function("figure2_mnist") is plotting_function("figure2")
    assert plotting_function("figure5") is not plotting_function("figure3")


def test_figure_tasks_stand_below_config_and_train():
    deps = import_graph()["runs.tasks.figures"]
    assert not deps & {"runs.config", "runs.train", "runs.tasks.registry", "runs.runner",
                       "cli"}, deps


def test_the_registry_lists_every_figure_task_and_nothing_registers_itself():
    marked = {fn.task.name for _, fn in inspect.getmembers(figure_tasks, inspect.isfunction)
              if hasattr(fn, "task")}
    assert marked == {fn.task.name for fn in FIGURE_TASKS}, \
        "a task of the figure tasks is missing from FIGURE_TASKS in the task registry"
    assert set(TASKS) == {"train"} | marked
    source = Path(inspect.getsourcefile(registry)).read_text(encoding="utf-8")
    assert "noqa: E402,F401" not in source  # no import kept only for its side effect
