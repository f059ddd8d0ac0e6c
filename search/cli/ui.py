"""`resnet-search ui`: MLflow's dashboard on the study store, and the page of a study's runs.

The dashboard runs as a child server; it is stopped as a whole when the command is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from search.cli.processes import check_port_free, supervise
from search.studyfile.paths import resolve_tracking_uri
from search.tracking import tags

DASHBOARD = "http://127.0.0.1:5000"  # `ui`'s default address


def experiment_runs_url(dashboard: str, experiment_id: str) -> str:
    """The page of an experiment's runs in MLflow's dashboard, in its Model training mode.

    MLflow 3 keeps a GenAI / Model training choice per browser, and a fresh browser starts
    on GenAI (a welcome page, an experiment's trace overview); `workflowType` in the URL
    opens the training runs whatever the browser chose before.
    """
    return f"{dashboard.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def cmd_ui(args: argparse.Namespace) -> int:
    """Open the MLflow dashboard on the study store (localhost unless --host says otherwise)."""
    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        print(f"the tracking server {uri} serves its own dashboard: open it in a browser")
        return 0
    check_port_free(args.host, args.port)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    # MLflow's job execution (huey consumers for its GenAI scorers and trace roll-ups) is
    # seven more processes, each importing MLflow, that a study store has no job for: with
    # them and MLflow's 4 server workers the dashboard took 24 s to answer on a 2-core
    # machine, without them 11 s (benchmarks/RESULTS.md, "Dashboard start-up").
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    print(f"MLflow dashboard on http://{args.host}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    child = subprocess.Popen(command, start_new_session=True, env=env)
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    threading.Thread(target=_announce_study_runs, args=(f"http://{local}:{args.port}", child),
                     daemon=True).start()
    return supervise(child)


def _announce_study_runs(dashboard: str, child: subprocess.Popen,
                         patience_s: float = 300.0) -> None:
    """Once the dashboard answers, print the URL of the newest study's runs (Model training
    mode; the server's REST API says which experiment, so nothing heavy is imported here)."""
    # urllib.request imports http, ssl and email (~70 ms): only `ui` pays it, not every command.
    import urllib.request

    deadline = time.monotonic() + patience_s
    while child.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{dashboard}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:  # the server stopped, or never answered: nothing to announce
        return
    try:
        experiment = newest_study_experiment(dashboard)
    except (OSError, ValueError, KeyError):  # an older or stricter server: the plain address
        experiment = None
    if experiment is None:
        print(f"no study in this store yet: {dashboard}", file=sys.stderr, flush=True)
    else:
        print(f"the newest study's runs: {experiment_runs_url(dashboard, experiment)}",
              file=sys.stderr, flush=True)


def newest_study_experiment(dashboard: str) -> str | None:
    """The experiment id of the newest study run a dashboard's server holds; None if none."""
    ids: list[str] = []
    page: dict[str, Any] = {"max_results": 1000}  # the server's most per request: page on
    while True:
        experiments = _rest(dashboard, "experiments/search", page)
        ids += [e["experiment_id"] for e in experiments.get("experiments", [])]
        if not experiments.get("next_page_token"):
            break
        page = {"max_results": 1000, "page_token": experiments["next_page_token"]}
    if not ids:
        return None
    runs = _rest(dashboard, "runs/search", {
        "experiment_ids": ids, "filter": f"tags.`{tags.KIND}` = '{tags.KIND_STUDY}'",
        "order_by": ["attributes.start_time DESC"], "max_results": 1})
    found = runs.get("runs", [])
    return found[0]["info"]["experiment_id"] if found else None


def _rest(dashboard: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    import urllib.request  # ~70 ms: see _announce_study_runs

    request = urllib.request.Request(f"{dashboard}/api/2.0/mlflow/{endpoint}",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
