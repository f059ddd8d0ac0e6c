"""One-time costs of a study's driver, paid in the background while Ray starts.

Three lazy initialisations sat on every study's critical path (measured with cProfile and
py-spy on small studies, benchmarks/RESULTS.md):
- logging the champion: MLflow checks the model's pip requirements against the installed
  packages, which maps every installed distribution to its modules once per process,
  about 1.5 s in this project's environment;
- the end-of-study report: Optuna's importance (fANOVA, on scikit-learn and SciPy) and
  visualization modules, about 1 s of imports, and plotly's page template (0.2 s);
- the champion's export: torch.export's tracer and its pt2 packaging, about 1 s of
  imports on their first use.
`ray.init` spends its seconds waiting for the processes it starts, so a thread does them
meanwhile. Whatever the warm-up does not finish, the study does itself when it gets there.
"""

from __future__ import annotations

import threading

from search.study.champion import EXPORT_LOCK, serving_requirements


def _report_imports() -> None:
    import optuna.importance  # noqa: F401 - the report's charts
    import optuna.visualization  # noqa: F401
    import plotly.graph_objects as go

    go.Figure().update_layout(template="plotly_white")  # builds and validates the template once


def _requirements_check() -> None:
    from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

    # Pinned to the installed versions, so it warns of nothing: only its cache counts.
    warn_dependency_requirement_mismatches(serving_requirements())


def _first_export() -> None:
    import io

    import torch

    # torch.export imports its tracer (~1 s) on first use: the champion's export pays it
    # at the end of every study otherwise, after the trials, with nothing to overlap it.
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.Flatten()).eval()
    with EXPORT_LOCK:
        torch.export.save(torch.export.export(module, (torch.zeros(2, 1, 2, 2),)), io.BytesIO())


WARM_UP_STEPS = (_report_imports, _requirements_check, _first_export)


def warm_up() -> None:
    """Pay the one-time costs now (in this thread); never raises."""
    for step in WARM_UP_STEPS:
        try:
            step()
        except Exception:  # a warm-up must never cost a study; the study pays later instead
            pass


def start_warm_up() -> threading.Thread:
    """`warm_up` in a daemon thread: a study that ends early does not wait for it."""
    thread = threading.Thread(target=warm_up, name="resnet-search-warm-up", daemon=True)
    thread.start()
    return thread
