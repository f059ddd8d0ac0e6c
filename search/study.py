"""Run, resume and finish a study: Tuner assembly, Ray start-up, champion registration.

    run_study(config)      validate resources and tracking, start Ray, fit, register the champion
    resume_study(name)     find the study through the tracking store, Tuner.restore, fit, register
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from search.config import ConfigError, StudyConfig, parse_study
from search.paths import default_artifact_root, default_storage_path

CHAMPION_ALIAS = "champion"


class StudyAlreadyCompleted(Exception):
    """`resume` of a study that has nothing left to do."""

    def __init__(self, name: str, registered_model: str | None) -> None:
        super().__init__(f"study {name} is already completed; its champion is "
                         f"models:/{registered_model}@champion (see `resnet-search best {name}`)")


@dataclass
class StudyOutcome:
    name: str
    tracking_uri: str
    study_run_id: str
    best: dict[str, Any]
    registered_model: str | None
    model_version: str | None
    test_accuracy: float | None
    trials: int


# ---------------------------------------------------------------- preparation


def absolute_paths(config: StudyConfig, base: Path | None = None) -> StudyConfig:
    """Trials run in other directories (and on other nodes): make paths absolute now."""
    base = base or Path.cwd()
    root = str((base / Path(config.data.root).expanduser()).resolve())
    storage = config.storage.path or default_storage_path()
    if "://" not in storage:
        storage = str((base / Path(storage).expanduser()).resolve())
    return replace(config, data=replace(config.data, root=root),
                   storage=replace(config.storage, path=storage))


def prepare_data(config: StudyConfig) -> None:
    """Check (or download) the dataset once in the driver, before any trial starts."""
    from resnet_core.data import DataConfig, DataConfigError, load_data

    data = config.data
    try:
        load_data(DataConfig(dataset=data.dataset, root=data.root, download=data.download,
                             val_size=data.val_size, subset=data.subset, augment=data.augment))
    except DataConfigError as error:
        raise ConfigError(f"{Path(config.path).name or 'study'}: [data] {error}") from None


def start_ray(address: str | None) -> None:
    """Join --address / $RAY_ADDRESS, or start a private local Ray (dashboard on localhost)."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return
    runtime_env = {"env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning"}}
    if address:
        try:
            ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
        except ConnectionError as error:
            raise ConfigError(f"--address {address}: cannot connect to a Ray cluster "
                              f"({str(error).splitlines()[0]})") from None
    else:
        # The dashboard has no authentication: localhost unless the user opens it up.
        dashboard_host = os.environ.get("RESNET_SEARCH_DASHBOARD_HOST", "127.0.0.1")
        ray.init(dashboard_host=dashboard_host, log_to_driver=False, runtime_env=runtime_env,
                 configure_logging=True, logging_level="WARNING")


def check_resources(config: StudyConfig) -> None:
    """Resources a trial needs must exist somewhere: an error now, never a study that waits."""
    import ray

    from search.resources import trial_resources

    if config.resources.wait_for_autoscaler:
        return
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    need = trial_resources(config)
    total_cpu = sum(n.get("CPU", 0) for n in nodes)
    total_gpu = sum(n.get("GPU", 0) for n in nodes)
    max_node_cpu = max((n.get("CPU", 0) for n in nodes), default=0)
    max_node_gpu = max((n.get("GPU", 0) for n in nodes), default=0)
    if need.total_cpu > total_cpu + 1e-9:
        raise ConfigError(f"[resources] a trial needs {need.total_cpu:g} CPUs but the Ray cluster "
                          f"has {total_cpu:g}; lower cpus_per_trial/workers_per_trial or add nodes "
                          f"(set wait_for_autoscaler = true to wait for an autoscaler)")
    if need.per_bundle_cpu > max_node_cpu + 1e-9:
        raise ConfigError(f"[resources] cpus_per_trial needs {need.per_bundle_cpu:g} CPUs on one "
                          f"node but the largest node has {max_node_cpu:g}")
    if need.total_gpu > total_gpu + 1e-9 or need.per_bundle_gpu > max_node_gpu + 1e-9:
        raise ConfigError(f"[resources] gpus_per_trial={config.resources.gpus_per_trial} needs "
                          f"{need.total_gpu:g} GPUs but the Ray cluster has {total_gpu:g}; use "
                          f"gpus_per_trial = 0 on CPU-only machines")


def check_storage_shared(storage_path: str) -> None:
    """On a multi-node cluster a local results folder must be visible to every node."""
    import ray

    from search.resources import storage_visible_on_all_nodes

    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) <= 1 or "://" in storage_path:
        return
    missing = storage_visible_on_all_nodes(storage_path)
    if missing:
        raise ConfigError(f"[storage] path {storage_path} is not shared: node(s) "
                          f"{', '.join(missing)} cannot see it; use a shared file system (NFS) "
                          f"or an object store URI (s3://, gs://) visible to all nodes")


