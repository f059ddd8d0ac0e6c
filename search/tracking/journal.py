"""The tracking journal: every MLflow write of a study, on the study's storage before it is
queued, so that a driver dying during a tracking outage loses none of them.

A record is plain data (JSON, one line each), never a pickled callable:

    {"kind": "start", "trial": ID, "run_name": ..., "tags": {...}, "params": {...}}
    {"kind": "epoch", "trial": ID, "step": N, "time": MS, "metrics": {...}, "tags": {...}}
    {"kind": "end",   "trial": ID, "status": ..., "checkpoint": PATH or null}
    {"kind": "error", "trial": ID, "error_file": PATH or null}

`RecordWriter.apply` is the one way a record reaches MLflow, on the driver's writer thread
and in `resume`'s replay alike, and it is idempotent: a run is found by its trial's tag
before one is created, and an epoch whose step the run already holds is not logged again
(MLflow keeps every point of a metric, so a second write of a step would be a second point).
The journal lives beside Ray's experiment state (`STORAGE/STUDY/tracking-journal.jsonl`) and
is emptied whenever every record in it has been written.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from ray.tune import Checkpoint

from search.tracking import ranking, tags
from search.tracking.store import trial_run

JOURNAL_NAME = "tracking-journal.jsonl"


def journal_path(experiment_path: str) -> str | None:
    """Where a study's journal lives; None on object-store storage (plain files only)."""
    return None if "://" in experiment_path else os.path.join(experiment_path, JOURNAL_NAME)


class Journal:
    """Append-only records, each fsync'd before the write it describes is queued.

    Unbuffered (os.write on an O_APPEND descriptor): a write that fails leaves nothing
    behind in a buffer to fail again at the next call."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pending = 0  # records appended whose write has not finished yet

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()
        with self._lock:
            if self._fd is None:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self._fd, line)
            os.fsync(self._fd)
            self._pending += 1

    def written(self) -> None:
        """One record's write finished (or was skipped as a bad write)."""
        with self._lock:
            self._pending -= 1

    def size(self) -> int:
        with self._lock:
            return 0 if self._fd is None else os.fstat(self._fd).st_size

    def compact(self) -> bool:
        """Empty the journal if every record in it has been written; True if it did."""
        with self._lock:
            if self._pending or self._fd is None:
                return False
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            return True


