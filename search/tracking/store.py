"""MLflow: where a study's runs live, and how they are found again.

One parent run per study, one nested child run per trial. All writes during a
study happen in the driver through `search.tracking.callback.MlflowTrialCallback` (one
writer, safe with SQLite). Runs are found again by the tags of `search.tracking.tags`, so a
resumed study goes on writing the runs it already has instead of creating duplicates.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.studyfile.config import ConfigError, redact_url, study_params
from search.studyfile.paths import home_hint, resolve_tracking_uri
from search.tracking import ranking, tags

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# MLflow 3 opens an experiment of unknown kind on its GenAI "Traces" page; this kind makes
# the dashboard open on the training runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
TRACKING_TIMEOUT_S = 5
# Runs asked of MLflow per request. A study holds any number of trials: every search pages
# through all of them (MLflow refuses a page over 50,000).
PAGE_SIZE = 10_000


def check_tracking_reachable(uri: str, timeout: float = TRACKING_TIMEOUT_S) -> None:
    """Fail within seconds (ConfigError) when the tracking store cannot be reached."""
    from search.studyfile.config import TRACKING_SCHEMES

    if not uri.startswith(TRACKING_SCHEMES):
        raise ConfigError(f"tracking URI {redact_url(uri)!r} is not supported; use "
                          f"http(s)://host:port, sqlite:///path, postgresql://... or mysql://...")
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        except requests.RequestException as error:
            raise ConfigError(f"tracking server {uri} is unreachable "
                              f"({type(error).__name__}); start it or pass --tracking-uri") from None
        if response.status_code >= 400:
            raise ConfigError(f"tracking server {uri} answered HTTP {response.status_code} "
                              f"on /health; check the URI and credentials")
    elif uri.startswith(("postgresql", "mysql")):
        import sqlalchemy

        engine = None
        try:
            engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": int(timeout)})
            with engine.connect():
                pass
        except Exception as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(f"tracking database {redact_url(uri)} is unreachable: {first}") from None
        finally:
            if engine is not None:
                engine.dispose()
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"tracking store {uri}: cannot create its folder {folder} "
                              f"({error.strerror or error}){home_hint(folder)}") from None


# SQLite stores this process has seen initialised (their schema exists): no lock needed again.
_READY_STORES: set[str] = set()


def client_for(uri: str) -> MlflowClient:
    """A client of the store; a new local SQLite store is created once, under a file lock.

    The first client of a fresh SQLite file runs MLflow's schema migrations; two processes
    doing that at once (a `run` and a `status`, two tests) race, and one dies with an alembic
    error. `<db>.lock` serialises the creation: the first process creates the schema, the
    others wait for it and find it there.
    """
    # Imported here: the local reader (search.tracking.local_store) reads a SQLite store
    # through this module's functions without MLflow's import (seconds).
    from mlflow.tracking import MlflowClient

    if not uri.startswith("sqlite:///") or uri in _READY_STORES:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    database = sqlite_path(uri)
    with _store_lock(database):
        fresh = not database.exists() or database.stat().st_size == 0
        template = _schema_template() if fresh else None
        if template is not None and template.is_file():
            shutil.copyfile(template, database)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # creates the tracking schema
        client.search_registered_models(max_results=1)  # and checks the registry's tables
        if template is not None and not template.is_file():
            _save_schema_template(database, template)
    _READY_STORES.add(uri)
    return client


def _schema_template() -> Path | None:
    """An empty store with MLflow's schema, for this MLflow version (the user's cache).

    MLflow builds a new SQLite store by running its ~60 schema migrations (1-2 s on a
    2-core CPU); every new home, and every test's store, paid it. A copy of an empty store
    made by the same MLflow is the same database: MLflow checks its schema revision when
    it opens it, and adds the Default experiment (with this store's artifact root).
    """
    import mlflow

    try:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:  # no home directory (a bare container user): a store made from scratch
        return None
    return cache / "resnet-search" / f"mlflow-{mlflow.__version__}-empty.db"


def _save_schema_template(database: Path, template: Path) -> None:
    """Keep a just-created store, emptied of its Default experiment, as the template.
    Best effort: a store without a template is only slower to create."""
    import sqlite3
    import tempfile

    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=template.parent, suffix=".db", delete=False) as handle:
            partial = Path(handle.name)
        try:
            with contextlib.closing(sqlite3.connect(database)) as source, \
                    contextlib.closing(sqlite3.connect(partial)) as copy:
                source.backup(copy)
                if copy.execute("SELECT COUNT(*) FROM runs").fetchone()[0]:
                    return  # not an empty store after all (another process wrote to it)
                copy.execute("DELETE FROM experiment_tags")
                copy.execute("DELETE FROM experiments")
                copy.commit()
            os.replace(partial, template)  # atomic: readers see no template or a whole one
        finally:
            partial.unlink(missing_ok=True)
    except (OSError, sqlite3.Error):
        pass


def sqlite_path(uri: str) -> Path:
    """The database file of a `sqlite:///path[?options]` URI."""
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).expanduser()


@contextlib.contextmanager
def _store_lock(database: Path) -> Iterator[None]:
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, even on a crash
        yield


def get_or_create_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_root,
                                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


def all_pages(search: Callable[..., Any], page_size: int = PAGE_SIZE) -> list:
    """Every result of an MLflow search, page after page: `search(max_results=, page_token=)`
    answers one page (a PagedList with its next token)."""
    results: list = []
    token = None
    while True:
        page = search(max_results=page_size, page_token=token)
        results.extend(page)
        token = page.token
        if not token:
            return results


def all_experiment_ids(client: MlflowClient) -> list[str]:
    """Every active experiment of the store (MLflow answers 1,000 per request)."""
    return [e.experiment_id for e in all_pages(client.search_experiments, 1000)]


def all_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str,
             order_by: list[str] | None = None) -> list:
    """Every run of the experiments that matches the filter, however many there are."""
    return all_pages(lambda **page: client.search_runs(
        experiment_ids, filter_string=filter_string, order_by=order_by, **page))


def find_study_run(client: MlflowClient, name: str):
    """The parent run of a study, searched over all experiments; None if absent."""
    experiments = all_experiment_ids(client)
    if not experiments:
        return None
    runs = client.search_runs(
        experiments, filter_string=f"tags.`{tags.KIND}` = '{tags.KIND_STUDY}' and "
                      f"tags.`{tags.STUDY}` = '{_quote(name)}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0] if runs else None


def open_study(name: str, tracking_uri: str | None = None):
    """(uri, client, study run) of a study found by name; ConfigError if there is none."""
    uri = resolve_tracking_uri(tracking_uri)
    missing = ConfigError(f"no study named {name!r} in {uri}; pass --tracking-uri or set "
                          f"MLFLOW_TRACKING_URI to the store the study used")
    if uri.startswith("sqlite:///") and not sqlite_path(uri).is_file():
        raise missing  # and leave no empty store behind
    check_tracking_reachable(uri)
    client = client_for(uri)
    run = find_study_run(client, name)
    if run is None:
        raise missing
    return uri, client, run


def study_champion(client: MlflowClient, study_run) -> dict[str, Any] | None:
    """The registered version this study produced, and whether the alias still points at it:
    {"model", "version", "uri" (models:/NAME/VERSION), "is_alias"}; None before registration.

    Several studies may share one registered model (each `make demo`): the alias
    `champion` follows the newest, so a study's own champion is its version, not the alias.
    """
    registered = study_run.data.tags.get(tags.REGISTERED_MODEL)
    if not registered:
        return None
    study = study_run.data.tags.get(tags.STUDY, study_run.info.run_name)
    try:
        versions = all_pages(lambda **page: client.search_model_versions(
            f"name = '{_quote(registered)}'", **page))
    except Exception:  # no such registered model: the study never reached registration
        return None
    mine = [v for v in versions
            if v.run_id == study_run.info.run_id or (v.tags or {}).get("study") == study]
    if not mine:
        return None
    version = max(mine, key=lambda v: int(v.version))
    try:  # search results carry no aliases: ask for the alias itself
        current = client.get_model_version_by_alias(registered, tags.CHAMPION_ALIAS).version
    except Exception:
        current = None
    return {"model": registered, "version": int(version.version),
            "uri": f"models:/{registered}/{version.version}",
            "is_alias": str(current) == str(version.version)}


def registered_champion(client: MlflowClient, study_run, name: str) -> dict[str, Any]:
    """study_champion's answer for a study that must have one (load_best, predict, serve);
    ConfigError while its champion is not chosen yet."""
    champion = study_champion(client, study_run)
    if champion is None:
        raise ConfigError(f"study {name!r} has no registered champion yet (it is chosen when "
                          f"the study ends; see `resnet-search status {name}`)")
    return champion


PROGRESS_BAR_VARIABLE = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextlib.contextmanager
def no_download_bar() -> Iterator[None]:
    """MLflow draws a progress bar on stderr for every download unless its variable says no:
    no output of a library call such as load_best. Off for this call only, and only where
    the caller did not set the variable; the process's environment is then as it was."""
    if PROGRESS_BAR_VARIABLE in os.environ:
        yield
        return
    os.environ[PROGRESS_BAR_VARIABLE] = "false"
    try:
        yield
    finally:
        os.environ.pop(PROGRESS_BAR_VARIABLE, None)


def champion_class_scores(client: MlflowClient, study_run_id: str) -> dict[str, Any] | None:
    """The champion's test split by class ({"class_names", "confusion"}), once it is scored."""
    artifact = tags.CLASS_SCORES_ARTIFACT
    listed = client.list_artifacts(study_run_id, artifact.split("/")[0])
    if not any(f.path == artifact for f in listed):
        return None
    with tempfile.TemporaryDirectory(prefix="resnet-search-classes-") as scratch, no_download_bar():
        return json.loads(Path(client.download_artifacts(study_run_id, artifact, scratch))
                          .read_text())


def trial_runs(client: MlflowClient, study_run) -> list:
    """All trial runs of a study (child runs of its parent run)."""
    return all_runs(client, [study_run.info.experiment_id],
                    f"tags.`{tags.PARENT}` = '{study_run.info.run_id}'")


def trial_run(client: MlflowClient, study_run_id: str, experiment_id: str, trial_id: str):
    """The run of one Ray trial of a study; None if it has none yet."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{tags.PARENT}` = '{study_run_id}' and "
                      f"tags.`{tags.TRIAL_ID}` = '{_quote(trial_id)}'",
        max_results=1,
    )
    return runs[0] if runs else None


def trial_score(run, metric: str) -> ranking.TrialScore:
    """A trial run as the ranking sees it (from the summary metrics the callback logs)."""
    run_tags, metrics = run.data.tags, run.data.metrics
    best = ranking.epoch_from_summary(metrics, metric)
    if best is None and metric == "val_accuracy":  # runs logged before the summary existed
        best = ranking.epoch_from_summary(metrics, "best_val_accuracy")
    return ranking.TrialScore(
        trial_id=run_tags.get(tags.TRIAL_ID, run.info.run_id),
        number=int(run_tags.get(tags.OPTUNA_NUMBER, -1)),
        status=run_tags.get(tags.STATUS, "unknown"),
        best=best,
        feasible=run_tags.get(tags.FEASIBLE, "true") == "true",
    )


def study_objective(study_run) -> tuple[str, str]:
    """(metric, mode) the study ranks by, as its parameters recorded them."""
    params = study_run.data.params
    metric = params.get(tags.STUDY_PARAM + "metric", "val_accuracy")
    return metric, ranking.direction(metric, params.get(tags.STUDY_PARAM + "mode"))


def ranked_trial_runs(client: MlflowClient, study_run) -> list[tuple[ranking.TrialScore, Any]]:
    """(score, run) of every trial of a study, best first, from every trial run read whole
    (the readers go through search.tracking.trial_index, which reads far less)."""
    return rank_runs(study_run, trial_runs(client, study_run))


def rank_runs(study_run, runs: list) -> list[tuple[ranking.TrialScore, Any]]:
    """(score, run) of these trial runs, best first: THE ranking every command shows. `runs`:
    MLflow runs, or the trial index's digests of them (the same fields)."""
    metric, mode = study_objective(study_run)
    scored = {}
    for run in runs:
        score = trial_score(run, metric)
        scored[score.trial_id] = (score, run)
    return [scored[s.trial_id] for s in ranking.rank([s for s, _ in scored.values()], mode)]


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def create_study_run(
    client: MlflowClient, experiment_id: str, config, storage_path: str, space: dict[str, str]
) -> str:
    """The study's parent run: settings and space as params, the file as an artifact."""
    from mlflow.entities import Param

    run = client.create_run(experiment_id, run_name=config.study.name, tags={
        tags.KIND: tags.KIND_STUDY, tags.STUDY: config.study.name, tags.STORAGE: storage_path,
        tags.STUDY_FILE: config.path, tags.STATUS: tags.RUNNING,
        tags.REGISTERED_MODEL: config.registered_model,
    })
    run_id = run.info.run_id
    params = {**study_params(config), **{f"{tags.SPACE_PARAM}{k}": v for k, v in space.items()}}
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    if config.source:
        client.log_text(run_id, config.source, "study.toml")
    client.log_dict(run_id, space, "space.json")
    return run_id
