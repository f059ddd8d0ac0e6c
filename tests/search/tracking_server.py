"""Test helpers: a private PostgreSQL database and a real MLflow tracking server on it.

    with fresh_database() as database_uri:          # postgresql://postgres@127.0.0.1:5432/rs_test_...
        ...
    with tracking_server(tmp_path) as server:       # mlflow server on that database
        server.uri                                   # http://127.0.0.1:PORT
        server.outage(25)                            # stopped, then the same port, database, artifacts

Each use creates its own database (a unique name) and drops it afterwards, so
concurrent test runs never share state. The server runs in its own session
and exactly that session is stopped: no other process on the machine is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from postgres import fresh_database
from study_helpers import Studies, free_port, session_processes

MLFLOW = Path(sys.executable).with_name("mlflow")


@dataclass
class TrackingServer:
    uri: str  # http://127.0.0.1:PORT
    database_uri: str  # the PostgreSQL backend store
    artifacts: Path  # --artifacts-destination
    log: Path
    process: subprocess.Popen | None = None
    optuna_storage: str | None = None  # set by tests that give Optuna a database beside it

    @property
    def port(self) -> int:
        return int(self.uri.rsplit(":", 1)[1])

    def start(self, startup_timeout: float = 90) -> None:
        """Start `mlflow server` (again: same port, database and artifacts) and wait until healthy."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        # No background job runner (GenAI evaluation jobs): 8 fewer processes on a small machine.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        with open(self.log, "a") as output:
            self.process = subprocess.Popen(
                [str(MLFLOW), "server", "--backend-store-uri", self.database_uri,
                 "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1"],
                stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.log.parent, env=env, start_new_session=True,
            )
        deadline = time.monotonic() + startup_timeout
        while not _healthy(self.uri):
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}:\n"
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server at {self.uri} not healthy after "
                                   f"{startup_timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the server and every process it started (an outage, or the end)."""
        if self.process is not None:
            stop_session(self.process)
            self.process = None

    def outage(self, seconds: float) -> tuple[float, float]:
        """Stop the server for `seconds`, then start it again; returns (down, up) wall times."""
        down = time.time()
        self.stop()
        time.sleep(seconds)
        up = time.time()
        self.start()
        return down, up

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _healthy(uri: str) -> bool:
    import requests

    try:
        return requests.get(f"{uri}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@contextlib.contextmanager
def tracking_server(directory: Path, *, startup_timeout: float = 90) -> Iterator[TrackingServer]:
    """`mlflow server` on a fresh PostgreSQL database with local artifacts, stopped on exit."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    artifacts = directory / "mlartifacts"
    artifacts.mkdir(exist_ok=True)
    with fresh_database("rs_test_mlflow") as backend:
        server = TrackingServer(f"http://127.0.0.1:{free_port()}", backend, artifacts,
                                directory / "mlflow-server.log")
        try:
            server.start(startup_timeout)
            yield server
        finally:
            server.stop()


def stop_session(leader: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the process group of `leader` (its own session), then SIGKILL what is left."""
    session = leader.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(session, signal.SIGTERM)
    try:
        leader.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(session, signal.SIGKILL)
        leader.wait(timeout=30)
    deadline = time.monotonic() + grace
    while session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in session_processes(session):  # children that outlived the grace period
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class TrackedStudies(Studies):
    """`Studies` whose client, trial runs and CLI calls use a given tracking URI."""

    def __init__(self, home: Path, tracking_uri: str | None = None) -> None:
        super().__init__(home)
        self._tracking_uri = tracking_uri

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri or super().tracking_uri

    @property
    def uri_args(self) -> list[str]:
        return ["--tracking-uri", self.tracking_uri]