def read_records(path: str) -> list[dict[str, Any]]:
    """The journal's records; a line torn by a kill in mid-append (only the last can be) is left out."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            if isinstance(record, dict) and "kind" in record:
                records.append(record)
    return records


class RecordWriter:
    """Writes records to MLflow, each at most once, whatever replays them."""

    def __init__(self, client_of: Callable[[], Any], study_run_id: str, experiment_id: str,
                 metric: str, mode: str, *, reopen: bool = True) -> None:
        self._client_of = client_of  # the client, built lazily (the callback pickles)
        self.study_run_id = study_run_id
        self.experiment_id = experiment_id
        self.metric = metric
        self.mode = mode
        self.reopen = reopen  # a found run is set RUNNING again (a trial going on), not on replay
        self._starts: dict[str, dict[str, Any]] = {}
        self._runs: dict[str, str] = {}
        self._best: dict[str, ranking.EpochScore | None] = {}
        self._steps: dict[tuple[str, str], set[int]] = {}
        self.on_end: Callable[[], None] = lambda: None  # after a trial's end: the study's summary

    @property
    def client(self):
        return self._client_of()

    def apply(self, record: dict[str, Any], checkpoint: Checkpoint | None = None) -> None:
        """Write one record; `checkpoint`: the end's checkpoint as Tune handed it (its own
        filesystem), else the record's path is read as a local one."""
        kind = record["kind"]
        if kind == "start":
            self._starts[record["trial"]] = record
            self.run_for(record["trial"])
        elif kind == "epoch":
            self._log_epoch(record)
        elif kind == "end":
            self._log_end(record, checkpoint)
        elif kind == "error":
            self._log_error(record)

    def run_for(self, trial_id: str) -> str | None:
        """The trial's run: cached, else found by tag (a resumed study), else created."""
        if trial_id in self._runs:
            return self._runs[trial_id]
        existing = trial_run(self.client, self.study_run_id, self.experiment_id, trial_id)
        if existing is not None:
            run_id = existing.info.run_id
            if self.reopen:
                self.client.update_run(run_id, status="RUNNING")
            self._best[trial_id] = ranking.epoch_from_summary(existing.data.metrics, self.metric)
        elif trial_id in self._starts:
            run_id = self._create(self._starts[trial_id])
        else:
            return None
        self._runs[trial_id] = run_id
        return run_id

    def _create(self, start: dict[str, Any]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=start["run_name"],
                                     tags=start["tags"])
        params = [Param(k, v) for k, v in start["params"].items()]
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def _log_epoch(self, record: dict[str, Any]) -> None:
        trial_id, step, values = record["trial"], int(record["step"]), record["metrics"]
        run_id = self.run_for(trial_id)
        if run_id is None:
            return
        lineage = [RunTag(k, v) for k, v in record["tags"].items()]
        held = self.steps_held(run_id, values)
        if step in held:  # a redone or replayed epoch: its point is there already
            if lineage:
                self.client.log_batch(run_id, tags=lineage)
            return
        summary = self._summary(trial_id, values)
        metrics = [Metric(k, v, record["time"], step) for k, v in {**values, **summary}.items()]
        self.client.log_batch(run_id, metrics=metrics, tags=lineage)
        held.add(step)

    def steps_held(self, run_id: str, values: dict[str, float]) -> set[int]:
        """The steps the run holds of the record's first metric (one batch writes them all)."""
        key = "epoch" if "epoch" in values else min(values, default="epoch")
        if (run_id, key) not in self._steps:
            history = self.client.get_metric_history(run_id, key)
            self._steps[run_id, key] = {m.step for m in history}
        return self._steps[run_id, key]

    def _summary(self, trial_id: str, values: dict[str, float]) -> dict[str, float]:
        """The ranking's summary of the trial after this epoch (its best epoch so far)."""
        best = self._best.get(trial_id)
        score = None if values.get("diverged") else ranking.epoch_score(values, self.metric)
        if score is not None and score.beats(best, self.mode):
            best = self._best[trial_id] = score
        return ranking.summary_metrics(best, self.metric) if best is not None else {}

    def _log_end(self, record: dict[str, Any], checkpoint: Checkpoint | None) -> None:
        run_id = self.run_for(record["trial"])
        if run_id is None:
            return
        run_tags = [RunTag(tags.STATUS, record["status"])]
        path = record.get("checkpoint")
        if path:
            run_tags.append(RunTag(tags.CHECKPOINT, path))
            if record.get("log_checkpoint"):
                self._log_checkpoint(run_id, checkpoint or Checkpoint(path))
        self.client.log_batch(run_id, tags=run_tags)
        self.client.set_terminated(run_id, "FINISHED")
        self.on_end()

    def _log_error(self, record: dict[str, Any]) -> None:
        run_id = self.run_for(record["trial"])
        if run_id is None:
            return
        self.client.set_tag(run_id, tags.STATUS, tags.FAILED)
        if record.get("error_file"):
            self.client.set_tag(run_id, tags.ERROR_FILE, str(record["error_file"]))
        self.client.set_terminated(run_id, "FAILED")
        self.on_end()

    def _log_checkpoint(self, run_id: str, checkpoint: Checkpoint) -> None:
        with tempfile.TemporaryDirectory() as directory:
            local = checkpoint.to_directory(os.path.join(directory, "checkpoint"))
            self.client.log_artifacts(run_id, local, "checkpoint")


def replay_journal(client, path: str | None, study_run_id: str, experiment_id: str, metric: str,
                   mode: str) -> int:
    """Write what the journal holds and the store lacks, then empty it; returns how many
    records it held. `resume` calls it before anything else."""
    records = read_records(path) if path else []
    if not records:
        return 0
    writer = RecordWriter(lambda: client, study_run_id, experiment_id, metric, mode, reopen=False)
    for record in records:
        writer.apply(record)
    with _journal_file(path) as file:
        file.truncate(0)
        os.fsync(file.fileno())
    print(f"resnet-search: replayed {len(records)} tracking update(s) from {path}",
          file=sys.stderr, flush=True)
    return len(records)


@contextlib.contextmanager
def _journal_file(path: str) -> Iterator[Any]:
    with open(path, "r+", encoding="utf-8") as file:
        yield file
