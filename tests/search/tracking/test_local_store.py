"""The local reader (search.tracking.local_store) against MLflow's, on stores the platform wrote.

`status`, `best`, `best --pareto`, `studies` and `load_best` read a local SQLite store by SQL,
without MLflow's import; every other store, and whatever the local reader does not know, goes
through MLflow. Both must give the same answer, byte for byte: each test reads a study both
ways (RESNET_SEARCH_READ_THROUGH_MLFLOW=1 for MLflow's; for the local one, any MLflow client
made fails the test, so a silent fallback cannot pass as agreement) and compares the JSON a
user gets.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from common import ROOT, cli
from scale_store import write_scale_study
from test_records import _make_store

from search.results import studies
from search.results.pareto import front_rows
from search.results.retrieve import export_best_checkpoint, load_best, study_status
from search.results.studies import list_studies
from search.tracking import local_store, store, tags, trial_index
from search.tracking.callback import epoch_record
from search.tracking.journal import RecordWriter


def _no_mlflow_client(*args, **kwargs):
    raise AssertionError("the local reader fell back to MLflow")


def both(monkeypatch, read) -> tuple[str, str]:
    """(the local reader's answer, MLflow's), as the JSON a `--json` command prints."""
    with monkeypatch.context() as local:
        local.setattr(store, "client_for", _no_mlflow_client)
        local.setattr(studies, "client_for", _no_mlflow_client)
        mine = json.dumps(read(), indent=2)
    with monkeypatch.context() as through:
        through.setenv(local_store.THROUGH_MLFLOW, "1")
        theirs = json.dumps(read(), indent=2)
    return mine, theirs


def pareto(name: str, uri: str):
    _, client, study_run = local_store.first_of(lambda: local_store.open_study(name, uri),
                                                lambda: store.open_study(name, uri))
    return front_rows(client, study_run)


def assert_every_reader_agrees(monkeypatch, name: str, uri: str) -> dict:
    """status, best --pareto and studies read both ways give the same output; status's."""
    answers = {}
    for what, read in {"status": lambda: study_status(name, uri),
                       "best --pareto": lambda: pareto(name, uri),
                       "studies": lambda: list_studies(uri)}.items():
        mine, theirs = both(monkeypatch, read)
        assert mine == theirs, what
        answers[what] = json.loads(mine)
    return answers["status"]


# ---------------------------------------------------------------- the same answers


def test_every_outcome_and_a_loss_study_read_alike(tmp_path, monkeypatch):
    """Completed, pruned, diverged (a NaN loss), failed and running trials, ranked by a loss."""
    written = _make_store(tmp_path, monkeypatch, "val_loss")
    status = assert_every_reader_agrees(monkeypatch, written.name, written.uri)
    assert status["mode"] == "min" and sum(status["counts"].values()) == 6
    assert status["counts"][tags.RUNNING] == 1 and status["counts"][tags.DIVERGED] == 1
    # Without the index every trial run is read from the store itself; MLflow keeps a NaN
    # metric as 0 and a flag, and reads it back as NaN.
    (diverged,) = [t for t in status["trials"] if t["status"] == tags.DIVERGED]
    written.client.log_metric(diverged["mlflow_run_id"], "val_loss", math.nan, step=3)
    Path(written.study_run().info.artifact_uri, tags.TRIAL_INDEX_ARTIFACT).unlink()
    status = assert_every_reader_agrees(monkeypatch, written.name, written.uri)
    (diverged,) = [t for t in status["trials"] if t["status"] == tags.DIVERGED]
    assert math.isnan(diverged["val_loss"])


@pytest.fixture
def running_study(tmp_path):
    """A study of 40 trials whose last 2 still train; its trial index written by the summary."""
    uri, study_run_id = write_scale_study(tmp_path, trials=40, epochs=3, best=17, running=2)
    return uri, study_run_id


