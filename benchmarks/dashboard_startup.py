"""Dashboard start-up: seconds from `resnet-search ui` to its first answer on /health.

    .venv/bin/python benchmarks/dashboard_startup.py [--reps 3] [--json PATH]

Two configurations alternate within each repetition, on the same store (one study's
worth of runs is not needed: the server's start does not read them):
- `ours`: what `resnet-search ui` starts (one server worker, no MLflow job execution);
- `mlflow-defaults`: MLflow's own defaults (4 server workers, MLflow's job runner and
  its huey consumers), set through the same command.
The result records the machine, versions, repetitions and spread.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from machine import machine, spread, write_result

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"ours": ([], {}),
           "mlflow-defaults": (["--workers", "4"], {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"})}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def time_to_answer(store: Path, flags: list[str], extra_env: dict[str, str],
                   timeout_s: float = 300) -> float:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra_env}
    start = time.perf_counter()
    ui = subprocess.Popen([sys.executable, "-m", "search.cli.main", "ui", "--port", str(port),
                           "--tracking-uri", f"sqlite:///{store}", *flags], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not answers(port):
            if ui.poll() is not None or time.perf_counter() - start > timeout_s:
                raise RuntimeError(f"the dashboard did not answer (exit code {ui.poll()})")
            time.sleep(0.1)
        return time.perf_counter() - start
    finally:
        ui.send_signal(signal.SIGTERM)  # `ui` stops everything it started
        ui.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/dashboard_startup.json")
    args = parser.parse_args(argv)
    result: dict = {"machine": machine(), "seconds": {name: [] for name in CONFIGS}}
    with tempfile.TemporaryDirectory(prefix="resnet-search-ui-") as scratch:
        store = Path(scratch) / "mlflow.db"
        time_to_answer(store, *CONFIGS["ours"])  # creates the store: not a repetition
        for rep in range(args.reps):
            for name, (flags, env) in CONFIGS.items():
                seconds = time_to_answer(store, flags, env)
                result["seconds"][name].append(seconds)
                print(f"rep {rep} {name}: {seconds:.1f} s", flush=True)
    result["spread"] = {name: spread(values) for name, values in result["seconds"].items()}
    for name, r in result["spread"].items():
        print(f"{name}: {r['mean']:.1f} +- {r['std']:.1f} s "
              f"(min {r['min']:.1f}, max {r['max']:.1f}, n={r['n']})")
    write_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
