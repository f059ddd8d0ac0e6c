"""The driver-side Tune callback that mirrors every trial into a nested MLflow run.

One writer (a thread of the driver, `search.tracking.writer`), batched writes: safe with
SQLite, and the Tune loop never waits for MLflow, even through a tracking outage. Each trial run gets
its sampled configuration and cost (parameters, multiply-adds) as params, every
epoch's metrics, lineage tags (Ray trial id, node, Optuna number, checkpoint), its
final status, and the summary metrics the ranking reads (`search.tracking.ranking`). The
study run's description and study-level metrics are kept current as trials finish.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from typing import Any

from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from search.studyfile.config import config_params
from search.tracking import tags
from search.tracking.journal import RecordWriter
from search.tracking.phases import PhaseTimes, phases_for, timed
from search.tracking.store import client_for
from search.tracking.trial_index import IndexKeeper
from search.tracking.writer import TrackingWriter, writer_for
from search.trial.spec import TrialSpec

# The study run's summary (`search.tracking.summary`) reads every trial run, so rewriting it
# after every finished trial costs O(trials) each time and O(trials^2) a study: the driver of
# a 1000-trial study would spend its time re-reading its own runs. It is rewritten at most
# every STUDY_UPDATE_INTERVAL_S and never more often than STUDY_UPDATE_COST_FACTOR times its
# own last cost, and always once the trials are done.
STUDY_UPDATE_INTERVAL_S = 5.0
STUDY_UPDATE_COST_FACTOR = 10.0

TRIAL_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "best_val_accuracy",
                 "lr", "epoch_seconds", "train_seconds", "val_seconds", "checkpoint_seconds",
                 "report_seconds", "setup_seconds", "images_per_second", "epoch", "diverged",
                 "resumed_from_epoch", "world_size", "latency_ms", "latency_ms_batch")


def trial_outcome(last_result: dict[str, Any], epochs: int) -> str:
    """completed, pruned (stopped early by the scheduler) or diverged."""
    if last_result.get("diverged"):
        return tags.DIVERGED
    if int(last_result.get("epoch", 0)) < epochs:
        return tags.PRUNED
    return tags.COMPLETED


def trial_cost_params(spec: TrialSpec) -> dict[str, str]:
    """Parameters and multiply-adds of the trial's network (meta device: no weights allocated)."""
    if spec.cost:  # what the space computed (and [constraints] checked) before training
        return {"model.parameters": str(spec.cost["params"]),
                "model.flops": str(spec.cost["flops"])}
    # Imported here: torch loads for the count, which only a trial without a cost needs.
    from resnet_core import architecture_cost

    try:
        channels, height, width = spec.data.image_shape
        # The trial's network is built for its data's channels and classes (as TrainingRun does).
        parameters, flops = architecture_cost(spec.model_values(), (height, width),
                                              in_channels=channels,
                                              num_classes=spec.data.num_classes)
    except (KeyError, TypeError, ValueError):  # data this version cannot read: no cost
        return {}
    return {"model.parameters": str(parameters), "model.flops": str(flops)}


