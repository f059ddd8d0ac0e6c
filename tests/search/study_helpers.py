"""Helpers for tests that run real studies: the CLI in a subprocess, the MLflow store it wrote."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, TELEMETRY_SWITCHES, cli, free_port, start_cli, toml_document  # noqa: F401 - free_port: re-exported for the study tests
from forked_cli import FORK_SERVER

# The one tiny study the tests start from: 2 WRN-10 trials of 2 epochs on digits. Each test
# overrides only what it is about (a section's key set to None is left out).
BASE_STUDY: dict[str, dict[str, Any]] = {
    "study": {"num_samples": 2, "seed": 1},
    "data": {"dataset": "digits"},
    "train": {"epochs": 2, "batch_size": 64},
    "space": {"family": "wrn", "depth": 10, "width": [1, 2],
              "lr": {"low": 0.03, "high": 0.2, "log": True}},
    "scheduler": {"kind": "none"},
    "resources": {"cpus_per_trial": 1},
    "tracking": {},
}

# The network of the tests that kill a study at an epoch: WRN-10-2 at batch 32 trains an
# epoch of digits in ~1 s on one core of the slower CI machine kind, long enough for a
# test polling MLflow every 0.3 s to act before the next one (study_toml's [space]).
KILL_TIMED_NET = {"family": "wrn", "depth": 10, "width": 2}


def study_toml(name: str, *, replace_space: bool = False, **sections: dict[str, Any]) -> str:
    """A study file: BASE_STUDY with the given sections' keys overridden (None drops a key).

    `replace_space=True` takes the given [space] as the whole space.
    Example: `study_toml("asha", study={"num_samples": 8}, scheduler={"kind": "asha"})`.
    """
    unknown = set(sections) - set(BASE_STUDY) - {"constraints", "storage"}
    if unknown:
        raise ValueError(f"unknown study sections {sorted(unknown)}")
    merged = {section: dict(values) for section, values in BASE_STUDY.items()}
    merged["study"]["name"] = name
    merged["tracking"]["registered_model"] = f"{name}-model"
    for section, values in sections.items():
        base = {} if section == "space" and replace_space else merged.get(section, {})
        merged[section] = {k: v for k, v in {**base, **values}.items() if v is not None}
    return toml_document({section: values for section, values in merged.items() if values})


def cli_in_process(argv: list[str]) -> tuple[int, str, str]:
    """`resnet-search ARGV` in this process, for the many fast cases of one rule (the fuzz, the
    name rule): (exit code, stdout, stderr). argparse's own exits count as their codes."""
    import contextlib
    import io

    from search.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's own exits (--help, a usage error)
            code = exit_.code if isinstance(exit_.code, int) else 2
    return code, out.getvalue(), err.getvalue()


class SharedRay:
    """One Ray head on this machine that the tests' `run`/`resume` commands join, started on
    first use and stopped when the test session ends (tests/search/conftest.py).

    A private Ray costs a study ~3-5 s to start and ~1.5 s to stop; joining a running one
    costs ~0.1 s. Joining is also how every study on a cluster runs. What only a private Ray
    shows (a study's processes end with its driver, resources checked before Ray starts, the
    quickstart as `make demo` runs it) is tested with `Studies(private_ray=True)` and with
    `Studies.start`, whose drivers always start their own Ray.
    """

    def __init__(self) -> None:
        self._cluster = None
        self._state: Path | None = None
        self._failed = ""  # why it did not start: said again, not retried, by every later test

    def address(self) -> str:
        if self._failed:
            raise AssertionError(f"the shared Ray did not start: {self._failed}")
        if self._cluster is None:
            from local_cluster import LocalCluster

            self._state = Path(tempfile.mkdtemp(prefix="rs-shared-ray-"))
            # As many CPUs as a private Ray would have: the studies see the same machine.
            cluster = LocalCluster(self._state / "cluster", workers=0,
                                   HEAD_CPUS=str(os.cpu_count() or 1))
            try:
                cluster.__enter__()
            except AssertionError as error:  # local.sh stopped what it had started
                self._failed = str(error)
                shutil.rmtree(self._state, ignore_errors=True)
                raise
            self._cluster = cluster
        return self._cluster.address

    def stop(self) -> None:
        if self._cluster is not None:
            self._cluster.__exit__()
            self._cluster = None
            shutil.rmtree(self._state, ignore_errors=True)


SHARED_RAY = SharedRay()


class Studies:
    """Runs `resnet-search` against a private home folder (its own MLflow store and results).

    `run` and `resume` join SHARED_RAY unless `private_ray` (or the command names an --address).
    """

    def __init__(self, home: Path, *, private_ray: bool = False) -> None:
        self.home = home
        self.private_ray = private_ray
        self.env = {**os.environ, "RESNET_SEARCH_HOME": str(home), "PYTHONPATH": str(ROOT),
                    "RESNET_SEARCH_QUIET": "1"}
        self.env.pop("MLFLOW_TRACKING_URI", None)
        self.env.pop("RAY_ADDRESS", None)
        for switch in TELEMETRY_SWITCHES:  # the platform, not the test, turns them off
            self.env.pop(switch, None)

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow.db'}"

    def write(self, name: str, text: str) -> Path:
        path = self.home.parent / f"{name}.toml"
        path.write_text(text)
        return path

    def cli(self, *args: str, timeout: float = 600, env: dict | None = None
            ) -> subprocess.CompletedProcess:
        """`resnet-search ARGS` in a process of its own: forked from one that has imported the
        platform already where that is the same as a new process (tests/forked_cli.py)."""
        full_env = {**self.env, **self._ray_env(args), **(env or {})}
        if not os.environ.get("RESNET_SEARCH_TEST_NO_FORK"):
            forked = FORK_SERVER.run(args, cwd=self.home.parent, env=full_env, timeout=timeout)
            if forked is not None:
                return forked
        return cli(*args, cwd=self.home.parent, timeout=timeout, full_env=full_env)

    def _ray_env(self, args: tuple[str, ...]) -> dict[str, str]:
        """$RAY_ADDRESS of the shared Ray for a study command that would start its own."""
        if self.private_ray or not args or args[0] not in ("run", "resume") or "--address" in args:
            return {}
        return {"RAY_ADDRESS": SHARED_RAY.address(), "RAY_AUTH_MODE": "token"}

    def start(self, *args: str) -> subprocess.Popen:
        """A driver in its own session, so the test can kill it with all of its Ray processes."""
        log = open(self.home.parent / "driver.log", "w")  # noqa: SIM115 - closed with the process
        return start_cli(*args, cwd=self.home.parent, full_env=self.env, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)

    def client(self):
        from search.tracking.store import client_for

        # client_for, not a bare MlflowClient: a test polling a store that its driver is
        # creating at the same moment must not race it on the schema.
        return client_for(self.tracking_uri)

    def trial_runs(self, study: str) -> list:
        from search.tracking import store

        client = self.client()
        parent = store.find_study_run(client, study)
        return [] if parent is None else store.trial_runs(client, parent)


def trained_checkpoint(run) -> dict:
    """The checkpoint a trial run's tag points at, with its network rebuilt from it: what the
    trial really trained (its configs, weights and optimizer), to hold the run's params to."""
    from resnet_core.checkpoint import model_from_checkpoint
    from search.tracking import tags

    _, state = model_from_checkpoint(run.data.tags[tags.CHECKPOINT])
    return state


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
