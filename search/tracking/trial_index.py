"""The trial index: one compact row per trial run, kept on the study run, so that reading a
study of 10,000 trials does not build 10,000 MLflow runs.

MLflow's run search materialises every param, tag and latest metric of every run it returns
(~25-60 s for 10,000 trial runs on 2 cores, benchmarks/RESULTS.md). `status`, `best`,
`studies`, the Pareto front and the champion's ranking need a dozen fields of each trial; the
index holds those (a digest of each run: the ranking's metrics, the status table's params and
tags, start and end) as one artifact of the study run (tags.TRIAL_INDEX_ARTIFACT).

The trial runs stay the one truth; the index is a copy of them taken at a moment (its stamp,
`taken_ms`), never trusted past it. A reader takes the index and re-reads from MLflow every
trial run that may have changed since (`changed_since`): the runs tagged running, and the runs
started or ended after the stamp (less CLOCK_MARGIN_MS). Every write to a trial run is one of
those: its start creates it (start_time); its epochs are written while it is tagged running;
its end, its failure, `resume`'s settling of a trial whose end was lost, and a replayed end all
set end_time. So a driver killed between a trial's end and the index's next rewrite leaves an
index that misses that end, and the reader reads that run again. The two writes to a trial
run that change neither (the champion's test score, the Pareto front's tag) are fields the
index does not keep.

No index (a study written before it existed), an unreadable one (torn by a concurrent write,
another format) or one of another study run: the full read, every trial run.

The index is written by the study run's summary rewrite (search.tracking.summary): the index,
the runs changed since it, and the rewrite: the MLflow work per rewrite is the trials that
changed since the last one, not the whole study.
"""

from __future__ import annotations

import contextlib
import gc
import json
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.tracking import tags
from search.tracking.store import all_runs, no_download_bar, trial_runs

FORMAT = 1
# Runs started or ended this long before the stamp are read again: two drivers of one study
# (a run, then a resume on another machine) may stamp by clocks that differ a little.
CLOCK_MARGIN_MS = 60_000
# What a row keeps of a trial run beyond its model params (all kept: the network's label needs
# them) and the params of the study's [space]: what the commands print, rank and chart by.
TRAIN_PARAMS = ("optimizer", "lr")
METRICS = ("epoch", "val_accuracy", "val_loss", "best_val_accuracy", "best_epoch",
           "val_loss_at_best", "parameters", "flops", "latency_ms")
TAGS = (tags.STATUS, tags.TRIAL_ID, tags.OPTUNA_NUMBER, tags.FEASIBLE, tags.CHECKPOINT,
        tags.NODE_ID)


@dataclass
class RunInfo:
    run_id: str
    start_time: int | None
    end_time: int | None


@dataclass
class RunData:
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class TrialDigest:
    """A trial run as the index keeps it: read like an MLflow Run (`.info`, `.data`), with
    only the fields the readers use."""

    info: RunInfo
    data: RunData


def digest(run: Any, searched: set[str]) -> TrialDigest:
    """The index's row of a trial run (an MLflow Run or a digest)."""
    data, study_metrics = run.data, set(METRICS)
    kept = {f"{tags.TRAIN_PARAM}{key}" for key in (*TRAIN_PARAMS, *searched)}
    return TrialDigest(
        RunInfo(run.info.run_id, run.info.start_time, run.info.end_time),
        RunData(params={k: v for k, v in data.params.items()
                        if k.startswith(tags.MODEL_PARAM) or k in kept},
                metrics={k: v for k, v in data.metrics.items()
                         if k in study_metrics or k.startswith("best_")},
                tags={k: v for k, v in data.tags.items() if k in TAGS}))


# ---------------------------------------------------------------- reading


def current_trial_runs(client: Any, study_run: Any) -> list[Any]:
    """Every trial run of the study as it is now: the index, with the runs changed since it
    read again; every run read whole where there is no usable index."""
    return _current(client, study_run, keep=True)[0]


def _current(client: Any, study_run: Any, keep: bool) -> tuple[list[Any], int]:
    """(trial runs, the stamp an index of them may carry): the stamp is taken before MLflow
    is read, so whatever changes during the reads is after it. `keep`: write the index of a
    study that is not running and had none."""
    stamp = _now_ms()
    index = read_index(client, study_run)
    if index is None:
        runs = trial_runs(client, study_run)
        if keep and study_run.data.tags.get(tags.STATUS) != tags.RUNNING:
            _keep_index(client, study_run, runs, stamp)
        return runs, stamp
    rows, taken = index
    by_run = {row.info.run_id: row for row in rows}
    for run in changed_since(client, study_run, taken - CLOCK_MARGIN_MS):
        by_run[run.info.run_id] = run
    return list(by_run.values()), stamp