def test_a_running_study_and_its_trials_changed_after_the_index_read_alike(running_study,
                                                                          monkeypatch):
    """Each of the three kinds of change since the index's stamp: a running trial's new
    epoch (its run tagged running), its end (ended after the stamp), and a trial whose run
    started after the stamp and was tagged over without an end (a driver killed between the
    two writes of an end). Both readers must see each."""
    uri, study_run_id = running_study
    client = store.client_for(uri)
    experiment = client.get_run(study_run_id).info.experiment_id
    status = assert_every_reader_agrees(monkeypatch, "scale", uri)
    assert status["status"] == tags.RUNNING and status["counts"][tags.RUNNING] == 2

    writer = RecordWriter(lambda: client, study_run_id, experiment, "val_accuracy", "max",
                          reopen=False)
    last = "t000039"
    writer.apply(epoch_record(last, {"epoch": 2, "val_accuracy": 0.999, "val_loss": 0.01}, [],
                              int(time.time() * 1000)))
    status = assert_every_reader_agrees(monkeypatch, "scale", uri)
    assert (status["best"]["trial_id"], status["best"]["epochs"]) == (last, 2)

    writer.apply({"kind": "end", "trial": last, "status": tags.COMPLETED, "checkpoint": None})
    status = assert_every_reader_agrees(monkeypatch, "scale", uri)
    assert status["best"]["status"] == tags.COMPLETED and status["counts"][tags.RUNNING] == 1

    late = client.create_run(experiment, run_name="trial-040-t000040", tags={
        tags.PARENT: study_run_id, tags.KIND: tags.KIND_TRIAL, tags.STUDY: "scale",
        tags.TRIAL_ID: "t000040", tags.OPTUNA_NUMBER: "40", tags.STATUS: tags.COMPLETED})
    client.log_metric(late.info.run_id, "best_val_accuracy", 0.9995)
    status = assert_every_reader_agrees(monkeypatch, "scale", uri)
    assert status["best"]["trial_id"] == "t000040" and len(status["trials"]) == 41
    # The index still holds the study as it was: the stamp sent both readers to the runs.
    rows, _ = trial_index.read_index(client, client.get_run(study_run_id))
    assert len(rows) == 40


def test_a_finished_study_without_its_index_reads_alike_and_is_indexed_again(tmp_path,
                                                                            monkeypatch):
    uri, study_run_id = write_scale_study(tmp_path, trials=30, epochs=2, best=21)
    client = store.client_for(uri)
    index = Path(client.get_run(study_run_id).info.artifact_uri, tags.TRIAL_INDEX_ARTIFACT)
    index.unlink()  # a study written before the index existed
    with monkeypatch.context() as local:
        local.setattr(store, "client_for", _no_mlflow_client)
        mine = study_status("scale", uri)
    assert index.is_file()  # the local reader kept the index it had to build, as MLflow's does
    rows, _ = trial_index.read_index(client, client.get_run(study_run_id))
    assert len(rows) == 30
    index.unlink()
    with monkeypatch.context() as through:
        through.setenv(local_store.THROUGH_MLFLOW, "1")
        assert json.dumps(study_status("scale", uri)) == json.dumps(mine)
    assert mine["best"]["optuna_trial_number"] == 21


def test_paging_order_and_deleted_runs_are_mlflows(running_study):
    """A search answered a page at a time: the same runs in the same order, however paged,
    and never a deleted one."""
    uri, study_run_id = running_study
    client, local = store.client_for(uri), local_store.LocalClient.open(uri)
    experiment = [client.get_run(study_run_id).info.experiment_id]
    deleted = store.all_runs(client, experiment, f"tags.`{tags.TRIAL_ID}` = 't000005'")[0]
    client.delete_run(deleted.info.run_id)  # MLflow searches active runs only
    for condition in ("", f"tags.`{tags.PARENT}` = '{study_run_id}'",
                      f"tags.`{tags.STATUS}` = '{tags.RUNNING}' and attributes.start_time >= 0"):
        for size in (7, 1000):
            ids = [_run_ids(c, experiment, condition, size) for c in (local, client)]
            assert ids[0] == ids[1] and ids[0] and deleted.info.run_id not in ids[0]


