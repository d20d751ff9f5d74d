"""The package's import structure: a light top-level import, lazy public names, and no import cycles."""
import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import plantseek

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "plantseek"
TRAINER = ("plantseek.train", "plantseek.impl_choice", "plantseek.kernels.sparse_stack",
           "plantseek.kernels.sparse_linear", "plantseek.sparse_layers", "plantseek.protocols")
# what the trainer uses, which must not import it back (at any level, not only at import time)
TRAINER_PARTS = ("plantseek.batching", "plantseek.impl_choice", "plantseek.optim", "plantseek.threads")


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("module", ["plantseek", "plantseek.store", "plantseek.report", "plantseek.sweep.config",
                                    "plantseek.pruners", "plantseek.optim"])
def test_import_does_not_load_the_trainer(module):
    out = _run(f"import sys, {module}\nprint(' '.join(sorted(m for m in sys.modules if m.startswith('plantseek'))))")
    loaded = set(out.split())
    assert module in loaded
    assert not loaded & set(TRAINER), f"import {module} loads {sorted(loaded & set(TRAINER))}"


def test_public_names_resolve():
    for name in plantseek.__all__:
        assert getattr(plantseek, name) is not None, name
    assert inspect.isfunction(plantseek.seek) and inspect.isfunction(plantseek.seek_batch)
    assert inspect.isfunction(plantseek.plant) and inspect.isfunction(plantseek.load)
    assert inspect.isfunction(plantseek.plant_state_dict) and inspect.isclass(plantseek.PlantedModule)
    assert inspect.isclass(plantseek.Ticket) and inspect.isclass(plantseek.PlantedNetwork)
    for module in ("tasks", "pruners", "train", "sweep", "report", "store", "native", "tickets", "host_init", "optim",
                   "batching", "threads", "impl_choice"):
        assert inspect.ismodule(getattr(plantseek, module)), module
    from plantseek import SeekResult, load, plant, pruners, seek, seek_batch, tasks  # noqa: F401
    assert seek is plantseek.seek
    assert {"seek", "plant", "load", "pruners", "tasks", "train", "store", "Ticket"} <= set(dir(plantseek))
    assert not hasattr(plantseek, "no_such_name")
    with pytest.raises(AttributeError, match="no_such_name"):
        plantseek.no_such_name  # noqa: B018


def test_seek_stays_the_function_once_its_module_is_imported():
    # importing the submodule first binds it as the package's attribute `seek`, unless the package keeps the function
    out = _run("import importlib, inspect, plantseek\nimportlib.import_module('plantseek.seek')\n"
               "import plantseek.seek\nprint(inspect.isfunction(plantseek.seek), plantseek.seek.__module__)")
    assert out.split() == ["True", "plantseek.seek"]


# ------------------------------------------------------------------------------------------------ cycles

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(body):
    """Import statements that run when the module is imported: not those in functions or `if TYPE_CHECKING:`."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _module_level_imports(node.orelse)
            continue
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            yield from _module_level_imports(getattr(node, field, None) or [])


def import_graph() -> dict[str, set[str]]:
    """Module -> the plantseek modules its module-level imports run.

    ``import a.b.c`` runs a, a.b and a.b.c; ``from a.b import x`` runs a, a.b, and a.b.x when that is a module.
    The importer's own packages are left out (they are already being imported when it runs, so importing a
    sibling through them is no cycle), except where it takes a name from them that is not a submodule.
    """
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        deps: set[str] = set()

        def runs(module: str) -> None:
            parts = module.split(".")
            deps.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) not in ancestors)

        for node in _module_level_imports(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    runs(alias.name)
                continue
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            runs(base)
            for alias in node.names:
                if f"{base}.{alias.name}" in files:
                    runs(f"{base}.{alias.name}")
                else:
                    deps.add(base)  # a name defined in `base` itself
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_import_graph_sees_the_imports():
    graph = import_graph()
    assert "plantseek.kernels.sparse_stack" in graph["plantseek.train"]
    assert set(TRAINER_PARTS) <= graph["plantseek.train"]
    assert {"plantseek.pruners.base", "plantseek.tasks", "plantseek.protocols"} <= graph["plantseek.seek"]
    assert "plantseek.pruners.selection" in graph["plantseek.pruners.base"]  # `from . import selection`
    assert "plantseek.pruners" not in graph["plantseek.pruners.base"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_trainer_s_parts_never_import_it():
    for module in TRAINER_PARTS:
        path = PACKAGE / (module.split(".", 1)[1].replace(".", "/") + ".py")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [f"{node.module or ''}.{a.name}".lstrip(".") for a in node.names] + [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n == "train" or n.endswith(".train") or n.startswith("train.") for n in names), \
                f"{module} imports the trainer (line {node.lineno})"


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
