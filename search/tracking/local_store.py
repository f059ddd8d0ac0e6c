"""A local SQLite tracking store read without MLflow: the reads of `status`, `best`, `studies`
and `load_best`, answered by SQL on MLflow's own tables.

MLflow's import costs 4-5 s on a 2-core machine (pandas, fastapi, pydantic beneath it): most
of what those commands took on a study of 10,000 trials (benchmarks/RESULTS.md). On the store
this platform makes by default (a `sqlite:///` file, artifacts in a local folder) the few
calls the readers make are plain SQL and file reads. `LocalClient` answers exactly those calls
of MlflowClient, with MLflow's semantics (active runs only, its default order, NaN metrics, a
run's name from its tag), so the readers themselves (search.tracking.records, trial_index,
store.study_champion) run unchanged: one code decides what a study is, whichever client reads.

It reads what it knows and refuses the rest (`Unsupported`): another store (a server,
PostgreSQL), a schema revision it was not checked against (another MLflow version), MLflow's
workspaces, artifacts that are not a local folder, a search filter or argument of a form the
readers do not write. `first_of` then asks MLflow instead: the answer is MLflow's either way,
only its cost differs. RESNET_SEARCH_READ_THROUGH_MLFLOW=1 sends every read through MLflow.

No MLflow, Ray or torch import here (tests/test_layering.py).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from search.studyfile.paths import resolve_tracking_uri
from search.tracking.store import find_study_run, sqlite_path
from search.tracking.trial_index import RunData  # a run's params, metrics and tags, as MLflow's

T = TypeVar("T")

THROUGH_MLFLOW = "RESNET_SEARCH_READ_THROUGH_MLFLOW"
# The alembic revisions of MLflow's schema this reader was checked against (tests/search/
# tracking/test_local_store.py compares its answers with MLflow's on stores of this revision).
KNOWN_SCHEMAS = frozenset({
    "dc11669786a5",  # mlflow 3.17
})
ACTIVE = "active"
DELETED_VERSION = "Deleted_Internal"  # MLflow's stage of a deleted model version
DEFAULT_WORKSPACE = "default"
RUN_NAME_TAG = "mlflow.runName"
# Ids per `IN (...)` list: well under SQLite's limit on a statement's variables.
IDS_PER_QUERY = 900
# MLflow's page sizes where a caller names none (its client's defaults).
RUNS_PER_PAGE = 1000
EXPERIMENTS_PER_PAGE = 1000
VERSIONS_PER_PAGE = 10_000


class Unsupported(Exception):
    """A read this module does not answer as MLflow would: the caller asks MLflow instead."""


def first_of(local: Callable[[], T], mlflow: Callable[[], T]) -> T:
    """`local()`'s answer, or `mlflow()`'s where the local reader cannot give it."""
    try:
        return local()
    except Unsupported:
        return mlflow()


# ---------------------------------------------------------------- what a search returns


@dataclass
class RunInfo:
    run_id: str
    run_name: str | None
    experiment_id: str
    status: str
    start_time: int | None
    end_time: int | None
    lifecycle_stage: str
    artifact_uri: str | None


@dataclass
class Run:
    """An MLflow run as the readers use it: `.info` and `.data`."""

    info: RunInfo
    data: RunData


@dataclass
class Experiment:
    experiment_id: str
    name: str
    artifact_location: str | None


@dataclass
class ModelVersion:
    name: str
    version: int
    run_id: str | None
    tags: dict[str, str]


@dataclass
class FileInfo:
    path: str
    is_dir: bool
    file_size: int | None


class Page(list):
    """One page of results and the token of the next (None: the last page), as MLflow pages."""

    token: str | None = None


def _page(items: Iterable[Any], offset: int, size: int) -> Page:
    """A page of up to `size` items: `items` holds up to one more when there is a next page."""
    items = list(items)
    page = Page(items[:size])
    page.token = str(offset + size) if len(items) > size else None
    return page


def _offset(page_token: str | None) -> int:
    """Where a page starts: 0, or the offset a token of this reader's names."""
    if not page_token:
        return 0
    if not page_token.isdigit():
        raise Unsupported(f"page token {page_token!r}")
    return int(page_token)


# ---------------------------------------------------------------- the client


