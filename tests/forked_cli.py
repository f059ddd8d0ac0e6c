"""`resnet-search` commands for the tests, forked from a process that has already imported
the platform: each command still runs in a process of its own (its exit code, its output,
its environment and working folder, its atexit work), without paying the imports again.

Why: a study command spends 5-9 s of this 2-core machine's CPU importing torch, Ray,
MLflow, Optuna and plotly before it does anything, and the suite runs some 150 of them
(tests/README.md, "How long the suite takes"). A fork of a process that has imported them,
and started no thread of its own, starts in milliseconds.

What a fork cannot give, a command gets from a real `python -m search.cli` instead (the
caller falls back to a subprocess when `run_forked` returns None):
- an environment that differs from the server's in a variable a library may read while it
  is imported (only the variables in RUNTIME_VARIABLES may differ: the platform and the
  libraries read those when a command runs);
- commands whose test is about start-up itself (`check` must import no MLflow: it is never
  forked, nor is anything but FORKED_COMMANDS).

A server is a child process of the test process (per environment, per pytest-xdist worker),
started on first use and stopped with the session. It serves one command at a time: it forks, waits for
the command's process and answers with its exit code.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Commands that run in a fork. `check`, `train`, `models`, `serve` and `ui` keep a real
# process: their tests are about what starts (imports, servers, signals).
FORKED_COMMANDS = frozenset({"run", "resume", "status", "best", "studies", "report",
                             "evaluate", "predict"})

# Variables the platform and the libraries read when a command runs, not when they are
# imported: a request may set them to anything. Any other variable is the server's: a
# command with another value gets a server of its own (RAY_AUTH_MODE, for one, is read
# when Ray is imported: the studies that join a cluster fork from one that has it).
RUNTIME_VARIABLES = frozenset({
    "RESNET_SEARCH_HOME", "RESNET_SEARCH_QUIET", "RESNET_SEARCH_GPU_FALLBACK",
    "RAY_ADDRESS", "RAY_TMPDIR", "MLFLOW_TRACKING_URI",
    "PYTEST_CURRENT_TEST",
})

# What the server imports before it serves: everything a study's driver and the read
# commands import (search.study.warmup lists the lazy ones).
PREIMPORTS = ("search.cli.main", "search.study.run", "search.study.champion",
              "search.results.report", "search.results.retrieve", "search.tracking.store",
              "torch", "torch.export", "ray", "ray.tune", "ray.train", "mlflow",
              "mlflow.pytorch", "optuna", "optuna.importance", "optuna.visualization",
              "plotly.graph_objects")


def _serve(socket_path: str) -> None:
    """The server's loop: import, say ready, then fork a process per request."""
    import importlib

    from search.study.ray_session import use_the_token_found_here
    from search.telemetry import turn_off_usage_reports

    base = dict(os.environ)  # what a request's environment is compared with
    turn_off_usage_reports()  # as main() does, before MLflow and Ray are imported
    use_the_token_found_here()  # as run and resume do: Ray reads its mode when imported
    for name in PREIMPORTS:
        importlib.import_module(name)
    _warm_caches()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(8)
    listener.settimeout(5)
    parent = os.getppid()
    print("ready", flush=True)
    while os.getppid() == parent:  # a test session killed outright leaves no server behind
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        connection.settimeout(None)
        with connection:
            request = json.loads(_receive(connection))
            if not _servable(request["env"], base):
                _send(connection, {"refused": True})
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                connection.close()
                _command(request)  # never returns
            _send(connection, {"pid": pid})
            _, status, usage = os.wait4(pid, 0)
            try:
                _send(connection, {"returncode": os.waitstatus_to_exitcode(status),
                                   "cpu_s": usage.ru_utime + usage.ru_stime})
            except OSError:
                pass  # the test gave up on it (a timeout) and killed it


def _warm_caches() -> None:
    """What a study's driver warms up in its first seconds (search/study/warmup.py) and a fork
    inherits: imports and MLflow's map of installed packages. Not the first torch.export: it
    runs torch, whose OpenMP threads a fork must not inherit."""
    from search.study import warmup

    for step in warmup.WARM_UP_STEPS:
        if step is not warmup._first_export:
            step()


