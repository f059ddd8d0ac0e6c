"""The read model of a study (search.tracking.records) against a real SQLite MLflow store.

The store is written by the platform's own code: the study run by `create_study_run`, the
trial runs by the Tune callback's writes (params, epochs, ends, failures, the study run's
summary). Every reader (status, studies, the summary, the report, the Pareto front) must
then count, name and rank the trials the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient
from study_helpers import study_toml

from resnet_core import DepthRule, NetworkFamily, register_family, unregister_family
from search.results import charts as report_charts
from search.results import pareto, report
from search.results.retrieve import study_status
from search.results.studies import list_studies
from search.studyfile.config import load_study
from search.tracking import callback, ranking, records, store, summary, tags

# (network, epochs' val_loss, val_accuracy, how the trial ends): one trial of each outcome.
NETWORKS = {
    "wrn": {"family": "wrn", "depth": 16, "width": 4, "block": "basic", "bn_position": "before_add"},
    "bottleneck": {"family": "resnet", "depth": 29, "width": 1, "block": "bottleneck",
                   "bn_position": "before_add"},
    "after_add": {"family": "resnet", "depth": 20, "width": 1, "block": "basic",
                  "bn_position": "after_add"},
}
TRIALS = (
    ("wrn", [0.9, 0.5], 0.80, tags.COMPLETED),  # the lowest loss: best of a val_loss study
    ("bottleneck", [0.8, 0.7], 0.90, tags.COMPLETED),  # the highest accuracy
    ("after_add", [1.2], 0.60, tags.PRUNED),
    ("wrn", [2.0, float("nan")], 0.10, tags.DIVERGED),
    ("bottleneck", [], None, tags.FAILED),
    ("after_add", [1.0], 0.70, tags.RUNNING),
)
LABELS = ["wrn-16-4", "resnet-29 (bottleneck)", "resnet-20 BN after add"]


@dataclass
class Store:
    uri: str
    client: MlflowClient
    study_run_id: str
    name: str

    def study_run(self):
        return self.client.get_run(self.study_run_id)


def _trial(number: int, network: str) -> SimpleNamespace:
    """What the callback reads of a Tune trial."""
    return SimpleNamespace(trial_id=f"t{number}", checkpoint=None, config={
        "optuna_trial_number": number, "model": {**NETWORKS[network], "dropout": 0.1 * number},
        "train": {"optimizer": "sgd", "lr": 0.01 * (number + 1)},
        "cost": {"params": 1000 * (number + 1), "flops": 50_000 * (number + 1)}})


def _write_trials(writer: callback.MlflowTrialCallback, metric: str) -> None:
    for number, (network, losses, accuracy, outcome) in enumerate(TRIALS):
        trial = _trial(number, network)
        writer.run_id_for(trial)
        for epoch, loss in enumerate(losses, start=1):
            result = {"epoch": epoch, "val_loss": loss, "val_accuracy": accuracy,
                      "diverged": outcome == tags.DIVERGED and epoch == len(losses)}
            writer._log_result(trial, result, [], 1000 * epoch)
        if outcome == tags.FAILED:
            writer._log_error(trial, None)
        elif outcome != tags.RUNNING:
            writer._log_completion(trial, outcome, None)


def _make_store(tmp_path: Path, monkeypatch, metric: str, record_mode: bool = True) -> Store:
    # Every trial's end rewrites the study run's summary at once (no deferred rewrite thread).
    monkeypatch.setattr(callback, "STUDY_UPDATE_INTERVAL_S", 0.0)
    monkeypatch.setattr(callback, "STUDY_UPDATE_COST_FACTOR", 0.0)
    name = f"records-{metric.replace('_', '-')}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = store.client_for(uri)
    experiment = store.get_or_create_experiment(client, "records", str(tmp_path / "artifacts"))
    if record_mode:
        path = tmp_path / f"{name}.toml"
        path.write_text(study_toml(name, study={"metric": metric, "num_samples": 8}))
        study_run_id = store.create_study_run(client, experiment, load_study(path),
                                              str(tmp_path / "results"), {"lr": "[0.01, 0.1] log"})
    else:  # a store written before the study run recorded its mode
        study_run_id = client.create_run(experiment, run_name=name, tags={
            tags.KIND: tags.KIND_STUDY, tags.STUDY: name, tags.STATUS: tags.RUNNING}).info.run_id
        client.log_param(study_run_id, tags.STUDY_PARAM + "metric", metric)
    mode = ranking.direction(metric)
    _write_trials(callback.MlflowTrialCallback(uri, study_run_id, experiment, name, epochs=2,
                                               log_checkpoints=False, metric=metric, mode=mode),
                  metric)
    return Store(uri, client, study_run_id, name)


@pytest.fixture
def accuracy_store(tmp_path, monkeypatch) -> Store:
    return _make_store(tmp_path, monkeypatch, "val_accuracy")


@pytest.fixture
def no_histories(monkeypatch):
    """Fail any read of a per-epoch history: status, best, studies and the summary need none."""
    def refuse(*args, **kwargs):
        raise AssertionError("a per-epoch history was read")

    monkeypatch.setattr(MlflowClient, "get_metric_history", refuse)


# ---------------------------------------------------------------- outcomes


def test_every_reader_counts_the_outcomes_alike(accuracy_store, no_histories):
    expected = {tags.COMPLETED: 2, tags.PRUNED: 1, tags.DIVERGED: 1, tags.FAILED: 1,
                tags.RUNNING: 1}
    study = records.read_study(accuracy_store.client, accuracy_store.study_run())
    assert study.outcome_counts() == expected
    assert list(study.outcome_counts()) == list(expected)  # the one order, everywhere
    assert study_status(accuracy_store.name, accuracy_store.uri)["counts"] == expected
    (row,) = list_studies(accuracy_store.uri)["studies"]
    assert row["counts"] == expected and row["trials"] == len(TRIALS)
    summary.update_study_run(accuracy_store.client, accuracy_store.study_run_id)
    run = accuracy_store.study_run()
    assert {k.removeprefix("trials_"): v for k, v in run.data.metrics.items()
            if k.startswith("trials_")} == expected
    assert ("6 of 8 trials: 2 completed, 1 pruned, 1 diverged, 1 failed, 1 running."
            in run.data.tags[summary.NOTE_TAG])


def test_a_running_trial_of_an_interrupted_study_counts_as_interrupted(accuracy_store):
    accuracy_store.client.set_tag(accuracy_store.study_run_id, tags.STATUS, tags.INTERRUPTED)
    study = records.read_study(accuracy_store.client, accuracy_store.study_run())
    assert study.outcome_counts()[tags.INTERRUPTED] == 1 and tags.RUNNING not in study.outcome_counts()
    assert study_status(accuracy_store.name, accuracy_store.uri)["counts"] == study.outcome_counts()


# ---------------------------------------------------------------- names


def test_every_reader_names_a_network_as_its_family_does(accuracy_store, no_histories):
    status = study_status(accuracy_store.name, accuracy_store.uri)
    by_number = {t["optuna_trial_number"]: t["model"] for t in status["trials"]}
    assert [by_number[n] for n in range(3)] == LABELS
    summary.update_study_run(accuracy_store.client, accuracy_store.study_run_id)
    note = accuracy_store.study_run().data.tags[summary.NOTE_TAG]
    assert all(f"| {label} |" in note for label in LABELS[:2]), note
    study = records.read_study(accuracy_store.client, accuracy_store.study_run())
    assert [t.label for t in study.trials[:3]] == LABELS
    # The Pareto front names the network alone, as resnet_core parses it back.
    front = pareto.front_rows(accuracy_store.client, accuracy_store.study_run())
    assert {row["model"] for row in front["front"]} <= {"wrn-16-4", "resnet-29", "resnet-20"}
    assert front["front"]


def test_a_family_registered_later_names_its_trials_by_its_own_format():
    toy = NetworkFamily("toy-net", "two plain stages", preactivation=False, shortcuts=False,
                        depth_rules=(DepthRule("basic", 2, 2),), has_width=True)
    params = {"model.family": "toy-net", "model.depth": "6", "model.width": "2"}
    trial = records.TrialRecord(number=0, run_id="r", status=tags.COMPLETED, params=params,
                                value=0.5, rank=0, best_epoch=1, start_ms=0, end_ms=1)
    assert trial.label == "toy-net-6"  # not registered: the family and depth alone
    register_family(toy)
    try:
        assert (trial.label, trial.model_name) == ("toy-net-6-2", "toy-net-6-2")
    finally:
        unregister_family(toy.name)


# ---------------------------------------------------------------- direction


@pytest.mark.parametrize("record_mode", [True, False], ids=["mode recorded", "older store"])
def test_a_loss_study_ranks_reports_and_summarises_lowest_first(tmp_path, monkeypatch,
                                                                record_mode):
    loss = _make_store(tmp_path, monkeypatch, "val_loss", record_mode)
    study = records.read_study(loss.client, loss.study_run())
    assert study.mode == "min"
    # Lowest best loss first: trial 0 (0.5), trial 1 (0.7), the running one (1.0), the pruned one.
    assert [t.number for t in study.ranked()] == [0, 1, 5, 2]
    status = study_status(loss.name, loss.uri)
    assert status["mode"] == "min" and status["best"]["optuna_trial_number"] == 0
    assert [t["optuna_trial_number"] for t in status["trials"] if t["ranked"]] == [0, 1, 5, 2]
    (row,) = list_studies(loss.uri)["studies"]
    assert (row["mode"], row["best_value"]) == ("min", 0.5)
    summary.update_study_run(loss.client, loss.study_run_id)
    run = loss.study_run()
    assert run.data.metrics["best_so_far_val_loss"] == 0.5
    note = run.data.tags[summary.NOTE_TAG]
    assert "Ranked by val_loss (min)" in note and "| 1 | 0 (t0) | wrn-16-4 |" in note, note
    assert pareto.front_rows(loss.client, loss.study_run())["modes"][0] == "min"
    # The report: lower is better, the best trial first, the best-so-far line falling.
    assert "lower is better" in report._summary(study)
    assert report._best_table(study).index("#0") < report._best_table(study).index("#1")
    # A step line through the places the best so far changes and its end: trial 0's 0.5
    # holds from the first scored trial to the last (a max study would climb to 1.2).
    best_line = report_charts.history_figure(study).data[0]
    assert (best_line.line.shape, list(best_line.x), list(best_line.y)) == (
        "hv", [0, 5], [0.5, 0.5])


def test_the_direction_of_every_study_metric_is_the_study_files():
    from search.studyfile.config import METRICS

    assert {metric: ranking.direction(metric) for metric in METRICS} == METRICS
    assert ranking.direction("val_loss", "max") == "max"  # what a study recorded wins