def changed_since(client: Any, study_run: Any, since_ms: int) -> list[Any]:
    """The trial runs that may differ from an index taken at `since_ms`: tagged running,
    started or ended since. Three searches that each return only those runs (of any study of
    the experiment: a filter on the parent's tag too costs SQLite a join over every tag of
    every run, 5x the search; the few runs of other studies are left out here)."""
    study_run_id = study_run.info.run_id
    found: dict[str, Any] = {}
    for condition in (f"tags.`{tags.STATUS}` = '{tags.RUNNING}'",
                      f"attributes.start_time >= {since_ms}", f"attributes.end_time >= {since_ms}"):
        for run in all_runs(client, [study_run.info.experiment_id], condition):
            if run.data.tags.get(tags.PARENT) == study_run_id:
                found[run.info.run_id] = run
    return list(found.values())


def read_index(client: Any, study_run: Any) -> tuple[list[TrialDigest], int] | None:
    """(rows, stamp) of the study run's index; None where there is none it can use."""
    run_id = study_run.info.run_id
    try:
        with tempfile.TemporaryDirectory(prefix="resnet-search-index-") as scratch, \
                no_download_bar():
            text = Path(client.download_artifacts(run_id, tags.TRIAL_INDEX_ARTIFACT, scratch)
                        ).read_text(encoding="utf-8")
        index = json.loads(text)
        if index.get("format") != FORMAT or index.get("study_run_id") != run_id:
            return None
        return _rows(index["columns"], index["rows"]), int(index["taken_ms"])
    except Exception:  # noqa: BLE001 - none, torn or foreign: the full read answers instead
        return None


def _rows(columns: list[str], table: list[list[Any]]) -> list[TrialDigest]:
    """The digests of the index's table (after run_id, start and end: "m:" metrics, "p:"
    params and "t:" tags, each kind's columns together)."""
    spans = {}
    for kind in "mpt":
        at = [i for i, c in enumerate(columns) if c.startswith(f"{kind}:")]
        spans[kind] = (at[0], at[-1] + 1, [columns[i][2:] for i in at]) if at else (0, 0, [])

    def part(values: list[Any], kind: str) -> dict[str, Any]:
        start, end, names = spans[kind]
        return {k: v for k, v in zip(names, values[start:end], strict=True) if v is not None}

    return [TrialDigest(RunInfo(values[0], values[1], values[2]),
                        RunData(params=part(values, "p"), metrics=part(values, "m"),
                                tags=part(values, "t"))) for values in table]


# ---------------------------------------------------------------- writing


def refresh_index(client: Any, study_run: Any, keeper: IndexKeeper | None = None) -> list[Any]:
    """Write the study run's index as the trial runs are now; returns those runs.

    `keeper`: the writer's own copy of the index from its last refresh (IndexKeeper), so that
    only the trial runs changed since are read and encoded again."""
    with no_gc_passes():
        if keeper is None:
            runs, stamp = _current(client, study_run, keep=False)
            write_index(client, study_run, runs, stamp)
            return runs
        runs, stamp = keeper.current(client, study_run)
        client.log_text(study_run.info.run_id, keeper.encode(study_run, runs, stamp),
                        tags.TRIAL_INDEX_ARTIFACT)
    return runs


def write_index(client: Any, study_run: Any, runs: list[Any], taken_ms: int) -> None:
    """The index of these trial runs, as they were at `taken_ms`, on the study run.

    Columnar (a list of column names, a list of values per row): ~300 bytes a trial."""
    client.log_text(study_run.info.run_id, IndexKeeper().encode(study_run, runs, taken_ms),
                    tags.TRIAL_INDEX_ARTIFACT)


def _columns(rows: Iterable[TrialDigest]) -> list[str]:
    """run_id, start and end, then every param, metric and tag a row has, each kind's together."""
    return ["run_id", "start_ms", "end_ms"] + sorted(
        {f"p:{k}" for r in rows for k in r.data.params}
        | {f"m:{k}" for r in rows for k in r.data.metrics}
        | {f"t:{k}" for r in rows for k in r.data.tags})


def _encoded_row(row: TrialDigest, columns: list[str]) -> str:
    parts = {"p": row.data.params, "m": row.data.metrics, "t": row.data.tags}
    values = [row.info.run_id, row.info.start_time, row.info.end_time] + [
        parts[c[0]].get(c[2:]) for c in columns[3:]]
    return json.dumps(values, separators=(",", ":"))


