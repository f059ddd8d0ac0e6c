"""The servers `ui` and `serve` start: a free port before, and the whole process tree
stopped after (read from /proc), so that nothing of a server outlives its command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from search.studyfile.config import ConfigError

STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
STOP_GRACE_S = 10.0


def check_port_free(host: str, port: int) -> None:
    """One line now, not the server's traceback (serve) or a dashboard announced on a port
    it never got (ui, which then exited 0)."""
    try:
        with socket.create_server((host, port)):  # SO_REUSEADDR, as uvicorn binds
            pass
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise ConfigError(f"--port {port}: {host}:{port} is not free ({reason}); "
                          f"pass a free --port") from None


def supervise(child: subprocess.Popen) -> int:
    """Wait for a server in its own process group; on SIGINT/SIGTERM/SIGHUP stop all of it.

    `mlflow ui` starts uvicorn workers and huey job consumers and does not stop them
    when it is terminated, so the whole group (and any descendant that left it) is
    stopped here: nothing of the dashboard outlives the command.
    """
    received: list[int] = []
    previous = {sig: signal.signal(getattr(signal, sig), lambda n, _f: received.append(n))
                for sig in STOP_SIGNALS if hasattr(signal, sig)}
    try:
        while child.poll() is None and not received:
            time.sleep(0.2)
    finally:
        stop_process_tree(child.pid)
        child.wait()
        for sig, handler in previous.items():
            signal.signal(getattr(signal, sig), handler)
    return 128 + received[0] if received else child.returncode


def stop_process_tree(leader: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM a process group and every descendant of its leader; SIGKILL what is left."""
    # Snapshot first: once the leader exits its children are reparented and untraceable.
    members = _descendants(leader) | {leader}
    try:
        os.killpg(leader, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in members:  # descendants that started their own group or session
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(members | _group(leader)):
        time.sleep(0.1)
    for pid in _alive(members | _group(leader)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) from /proc (empty where there is none)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "(comm)", which may hold spaces
        table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def _descendants(root: int) -> set[int]:
    table = _proc_table()
    found, frontier = set(), [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _, _) in table.items() if ppid == parent]
        found.update(children)
        frontier.extend(children)
    return found


def _group(pgid: int) -> set[int]:
    return {pid for pid, (_, group, _) in _proc_table().items() if group == pgid}


def _alive(pids: set[int]) -> set[int]:
    """Those of pids still running (a zombie has stopped; its parent reaps it)."""
    table = _proc_table()
    return {p for p in pids if p in table and table[p][2] != "Z"}