# ---------------------------------------------------------------- the Tuner


def progress_table(config: StudyConfig):
    """The live trial table: status, the sampled architecture and recipe, the metric."""
    from ray.tune import CLIReporter

    # The classic reporter honours our columns; Ray's newer output prints whole configs.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    return CLIReporter(
        parameter_columns={"model/family": "family", "model/depth": "depth",
                           "model/width": "k", "model/dropout": "dropout",
                           "train/optimizer": "optimizer", "train/lr": "lr"},
        metric_columns={"epoch": "epoch", "val_accuracy": "val acc",
                        "best_val_accuracy": "best val acc"},
        max_report_frequency=15, sort_by_metric=True, max_progress_rows=25,
        max_column_length=14,
    )


def concurrent_trial_capacity(config: StudyConfig) -> int:
    """How many trials the cluster's CPUs and GPUs can run side by side."""
    import math

    import ray

    from search.resources import trial_resources

    need = trial_resources(config)
    available = ray.cluster_resources()
    limits = [config.study.num_samples]
    if need.total_cpu:
        limits.append(math.floor(available.get("CPU", 0) / need.total_cpu + 1e-9))
    if need.total_gpu:
        limits.append(math.floor(available.get("GPU", 0) / need.total_gpu + 1e-9))
    if config.study.max_concurrent_trials:
        limits.append(config.study.max_concurrent_trials)
    return max(1, min(limits))


def trial_name(trial) -> str:
    """Short, stable trial folder names (Ray's default spells out the whole config)."""
    return f"trial_{trial.trial_id}"


def build_tuner(config: StudyConfig, callback, *, restore: bool = False):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from search.resources import wrap_trainable
    from search.searcher import build_searcher

    trainable = wrap_trainable(config)
    # Tune keeps one trial pending at a time for non-random searchers, so trials start
    # one actor start-up (seconds) apart; let as many be pending as can run at once.
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(concurrent_trial_capacity(config)))
    experiment_path = os.path.join(config.storage.path, config.study.name)
    if restore:
        return tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                                  resume_errored=True)
    scheduler = None
    if config.scheduler.kind == "asha":
        scheduler = ASHAScheduler(
            time_attr="epoch", max_t=config.train.epochs,
            grace_period=config.scheduler.grace_period,
            reduction_factor=config.scheduler.reduction_factor,
        )
    run_config = tune.RunConfig(
        name=config.study.name,
        storage_path=config.storage.path,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute=config.study.metric,
            checkpoint_score_order=config.study.mode,
        ),
        failure_config=tune.FailureConfig(max_failures=3),
        callbacks=[callback],
        progress_reporter=progress_table(config),
        verbose=0 if os.environ.get("RESNET_SEARCH_QUIET") else 1,
    )
    max_concurrent = config.study.max_concurrent_trials or None
    if config.resources.workers_per_trial > 1:
        # Tune reserves only a DDP trial's driver sliver (Ray Train reserves the workers),
        # so it would start every trial at once: cap at what the workers can run.
        max_concurrent = concurrent_trial_capacity(config)
    tune_config = tune.TuneConfig(
        search_alg=build_searcher(config),
        scheduler=scheduler,
        num_samples=config.study.num_samples,
        max_concurrent_trials=max_concurrent,
        metric=config.study.metric,
        mode=config.study.mode,
        trial_name_creator=trial_name,
        trial_dirname_creator=trial_name,
    )
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


# ---------------------------------------------------------------- run / resume


def run_study(config: StudyConfig, *, address: str | None = None,
              tracking_uri: str | None = None) -> StudyOutcome:
    from search import tracking
    from search.searcher import check_optuna_storage
    from search.space import describe_space

    config = absolute_paths(config)
    uri = tracking.resolve_tracking_uri(tracking_uri, config.tracking.uri)
    tracking.check_tracking_reachable(uri)
    prepare_data(config)
    check_optuna_storage(config)
    client = tracking.client_for(uri)
    if tracking.find_study_run(client, config.study.name) is not None:
        raise ConfigError(f"study {config.study.name!r} already exists in {uri}; continue it with "
                          f"`resnet-search resume {config.study.name}` or pick another --name")
    start_ray(address)
    check_resources(config)
    check_storage_shared(config.storage.path)
    experiment_id = tracking.get_or_create_experiment(
        client, config.tracking.experiment, _artifact_root(uri))
    study_run_id = tracking.create_study_run(client, experiment_id, config, config.storage.path,
                                             describe_space(config))
    client.set_tag(study_run_id, "resnet_search.registered_model", config.registered_model)
    callback = tracking.MlflowTrialCallback(uri, study_run_id, experiment_id, config.study.name,
                                            config.train.epochs, config.tracking.log_checkpoints)
    print(f"study {config.study.name}: {config.study.num_samples} trials, results in "
          f"{config.storage.path}/{config.study.name}, tracking {uri}", file=sys.stderr)
    with _study_run_guard(client, study_run_id):
        results = build_tuner(config, callback).fit()
        return finish_study(config, results, uri, study_run_id)


