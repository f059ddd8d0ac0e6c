"""A study of thousands of trials, written the way the platform writes one, in seconds.

    uri, study_run_id = write_scale_study(folder, trials=10_050, epochs=2, best=10_039)

The study run is `store.create_study_run`'s. Each trial run holds what the Tune callback
(`MlflowTrialCallback`) writes for simulated Tune events (a start, one result per epoch, the
end): the callback itself decides every tag, param and metric, writing to a RecordingClient
that keeps them. The kept runs then go into the store through MLflow's own SqlAlchemyStore
models, a thousand runs per transaction. Why not the client one call at a time: on a 2-core
machine MLflow's client costs ~50 ms a trial run (create_run, a log_batch per epoch, the end;
SQLAlchemy's per-call work, not the disk, so tmpfs barely helps), ~9 minutes for 10,050
trials; the same rows in bulk take seconds. The study run's summary is then written once by
`update_study_run`, the platform's own rewrite.

Trial i (0-based) is Optuna trial i. Most trials are pruned after their first epoch, every 10th
completes, every 50th fails, every 97th diverges; trial `best` reaches the highest val_accuracy.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mlflow.entities import Metric
from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
from sqlalchemy import insert

from search.studyfile.config import load_study
from search.tracking import callback, store, tags
from search.tracking.summary import update_study_run

RUNS_PER_TRANSACTION = 1000
NETWORK = {"family": "wrn", "depth": 16, "width": 2, "block": "basic", "bn_position": "before_add"}


@dataclass
class RecordedRun:
    run_id: str
    experiment_id: str
    name: str
    start_time: int
    tags: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    status: str = "RUNNING"
    end_time: int | None = None


class RecordingClient:
    """The MlflowClient calls the trial callback makes, kept instead of sent."""

    def __init__(self, clock: Iterator[int]) -> None:
        self.runs: dict[str, RecordedRun] = {}
        self._clock = clock

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]):
        run = RecordedRun(uuid.uuid4().hex, experiment_id, run_name, next(self._clock),
                          {**tags, "mlflow.runName": run_name})
        self.runs[run.run_id] = run
        return SimpleNamespace(info=SimpleNamespace(run_id=run.run_id))

    def log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        run = self.runs[run_id]
        run.metrics += metrics
        run.params.update({p.key: p.value for p in params})
        run.tags.update({t.key: t.value for t in tags})

    def search_runs(self, *args, **kwargs) -> list:
        return []  # a new study: no trial has a run yet

    def update_run(self, run_id: str, status: str) -> None:
        self.runs[run_id].status = status

    def get_metric_history(self, run_id: str, key: str) -> list:
        return [m for m in self.runs[run_id].metrics if m.key == key]

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.runs[run_id].tags[key] = value

    def set_terminated(self, run_id: str, status: str) -> None:
        self.runs[run_id].status, self.runs[run_id].end_time = status, next(self._clock)


def write_scale_study(folder: Path, *, trials: int, epochs: int, best: int, uri: str | None = None,
                      name: str = "scale", running: int = 0) -> tuple[str, str]:
    """(tracking URI, study run id) of a study of `trials` trial runs; finished unless its last
    `running` trials are still training (their first epoch reported)."""
    from study_helpers import study_toml  # tests/search: the helper every study file comes from

    uri = uri or f"sqlite:///{folder / 'mlflow.db'}"
    client = store.client_for(uri)
    experiment = store.get_or_create_experiment(client, name, str(folder / "artifacts"))
    path = folder / f"{name}.toml"
    path.write_text(study_toml(name, study={"num_samples": trials},
                               train={"epochs": epochs}))
    study_run_id = store.create_study_run(client, experiment, load_study(path),
                                          str(folder / "results"), {"lr": "[0.01, 0.1] log"})
    clock = iter(range(1_700_000_000_000, 1_800_000_000_000, 1000))
    for start in range(0, trials, RUNS_PER_TRANSACTION):
        recorder = RecordingClient(clock)
        simulate_trials(recorder, uri, study_run_id, experiment, name, epochs, best,
                        range(start, min(trials, start + RUNS_PER_TRANSACTION)), trials - running)
        write_runs(client, recorder.runs.values())
    if not running:
        client.set_tag(study_run_id, tags.STATUS, tags.COMPLETED)
        client.set_terminated(study_run_id, "FINISHED")
    update_study_run(client, study_run_id)
    return uri, study_run_id


def simulate_trials(recorder: RecordingClient, uri: str, study_run_id: str, experiment: str,
                    name: str, epochs: int, best: int, numbers: range, ending: int) -> None:
    """Drive the trial callback's Tune hooks as Tune would: a start, each epoch's result, the
    end (trials from `ending` on have none yet); its writer thread writes them to the recorder."""
    writer = callback.MlflowTrialCallback(uri, study_run_id, experiment, name, epochs=epochs,
                                          log_checkpoints=False)
    writer._client = recorder
    writer._update_study_run = lambda: None  # the study's summary: written once, at the end
    for number in numbers:
        trial = SimpleNamespace(trial_id=f"t{number:06d}", checkpoint=None, error_file=None,
                                last_result={}, config={
            "optuna_trial_number": number, "model": NETWORK,
            "train": {"optimizer": "sgd", "lr": 0.01 + (number % 90) / 1000},
            "cost": {"params": 700_000, "flops": 100_000_000}})
        writer.on_trial_start(0, [], trial)
        if number % 50 == 49:
            writer.on_trial_error(0, [], trial)
            continue
        last = epochs if number == best or number % 10 == 0 else 1
        for epoch in range(1, last + 1):
            trial.last_result = _result(number, epoch, best)
            writer.on_trial_result(0, [], trial, trial.last_result)
            if number >= ending:  # still training
                break
        else:
            writer.on_trial_complete(0, [], trial)
    if writer.writer.drain(timeout=600):
        raise RuntimeError("the trial callback's writes did not finish in 10 minutes")


def _result(number: int, epoch: int, best: int) -> dict[str, Any]:
    """One epoch's metrics: every trial below 0.95, the best one 0.99 at its last epoch."""
    accuracy = 0.99 if number == best else 0.5 + 0.45 * ((number * 7919) % 1000) / 1000
    accuracy *= epoch / (epoch + 0.5) if number != best else 1.0
    return {"epoch": epoch, "val_accuracy": accuracy, "val_loss": 2.0 - accuracy,
            "train_loss": 2.1 - accuracy, "train_accuracy": accuracy, "lr": 0.05,
            "epoch_seconds": 1.0, "diverged": number % 97 == 96 and epoch == 1}


