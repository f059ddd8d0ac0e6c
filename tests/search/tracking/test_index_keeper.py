"""The driver keeps its study's trial index in memory between the summary rewrites
(trial_index.IndexKeeper): each rewrite reads only the trial runs changed since the last one and
never the index file back, so the driver's work per trial does not grow with the study
(benchmarks/RESULTS.md, the real study of 1,000 trials). What it writes must be what a rewrite
from every trial run would write."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from mlflow.entities import RunTag
from scale_store import write_scale_study

from search.results.retrieve import study_status
from search.tracking import store, tags, trial_index
from search.tracking.callback import epoch_record
from search.tracking.journal import RecordWriter
from search.tracking.summary import update_study_run


@pytest.fixture
def running_study(tmp_path):
    """30 trials, the last 2 still training, written as the driver writes them."""
    uri, study_run_id = write_scale_study(tmp_path, trials=30, epochs=2, best=5, running=2)
    client = store.client_for(uri)
    writer = RecordWriter(lambda: client, study_run_id, client.get_run(study_run_id).info.experiment_id,
                          "val_accuracy", "max", reopen=False)
    return uri, client, study_run_id, writer


def test_the_kept_index_follows_every_change_and_reads_neither_the_file_nor_every_run(
        running_study, monkeypatch):
    uri, client, study_run_id, writer = running_study
    keeper = trial_index.IndexKeeper()
    update_study_run(client, study_run_id, keeper)  # the first rewrite starts from the file

    def no_full_read(*args, **kwargs):
        raise AssertionError("a rewrite with the kept index read the file or every trial run")

    monkeypatch.setattr(trial_index, "read_index", no_full_read)
    monkeypatch.setattr(trial_index, "trial_runs", no_full_read)
    # While it is kept: a running trial reaches the best score and ends; then the other
    # running one reports a tag no trial had (a new column of the index) and a new trial starts.
    now = int(time.time() * 1000)
    writer.apply(epoch_record("t000028", {"epoch": 2, "val_accuracy": 0.999, "val_loss": 0.01},
                              [], now))
    writer.apply({"kind": "end", "trial": "t000028", "status": tags.COMPLETED, "checkpoint": None})
    update_study_run(client, study_run_id, keeper)
    ended = _index(client, study_run_id)
    ended_whole = _whole_index(client, study_run_id, ended)  # the keeper never reads it back
    writer.apply(epoch_record("t000029", {"epoch": 2, "val_accuracy": 0.6, "val_loss": 1.0},
                              [RunTag(tags.FEASIBLE, "false")], now))
    writer.apply(_start("t000030", study_run_id))
    update_study_run(client, study_run_id, keeper)
    update_study_run(client, study_run_id, keeper)  # nothing changed: the same index again
    grown = _index(client, study_run_id)
    monkeypatch.undo()

    status = study_status("scale", uri)
    assert status["best"]["trial_id"] == "t000028" and status["best"]["status"] == tags.COMPLETED
    assert len(status["trials"]) == 31
    # Each is the index a rewrite from every trial run writes (columns, rows and their order).
    assert _rows_by_trial(ended) == _rows_by_trial(ended_whole)
    assert _rows_by_trial(ended)["t000028"][f"t:{tags.STATUS}"] == tags.COMPLETED
    whole = _whole_index(client, study_run_id, grown)
    assert grown["columns"] == whole["columns"] and f"t:{tags.FEASIBLE}" in grown["columns"]
    assert _rows_by_trial(grown) == _rows_by_trial(whole)
    assert _rows_by_trial(grown)["t000029"][f"t:{tags.FEASIBLE}"] == "false"
    assert "t000030" in _rows_by_trial(grown)


def test_a_new_driver_starts_its_kept_index_from_the_file(running_study, monkeypatch):
    """A resumed study's driver: its first rewrite reads the index the last driver wrote."""
    uri, client, study_run_id, _ = running_study
    read = []
    original = trial_index.read_index
    monkeypatch.setattr(trial_index, "read_index", lambda *a: read.append(1) or original(*a))
    monkeypatch.setattr(trial_index, "trial_runs", lambda *a, **k: pytest.fail("read whole"))
    keeper = trial_index.IndexKeeper()
    update_study_run(client, study_run_id, keeper)
    update_study_run(client, study_run_id, keeper)
    assert read == [1]
    assert len(_index(client, study_run_id)["rows"]) == 30


def _start(trial_id: str, study_run_id: str) -> dict:
    number = int(trial_id[1:])
    return {"kind": "start", "trial": trial_id, "run_name": f"trial-{number:03d}-{trial_id}",
            "tags": {tags.PARENT: study_run_id, tags.KIND: tags.KIND_TRIAL, tags.STUDY: "scale",
                     tags.TRIAL_ID: trial_id, tags.OPTUNA_NUMBER: str(number),
                     tags.STATUS: tags.RUNNING},
            "params": {"model.family": "wrn", "model.depth": "16", "model.width": "2"}}


def _whole_index(client, study_run_id: str, index: dict) -> dict:
    """The index of every trial run read whole, as of the given index's stamp."""
    study_run = client.get_run(study_run_id)
    trial_index.write_index(client, study_run, store.trial_runs(client, study_run), index["taken_ms"])
    return _index(client, study_run_id)


def _rows_by_trial(index: dict) -> dict[str, dict]:
    return {row[index["columns"].index(f"t:{tags.TRIAL_ID}")]: dict(zip(index["columns"], row, strict=True))
            for row in index["rows"]}


def _index(client, study_run_id: str) -> dict:
    run = client.get_run(study_run_id)
    return json.loads(Path(run.info.artifact_uri.removeprefix("file://"),
                           tags.TRIAL_INDEX_ARTIFACT).read_text())
