"""MLflow: one parent run per study, one nested child run per trial.

All writes happen in the driver through `MlflowTrialCallback` (one writer,
safe with SQLite). Runs are found again by tags, so a resumed study goes on
writing the runs it already has instead of creating duplicates.

Tags (the lineage a user follows in the dashboard):
    resnet_search.kind          "study" | "trial"
    resnet_search.study         the study name
    resnet_search.storage_path  (study) where Ray keeps results and checkpoints
    resnet_search.study_file    (study) the path of the study file
    ray.trial_id, ray.node_id, optuna.trial_number, checkpoint  (trial)
    status                      running | completed | pruned | diverged | failed
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from search.config import ConfigError
from search.paths import default_tracking_uri

KIND = "resnet_search.kind"
STUDY = "resnet_search.study"
STORAGE = "resnet_search.storage_path"
STUDY_FILE = "resnet_search.study_file"
TRIAL_ID = "ray.trial_id"
NODE_ID = "ray.node_id"
OPTUNA_NUMBER = "optuna.trial_number"
CHECKPOINT = "checkpoint"
STATUS = "status"
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
TRACKING_TIMEOUT_S = 5


def resolve_tracking_uri(cli_value: str | None, config_value: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else [tracking] uri, else the local store."""
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or config_value or default_tracking_uri()


def check_tracking_reachable(uri: str, timeout: float = TRACKING_TIMEOUT_S) -> None:
    """Fail within seconds (ConfigError) when the tracking store cannot be reached."""
    from search.config import TRACKING_SCHEMES

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
        Path(uri.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)


def redact_url(url: str) -> str:
    """A URL fit to print: any password replaced by ***."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    if ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def client_for(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def get_or_create_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_root)


def find_study_run(client: MlflowClient, name: str):
    """The parent run of a study, searched over all experiments; None if absent."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    runs = client.search_runs(
        experiments, filter_string=f"tags.`{KIND}` = 'study' and tags.`{STUDY}` = '{_quote(name)}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0] if runs else None


def open_study(name: str, tracking_uri: str | None = None):
    """(uri, client, study run) of a study found by name; ConfigError if there is none."""
    uri = resolve_tracking_uri(tracking_uri)
    check_tracking_reachable(uri)
    client = client_for(uri)
    run = find_study_run(client, name)
    if run is None:
        raise ConfigError(f"no study named {name!r} in {uri}; pass --tracking-uri or set "
                          f"MLFLOW_TRACKING_URI to the store the study used")
    return uri, client, run


def trial_runs(client: MlflowClient, study_run) -> list:
    """All trial runs of a study (child runs of its parent run)."""
    return client.search_runs(
        [study_run.info.experiment_id],
        filter_string=f"tags.`{PARENT}` = '{study_run.info.run_id}'",
        max_results=10000,
    )


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def flatten(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(name, value))
        else:
            out[name] = str(value)[:500]
    return out


def create_study_run(
    client: MlflowClient, experiment_id: str, config, storage_path: str, space: dict[str, str]
) -> str:
    """The study's parent run: settings and space as params, the file as an artifact."""
    from dataclasses import asdict

    run = client.create_run(experiment_id, run_name=config.study.name, tags={
        KIND: "study", STUDY: config.study.name, STORAGE: storage_path,
        STUDY_FILE: config.path, STATUS: "running",
    })
    run_id = run.info.run_id
    params = {**flatten("study", asdict(config.study)), **flatten("data", asdict(config.data)),
              **flatten("train", asdict(config.train)),
              **flatten("scheduler", asdict(config.scheduler)),
              **flatten("resources", asdict(config.resources)),
              **{f"space.{k}": v for k, v in space.items()}}
    params.pop("study.optuna_storage", None)  # may hold a database password
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    if config.source:
        client.log_text(run_id, config.source, "study.toml")
    client.log_dict(run_id, space, "space.json")
    return run_id