class LocalClient:
    """The calls of MlflowClient that the readers make, on a local SQLite store."""

    def __init__(self, uri: str, connection: sqlite3.Connection) -> None:
        self.uri = uri
        self._db = connection

    @classmethod
    def open(cls, uri: str) -> LocalClient:
        """The store of a `sqlite:///` URI, read-only; Unsupported where it cannot be read
        as MLflow reads it (and for a missing file: MLflow's path says what is wrong)."""
        if os.environ.get(THROUGH_MLFLOW, "").lower() in ("1", "true", "yes"):
            raise Unsupported(f"{THROUGH_MLFLOW} is set")
        if os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").lower() in ("1", "true"):
            raise Unsupported("MLflow workspaces")
        if not uri.startswith("sqlite:///"):
            raise Unsupported(f"not a local SQLite store: {uri.split(':', 1)[0]}")
        database = sqlite_path(uri)
        if not database.is_file():
            raise Unsupported(f"no file {database}")
        try:
            connection = sqlite3.connect(f"{database.absolute().as_uri()}?mode=ro", uri=True,
                                         timeout=30)
            revision = connection.execute("SELECT version_num FROM alembic_version").fetchall()
            foreign = connection.execute(
                "SELECT 1 FROM experiments WHERE workspace != ? LIMIT 1", (DEFAULT_WORKSPACE,)
            ).fetchall()
        except sqlite3.Error as error:
            raise Unsupported(f"{database}: {error}") from None
        revisions = {r for (r,) in revision}
        if len(revisions) != 1 or not revisions <= KNOWN_SCHEMAS:
            connection.close()
            raise Unsupported(f"schema revision {revision} is not one of {sorted(KNOWN_SCHEMAS)}")
        if foreign:
            connection.close()
            raise Unsupported("experiments outside MLflow's default workspace")
        return cls(uri, connection)

    def close(self) -> None:
        self._db.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        # A call of MlflowClient this reader does not answer: MLflow answers it.
        raise Unsupported(f"MlflowClient.{name}")

    # ------------------------------------------------------------ experiments and runs

    def search_experiments(self, max_results: int | None = None, page_token: str | None = None,
                           **unknown: Any) -> Page:
        """The active experiments (what `store.all_experiment_ids` asks for), by id."""
        _no_more(unknown)
        size, offset = max_results or EXPERIMENTS_PER_PAGE, _offset(page_token)
        rows = self._query("SELECT experiment_id, name, artifact_location FROM experiments "
                           "WHERE lifecycle_stage = ? ORDER BY experiment_id LIMIT ? OFFSET ?",
                           (ACTIVE, size + 1, offset))
        return _page((Experiment(str(i), name, location) for i, name, location in rows),
                     offset, size)

    def search_runs(self, experiment_ids: list[str], filter_string: str = "",
                    max_results: int = RUNS_PER_PAGE, order_by: list[str] | None = None,
                    page_token: str | None = None, **unknown: Any) -> Page:
        """The active runs of the experiments that match the filter, in MLflow's order: by
        start time, newest first (runs without one last), then by run id."""
        _no_more(unknown)
        if order_by not in (None, [], ["attributes.start_time DESC"]):
            raise Unsupported(f"order_by={order_by!r}")
        ids = [_experiment_id(e) for e in experiment_ids]
        where, values = _filter_sql(filter_string)
        offset = _offset(page_token)
        rows = self._query(
            "SELECT run_uuid, name, experiment_id, status, start_time, end_time, "
            "lifecycle_stage, artifact_uri FROM runs "
            f"WHERE experiment_id IN ({_marks(ids)}) AND lifecycle_stage = ?{where} "
            "ORDER BY start_time IS NULL, start_time DESC, run_uuid LIMIT ? OFFSET ?",
            (*ids, ACTIVE, *values, max_results + 1, offset))
        return _page(self._runs(rows), offset, max_results)

    def get_run(self, run_id: str) -> Run:
        rows = self._query("SELECT run_uuid, name, experiment_id, status, start_time, end_time, "
                           "lifecycle_stage, artifact_uri FROM runs WHERE run_uuid = ?", (run_id,))
        if not rows:
            raise Unsupported(f"no run {run_id}")  # MLflow's own error says so
        return self._runs(rows)[0]

    def _runs(self, rows: list[tuple]) -> list[Run]:
        runs = {row[0]: Run(RunInfo(row[0], row[1], str(row[2]), *row[3:]), RunData())
                for row in rows}
        for run_id, key, value in self._of_runs("SELECT run_uuid, key, value FROM tags", runs):
            runs[run_id].data.tags[key] = value
        for run_id, key, value in self._of_runs("SELECT run_uuid, key, value FROM params", runs):
            runs[run_id].data.params[key] = value
        for run_id, key, value, is_nan in self._of_runs(
                "SELECT run_uuid, key, value, is_nan FROM latest_metrics", runs):
            runs[run_id].data.metrics[key] = float("nan") if is_nan else value
        for run in runs.values():
            if not run.info.run_name:  # as MLflow names a run: its name, else the name tag
                run.info.run_name = run.data.tags.get(RUN_NAME_TAG) or run.info.run_name
        return list(runs.values())

    def _of_runs(self, select: str, runs: Iterable[str]) -> Iterator[tuple]:
        ids = list(runs)
        for start in range(0, len(ids), IDS_PER_QUERY):
            chunk = ids[start:start + IDS_PER_QUERY]
            yield from self._query(f"{select} WHERE run_uuid IN ({_marks(chunk)})", chunk)

    # ------------------------------------------------------------ artifacts

    def _artifact_folder(self, run_id: str) -> Path:
        rows = self._query("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,))
        if not rows or not rows[0][0]:
            raise Unsupported(f"run {run_id} has no artifact location")
        return local_path(rows[0][0])

    def download_artifacts(self, run_id: str, path: str, dst_path: str | None = None) -> str:
        """A run's artifact file copied into `dst_path` (a temporary folder if None)."""
        source = self._artifact_folder(run_id) / path
        if not source.is_file():
            raise FileNotFoundError(f"run {run_id} has no artifact {path}")
        target = Path(dst_path or tempfile.mkdtemp(prefix="resnet-search-artifact-")) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return str(target)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[FileInfo]:
        folder = self._artifact_folder(run_id)
        listed = folder / path if path else folder
        if not listed.is_dir():
            return []
        return [FileInfo(str(p.relative_to(folder)), p.is_dir(),
                         None if p.is_dir() else p.stat().st_size) for p in sorted(listed.iterdir())]

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """A text artifact written into the run's local artifact folder, as MLflow's local
        artifact store writes it (the trial index a reader keeps for a study that has none);
        replaced whole, so a concurrent reader sees the old file or the new one."""
        target = self._artifact_folder(run_id) / artifact_file
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=target.parent,
                                         suffix=".part", delete=False) as handle:
            handle.write(text)
        os.replace(handle.name, target)

    # ------------------------------------------------------------ the model registry

    def search_model_versions(self, filter_string: str, max_results: int = VERSIONS_PER_PAGE,
                              order_by: list[str] | None = None, page_token: str | None = None,
                              **unknown: Any) -> Page:
        """The versions of one registered model (`name = '...'`, what study_champion asks),
        newest first."""
        _no_more(unknown)
        match = re.fullmatch(r"\s*name\s*=\s*'([^'\\]*)'\s*", filter_string or "")
        if match is None or order_by:
            raise Unsupported(f"search_model_versions({filter_string!r}, order_by={order_by!r})")
        name, offset = match.group(1), _offset(page_token)
        versions = {version: ModelVersion(name, version, run_id, {}) for version, run_id
                    in self._query("SELECT version, run_id FROM model_versions WHERE workspace = ? "
                                   "AND name = ? AND current_stage != ?",
                                   (DEFAULT_WORKSPACE, name, DELETED_VERSION))}
        for version, key, value in self._query(
                "SELECT version, key, value FROM model_version_tags WHERE workspace = ? AND name = ?",
                (DEFAULT_WORKSPACE, name)):
            if version in versions:
                versions[version].tags[key] = value
        newest = sorted(versions.values(), key=lambda v: -v.version)
        return _page(newest[offset:offset + max_results + 1], offset, max_results)

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        version = self._alias_version(name, alias)
        if version is None:
            raise LookupError(f"registered model {name!r} has no alias {alias!r}")
        return ModelVersion(name, version, None, {})

    def _alias_version(self, name: str, alias: str) -> int | None:
        if alias.lower() == "latest":  # MLflow's own meaning of that alias
            raise Unsupported("the alias 'latest'")
        rows = self._query(
            "SELECT a.version FROM registered_model_aliases a JOIN model_versions v "
            "ON v.workspace = a.workspace AND v.name = a.name AND v.version = a.version "
            "WHERE a.workspace = ? AND a.name = ? AND a.alias = ? AND v.current_stage != ?",
            (DEFAULT_WORKSPACE, name, alias, DELETED_VERSION))
        return rows[0][0] if rows else None

    def model_folder(self, model_uri: str) -> Path:
        """The local folder a registered model's files are in, for `models:/NAME/VERSION` or
        `models:/NAME@ALIAS`, as MLflow resolves it: the version's storage location, else its
        source. Unsupported for other URIs, and where that is not a local folder."""
        match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([^/]+))/?", model_uri)
        if match is None:
            raise Unsupported(f"model URI {model_uri}")
        name, version, alias = match.groups()
        if alias is not None:
            version = self._alias_version(name, alias)
            if version is None:
                raise Unsupported(f"{model_uri}: no such alias")  # MLflow's error says so
        rows = self._query("SELECT storage_location, source FROM model_versions WHERE "
                           "workspace = ? AND name = ? AND version = ? AND current_stage != ?",
                           (DEFAULT_WORKSPACE, name, int(version), DELETED_VERSION))
        if not rows:
            raise Unsupported(f"{model_uri}: no such version")
        storage, source = rows[0]
        return local_path(storage or source or "")

    def _query(self, sql: str, values: Iterable[Any] = ()) -> list[tuple]:
        try:
            return self._db.execute(sql, tuple(values)).fetchall()
        except sqlite3.Error as error:  # a table of another shape: MLflow knows it
            raise Unsupported(f"{error}") from None


