"""Helpers for tests that run real studies: the CLI in a subprocess, the MLflow store it wrote."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Studies:
    """Runs `resnet-search` against a private home folder (its own MLflow store and results)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "RESNET_SEARCH_HOME": str(home), "PYTHONPATH": str(ROOT),
                    "RESNET_SEARCH_QUIET": "1"}
        self.env.pop("MLFLOW_TRACKING_URI", None)
        self.env.pop("RAY_ADDRESS", None)

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow.db'}"

    def write(self, name: str, text: str) -> Path:
        path = self.home.parent / f"{name}.toml"
        path.write_text(text)
        return path

    def cli(self, *args: str, timeout: float = 600, env: dict | None = None
            ) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "search.cli", *args], capture_output=True,
                              text=True, cwd=self.home.parent, env={**self.env, **(env or {})},
                              timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        """A driver in its own session, so the test can kill it with all of its Ray processes."""
        log = open(self.home.parent / "driver.log", "w")  # noqa: SIM115 - closed with the process
        return subprocess.Popen([sys.executable, "-m", "search.cli", *args], stdout=log,
                                stderr=subprocess.STDOUT, cwd=self.home.parent, env=self.env,
                                start_new_session=True)

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def trial_runs(self, study: str) -> list:
        from search import tracking

        client = self.client()
        parent = tracking.find_study_run(client, study)
        return [] if parent is None else tracking.trial_runs(client, parent)


def kill_session(leader: subprocess.Popen) -> None:
    """SIGKILL a driver and every process of its session (its local Ray), as a crash would."""
    try:
        os.killpg(leader.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    leader.wait(timeout=30)
    deadline = time.time() + 20
    while time.time() < deadline and session_processes(leader.pid):
        for pid in session_processes(leader.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def session_processes(session_id: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == session_id:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def wait_for(condition, timeout: float, what: str, interval: float = 1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