def _servable(env: dict[str, str], base: dict[str, str]) -> bool:
    changed = {key for key in env.keys() | base.keys() if env.get(key) != base.get(key)}
    return changed <= RUNTIME_VARIABLES


def _command(request: dict) -> None:
    """In the forked process: become `python -m search.cli ARGS` with the request's
    environment, folder and output files, run it, and exit as Python would."""
    import threading

    code = 1
    try:
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        for fd, path, mode in ((0, os.devnull, os.O_RDONLY),
                               (1, request["stdout"], os.O_WRONLY),
                               (2, request["stderr"], os.O_WRONLY)):
            target = os.open(path, mode)
            os.dup2(target, fd)
            os.close(target)
        sys.argv = [str(ROOT / "search" / "cli" / "__main__.py"), *request["args"]]
        from search.cli.main import main

        try:
            code = main(request["args"])
        except SystemExit as exit_:  # argparse's own exits
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        # What the interpreter does at exit: wait for threads, run atexit, flush.
        threading._shutdown()
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - a traceback on stderr, exit 1, as Python does
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code if isinstance(code, int) else 1)


def _send(connection: socket.socket, message: dict) -> None:
    connection.sendall(json.dumps(message).encode() + b"\n")


def _receive(connection: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("the fork server closed the connection")
        data += chunk
    return data.decode()


class _Server:
    """One server process and its socket, for one environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="rs-fork-"))
        self.socket = str(self.folder / "socket")
        with open(self.folder / "server.log", "w") as log:
            self.process = subprocess.Popen([sys.executable, __file__, self.socket], env=env,
                                            cwd=ROOT, stdout=subprocess.PIPE, stderr=log,
                                            text=True, start_new_session=True)
        self.ready = self.process.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


class ForkServer:
    """The test process's side: a server per environment (at most MAX_SERVERS; a command whose
    environment would need another runs in a real process), started on first use."""

    MAX_SERVERS = 3

    def __init__(self) -> None:
        self._servers: dict[tuple, _Server] = {}
        self.cpu_seconds = 0.0  # of the commands forked so far (a benchmark's figure)

    def _server(self, env: dict[str, str]) -> _Server | None:
        from search.study.ray_token import token_available

        base = {key: value for key, value in env.items() if key not in RUNTIME_VARIABLES}
        # Ray's mode is fixed when it is imported, by whether this machine then had a token:
        # a server from before the token existed cannot serve a command that finds it.
        key = (*sorted(base.items()), ("token", token_available(env)))
        if key not in self._servers:
            if len(self._servers) >= self.MAX_SERVERS:
                return None
            self._servers[key] = _Server(base)
        server = self._servers[key]
        return server if server.ready else None

    def run(self, args: tuple[str, ...], *, cwd: Path, env: dict[str, str],
            timeout: float) -> subprocess.CompletedProcess | None:
        """The command's result, or None when it must run in a real process."""
        if not args or args[0] not in FORKED_COMMANDS:
            return None
        server = self._server(env)
        if server is None:
            return None
        with tempfile.TemporaryDirectory(prefix="rs-forked-") as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            out.touch()
            err.touch()
            request = {"args": list(args), "cwd": str(cwd), "env": env,
                       "stdout": str(out), "stderr": str(err)}
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.connect(server.socket)
                _send(connection, request)
                first = json.loads(_receive(connection))
                if first.get("refused"):
                    return None
                connection.settimeout(timeout)
                started = time.time()
                try:
                    ended = json.loads(_receive(connection))
                except TimeoutError:
                    _kill(first["pid"])
                    raise subprocess.TimeoutExpired(args, time.time() - started,
                                                    _text(out), _text(err)) from None
            self.cpu_seconds += ended["cpu_s"]
            return subprocess.CompletedProcess(["resnet-search", *args], ended["returncode"],
                                               _text(out), _text(err))

    def stop(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def _text(path: Path) -> str:
    """The file as subprocess's text mode reads a pipe: locale encoding, universal newlines."""
    return io.TextIOWrapper(io.BytesIO(path.read_bytes())).read()


FORK_SERVER = ForkServer()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _serve(sys.argv[1])