class MlflowTrialCallback(Callback):
    """Mirror every trial into a nested MLflow run: params, per-epoch metrics, lineage.

    Picklable (Ray saves callbacks with the experiment): the client is rebuilt
    lazily from the tracking URI.
    """

    def __init__(self, tracking_uri: str, study_run_id: str, experiment_id: str, study_name: str,
                 epochs: int, log_checkpoints: bool = True) -> None:
        self.tracking_uri = tracking_uri
        self.study_run_id = study_run_id
        self.experiment_id = experiment_id
        self.study_name = study_name
        self.epochs = epochs
        self.log_checkpoints = log_checkpoints
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_runs"] = {}
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = client_for(self.tracking_uri)
        return self._client

    # ------------------------------------------------------------ runs

    def run_id_for(self, trial) -> str:
        """The trial's run: cached, else found by tag (resumed study), else created."""
        trial_id = trial.trial_id
        if trial_id in self._runs:
            return self._runs[trial_id]
        existing = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT}` = '{self.study_run_id}' and "
                          f"tags.`{TRIAL_ID}` = '{trial_id}'",
            max_results=1,
        )
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run_id = self._create_trial_run(trial)
        self._runs[trial_id] = run_id
        return run_id

    def _create_trial_run(self, trial) -> str:
        config = trial.config
        number = config.get("optuna_trial_number", -1)
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{number:03d}-{trial.trial_id}",
                                     tags={
            PARENT: self.study_run_id, KIND: "trial", STUDY: self.study_name,
            TRIAL_ID: trial.trial_id, OPTUNA_NUMBER: str(number), STATUS: "running",
        })
        params = {**flatten("model", config.get("model", {})),
                  **flatten("train", config.get("train", {}))}
        self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
        return run.info.run_id

    # ------------------------------------------------------------ Tune hooks

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.run_id_for(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        run_id = self.run_id_for(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in result.items()
                   if k in TRIAL_METRICS and isinstance(v, (int, float)) and math.isfinite(v)]
        tags = []
        if result.get("node_id"):
            tags.append(RunTag(NODE_ID, str(result["node_id"])))
        if result.get("hostname"):
            tags.append(RunTag("hostname", str(result["hostname"])))
        if result.get("gpu_ids"):
            tags.append(RunTag("ray.gpu_ids", str(result["gpu_ids"])))
        if trial.checkpoint is not None:
            tags.append(RunTag(CHECKPOINT, str(trial.checkpoint.path)))
        self.client.log_batch(run_id, metrics=metrics, tags=tags)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id = self.run_id_for(trial)
        status = trial_outcome(trial.last_result or {}, self.epochs)
        tags = [RunTag(STATUS, status)]
        if trial.checkpoint is not None:
            tags.append(RunTag(CHECKPOINT, str(trial.checkpoint.path)))
            if self.log_checkpoints:
                self._log_checkpoint(run_id, trial.checkpoint)
        self.client.log_batch(run_id, tags=tags)
        self.client.set_terminated(run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run_id = self.run_id_for(trial)
        self.client.set_tag(run_id, STATUS, "failed")
        if trial.error_file:
            self.client.set_tag(run_id, "error_file", str(trial.error_file))
        self.client.set_terminated(run_id, "FAILED")

    def _log_checkpoint(self, run_id: str, checkpoint) -> None:
        with tempfile.TemporaryDirectory() as directory:
            local = checkpoint.to_directory(os.path.join(directory, "checkpoint"))
            self.client.log_artifacts(run_id, local, "checkpoint")


TRIAL_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "best_val_accuracy",
                 "lr", "epoch_seconds", "images_per_second", "epoch", "diverged",
                 "resumed_from_epoch", "world_size")


def trial_outcome(last_result: dict[str, Any], epochs: int) -> str:
    """completed, pruned (stopped early by the scheduler) or diverged."""
    if last_result.get("diverged"):
        return "diverged"
    if int(last_result.get("epoch", 0)) < epochs:
        return "pruned"
    return "completed"
