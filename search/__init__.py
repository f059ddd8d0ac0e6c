"""search: the platform. Ray Tune runs trials, Optuna samples, MLflow tracks.

The folders follow a study's data flow, each importing only from those before it:

    studyfile/  the study file: sections, validation, [space] rules (no Ray, no MLflow)
    trial/      what one trial runs: the trainable, DDP workers, single training runs
    tracking/   MLflow: names, store, writer, trial callback, study summary, ranking
    space/      the space as Optuna samples it, and the searcher
    results/    reading a study back: status, best, report, Pareto front, predict
    study/      running a study: Ray, resources, the Tuner, interrupts, the champion
    cli/        the `resnet-search` command line
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """A package's `__getattr__`, `__dir__` and `__all__` for names that live in its modules.

    `exports` maps each public name to the module (of `package`) that defines it; the module
    is imported when the name is first read.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__, sorted(exports)
