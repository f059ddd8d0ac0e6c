"""Where the embedded defaults live: one home folder per user, the same from any directory.

`RESNET_SEARCH_HOME` (default `~/.resnet-search`) holds the MLflow SQLite store
(`mlflow.db`), its artifacts (`mlartifacts/`) and Ray results (`ray_results/`),
so `resnet-search status NAME` finds a study wherever it is run from.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("RESNET_SEARCH_HOME", "~/.resnet-search")).expanduser().resolve()


def default_tracking_uri() -> str:
    return f"sqlite:///{home() / 'mlflow.db'}"


def default_artifact_root() -> str:
    return (home() / "mlartifacts").as_uri()


def default_storage_path() -> str:
    return str(home() / "ray_results")