def _run_ids(client, experiment: list[str], condition: str, size: int) -> list[str]:
    return [run.info.run_id for run in store.all_pages(
        lambda **page: client.search_runs(experiment, condition, **page), size)]


# ---------------------------------------------------------------- a real study and its champion


def test_a_real_study_its_champion_and_load_best_read_alike(report_study, monkeypatch, tmp_path):
    from reported_study import STUDY_NAME

    uri = report_study.tracking_uri
    status = assert_every_reader_agrees(monkeypatch, STUDY_NAME, uri)
    assert status["champion"]["is_alias"] and status["test_accuracy"] is not None

    assert_load_best_agrees(monkeypatch, tmp_path, STUDY_NAME, uri, status)


@pytest.fixture(scope="module")
def champion_study(tmp_path_factory) -> str:
    """A 30-trial study whose best trial's champion is registered by the platform's own
    register_champion: a wrn-10-1 trained one epoch on digits (`resnet-search train`), scored
    on the test split, logged and registered (no Ray cluster: the training is the CLI's)."""
    from ray.tune import Checkpoint

    from search.study.champion import Winner, register_champion
    from search.studyfile.config import load_study
    from search.trial.spec import TrialSpec

    folder = tmp_path_factory.mktemp("champion")
    uri, study_run_id = write_scale_study(folder, trials=30, epochs=2, best=19)
    trained = folder / "trained"
    done = cli("train", "--model", "wrn-10-1", "--epochs", "1", "--out", str(trained), "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    client = store.client_for(uri)
    study_run = client.get_run(study_run_id)
    score, run = store.rank_runs(study_run, trial_index.current_trial_runs(client, study_run))[0]
    spec = TrialSpec.from_tune({"optuna_trial_number": score.number,
                                "model": {"family": "wrn", "depth": 10, "width": 1},
                                "train": {"optimizer": "sgd", "lr": 0.05}})
    register_champion(load_study(folder / "scale.toml"), uri, study_run_id,
                      Winner(score, run.info.run_id, spec, Checkpoint.from_directory(trained)))
    return uri


def test_a_registered_champion_and_load_best_read_alike(champion_study, monkeypatch, tmp_path):
    status = assert_every_reader_agrees(monkeypatch, "scale", champion_study)
    assert status["champion"]["is_alias"] and status["champion_trial_id"] == "t000019"
    assert_load_best_agrees(monkeypatch, tmp_path, "scale", champion_study, status)


def assert_load_best_agrees(monkeypatch, folder: Path, name: str, uri: str, status: dict) -> None:
    """load_best and `best --export` find the same champion, weights and file both ways."""
    with monkeypatch.context() as local:
        local.setattr(store, "client_for", _no_mlflow_client)
        model, config = load_best(name, uri)
        exported = export_best_checkpoint(name, folder / "local.pt", uri)
    with monkeypatch.context() as through:
        through.setenv(local_store.THROUGH_MLFLOW, "1")
        their_model, their_config = load_best(name, uri)
        their_export = export_best_checkpoint(name, folder / "mlflow.pt", uri)
    assert json.dumps(config) == json.dumps(their_config)
    assert config["model_uri"] == status["champion"]["uri"]
    theirs = their_model.state_dict()
    assert all(value.equal(theirs[key]) for key, value in model.state_dict().items())
    assert exported.read_bytes() == their_export.read_bytes()


def test_the_commands_read_a_local_store_without_importing_mlflow(champion_study):
    """What a user runs: each command answers, and MLflow is never imported."""
    code = ("import sys, contextlib, io; from search.cli.main import main; "
            "out = io.StringIO(); commands = [['status', N], ['best', N], ['best', N, '--pareto'], "
            "['studies']]\n"
            "with contextlib.redirect_stdout(out):\n"
            "    codes = [main([*c, '--tracking-uri', U, '--json']) for c in commands]\n"
            "from search.results.retrieve import load_best; load_best(N, U)\n"
            "print(codes, sorted(m for m in ('mlflow', 'ray', 'sqlalchemy') if m in sys.modules), "
            "out.getvalue().count(f'\"study\": \"{N}\"'))")
    result = subprocess.run([sys.executable, "-c", f"N, U = 'scale', {champion_study!r}\n{code}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # Each command answered, naming the study (`studies` in its row), and none imported MLflow.
    assert result.stdout.split("\n")[0] == "[0, 0, 0, 0] [] 4", result.stdout


# ---------------------------------------------------------------- what it leaves to MLflow


def test_stores_it_does_not_know_are_left_to_mlflow(tmp_path, monkeypatch):
    uri, _ = write_scale_study(tmp_path, trials=12, epochs=2, best=3)
    for other in ("postgresql://user@127.0.0.1/mlflow", "http://127.0.0.1:5000",
                  f"file://{tmp_path}/mlruns", f"sqlite:///{tmp_path}/missing.db"):
        with pytest.raises(local_store.Unsupported):
            local_store.LocalClient.open(other)
    # Another MLflow's schema: its revision is not one the reader was checked against.
    copy = tmp_path / "other.db"
    shutil.copyfile(store.sqlite_path(uri), copy)
    with sqlite3.connect(copy) as database:
        database.execute("UPDATE alembic_version SET version_num = 'f00dfeed1234'")
    with pytest.raises(local_store.Unsupported, match="schema revision"):
        local_store.LocalClient.open(f"sqlite:///{copy}")
    monkeypatch.setenv(local_store.THROUGH_MLFLOW, "1")
    with pytest.raises(local_store.Unsupported):
        local_store.LocalClient.open(uri)


def test_what_the_reader_does_not_know_mlflow_answers(tmp_path, monkeypatch):
    uri, _ = write_scale_study(tmp_path, trials=12, epochs=2, best=3)
    expected = json.dumps(study_status("scale", uri))
    made = []
    monkeypatch.setattr(local_store, "KNOWN_SCHEMAS", frozenset())  # as if MLflow were newer
    real_client_for = store.client_for
    monkeypatch.setattr(store, "client_for", lambda u: made.append(u) or real_client_for(u))
    assert json.dumps(study_status("scale", uri)) == expected and made == [uri]

    monkeypatch.undo()
    client = local_store.LocalClient.open(uri)
    for unknown in ("params.`train.lr` = '0.01'", "attributes.status = 'RUNNING'",
                    f"tags.`{tags.STUDY}` = 'it\\'s'", f"tags.`{tags.STUDY}` != 'scale'",
                    f"tags.`{tags.STUDY}` = 'scale' or tags.`{tags.KIND}` = 'study'"):
        with pytest.raises(local_store.Unsupported):
            client.search_runs(["1"], unknown)
    with pytest.raises(local_store.Unsupported):
        client.search_runs(["1"], "", order_by=["attributes.end_time ASC"])
    with pytest.raises(local_store.Unsupported):
        client.delete_run("x")  # a call it does not make: MLflow's


def test_only_local_artifact_folders_are_read_in_place():
    assert local_store.local_path("file:///tmp/a%20b/artifacts") == Path("/tmp/a b/artifacts")
    assert local_store.local_path("/tmp/store/artifacts") == Path("/tmp/store/artifacts")
    for remote in ("s3://bucket/artifacts", "mlflow-artifacts:/1/abc/artifacts",
                   "./mlruns/1/abc/artifacts", "file://host/share/artifacts"):
        with pytest.raises(local_store.Unsupported):
            local_store.local_path(remote)