@contextlib.contextmanager
def _study_run_guard(client, study_run_id: str):
    """A study that stops on an error or Ctrl-C is marked so in MLflow (and can be resumed)."""
    from search import tracking

    try:
        yield
    except BaseException as error:
        interrupted = isinstance(error, KeyboardInterrupt)
        client.set_tag(study_run_id, tracking.STATUS, "interrupted" if interrupted else "failed")
        client.set_terminated(study_run_id, "KILLED" if interrupted else "FAILED")
        raise


def resume_study(name: str, *, address: str | None = None,
                 tracking_uri: str | None = None) -> StudyOutcome:
    """Continue an interrupted study found by name in the tracking store."""
    from ray import tune

    from search import tracking

    uri, client, study_run = tracking.open_study(name, tracking_uri)
    if study_run.data.tags.get(tracking.STATUS) == "completed":
        raise StudyAlreadyCompleted(name, study_run.data.tags.get("resnet_search.registered_model"))
    config = study_config_from_run(client, study_run)
    start_ray(address)
    check_resources(config)
    study_run_id = study_run.info.run_id
    client.update_run(study_run_id, status="RUNNING")
    client.set_tag(study_run_id, tracking.STATUS, "running")
    experiment_path = os.path.join(config.storage.path, config.study.name)
    callback = tracking.MlflowTrialCallback(uri, study_run_id, study_run.info.experiment_id,
                                            config.study.name, config.train.epochs,
                                            config.tracking.log_checkpoints)
    if tune.Tuner.can_restore(experiment_path):
        print(f"resuming study {name} from {experiment_path}", file=sys.stderr)
        tuner = build_tuner(config, callback, restore=True)
    else:  # the driver died before Ray saved any state: start the trials afresh
        print(f"study {name} has no saved Ray state at {experiment_path}; starting its trials",
              file=sys.stderr)
        tuner = build_tuner(config, callback)
    with _study_run_guard(client, study_run_id):
        results = tuner.fit()
        return finish_study(config, results, uri, study_run_id)


def study_config_from_run(client, study_run) -> StudyConfig:
    """Rebuild the validated config from the study file logged with the study run."""
    import tomllib

    from search import tracking

    tags = study_run.data.tags
    text = Path(client.download_artifacts(study_run.info.run_id, "study.toml")).read_text()
    raw = tomllib.loads(text)
    name = tags[tracking.STUDY]
    config = parse_study(raw, label=f"study {name}", name=name)
    config = replace(config, source=text, path=tags.get(tracking.STUDY_FILE, ""))
    config = absolute_paths(config, Path(tags.get(tracking.STUDY_FILE, ".")).parent)
    storage = tags[tracking.STORAGE]
    return replace(config, storage=replace(config.storage, path=storage),
                   data=replace(config.data, root=study_run.data.params.get("data.root",
                                                                            config.data.root)))


def _artifact_root(uri: str) -> str | None:
    """Local stores keep artifacts beside the database; servers choose their own."""
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        return (database.parent / "mlartifacts").resolve().as_uri()
    if uri.startswith(("http://", "https://")):
        return None
    return default_artifact_root()


# ---------------------------------------------------------------- the champion


def finish_study(config: StudyConfig, results, uri: str, study_run_id: str) -> StudyOutcome:
    """Evaluate the best trial once on the test split, log and register it as champion."""
    from search import tracking
    from search.champion import register_champion

    client = tracking.client_for(uri)
    metric, mode = config.study.metric, config.study.mode
    finished = [r for r in results if r.metrics and not r.metrics.get("diverged")]
    errors = [r for r in results if r.error is not None]
    if not finished:
        client.set_tag(study_run_id, tracking.STATUS, "failed")
        client.set_terminated(study_run_id, "FAILED")
        raise RuntimeError(f"study {config.study.name}: no trial finished "
                           f"({len(errors)} failed); see the trial errors under "
                           f"{config.storage.path}/{config.study.name}")
    best = results.get_best_result(metric=metric, mode=mode, scope="all",
                                   filter_nan_and_inf=True)
    checkpoint = best.get_best_checkpoint(metric, mode) or best.checkpoint
    champion = register_champion(config, uri, study_run_id, best, checkpoint)
    client.set_tag(study_run_id, tracking.STATUS, "completed")
    client.set_terminated(study_run_id, "FINISHED")
    return StudyOutcome(
        name=config.study.name, tracking_uri=uri, study_run_id=study_run_id,
        best=champion["best"], registered_model=config.registered_model,
        model_version=champion["version"], test_accuracy=champion["test_accuracy"],
        trials=len(results),
    )
