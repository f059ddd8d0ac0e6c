"""Run, resume and finish a study: Tuner assembly, Ray start-up, champion registration.

    run_study(config)      validate resources and tracking, start Ray, fit, register the champion
    resume_study(name)     find the study through the tracking store, Tuner.restore, fit, register
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from resnet_core import GPU_FALLBACK_ENV
from search import tags
from search.config import ConfigError, StudyConfig, parse_study
from search.interrupt import StorageFull, StudyInterrupted, check_finished, graceful_stop
from search.paths import default_artifact_root, default_storage_path
from search.phases import phases_for, timed
from search.warmup import start_warm_up


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
    outcomes: dict[str, int] = field(default_factory=dict)  # trials by status: completed, pruned, ...
    phases: list[str] = field(default_factory=list)  # the phase breakdown, for the summary


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
    from resnet_core import DataConfigError, load_data

    try:
        load_data(config.data)
    except DataConfigError as error:
        raise ConfigError(f"{Path(config.path).name or 'study'}: [data] {error}") from None


RAY_CONNECT_TIMEOUT_S = 5.0  # a live GCS answers a TCP connect at once; ray.init retries for minutes


def check_ray_reachable(address: str, source: str) -> None:
    """Fail in seconds, naming the address, when nothing listens at a host:port Ray address."""
    import socket

    target = address.removeprefix("ray://")
    if address in ("auto", "local") or ":" not in target:
        return  # resolved by Ray itself (a local cluster's address file)
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=RAY_CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as error:
        raise ConfigError(f"{source} {address}: no Ray cluster answers there "
                          f"({type(error).__name__}: {error}); start one (`ray start --head`, "
                          f"`cluster/local.sh up 2`) or fix the address") from None


def start_ray(address: str | None) -> None:
    """Join --address / $RAY_ADDRESS, or start a private local Ray (dashboard on localhost)."""
    import ray

    source = "--address" if address else "$RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return
    runtime_env = {"env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning"}}
    if os.environ.get(GPU_FALLBACK_ENV):  # the trials decide their device: tell them
        runtime_env["env_vars"][GPU_FALLBACK_ENV] = os.environ[GPU_FALLBACK_ENV]
    if address:
        check_ray_reachable(address, source)
        try:
            ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
        except ConnectionError as error:
            raise ConfigError(f"{source} {address}: cannot connect to a Ray cluster "
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


def check_storage_writable(storage_path: str) -> None:
    """A local results folder that cannot be written is an error now, before anything starts."""
    import tempfile

    if "://" in storage_path:
        return
    try:
        Path(storage_path).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=storage_path, prefix=".write-probe-"):
            pass
    except OSError as error:
        raise ConfigError(f"[storage] path {storage_path} is not writable "
                          f"({error.strerror or error}); pick a writable path") from None


def storage_is_full(storage_path: str) -> bool:
    """Whether 1 MiB more cannot be written to a local results folder (ENOSPC)."""
    import errno
    import tempfile

    if "://" in storage_path:
        return False
    try:
        with tempfile.TemporaryFile(dir=storage_path, prefix=".space-probe-") as probe:
            probe.write(bytes(1 << 20))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        return error.errno == errno.ENOSPC
    return False


DRIVER_STATE_TAG = "resnet_search.driver_state"  # Tune's local copy of the experiment state


def keep_driver_state(client, study_run_id: str, name: str) -> None:
    """Record where this driver's local copy of Tune's experiment state is: a full disk can
    leave the copy on storage torn, and `resume` repairs it from this one."""
    import glob

    import ray

    try:
        session = ray._private.worker._global_node.get_session_dir_path()
    except AttributeError:
        return
    found = glob.glob(os.path.join(session, "artifacts", "*", name, "driver_artifacts"))
    if found:
        client.set_tag(study_run_id, DRIVER_STATE_TAG, max(found, key=os.path.getmtime))


def repair_experiment_state(experiment_path: str, staging: str | None) -> None:
    """Put back the driver's local copy of Tune's state files where the copy on storage differs.

    Tune writes its experiment state, searcher state and tuner in the driver's staging folder
    and copies them to storage; a full disk can cut off any of them on storage (a torn JSON,
    or a torn searcher pickle that `Tuner.restore` fails on, or an older state that restarts
    trials as new ones). The driver's copy is the source of those uploads, so it is never
    older than storage: where the two differ, `resume` uses it.
    """
    import shutil

    if not staging or not Path(staging).is_dir() or not Path(experiment_path).is_dir():
        return
    restored = []
    for file in sorted(Path(staging).iterdir()):
        target = Path(experiment_path) / file.name
        if file.is_file() and (not target.is_file() or target.read_bytes() != file.read_bytes()):
            shutil.copyfile(file, target)
            restored.append(file.name)
    if restored:
        print(f"resnet-search: Tune's state on storage differed from the driver's copy (storage "
              f"full); restored {', '.join(restored)} from {staging}", file=sys.stderr)


def fit_checking_storage(tuner, config: StudyConfig, uri: str, study_run_id: str):
    """`tuner.fit()`; trials (or Tune itself) stopped by a full storage disk (errno 28) raise
    StorageFull: the study is interrupted, not failed, and `resume` goes on once space is freed."""
    def full() -> StorageFull:
        from search import tracking

        keep_driver_state(tracking.client_for(uri), study_run_id, config.study.name)
        ends = (tags.COMPLETED, tags.PRUNED, tags.DIVERGED)  # not those the full disk failed
        return StorageFull(config.study.name, config.storage.path,
                           finished_trials(uri, study_run_id, ends), config.study.num_samples)

    from search.tracking_writer import writer_for

    try:
        results = tuner.fit()
    except Exception:  # e.g. Tune reading back a trial error it could not write whole
        if storage_is_full(config.storage.path):
            raise full() from None
        raise
    finally:
        # The trial callback writes to MLflow from a queue; what comes next reads MLflow.
        # Through a tracking outage this waits, saying so (a second Ctrl-C stops it).
        writer_for(study_run_id, uri).drain()
    if config.resources.workers_per_trial > 1:
        from search.distributed import remove_staging_folders

        remove_staging_folders(os.path.join(config.storage.path, config.study.name))
    errors = [str(r.error) for r in results if r.error is not None]
    if any("[Errno 28]" in e or "No space left on device" in e for e in errors) \
            or (errors and storage_is_full(config.storage.path)):
        raise full()
    return results


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
    capacity = concurrent_trial_capacity(config)
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(capacity))
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
        max_concurrent = capacity
    tune_config = tune.TuneConfig(
        # A finished trial's process (imports done, dataset loaded) runs the next trial:
        # trial start-up was most of a short trial's time (benchmarks/platform_overhead.py).
        reuse_actors=True,
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
    check_storage_writable(config.storage.path)
    client = tracking.client_for(uri)
    if tracking.find_study_run(client, config.study.name) is not None:
        raise ConfigError(f"study {config.study.name!r} already exists in {uri}; continue it with "
                          f"`resnet-search resume {config.study.name}` or pick another --name")
    start_warm_up()
    ray_start = time.perf_counter()
    start_ray(address)
    ray_seconds = time.perf_counter() - ray_start
    check_resources(config)
    check_storage_shared(config.storage.path)
    experiment_id = tracking.get_or_create_experiment(
        client, config.tracking.experiment, _artifact_root(uri))
    study_run_id = tracking.create_study_run(client, experiment_id, config, config.storage.path,
                                             describe_space(config))
    phases_for(study_run_id).driver["ray_startup"] += ray_seconds
    callback = trial_callback(config, uri, study_run_id, experiment_id)
    print(f"study {config.study.name}: {config.study.num_samples} trials, results in "
          f"{config.storage.path}/{config.study.name}, tracking {uri}", file=sys.stderr)
    with _study_run_guard(client, study_run_id), graceful_stop() as signals:
        results = fit_checking_storage(build_tuner(config, callback), config, uri, study_run_id)
        check_finished(config.study.name, finished_trials(uri, study_run_id), config.study.num_samples,
                       signals)
        return finish_study(config, results, uri, study_run_id)


def finished_trials(uri: str, study_run_id: str, ends: tuple = tags.FINAL_STATUSES) -> int:
    """Trial runs of the study that reached an end (not running, not interrupted)."""
    from search import tracking

    client = tracking.client_for(uri)
    runs = tracking.trial_runs(client, client.get_run(study_run_id))
    return sum(r.data.tags.get(tags.STATUS) in ends for r in runs)


def trial_callback(config: StudyConfig, uri: str, study_run_id: str, experiment_id: str):
    """The driver-side callback that mirrors the study's trials into MLflow."""
    from search.callback import MlflowTrialCallback

    return MlflowTrialCallback(uri, study_run_id, experiment_id, config.study.name,
                               config.train.epochs, config.tracking.log_checkpoints,
                               metric=config.study.metric, mode=config.study.mode)


