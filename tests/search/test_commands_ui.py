"""`resnet-search studies` on a real store, and `resnet-search ui` stopping everything it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from common import cli, free_port
from study_helpers import ROOT, wait_for
from test_report import STUDY_NAME, report_study  # noqa: F401 - the one shared real study

from search import tracking

# ---------------------------------------------------------------- studies


@pytest.mark.slow
def test_studies_lists_status_trials_best_champion_and_start(report_study):  # noqa: F811
    studies = report_study
    result = studies.cli("studies", "--tracking-uri", studies.tracking_uri, "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    (row,) = [s for s in listing["studies"] if s["study"] == STUDY_NAME]
    status = json.loads(studies.cli("status", STUDY_NAME, "--tracking-uri", studies.tracking_uri,
                                    "--json").stdout)
    assert row["status"] == "completed"
    assert row["trials"] == len(status["trials"]) == 4
    assert row["best_value"] == pytest.approx(status["best"]["value"])
    assert row["champion"] == {"model": f"{STUDY_NAME}-model", "version": 1,
                               "uri": f"models:/{STUDY_NAME}-model/1", "is_alias": True}
    assert row["test_accuracy"] == pytest.approx(status["test_accuracy"])
    # The study run's own start, in this machine's local time, to the second.
    study_run = tracking.find_study_run(studies.client(), STUDY_NAME)
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(study_run.info.start_time / 1000))
    assert row["start_time"] == started

    table = studies.cli("studies", "--tracking-uri", studies.tracking_uri)
    assert table.returncode == 0
    line = next(x for x in table.stdout.splitlines() if x.startswith(STUDY_NAME))
    assert "completed" in line and f"{row['best_value']:.4f}" in line
    assert f"{STUDY_NAME}-model v1 @champion" in line


@pytest.mark.slow
def test_studies_of_an_empty_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _cli(tmp_path, "studies", "--tracking-uri", uri)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"no studies in {uri}"
    listing = json.loads(_cli(tmp_path, "studies", "--tracking-uri", uri, "--json").stdout)
    assert listing == {"tracking_uri": uri, "studies": []}
    assert not (tmp_path / "mlflow.db").exists()  # a mistyped store is not created
    typo = f"sqlite:///{tmp_path / 'no' / 'such' / 'mlflow.db'}"
    assert _cli(tmp_path, "studies", "--tracking-uri", typo).returncode == 0
    assert not (tmp_path / "no").exists()


def test_studies_with_a_bad_tracking_uri_is_one_line_and_exit_2(tmp_path):
    result = _cli(tmp_path, "studies", "--tracking-uri", "ftp://nowhere")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "is not supported" in result.stderr, result.stderr


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return cli(*args, cwd=cwd, timeout=120,
               env={"RESNET_SEARCH_HOME": str(cwd / "home"), "MLFLOW_TRACKING_URI": None})


# ---------------------------------------------------------------- ui


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _marked_processes(marker: str) -> list[int]:
    """Every live process whose environment carries the marker: all that `ui` started,
    wherever it was reparented and whatever group or session it moved to."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes() and \
                    (entry / "stat").read_text().split(")")[-1].split()[0] != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:  # it ended since it was listed
        return ""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_ui_stopped_by_a_signal_leaves_no_process(tmp_path, stop):
    port, marker = free_port(), f"RESNET_SEARCH_UI_TEST={uuid.uuid4().hex}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), marker.split("=")[0]: marker.split("=")[1]}
    ui = subprocess.Popen([sys.executable, "-m", "search.cli", "ui", "--port", str(port),
                           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                          cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                          stderr=open(tmp_path / "ui.log", "w"))  # noqa: SIM115
    try:
        wait_for(lambda: _answers(port), 300, f"the dashboard on port {port}")
        # The command, MLflow's launcher and its server are up: more than one process to stop.
        started = {pid: _cmdline(pid) for pid in _marked_processes(marker)}
        assert len(started) >= 2, started
        # Only the server: MLflow's job runner and huey consumers (work for its GenAI
        # features, none for a study store) made the dashboard twice as slow to answer.
        assert not [c for c in started.values() if "huey" in c or "job_runner" in c], started
        ui.send_signal(stop)
        code = ui.wait(timeout=60)
        assert code == 128 + stop, (tmp_path / "ui.log").read_text()[-2000:]
        left = _marked_processes(marker)
        assert left == [], [_cmdline(p) for p in left]
        assert not _answers(port)
    finally:
        for pid in _marked_processes(marker):
            os.kill(pid, signal.SIGKILL)
        if ui.poll() is None:
            ui.kill()


@pytest.mark.parametrize("command", [["ui"], ["serve", "some-study"]], ids=["ui", "serve"])
def test_a_port_in_use_is_one_line_and_exit_2(command, tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = cli(*command, "--port", str(port), env={"RESNET_SEARCH_HOME": str(tmp_path)},
                     timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"resnet-search: error: --port {port}: 127.0.0.1:{port} is not free (Address already in "
        f"use); pass a free --port"]
