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


def home_hint(path: str | Path) -> str:
    """What to change when `path` cannot be written: when it lies under the home folder, the
    setting that chose that folder (an error naming only /proc/nope/mlflow.db leaves the
    user to guess that RESNET_SEARCH_HOME put it there)."""
    try:
        inside = Path(path).expanduser().resolve().is_relative_to(home())
    except (OSError, RuntimeError):
        return ""
    if not inside:
        return ""
    if "RESNET_SEARCH_HOME" in os.environ:
        return (f"; it is under RESNET_SEARCH_HOME={os.environ['RESNET_SEARCH_HOME']}: set that "
                f"to a folder you can write")
    return f"; it is under the default home {home()}: set RESNET_SEARCH_HOME to a folder you can write"


def default_tracking_uri() -> str:
    return f"sqlite:///{home() / 'mlflow.db'}"


def tracking_uri_and_source(cli_value: str | None,
                            config_value: str | None = None) -> tuple[str, str]:
    """The study store's URI, and where it came from (`check` says so): --tracking-uri, else
    $MLFLOW_TRACKING_URI, else [tracking] uri, else the local store.

    Here, not in search.tracking.store, so that commands that only pass the URI on (`ui`, `check`)
    do not import MLflow (~2 s)."""
    for value, source in ((cli_value, "--tracking-uri"),
                          (os.environ.get("MLFLOW_TRACKING_URI"), "$MLFLOW_TRACKING_URI"),
                          (config_value, "[tracking] uri")):
        if value:
            return value, source
    return default_tracking_uri(), "the local store"


def resolve_tracking_uri(cli_value: str | None, config_value: str | None = None) -> str:
    """The URI of `tracking_uri_and_source`."""
    return tracking_uri_and_source(cli_value, config_value)[0]


def default_artifact_root() -> str:
    return (home() / "mlartifacts").as_uri()


def default_storage_path() -> str:
    return str(home() / "ray_results")