@contextlib.contextmanager
def _study_run_guard(client, study_run_id: str):
    """A study that stops on an error or Ctrl-C is marked so in MLflow (and can be resumed)."""

    try:
        yield
    except BaseException as error:
        interrupted = isinstance(error, (KeyboardInterrupt, StudyInterrupted))
        client.set_tag(study_run_id, tags.STATUS, tags.INTERRUPTED if interrupted else tags.FAILED)
        client.set_terminated(study_run_id, "KILLED" if interrupted else "FAILED")
        raise


def resume_study(name: str, *, address: str | None = None,
                 tracking_uri: str | None = None) -> StudyOutcome:
    """Continue an interrupted study found by name in the tracking store."""
    from ray import tune

    from search import tracking

    uri, client, study_run = tracking.open_study(name, tracking_uri)
    if study_run.data.tags.get(tags.STATUS) == tags.COMPLETED:
        raise StudyAlreadyCompleted(name, study_run.data.tags.get(tags.REGISTERED_MODEL))
    config = study_config_from_run(client, study_run)
    check_storage_writable(config.storage.path)
    start_warm_up()
    with timed(phases_for(study_run.info.run_id), "ray_startup"):
        start_ray(address)
    check_resources(config)
    study_run_id = study_run.info.run_id
    client.update_run(study_run_id, status="RUNNING")
    client.set_tag(study_run_id, tags.STATUS, tags.RUNNING)
    experiment_path = os.path.join(config.storage.path, config.study.name)
    callback = trial_callback(config, uri, study_run_id, study_run.info.experiment_id)
    if DRIVER_STATE_TAG in study_run.data.tags:
        repair_experiment_state(experiment_path, study_run.data.tags[DRIVER_STATE_TAG])
        # Used once: a later resume must not put back this (by then older) copy.
        client.delete_tag(study_run_id, DRIVER_STATE_TAG)
    if tune.Tuner.can_restore(experiment_path):
        print(f"resuming study {name} from {experiment_path}", file=sys.stderr)
        tuner = build_tuner(config, callback, restore=True)
    else:  # the driver died before Ray saved any state: start the trials afresh
        print(f"study {name} has no saved Ray state at {experiment_path}; starting its trials",
              file=sys.stderr)
        tuner = build_tuner(config, callback)
    with _study_run_guard(client, study_run_id), graceful_stop() as signals:
        results = fit_checking_storage(tuner, config, uri, study_run_id)
        check_finished(config.study.name, finished_trials(uri, study_run_id), config.study.num_samples,
                       signals)
        return finish_study(config, results, uri, study_run_id)