def open_study(name: str, tracking_uri: str | None = None) -> tuple[str, LocalClient, Run]:
    """store.open_study's (uri, client, study run), read locally; Unsupported where the store
    is not one LocalClient reads, or holds no such study (MLflow's path says so in its words)."""
    uri = resolve_tracking_uri(tracking_uri)
    client = LocalClient.open(uri)
    run = find_study_run(client, name)
    if run is None:
        client.close()
        raise Unsupported(f"no study {name!r}")
    return uri, client, run


# ---------------------------------------------------------------- filters and paths

# The filters the readers write: a tag equal to a value, a start or end time at or after a
# moment, joined by `and`. A value with a quote or a backslash in it is left to MLflow.
_CLAUSE = re.compile(r"\s*(?:tags\.`(?P<tag>[^`]+)`\s*=\s*'(?P<value>[^'\\]*)'"
                     r"|attributes\.(?P<time>start_time|end_time)\s*>=\s*(?P<since>-?\d+))\s*")
_AND = re.compile(r"and\b", re.IGNORECASE)


def _filter_sql(filter_string: str | None) -> tuple[str, list[Any]]:
    """(" AND ..." conditions on `runs`, their values) of a search filter; Unsupported for
    any filter but the readers' own."""
    text, position = filter_string or "", 0
    where, values = "", []
    while text.strip():
        clause = _CLAUSE.match(text, position)
        if clause is None:
            raise Unsupported(f"filter {filter_string!r}")
        if clause["tag"] is not None:
            where += " AND run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)"
            values += [clause["tag"], clause["value"]]
        else:
            where += f" AND {clause['time']} >= ?"
            values.append(int(clause["since"]))
        position = clause.end()
        if position == len(text):
            break
        joined = _AND.match(text, position)
        if joined is None:
            raise Unsupported(f"filter {filter_string!r}")
        position = joined.end()
    return where, values


def local_path(uri: str) -> Path:
    """The folder of a `file://` URI or an absolute path; Unsupported for anything else (a
    server's artifacts, cloud storage, a path relative to some working directory)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri.startswith("/"):
        return Path(uri)
    raise Unsupported(f"artifacts at {uri!r} are not a local folder")


def _experiment_id(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Unsupported(f"experiment id {value!r}") from None


def _marks(values: list[Any]) -> str:
    return ", ".join("?" * len(values))


def _no_more(unknown: dict[str, Any]) -> None:
    """An argument this reader does not know (a view type, an experiment filter) is MLflow's
    to answer."""
    if unknown:
        raise Unsupported(f"arguments {sorted(unknown)}")
