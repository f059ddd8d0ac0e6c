"""No data leaves the machine unasked: the usage reports of MLflow and Ray are off.

Both libraries report usage by default (MLflow's UI says it collects usage data; Ray sends
usage stats from every cluster it starts). The platform turns both off in every process it
starts (the driver, its private Ray and so the trials, `ui`'s and `serve`'s servers) unless
the user opts in with RESNET_SEARCH_TELEMETRY=1. A switch the user set stays as it is.
"""

from __future__ import annotations

import os

OPT_IN_ENV = "RESNET_SEARCH_TELEMETRY"
OFF_SWITCHES = {"MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0"}


def telemetry_switches() -> dict[str, str]:
    """The environment variables that keep the libraries' usage reports off (none when the
    user opted in), as this process has them: for the environments of the processes it starts."""
    if os.environ.get(OPT_IN_ENV, "").strip().lower() in ("1", "true", "yes"):
        return {}
    return {name: os.environ.get(name, value) for name, value in OFF_SWITCHES.items()}


def turn_off_usage_reports() -> None:
    """Set the switches in this process's environment, which every child inherits."""
    for name, value in telemetry_switches().items():
        os.environ.setdefault(name, value)