class MlflowTrialCallback(Callback):
    """Mirror every trial into a nested MLflow run: params, per-epoch metrics, lineage.

    Every write is a record (`search.tracking.journal`): journaled on the study's storage
    when the callback has a `journal_path`, then queued on the study's writer thread.
    Picklable (Ray saves callbacks with the experiment): the client is rebuilt
    lazily from the tracking URI, per-trial caches are rebuilt from MLflow.
    """

    def __init__(self, tracking_uri: str, study_run_id: str, experiment_id: str, study_name: str,
                 epochs: int, log_checkpoints: bool = True, metric: str = "val_accuracy",
                 mode: str = "max", journal_path: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.study_run_id = study_run_id
        self.experiment_id = experiment_id
        self.study_name = study_name
        self.epochs = epochs
        self.log_checkpoints = log_checkpoints
        self.metric = metric
        self.mode = mode
        self.journal_path = journal_path
        self._client: MlflowClient | None = None
        self._records: RecordWriter | None = None
        self._started: set[str] = set()  # trials whose start record this driver queued
        self._summary_update = SummaryUpdate()
        self._index: IndexKeeper | None = None  # the trial index as the last rewrite wrote it

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_client=None, _records=None, _started=set(), _summary_update=None,
                     _index=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Callbacks pickled by an older version lack the newer fields (and have old caches).
        state = {k: v for k, v in state.items() if k not in ("_runs", "_best")}
        self.__dict__.update({"metric": "val_accuracy", "mode": "max", "journal_path": None,
                              "_records": None, "_started": set(), "_index": None, **state})
        self._summary_update = SummaryUpdate()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = client_for(self.tracking_uri)
        return self._client

    @property
    def records(self) -> RecordWriter:
        if self._records is None:
            self._records = RecordWriter(lambda: self.client, self.study_run_id, self.experiment_id,
                                         self.metric, self.mode)
            self._records.on_end = self._update_study_run
        return self._records

    # ------------------------------------------------------------ runs

    def run_id_for(self, trial) -> str:
        """The trial's run: cached, else found by tag (resumed study), else created."""
        run_id = self.records.run_for(trial.trial_id)
        if run_id is None:
            self.records.apply(self._start_record(trial))
            run_id = self.records.run_for(trial.trial_id)
        return run_id

    def _start_record(self, trial) -> dict[str, Any]:
        spec = TrialSpec.from_tune(trial.config)
        number = spec.number
        params = {**config_params(model=spec.model_values(), train=spec.train_values()),
                  **trial_cost_params(spec)}
        return {"kind": "start", "trial": trial.trial_id,
                "run_name": f"trial-{number:03d}-{trial.trial_id}",
                "tags": {tags.PARENT: self.study_run_id, tags.KIND: tags.KIND_TRIAL,
                         tags.STUDY: self.study_name, tags.TRIAL_ID: trial.trial_id,
                         tags.OPTUNA_NUMBER: str(number), tags.STATUS: tags.RUNNING},
                "params": {k: str(v) for k, v in params.items()}}

    # ------------------------------------------------------------ Tune hooks

    @property
    def phases(self) -> PhaseTimes:
        return phases_for(self.study_run_id)

    @property
    def writer(self) -> TrackingWriter:
        return writer_for(self.study_run_id, self.tracking_uri, self.journal_path)

    # Every hook only takes what it needs from the trial now (Tune changes the trial
    # object as it goes), as a record, and queues it: the Tune loop never waits for MLflow.

    def _submit(self, record: dict[str, Any], what: str, checkpoint=None) -> None:
        self.writer.submit(lambda: self._tracked(self.records.apply, record, checkpoint), what, record)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.phases.trial_started(trial.trial_id)
        self._queue_start(trial)

    def _queue_start(self, trial) -> None:
        self._started.add(trial.trial_id)
        self._submit(self._start_record(trial), "a trial's run")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.phases.trial_result(trial.trial_id, result)
        if trial.trial_id not in self._started:  # a restored trial Tune did not start again
            self._queue_start(trial)
        # Stamped now, when the epoch was reported, not when the (maybe queued) write happens.
        record = epoch_record(trial.trial_id, result, _lineage_tags(trial, result),
                              int(time.time() * 1000))
        self._submit(record, f"epoch {record['step']} of trial {trial.trial_id}")
        if result.get("checkpoint_restore"):  # a torn checkpoint: said on the driver's output
            print(f"resnet-search: trial {trial.trial_id}: {result['checkpoint_restore']}",
                  file=sys.stderr, flush=True)

    def _tracked(self, write, *args) -> None:
        with timed(self.phases, "tracking"):
            write(*args)

    def _log_result(self, trial, result: dict[str, Any], lineage: list[RunTag], now: int) -> None:
        self.run_id_for(trial)
        self.records.apply(epoch_record(trial.trial_id, result, lineage, now))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        status = trial_outcome(trial.last_result or {}, self.epochs)
        checkpoint = trial.checkpoint
        self._submit(self._end_record(trial, status, checkpoint), f"the end of trial {trial.trial_id}",
                     checkpoint)

    def _end_record(self, trial, status: str, checkpoint) -> dict[str, Any]:
        return {"kind": "end", "trial": trial.trial_id, "status": status,
                "checkpoint": None if checkpoint is None else str(checkpoint.path),
                "log_checkpoint": self.log_checkpoints}

    def _log_completion(self, trial, status: str, checkpoint) -> None:
        self.run_id_for(trial)
        self.records.apply(self._end_record(trial, status, checkpoint), checkpoint)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        error_file = trial.error_file
        self._submit(self._error_record(trial, error_file), f"the failure of trial {trial.trial_id}")

    @staticmethod
    def _error_record(trial, error_file: str | None) -> dict[str, Any]:
        return {"kind": "error", "trial": trial.trial_id,
                "error_file": str(error_file) if error_file else None}

    def _log_error(self, trial, error_file: str | None) -> None:
        self.run_id_for(trial)
        self.records.apply(self._error_record(trial, error_file))

    def _update_study_run(self) -> None:
        """After a trial's end (on the writer thread): now, or deferred if it was done lately
        (a deferred rewrite already pending will see this trial too)."""
        delay = self._summary_update.delay()
        if delay <= 0:
            self._write_study_summary()
        else:
            self._summary_update.defer(delay, self._submit_study_summary)

    def _submit_study_summary(self) -> None:
        self.writer.submit(lambda: self._tracked(self._write_study_summary), "the study run's summary")

    def _write_study_summary(self) -> None:
        from search.tracking.summary import update_study_run

        if self._index is None:
            self._index = IndexKeeper()
        with self._summary_update.timed():
            update_study_run(self.client, self.study_run_id, self._index)

    def on_experiment_end(self, trials, **info) -> None:
        if self._summary_update.cancel_deferred():  # the trials are done: rewrite it now
            self._submit_study_summary()


def epoch_record(trial_id: str, result: dict[str, Any], lineage: list[RunTag], now: int
                 ) -> dict[str, Any]:
    """One reported epoch as a record: its finite tracked metrics, lineage, and when."""
    step = int(result.get("epoch", result.get("training_iteration", 0)))
    values = {k: float(v) for k, v in result.items()
              if k in TRIAL_METRICS and isinstance(v, (int, float)) and math.isfinite(v)}
    return {"kind": "epoch", "trial": trial_id, "step": step, "time": now, "metrics": values,
            "tags": {tag.key: tag.value for tag in lineage}}


def _lineage_tags(trial, result: dict[str, Any]) -> list[RunTag]:
    out = []
    for key, tag in (("node_id", tags.NODE_ID), ("hostname", tags.HOSTNAME), ("gpu_ids", tags.GPU_IDS),
                     ("device", tags.DEVICE)):
        if result.get(key):
            out.append(RunTag(tag, str(result[key])))
    if trial.checkpoint is not None:
        out.append(RunTag(tags.CHECKPOINT, str(trial.checkpoint.path)))
    if result.get("checkpoint_restore"):  # a torn checkpoint was skipped (search.trial.trainable)
        out.append(RunTag(tags.CHECKPOINT_RESTORE, str(result["checkpoint_restore"])[:5000]))
    if "feasible" in result:  # the trial measured its latency against [constraints]
        out.append(RunTag(tags.FEASIBLE, "true" if result["feasible"] else "false"))
    return out


class SummaryUpdate:
    """When the study run's summary may be rewritten next (see STUDY_UPDATE_INTERVAL_S)."""

    def __init__(self) -> None:
        self.done_at = -math.inf  # time.monotonic() of the last rewrite's end
        self.cost = 0.0  # seconds the last rewrite took
        self._deferred: threading.Timer | None = None
        self._lock = threading.Lock()

    def delay(self) -> float:
        """Seconds until a rewrite is allowed (<= 0: now)."""
        gap = max(STUDY_UPDATE_INTERVAL_S, STUDY_UPDATE_COST_FACTOR * self.cost)
        return self.done_at + gap - time.monotonic()

    @contextlib.contextmanager
    def timed(self):
        start = time.monotonic()
        try:
            yield
        finally:
            self.done_at = time.monotonic()
            self.cost = self.done_at - start

    def defer(self, delay: float, submit) -> None:
        """Call `submit` in `delay` seconds, unless a call is already pending."""
        with self._lock:
            if self._deferred is not None and self._deferred.is_alive():
                return
            self._deferred = threading.Timer(delay, submit)
            self._deferred.daemon = True
            self._deferred.start()

    def cancel_deferred(self) -> bool:
        """Cancel a pending deferred rewrite; True if there was one."""
        with self._lock:
            pending = self._deferred is not None and self._deferred.is_alive()
            if self._deferred is not None:
                self._deferred.cancel()
            self._deferred = None
            return pending
