"""The tracking journal and the redone epoch: every epoch a trial ever reported is in MLflow
exactly once, through a driver killed during a tracking outage and through a trial that
goes on from an older checkpoint than its last reported epoch."""

from __future__ import annotations

import io
import json
import pickle
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from postgres import require_postgres
from study_helpers import KILL_TIMED_NET, Studies, kill_session, study_toml, wait_for
from tracking_server import TrackedStudies, tracking_server

from search.tracking import store, tags
from search.tracking.callback import MlflowTrialCallback, epoch_record
from search.tracking.journal import Journal, read_records, replay_journal
from search.tracking.writer import TrackingWriter

slow = pytest.mark.slow


def _trial(number: int = 0) -> SimpleNamespace:
    """What the callback reads of a Tune trial."""
    return SimpleNamespace(trial_id=f"t{number}", checkpoint=None, last_result={}, config={
        "optuna_trial_number": number, "model": {"family": "wrn", "depth": 10, "width": 1},
        "train": {"optimizer": "sgd", "lr": 0.1}, "cost": {"params": 1000, "flops": 50_000}})


def _result(epoch: int) -> dict:
    return {"epoch": epoch, "val_accuracy": 0.5 + 0.01 * epoch, "val_loss": 1.0 / epoch,
            "train_loss": 2.0 / epoch}


@pytest.fixture
def local_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = store.client_for(uri)
    experiment = store.get_or_create_experiment(client, "journal", str(tmp_path / "artifacts"))
    study_run = client.create_run(experiment, run_name="journal", tags={
        tags.KIND: tags.KIND_STUDY, tags.STUDY: "journal", tags.STATUS: tags.RUNNING})
    return SimpleNamespace(uri=uri, client=client, experiment=experiment,
                           study_run_id=study_run.info.run_id)


def _callback(local_store, journal: Path | None = None) -> MlflowTrialCallback:
    return MlflowTrialCallback(local_store.uri, local_store.study_run_id, local_store.experiment,
                               "journal", epochs=8, log_checkpoints=False,
                               journal_path=None if journal is None else str(journal))


def _steps(client, run_id: str, metric: str = "val_accuracy") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, metric))


def test_a_trial_going_on_from_an_older_checkpoint_logs_its_redone_epoch_once(local_store):
    trial = _trial()
    first = _callback(local_store)
    for epoch in range(1, 6):
        first._log_result(trial, _result(epoch), [], 1000 * epoch)
    # The driver is killed; Ray restores the callback it saved and the trial goes on from
    # its checkpoint of epoch 4, so epoch 5 is reported again.
    second = pickle.loads(pickle.dumps(first))
    for epoch in range(5, 9):
        second._log_result(trial, _result(epoch), [], 10_000 * epoch)
    run_id = second.run_id_for(trial)
    for metric in ("val_accuracy", "epoch", "train_loss", "best_val_accuracy"):
        assert _steps(local_store.client, run_id, metric) == list(range(1, 9)), metric
    run = local_store.client.get_run(run_id)
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(0.58)


def test_replay_writes_what_the_store_lacks_once_and_empties_the_journal(local_store, tmp_path):
    path = tmp_path / "study" / "tracking-journal.jsonl"
    callback = _callback(local_store, path)
    trial = _trial()
    journal = Journal(str(path))
    records = [callback._start_record(trial)] + [
        epoch_record(trial.trial_id, _result(epoch), [], 1000 * epoch) for epoch in range(1, 7)]
    records.append(callback._end_record(trial, tags.COMPLETED, None))
    for record in records:
        journal.append(record)
    for record in records[:4]:  # written before the kill: the start and epochs 1-3
        callback.records.apply(record)
    with open(path, "a") as torn:  # a kill in mid-append leaves half a line
        torn.write('{"kind": "epoch", "trial": "t0", "st')

    assert len(read_records(str(path))) == len(records)
    replayed = replay_journal(local_store.client, str(path), local_store.study_run_id,
                              local_store.experiment, "val_accuracy", "max")
    assert replayed == len(records) and path.read_text() == ""
    (run,) = store.trial_runs(local_store.client, local_store.client.get_run(local_store.study_run_id))
    assert _steps(local_store.client, run.info.run_id) == list(range(1, 7))
    assert run.data.tags[tags.STATUS] == tags.COMPLETED and run.info.status == "FINISHED"
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(0.56)
    # A second replay of the same records (a kill before the journal was emptied) adds nothing.
    for record in records:
        journal.append(record)
    replay_journal(local_store.client, str(path), local_store.study_run_id,
                   local_store.experiment, "val_accuracy", "max")
    assert _steps(local_store.client, run.info.run_id) == list(range(1, 7))


def test_the_writer_journals_before_it_queues_and_compacts_once_caught_up(tmp_path):
    path = tmp_path / "tracking-journal.jsonl"
    writer, written = TrackingWriter("test", journal=Journal(str(path))), []
    writer.submit(lambda: written.append(1), "one", {"kind": "epoch", "trial": "t", "step": 1})
    assert json.loads(path.read_text().splitlines()[0])["step"] == 1
    writer.submit(lambda: written.append(2), "two", {"kind": "epoch", "trial": "t", "step": 2})
    assert writer.drain(timeout=10) == 0 and written == [1, 2]
    assert path.read_text() == ""


def _study_folder(home: Path, name: str) -> Path:
    return home / "ray_results" / name