def study_config_from_run(client, study_run) -> StudyConfig:
    """Rebuild the validated config from the study file logged with the study run."""
    import tomllib


    run_tags = study_run.data.tags
    text = Path(client.download_artifacts(study_run.info.run_id, "study.toml")).read_text()
    raw = tomllib.loads(text)
    name = run_tags[tags.STUDY]
    config = parse_study(raw, label=f"study {name}", name=name)
    config = replace(config, source=text, path=run_tags.get(tags.STUDY_FILE, ""))
    config = absolute_paths(config, Path(run_tags.get(tags.STUDY_FILE, ".")).parent)
    storage = run_tags[tags.STORAGE]
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
    """Register the ranking's winner (scored once on the test split) as the champion."""
    from search import tracking
    from search.champion import pick_winner, register_champion
    from search.study_summary import outcome_counts, update_study_run

    client = tracking.client_for(uri)
    ranked = tracking.ranked_trial_runs(client, client.get_run(study_run_id))
    winner = pick_winner(ranked, results, config.study.metric, config.study.mode)
    if winner is None:
        errors = [r for r in results if r.error is not None]
        _end_study_run(client, study_run_id, tags.FAILED)
        raise RuntimeError(f"study {config.study.name}: no trial finished "
                           f"({len(errors)} failed); see the trial errors under "
                           f"{config.storage.path}/{config.study.name}")
    from mlflow.entities import Metric

    times = phases_for(study_run_id)
    with timed(times, "champion"):
        champion = register_champion(config, uri, study_run_id, winner)
    if config.study.objectives:
        from search.pareto import record_pareto_front

        record_pareto_front(client, study_run_id)
    _end_study_run(client, study_run_id, tags.COMPLETED)
    update_study_run(client, study_run_id)
    with timed(times, "report"):
        _log_report(client, study_run_id)
    client.log_batch(study_run_id, metrics=[Metric(k, v, int(time.time() * 1000), 0)
                                            for k, v in times.metrics().items()])
    return StudyOutcome(
        name=config.study.name, tracking_uri=uri, study_run_id=study_run_id,
        best=champion["best"], registered_model=config.registered_model,
        model_version=champion["version"], test_accuracy=champion["test_accuracy"],
        trials=len(results), outcomes=outcome_counts(ranked), phases=times.summary(),
    )


def _log_report(client, study_run_id: str) -> None:
    """The study's HTML report as an artifact of its run (`report/report.html`).

    Without the PNG copies: drawing them drives a headless Chromium (4-5 s, measured for
    issue 12), paid by every study; `resnet-search report NAME` draws them on request.
    """
    from search.report import log_report

    try:
        log_report(client, study_run_id, png=False)
    except Exception as error:  # a report must never cost a finished study
        print(f"resnet-search: study report not logged ({type(error).__name__}: {error})",
              file=sys.stderr)


def _end_study_run(client, study_run_id: str, status: str) -> None:
    client.set_tag(study_run_id, tags.STATUS, status)
    client.set_terminated(study_run_id, "FINISHED" if status == tags.COMPLETED else "FAILED")
