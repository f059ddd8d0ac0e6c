"""`resnet-search serve`: a study's champion over HTTP, through `mlflow models serve`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from search.cli.processes import check_port_free, supervise


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a study's champion: POST {"inputs": [[...images...]]} to /invocations.

    Input: float32 (N, C, H, W), pixel values 0..255 as the dataset stores them; output:
    class probabilities (N, classes). `mlflow models serve` in this environment (no new
    virtualenv), stopped as a whole on SIGINT/SIGTERM like `ui`.
    """
    # MLflow's import costs seconds: only commands that read a store pay it.
    from search.tracking.store import open_study, registered_champion

    check_port_free(args.host, args.port)
    uri, client, study_run = open_study(args.name, args.tracking_uri)
    champion = registered_champion(client, study_run, args.name)
    model_uri = champion["uri"]  # the study's own version: the alias may be a newer study's
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
               "--env-manager", "local", "--host", args.host, "--port", str(args.port)]
    print(f"serving {model_uri} on http://{args.host}:{args.port}/invocations (Ctrl-C stops it)",
          file=sys.stderr)
    # mlflow starts `uvicorn` by name: the environment's own bin folder must come first.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}
    return supervise(subprocess.Popen(command, start_new_session=True, env=env))