def _latest_report(home: Path, name: str) -> int:
    """The most epochs any trial has reported, read from its checkpoints on storage."""
    indices = [int(p.name.rsplit("_", 1)[1]) for p in _study_folder(home, name).glob(
        "trial_*/checkpoint_*") if p.name.rsplit("_", 1)[1].isdigit()]
    return max(indices, default=-1) + 1


def _assert_every_epoch_once(client, runs, epochs: int) -> None:
    for run in runs:
        for metric in ("val_accuracy", "epoch"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            repeated = sorted(s for s, n in Counter(steps).items() if n > 1)
            assert not repeated, f"{run.info.run_name} {metric}: steps {sorted(steps)}"
            assert sorted(steps) == list(range(1, epochs + 1)), f"{run.info.run_name} {metric}"


@slow
@pytest.mark.postgres
def test_a_driver_killed_during_a_tracking_outage_loses_no_epoch(tmp_path):
    """Server stopped, epochs reported, driver SIGKILLed, server back, `resume`: every epoch
    is in MLflow once, and those reported during the outage carry their report times."""
    require_postgres()
    epochs, name = 8, "journal"  # the kill comes at about epoch 5: the resume has epochs to do
    with tracking_server(tmp_path / "server") as server:
        home = tmp_path / "home"
        home.mkdir()
        studies = TrackedStudies(home, server.uri)
        studies.env.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="2")
        path = studies.write(name, study_toml(
            name, study={"num_samples": 2, "max_concurrent_trials": 2},
            train={"epochs": epochs, "batch_size": 32}, space=KILL_TIMED_NET, replace_space=True))
        driver = studies.start("run", str(path), *studies.uri_args)
        try:
            wait_for(lambda: any(r.data.metrics.get("epoch", 0) >= 1 for r in studies.trial_runs(name)),
                     timeout=300, what="the first epoch in MLflow", interval=0.5)
            down, at_stop = time.time(), _latest_report(home, name)
            server.stop()
            wait_for(lambda: _latest_report(home, name) >= at_stop + 3, timeout=120,
                     what="three epochs reported during the outage", interval=0.3)
            killed = time.time()
        finally:
            kill_session(driver)
        log = (home.parent / "driver.log").read_text()
        assert "tracking is behind" in log, log[-3000:]
        server.start()
        resumed = studies.cli("resume", name, *studies.uri_args)
        assert resumed.returncode == 0, resumed.stderr[-5000:]

        client, runs = studies.client(), studies.trial_runs(name)
        assert len(runs) == 2
        during = sum(down * 1000 <= m.timestamp <= killed * 1000 for run in runs
                     for m in client.get_metric_history(run.info.run_id, "val_accuracy"))
        replayed = [line for line in resumed.stderr.splitlines() if "replayed" in line]
        print(f"epochs reported during the outage and found in MLflow: {during}; {replayed}")
        _assert_every_epoch_once(client, runs, epochs)
        assert during >= 3, "the epochs reported during the outage were lost with the driver"
        assert replayed, resumed.stderr[-3000:]
        assert {r.data.tags[tags.STATUS] for r in runs} == {tags.COMPLETED}
        journal = _study_folder(home, name) / "tracking-journal.jsonl"
        assert journal.exists() and journal.stat().st_size == 0  # compacted


@slow
def test_a_study_killed_mid_trial_resumes_without_a_repeated_epoch(tmp_path):
    """SIGKILL while trials train: they go on from the checkpoint Ray's saved state names,
    often older than their last reported epoch, and redo epochs MLflow already holds."""
    epochs, name = 8, "redo"
    home = tmp_path / "home"
    home.mkdir()
    studies = Studies(home)
    path = studies.write(name, study_toml(
        name, study={"num_samples": 2, "max_concurrent_trials": 2},
        train={"epochs": epochs, "batch_size": 32}, space=KILL_TIMED_NET, replace_space=True))
    driver = studies.start("run", str(path))
    try:
        wait_for(lambda: any(r.data.metrics.get("epoch", 0) >= 4 for r in studies.trial_runs(name)),
                 timeout=300, what="epoch 4 in MLflow", interval=0.3)
    finally:
        kill_session(driver)
    at_kill = {r.data.tags[tags.TRIAL_ID]: int(r.data.metrics.get("epoch", 0))
               for r in studies.trial_runs(name)}
    resumed = studies.cli("resume", name)
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    runs = studies.trial_runs(name)
    assert len(runs) == 2
    client = studies.client()
    for run in runs:  # what the resume redid, for the record
        went_on = client.get_metric_history(run.info.run_id, "resumed_from_epoch")
        print(f"{run.info.run_name}: epoch {at_kill.get(run.data.tags[tags.TRIAL_ID])} in MLflow "
              f"at the kill, went on from {sorted({int(m.value) for m in went_on})}")
    _assert_every_epoch_once(client, runs, epochs)


def test_a_journal_that_cannot_be_written_leaves_the_write_queued_in_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = io.StringIO()
    writer, written = TrackingWriter("test", out=out, journal=Journal(str(blocker / "j.jsonl"))), []
    for step in (1, 2):
        writer.submit(lambda s=step: written.append(s), "epoch", {"kind": "epoch", "step": step})
    assert writer.drain(timeout=10) == 0 and written == [1, 2]
    assert out.getvalue() == ""  # a full disk, which the study says in its own one line
