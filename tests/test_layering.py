"""The package boundaries DESIGN.md draws, checked on the source (no imports run)."""

from __future__ import annotations

import ast
from pathlib import Path

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
    import subprocess
    import sys

    code = ("import sys; import search.cli as cli; cli.build_parser(); "
            "from resnet_core import CheckpointError, DataConfigError, DivergedError; "
            "import search.commands, search.retrieve, search.studies, search.report; "
            "print(sorted(m for m in ('torch', 'sklearn', 'ray') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", result.stdout
