"""The package boundaries, checked on the source (no imports run).

resnet_core is plain PyTorch and search uses only its public names; inside search, each folder
imports only from the folders below it (the order of `FLOORS`, a study's data flow) and no
module imports itself back through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import resnet_core

ROOT = Path(__file__).resolve().parents[1]


def imports(package: str):
    """(file, line, module, names) of every import in a package's modules."""
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path.name, node.lineno, node.module, [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield path.name, node.lineno, alias.name, []


def test_search_uses_only_the_public_api_of_resnet_core():
    leaks = [f"{f}:{line} {module} {names}" for f, line, module, names in imports("search")
             if module.startswith("resnet_core.")
             or (module == "resnet_core" and not set(names) <= set(resnet_core.__all__))]
    assert not leaks, "search must import resnet_core's __all__ names only:\n" + "\n".join(leaks)


def test_resnet_core_is_plain_pytorch():
    platform = [f"{f}:{line} {module}" for f, line, module, _ in imports("resnet_core")
                if module.split(".")[0] in ("ray", "optuna", "mlflow", "search")]
    assert not platform, platform


def test_search_imports_no_private_ray_module():
    private = [f"{f}:{line} {module}" for f, line, module, _ in imports("search")
               if module.startswith("ray") and any(p.startswith("_") for p in module.split(".")[1:])]
    assert not private, private


def test_public_names_exist():
    assert all(hasattr(resnet_core, name) for name in resnet_core.__all__)


def test_commands_that_read_a_store_do_not_import_torch():
    """`status`, `best`, `studies`, `report` and the parser of every command name resnet_core's
    configs and errors only: torch's import (2-3 s) is paid where a network is built."""
    assert heavy_imports_after(
        "from resnet_core import CheckpointError, DataConfigError, DivergedError; "
        "import search.cli.status, search.cli.report, search.results.retrieve, "
        "search.results.studies, search.results.report",
        ("torch", "sklearn", "ray")) == []


def test_reading_a_local_store_imports_no_mlflow():
    """`status`, `best` (--pareto), `studies` and `load_best` read a local SQLite store without
    MLflow (search.tracking.local_store; its import is 4-5 s of a 2-s budget at 10,000 trials,
    benchmarks/RESULTS.md): the modules they import must not pull it in, nor Ray, SQLAlchemy
    (MLflow's store) or torch. tests/search/tracking/test_local_store.py runs the commands."""
    assert heavy_imports_after(
        "import search.cli.status, search.results.retrieve, search.results.studies, "
        "search.results.pareto, search.tracking.local_store, search.tracking.records, "
        "search.tracking.trial_index, search.tracking.store",
        ("mlflow", "ray", "sqlalchemy", "torch")) == []


def heavy_imports_after(imports: str, heavy: tuple[str, ...]) -> list[str]:
    """Which of `heavy` a new interpreter has imported after building the command parser and
    running `imports` (a statement)."""
    import json
    import subprocess
    import sys

    code = (f"import sys, json; import search.cli.main as cli; cli.build_parser(); {imports}; "
            f"print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_the_local_reader_imports_no_mlflow_even_late():
    """local_store is the path that must never need MLflow: not even an import in a function."""
    late = [f"{f}:{line} {module}" for f, line, module, _ in imports("search/tracking")
            if f == "local_store.py" and module.split(".")[0] in ("mlflow", "ray", "torch",
                                                                  "sqlalchemy")]
    assert not late, late


# search's folders from the bottom floor up: a module may import from its own floor and below.
FLOORS = ("studyfile", "trial", "tracking", "space", "results", "study", "cli")


def package_modules(package: str = "search") -> dict[str, Path]:
    """Dotted name -> file of every module of a package (packages by their __init__)."""
    modules = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph(package: str = "search") -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in the file, functions included).

    `from search.tracking import tags` names the module `search.tracking.tags`; a name a
    package re-exports counts as an import of the package."""
    modules = package_modules(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                           else node.module for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith(package)]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def floor_of(module: str) -> int:
    parts = module.split(".")
    return FLOORS.index(parts[1]) if len(parts) > 1 and parts[1] in FLOORS else -1


def test_every_search_folder_has_a_floor():
    folders = {p.name for p in (ROOT / "search").iterdir() if (p / "__init__.py").exists()}
    assert folders == set(FLOORS)


def test_search_folders_import_only_downward():
    upward = [f"{module} -> {target}" for module, targets in import_graph().items()
              for target in targets if floor_of(target) > floor_of(module)]
    assert not upward, "imports from a higher floor (FLOORS):\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize("package", ["search", "resnet_core"])
def test_no_import_circle(package):
    graph = import_graph(package)
    circles = []
    for start in graph:
        # a path back to `start`, by depth-first search over the modules it imports
        stack = [(start, [start])]
        seen = set()
        while stack:
            module, path = stack.pop()
            for target in graph[module]:
                if target == start and not target.endswith("__init__"):
                    circles.append(" -> ".join(path + [start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, path + [target]))
    assert not circles, "import circles:\n" + "\n".join(sorted(set(circles)))