class IndexKeeper:
    """The index as its writer last wrote it, kept in memory between the study run's summary
    rewrites while the study runs (the trial callback's, on its writer thread).

    Without it each rewrite read the index file back, parsed it, and encoded every row again:
    O(trials) a rewrite (~1.4 s at 10,000 trials), so the driver's CPU per finished trial grew
    with the study (benchmarks/RESULTS.md, the real study). With it a rewrite reads from MLflow
    only the runs changed since its last one and encodes only their rows; the file written is
    the same. The first rewrite starts from the index file, as any reader does.

    Only the one writer of the index while Tune runs may keep one: an index written by anyone
    else meanwhile would go unseen (resume's drop of forgotten trial runs comes after Tune's
    run, and the last rewrite, after it, reads the file)."""

    # Every write to the study's trial runs while it keeps the index is this process's, in
    # order on the writer thread, stamped by this clock: the margin only covers the clock
    # stepping back a little (CLOCK_MARGIN_MS covers two drivers' clocks, for a first read).
    MARGIN_MS = 5_000

    def __init__(self) -> None:
        self.rows: dict[str, TrialDigest] | None = None  # by run id, as of `taken_ms`
        self.taken_ms = 0
        self._searched: set[str] | None = None
        self._columns: list[str] = []
        self._encoded: dict[str, str] = {}  # run id -> its row in `_columns`' order

    def current(self, client: Any, study_run: Any) -> tuple[list[Any], int]:
        """(every trial run as it is now, the stamp of that): the kept rows, with the runs
        changed since read again (as _current reads an index file)."""
        if self.rows is None:
            runs, stamp = _current(client, study_run, keep=False)
        else:
            stamp = _now_ms()
            by_run: dict[str, Any] = dict(self.rows)
            for run in changed_since(client, study_run, self.taken_ms - self.MARGIN_MS):
                by_run[run.info.run_id] = run
            runs = list(by_run.values())
        return runs, stamp

    def encode(self, study_run: Any, runs: list[Any], taken_ms: int) -> str:
        """The index file's text of these runs; they become the kept rows, as of `taken_ms`.
        Rows the keeper holds already (the same digest object) are not encoded again."""
        if self._searched is None:
            self._searched = {k.removeprefix(tags.SPACE_PARAM) for k in study_run.data.params
                              if k.startswith(tags.SPACE_PARAM)}
        kept = self.rows or {}
        rows = {run.info.run_id: run if isinstance(run, TrialDigest) else digest(run, self._searched)
                for run in runs}
        fresh = [r for run_id, r in rows.items() if kept.get(run_id) is not r]
        columns = _columns(rows.values()) if not self._columns or not _fits(fresh, self._columns) \
            else self._columns
        if columns != self._columns:
            self._columns, self._encoded = columns, {}
        encoded = {run_id: self._encoded.get(run_id) if kept.get(run_id) is r else None
                   for run_id, r in rows.items()}
        self._encoded = {run_id: text or _encoded_row(rows[run_id], columns)
                         for run_id, text in encoded.items()}
        self.rows, self.taken_ms = rows, taken_ms
        head = json.dumps({"format": FORMAT, "study_run_id": study_run.info.run_id,
                           "taken_ms": taken_ms, "columns": columns}, separators=(",", ":"))
        return f'{head[:-1]},"rows":[{",".join(self._encoded.values())}]}}'


def _fits(rows: list[TrialDigest], columns: list[str]) -> bool:
    """Every param, metric and tag of these rows has a column already."""
    have = set(columns)
    return all(f"{kind}:{k}" in have for r in rows
               for kind, part in (("p", r.data.params), ("m", r.data.metrics), ("t", r.data.tags))
               for k in part)


def _keep_index(client: Any, study_run: Any, runs: list[Any], stamp: int) -> None:
    """A study that is not running and has no index (written before there was one) gets one
    from the reader that had to read every run: the next reader does not. Best effort (a
    store this user may only read): the reader's answer does not depend on it."""
    try:
        write_index(client, study_run, runs, stamp)
    except Exception:  # noqa: BLE001, S110 - see above
        pass


@contextlib.contextmanager
def no_gc_passes() -> Iterator[None]:
    """Python's cycle collector paused while a study's trials are read or written: 10,000
    trials are ~1M new objects, and it would walk all of them again every few thousand
    allocations (half of `status`'s time at 10,000 trials, measured; benchmarks/RESULTS.md).
    They hold no cycles to collect; the collector runs again as before afterwards."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _now_ms() -> int:
    return int(time.time() * 1000)