def write_runs(client, runs) -> None:
    """Recorded runs into the store: MLflow's own tables, through its SqlAlchemyStore models."""
    backend = client._tracking_client.store
    artifact_root = {}
    rows: dict[Any, list[dict[str, Any]]] = {SqlRun: [], SqlTag: [], SqlParam: [], SqlMetric: [],
                                             SqlLatestMetric: []}
    for run in runs:
        if run.experiment_id not in artifact_root:
            artifact_root[run.experiment_id] = client.get_experiment(run.experiment_id).artifact_location
        rows[SqlRun].append(dict(
            run_uuid=run.run_id, name=run.name, experiment_id=int(run.experiment_id),
            artifact_uri=f"{artifact_root[run.experiment_id]}/{run.run_id}/artifacts",
            source_type="UNKNOWN", source_name="", entry_point_name="", user_id="unknown",
            status=run.status, start_time=run.start_time, end_time=run.end_time,
            source_version="", lifecycle_stage="active"))
        rows[SqlTag] += [dict(key=k, value=v, run_uuid=run.run_id) for k, v in run.tags.items()]
        rows[SqlParam] += [dict(key=k, value=v, run_uuid=run.run_id) for k, v in run.params.items()]
        rows[SqlMetric] += [_metric_row(m, run.run_id) for m in run.metrics]
        rows[SqlLatestMetric] += [_metric_row(m, run.run_id) for m in _latest(run.metrics)]
    with backend.ManagedSessionMaker() as session:
        for model, values in rows.items():
            if values:
                session.execute(insert(model), values)


def _metric_row(metric: Metric, run_id: str) -> dict[str, Any]:
    return dict(key=metric.key, value=metric.value, timestamp=metric.timestamp, step=metric.step,
                is_nan=False, run_uuid=run_id)


def _latest(metrics: list[Metric]) -> list[Metric]:
    """Each key's latest value as MLflow keeps it: the highest step, then timestamp, then value."""
    latest: dict[str, Metric] = {}
    for metric in metrics:
        seen = latest.get(metric.key)
        if seen is None or (metric.step, metric.timestamp, metric.value) >= \
                (seen.step, seen.timestamp, seen.value):
            latest[metric.key] = metric
    return list(latest.values())


