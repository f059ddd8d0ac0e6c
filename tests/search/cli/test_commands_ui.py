"""`resnet-search studies` on a real store; `resnet-search ui`: what a fresh browser sees on it, and
that it stops everything it started."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import browser
import pytest
from common import cli, free_port, start_cli, usage_reports_off
from reported_study import STUDY_NAME
from study_helpers import wait_for

from search.tracking import store

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
    study_run = store.find_study_run(studies.client(), STUDY_NAME)
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
@pytest.mark.parametrize(("stop", "workers"), [(signal.SIGTERM, 1), (signal.SIGINT, 1),
                                               (signal.SIGHUP, 2)])
def test_ui_stopped_by_a_signal_leaves_no_process(tmp_path, stop, workers):
    port, marker = free_port(), f"RESNET_SEARCH_UI_TEST={uuid.uuid4().hex}"
    ui = start_cli("ui", "--port", str(port), "--workers", str(workers),
                   "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", cwd=tmp_path,
                   env={marker.split("=")[0]: marker.split("=")[1]}, stdout=subprocess.DEVNULL,
                   stderr=open(tmp_path / "ui.log", "w"))  # noqa: SIM115
    try:
        wait_for(lambda: _answers(port), 300, f"the dashboard on port {port}")
        # The command, MLflow's launcher and its server are up: more than one process to stop.
        started = {pid: _cmdline(pid) for pid in _marked_processes(marker)}
        assert len(started) >= 2, started
        # Only the server: MLflow's job runner and huey consumers (work for its GenAI
        # features, none for a study store) made the dashboard twice as slow to answer.
        assert not [c for c in started.values() if "huey" in c or "job_runner" in c], started
        # uvicorn serves one worker in its own process and spawns N > 1 of them.
        spawned = [c for c in started.values() if "multiprocessing.spawn" in c]
        assert len(spawned) == (workers if workers > 1 else 0), started
        # The dashboard's server sends MLflow no usage data (its UI says it collects some).
        # (/proc shows what a process was started with: the command's own switch shows in
        # the server it starts.)
        assert all(usage_reports_off(pid) for pid in started if pid != ui.pid), started
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


# ---------------------------------------------------------------- the dashboard as a browser shows it


@dataclass
class Dashboard:
    url: str  # what `ui` printed: the newest study's runs
    base: str
    experiment_id: str
    study_run_id: str


@pytest.fixture(scope="module")
def dashboard(report_study, report_dir, tmp_path_factory):  # noqa: F811
    """`resnet-search ui` on the shared study's store, after `report` logged its files there."""
    from search.tracking.store import find_study_run

    logs = tmp_path_factory.mktemp("ui")
    port = free_port()
    ui = start_cli("ui", "--port", str(port), "--tracking-uri", report_study.tracking_uri,
                   cwd=logs, full_env=report_study.env, stdout=subprocess.DEVNULL,
                   stderr=open(logs / "ui.log", "w"))  # noqa: SIM115
    try:
        announced = re.compile(r"^the newest study's runs: (\S+)$", re.M)
        wait_for(lambda: announced.search((logs / "ui.log").read_text()) or ui.poll() is not None,
                 300, "ui to print the study's runs")
        found = announced.search((logs / "ui.log").read_text())
        assert found, (logs / "ui.log").read_text()[-2000:]
        study_run = find_study_run(report_study.client(), STUDY_NAME)
        yield Dashboard(found.group(1), f"http://127.0.0.1:{port}",
                        study_run.info.experiment_id, study_run.info.run_id)
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=60)


needs_chromium = pytest.mark.skipif(browser.CHROMIUM is None,
                                    reason="no Chromium on this machine (apt-get install chromium)")


def _seen(view: str, value, screenshot: Path) -> str:
    return f"{view}: {browser.text_of(value)}; the screen: {screenshot}"


@pytest.mark.slow
@needs_chromium
def test_ui_prints_the_url_that_opens_the_study_runs_in_a_fresh_browser(dashboard, tmp_path):
    screen = tmp_path / "runs.png"
    # The page's text once the runs table lists the study (or what shows after 90 s).
    shown = browser.look(dashboard.url, f"document.body.innerText.includes({STUDY_NAME!r}) && "
                                        f"document.body.innerText", screen)
    assert shown, _seen("the study run never showed", shown, screen)
    assert "Run Name" in shown, _seen("no runs table", shown, screen)
    # MLflow's GenAI mode, where a fresh browser starts, lists Observability and Evaluation.
    assert "Observability" not in shown and "Welcome to MLflow" not in shown, \
        _seen("GenAI mode, not Model training", shown, screen)
    assert dashboard.url.startswith(f"{dashboard.base}/#/experiments/{dashboard.experiment_id}/")


# The report in MLflow's artifact pane (a sandboxed iframe): its headings, tables, and what
# each chart drew, once the first chart is drawn.
REPORT_PROBE = """(() => {
  if (!document.querySelector("h1") || !document.querySelector(".plotly-graph-div .main-svg"))
    return null;
  const charts = {};
  document.querySelectorAll(".plotly-graph-div").forEach(div => {
    charts[div.id] = div.querySelectorAll(".main-svg path, .main-svg text").length;
  });
  return {h1: document.querySelector("h1").innerText,
          h2: [...document.querySelectorAll("h2")].map(h => h.innerText),
          tables: document.querySelectorAll("table").length,
          toolbars: document.querySelectorAll(".modebar").length, charts};
})()"""


@pytest.mark.slow
@needs_chromium
def test_the_study_runs_report_renders_in_mlflows_artifact_view(dashboard, tmp_path):
    url = (f"{dashboard.base}/#/experiments/{dashboard.experiment_id}/runs/"
           f"{dashboard.study_run_id}/artifacts/report/report.html?workflowType=machine_learning")
    screen = tmp_path / "report.png"
    shown = browser.look(url, REPORT_PROBE, screen, frame_url="blob:")
    assert shown, _seen("the artifact pane showed no report with a chart", shown, screen)
    assert shown["h1"] == f"Study {STUDY_NAME}: report", _seen("heading", shown, screen)
    assert {"Best trials", "Optimisation history"} <= set(shown["h2"]), _seen("", shown, screen)
    assert shown["tables"] >= 3, _seen("facts, best trials, grouped comparison", shown, screen)
    drawn = [chart for chart, marks in shown["charts"].items() if marks > 20]
    assert "chart-history" in drawn and shown["toolbars"] >= 1, _seen("charts", shown, screen)


@pytest.mark.slow
@needs_chromium
def test_the_study_run_previews_its_charts_as_images(dashboard, tmp_path):
    url = (f"{dashboard.base}/#/experiments/{dashboard.experiment_id}/runs/"
           f"{dashboard.study_run_id}/artifacts/report/charts/01-history.png"
           f"?workflowType=machine_learning")
    screen = tmp_path / "image.png"
    # Every image the artifact view has loaded, by size (MLflow's own icons are small).
    shown = browser.look(url, "(() => { const big = [...document.images].filter(i => i.complete "
                              "&& i.naturalWidth >= 600).map(i => [i.naturalWidth, "
                              "i.naturalHeight]); return big.length ? big : null })()", screen)
    # (MLflow's image view may hold the picture twice: the preview and its zoomed copy.)
    assert shown and all(size == [1200, 480] for size in shown), \
        _seen("the history chart as an image", shown, screen)
