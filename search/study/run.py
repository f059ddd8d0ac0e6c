"""Run, resume and finish a study: Tuner assembly, Ray start-up, champion registration.

    run_study(config)      validate resources and tracking, start Ray, fit, register the champion
    resume_study(name)     find the study through the tracking store, Tuner.restore, fit, register
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from resnet_core import TORCHVISION
from search import fault_points
from search.study.interrupt import (
    StorageFull,
    StudyFailed,
    StudyInterrupted,
    check_finished,
    error_in_one_line,
    graceful_stop,
)
from search.study.ray_session import (
    check_resources,
    check_resources_before_start,
    check_storage_shared,
    concurrent_trial_capacity,
    joined_autoscaler,
    start_ray,
    stop_ray_in_background,
)
from search.study.storage_state import (
    DRIVER_STATE_TAG,
    check_storage_writable,
    keep_driver_state,
    repair_experiment_state,
    stand_in_for_deleted_checkpoints,
    storage_is_full,
)
from search.study.warmup import start_warm_up
from search.studyfile.config import ConfigError, StudyConfig, parse_study
from search.studyfile.init_weights import check_init
from search.studyfile.paths import default_artifact_root, default_storage_path
from search.tracking import tags
from search.tracking.phases import phases_for, timed
from search.trial.spec import PROGRESS_COLUMNS


class StudyAlreadyCompleted(Exception):
    """`resume` of a study that has nothing left to do."""

    def __init__(self, name: str, client, study_run) -> None:
        super().__init__(f"study {name} is already completed; {_champion_said(client, study_run)} "
                         f"(see `resnet-search best {name}`)")


def _champion_said(client, study_run) -> str:
    """'its champion is models:/NAME/VERSION': the study's own version, not the shared alias."""
    from search.tracking import store

    champion = store.study_champion(client, study_run)
    return "it registered no champion" if champion is None else f"its champion is {champion['uri']}"


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
    """Trials run in other directories (and on other nodes): make paths absolute now.

    A folder dataset's decoded cache goes under a `[storage] path` the study sets (every
    node of a cluster reads it there), else beside the images."""
    base = base or Path.cwd()

    def absolute(path: str | None) -> str | None:
        return None if path is None else str((base / Path(path).expanduser()).resolve())

    storage = config.storage.path or default_storage_path()
    if "://" not in storage:
        storage = absolute(storage)
    cache_dir = config.data.cache_dir
    if cache_dir is None and config.data.dataset == "folder" and config.storage.path \
            and "://" not in storage:
        images = absolute(config.data.path)
        key = hashlib.sha1(images.encode()).hexdigest()[:8]  # two folders of one name differ
        cache_dir = str(Path(storage) / "data-cache" / f"{Path(images).name}-{key}")
    data = replace(config.data, root=absolute(config.data.root), path=absolute(config.data.path),
                   cache_dir=absolute(cache_dir))
    init = config.train.init
    train = replace(config.train, init=init if init in (None, TORCHVISION) else absolute(init))
    return replace(config, data=data, train=train, storage=replace(config.storage, path=storage))


def prepare_data(config: StudyConfig) -> None:
    """Check (or download) the dataset once in the driver, before any trial starts."""
    from resnet_core import load_data

    with data_errors_of(config):
        load_data(config.data)


@contextlib.contextmanager
def data_errors_of(config: StudyConfig) -> Iterator[None]:
    """A dataset that does not fit its settings, said as the study file's [data] error."""
    from resnet_core import DataConfigError

    try:
        yield
    except DataConfigError as error:
        raise ConfigError(f"{Path(config.path).name or 'study'}: [data] {error}") from None


def fit_checking_storage(tuner, config: StudyConfig, uri: str, study_run_id: str):
    """`tuner.fit()`; trials (or Tune itself) stopped by a full storage disk (errno 28) raise
    StorageFull: the study is interrupted, not failed, and `resume` goes on once space is freed."""
    def full() -> StorageFull:
        from search.tracking import store

        keep_driver_state(store.client_for(uri), study_run_id, config.study.name)
        ends = (tags.COMPLETED, tags.PRUNED, tags.DIVERGED)  # not those the full disk failed
        return StorageFull(config.study.name, config.storage.path,
                           finished_trials(uri, study_run_id, ends), config.study.num_samples)

    from search.tracking.writer import writer_for

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
        from search.trial.distributed import remove_staging_folders

        remove_staging_folders(os.path.join(config.storage.path, config.study.name))
    errors = [str(r.error) for r in results if r.error is not None]
    if any("[Errno 28]" in e or "No space left on device" in e for e in errors) \
            or (errors and storage_is_full(config.storage.path)):
        raise full()
    return results


# ---------------------------------------------------------------- the Tuner


def use_classic_output() -> None:
    """Ray's classic reporter honours our columns; its newer output prints whole configs
    (read when fit() starts, for a new or a restored run alike)."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"


def progress_table(config: StudyConfig):
    """The live trial table: status, the sampled architecture and recipe, the metric."""
    # Ray Tune's import costs seconds: only the commands that run a study pay it.
    from ray.tune import CLIReporter

    class BoundedReporter(CLIReporter):
        """Tune's table, whose last report keeps the row limit too: Tune's own lists every
        trial at the end (10,000 lines for a big study); the study's summary that follows,
        `status` and `report` show the rest."""

        def report(self, trials, done: bool, *sys_info: str) -> None:
            super().report(trials, False, *sys_info)

    use_classic_output()
    return BoundedReporter(
        # The network by its registry name (wrn-16-2, resnet-20-bottleneck): a "k" column
        # would read k=1 for every family without a width.
        parameter_columns=PROGRESS_COLUMNS,
        metric_columns={"epoch": "epoch", "val_accuracy": "val acc",
                        "best_val_accuracy": "best val acc"},
        max_report_frequency=15, sort_by_metric=True, max_progress_rows=25,
        max_column_length=24,
    )


def table_verbosity() -> int:
    """Tune's verbosity: 1 prints the live trial table, 0 (--quiet) nothing."""
    return 0 if os.environ.get("RESNET_SEARCH_QUIET") else 1


def trial_name(trial) -> str:
    """Short, stable trial folder names (Ray's default spells out the whole config)."""
    return f"trial_{trial.trial_id}"


def asha_scheduler(config: StudyConfig):
    """ASHA on the epoch count, or None for `[scheduler] kind = "none"`."""
    if config.scheduler.kind != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="epoch", max_t=config.train.epochs,
                         grace_period=config.scheduler.grace_period,
                         reduction_factor=config.scheduler.reduction_factor)


def set_tune_environment(capacity: int) -> None:
    """Tune's settings that only its environment variables reach (read when fit() starts)."""
    # Tune keeps one trial pending at a time for non-random searchers, so trials start
    # one actor start-up (seconds) apart; let as many be pending as can run at once.
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(capacity))
    # Tune's default loggers, less TensorBoard's: each trial folder keeps Ray's own record
    # (result.json, progress.csv), while MLflow is the dashboard. The TensorBoardX logger
    # was 93% of the loggers' driver time (1.2 s of a 32-trial study, benchmarks/RESULTS.md) and its
    # event files had no reader. A restored study keeps the callbacks it was saved with.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # Tune warns each time it saves the experiment state more often than every 5 s: a
    # resumed study's trials report their first epochs in a burst (dozens of warnings).
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def build_tuner(config: StudyConfig, callback, capacity: int, *, restore: bool = False):
    """The Tuner of a new study, or of one restored from its saved state; `capacity`: the
    trials the cluster can run side by side (search.study.ray_session.concurrent_trial_capacity)."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from search.space.searcher import build_searcher
    from search.study.resources import wrap_trainable

    trainable = wrap_trainable(config)
    set_tune_environment(capacity)
    experiment_path = os.path.join(config.storage.path, config.study.name)
    if restore:
        use_classic_output()  # the restored run keeps its saved trial table
        tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
        # Tuner.restore takes no verbosity, and the restored run would keep the saved one: a
        # study run with its table and resumed --quiet printed the table again. Tune reads
        # it from this run config when fit() starts.
        tuner._local_tuner.get_run_config().verbose = table_verbosity()
        return tuner
    run_config = tune.RunConfig(
        name=config.study.name,
        storage_path=config.storage.path,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute=config.study.metric,
            checkpoint_score_order=config.study.mode,
        ),
        failure_config=tune.FailureConfig(max_failures=config.resources.max_failures),
        callbacks=[callback, CSVLoggerCallback(), JsonLoggerCallback()],
        progress_reporter=progress_table(config),
        verbose=table_verbosity(),
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
        scheduler=asha_scheduler(config),
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
    from search.space.sampler import describe_space
    from search.space.searcher import check_optuna_storage
    from search.tracking import store

    config = absolute_paths(config)
    uri = store.resolve_tracking_uri(tracking_uri, config.tracking.uri)
    store.check_tracking_reachable(uri)
    prepare_data(config)
    check_init(config)  # the starting weights fit every network of the space
    check_optuna_storage(config)
    check_storage_writable(config.storage.path)
    check_resources_before_start(config, address)
    client = store.client_for(uri)
    existing = store.find_study_run(client, config.study.name)
    if existing is not None and existing.data.tags.get(tags.STATUS) == tags.COMPLETED:
        raise ConfigError(f"study {config.study.name!r} already exists in {uri} and is completed; "
                          f"{_champion_said(client, existing)} (see `resnet-search best "
                          f"{config.study.name}`); pick another --name for a new study")
    if existing is not None:
        raise ConfigError(f"study {config.study.name!r} already exists in {uri}; continue it with "
                          f"`resnet-search resume {config.study.name}` or pick another --name")
    cluster = start_study_ray(config, address)
    check_storage_shared(config.storage.path, config.data.cache_dir)
    experiment_id = store.get_or_create_experiment(
        client, config.tracking.experiment, _artifact_root(uri))
    study_run_id = store.create_study_run(client, experiment_id, config, config.storage.path,
                                             describe_space(config))
    phases_for(study_run_id).driver["ray_startup"] += cluster.seconds
    callback = trial_callback(config, uri, study_run_id, experiment_id)
    print(f"study {config.study.name}: {config.study.num_samples} trials, results in "
          f"{config.storage.path}/{config.study.name}, tracking {uri}", file=sys.stderr)
    with _study_run_guard(client, study_run_id), graceful_stop() as signals:
        tuner = build_tuner(config, callback, cluster.capacity)
        results = fit_checking_storage(tuner, config, uri, study_run_id)
        check_finished(config.study.name, finished_trials(uri, study_run_id), config.study.num_samples,
                       signals)
        return finish_study(config, results, uri, study_run_id)


@dataclass(frozen=True)
class StudyRay:
    """The Ray a study runs on: how long it took to start or join, and how many trials it
    can run side by side (counting the nodes an autoscaler may add)."""

    seconds: float
    capacity: int


def start_study_ray(config: StudyConfig, address: str | None) -> StudyRay:
    """Start or join Ray for the study, the driver's warm-up running meanwhile, and check
    that the cluster can run a trial, now or once its autoscaler has added nodes."""
    start_warm_up()
    started = time.perf_counter()
    start_ray(address)
    seconds = time.perf_counter() - started
    autoscaler = joined_autoscaler(config, address)
    check_resources(config, autoscaler=autoscaler)
    capacity = concurrent_trial_capacity(config, autoscaler)
    if autoscaler is not None:
        print(f"the cluster has an autoscaler: trials wait for the nodes it adds (up to "
              f"{capacity} trial(s) at once)", file=sys.stderr)
    return StudyRay(seconds, capacity)


def finished_trials(uri: str, study_run_id: str, ends: tuple = tags.FINAL_STATUSES) -> int:
    """Trial runs of the study that reached an end (not running, not interrupted)."""
    from search.tracking import store
    from search.tracking.trial_index import current_trial_runs

    client = store.client_for(uri)
    runs = current_trial_runs(client, client.get_run(study_run_id))  # not every run, whole
    return sum(r.data.tags.get(tags.STATUS) in ends for r in runs)


def trial_callback(config: StudyConfig, uri: str, study_run_id: str, experiment_id: str):
    """The driver-side callback that mirrors the study's trials into MLflow."""
    from search.tracking.callback import MlflowTrialCallback

    return MlflowTrialCallback(uri, study_run_id, experiment_id, config.study.name,
                               config.train.epochs, config.tracking.log_checkpoints,
                               metric=config.study.metric, mode=config.study.mode,
                               journal_path=tracking_journal(config))


def tracking_journal(config: StudyConfig) -> str | None:
    """The study's tracking journal, beside Ray's experiment state on the study's storage."""
    from search.tracking.journal import journal_path  # here: it loads MLflow and Ray

    return journal_path(os.path.join(config.storage.path, config.study.name))


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

    from search.tracking import store

    uri, client, study_run = store.open_study(name, tracking_uri)
    if study_run.data.tags.get(tags.STATUS) == tags.COMPLETED:
        if tags.WRAPPED_UP not in study_run.data.tags:  # its driver died after the champion
            describe_and_report(client, study_run.info.run_id)
            mark_wrapped_up(client, study_run.info.run_id)
        raise StudyAlreadyCompleted(name, client, study_run)
    config = study_config_from_run(client, study_run)
    check_storage_writable(config.storage.path)
    from search.tracking.journal import replay_journal  # here: it loads MLflow and Ray

    # What an earlier driver queued and never wrote (it died during a tracking outage) goes
    # to the store before anything else writes there.
    replay_journal(client, tracking_journal(config), study_run.info.run_id,
                   study_run.info.experiment_id, config.study.metric, config.study.mode)
    check_resources_before_start(config, address)
    cluster = start_study_ray(config, address)
    phases_for(study_run.info.run_id).driver["ray_startup"] += cluster.seconds
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
        stand_in_for_deleted_checkpoints(experiment_path)
        print(f"resuming study {name} from {experiment_path}", file=sys.stderr)
        tuner = build_tuner(config, callback, cluster.capacity, restore=True)
    else:  # the driver died before Ray saved any state: start the trials afresh
        print(f"study {name} has no saved Ray state at {experiment_path}; starting its trials",
              file=sys.stderr)
        tuner = build_tuner(config, callback, cluster.capacity)
    with _study_run_guard(client, study_run_id), graceful_stop() as signals:
        results = fit_checking_storage(tuner, config, uri, study_run_id)
        # here: it loads MLflow, and `check` imports this module for absolute_paths
        from search.study.forgotten_trials import drop_forgotten_trial_runs
        drop_forgotten_trial_runs(client, study_run_id, results)
        settle_trial_runs(client, study_run_id, results, config.train.epochs)
        check_finished(config.study.name, finished_trials(uri, study_run_id), config.study.num_samples,
                       signals)
        return finish_study(config, results, uri, study_run_id)


def settle_trial_runs(client, study_run_id: str, results, epochs: int) -> None:
    """Trials that ended in an earlier driver whose last writes never reached MLflow (it
    died between the two): their runs get the end Tune recorded, or the study would look
    interrupted to every later `resume`.

    A trial that trained every epoch, or diverged, ended. One that stopped short ended only
    if the scheduler pruned it: Tune marks the result it stops a trial on `done`. After a
    stop signal Tune calls its unfinished trials terminated too, with their last result not
    done (and Tune's own SIGINT handler takes the first Ctrl-C, search.study.interrupt): those were
    interrupted and stay for the next resume.
    The trial ends this driver saw are in MLflow already (the writer was drained)."""
    from mlflow.entities import RunTag

    from search.tracking import store
    from search.tracking.callback import trial_outcome

    study_run = client.get_run(study_run_id)
    # Only the runs still tagged running, searched as such: not every run of a big study.
    running = {run.data.tags.get(tags.TRIAL_ID): run for run in store.all_runs(
        client, [study_run.info.experiment_id],
        f"tags.`{tags.PARENT}` = '{study_run_id}' and tags.`{tags.STATUS}` = '{tags.RUNNING}'")}
    for result in results:
        run = running.get((result.metrics or {}).get("trial_id"))
        if run is None or result.error is not None:
            continue
        outcome = trial_outcome(result.metrics, epochs)
        if outcome == tags.PRUNED and not result.metrics.get("done"):  # stopped by a signal
            continue
        run_tags = [RunTag(tags.STATUS, outcome)]
        if result.checkpoint is not None:
            run_tags.append(RunTag(tags.CHECKPOINT, str(result.checkpoint.path)))
        client.log_batch(run.info.run_id, tags=run_tags)
        client.set_terminated(run.info.run_id, "FINISHED")


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
                   data=replace(config.data, root=study_run.data.params.get(
                       tags.DATA_PARAM + "root", config.data.root)))


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
    from search.study.champion import pick_winner, register_champion
    from search.tracking import store
    from search.tracking.summary import outcome_counts
    from search.tracking.trial_index import current_trial_runs

    stop_ray_in_background()  # the trials are done: nothing below uses Ray
    client = store.client_for(uri)
    study_run = client.get_run(study_run_id)
    ranked = store.rank_runs(study_run, current_trial_runs(client, study_run))
    winner = pick_winner(ranked, results, config.study.metric, config.study.mode)
    if winner is None:
        errors = [r.error for r in results if r.error is not None]
        _end_study_run(client, study_run_id, tags.FAILED)
        raise StudyFailed(config.study.name, len(errors),
                          error_in_one_line(errors[0]) if errors else "none was recorded",
                          f"{config.storage.path}/{config.study.name}")
    from mlflow.entities import Metric

    times = phases_for(study_run_id)
    with timed(times, "champion"):
        champion = register_champion(config, uri, study_run_id, winner)
    if config.study.objectives:
        from search.results.pareto import record_pareto_front

        record_pareto_front(client, study_run_id)
    # Completed (the champion is registered) but not wrapped up: a driver killed while it
    # writes the summary or the report leaves a study whose `resume` writes those two.
    client.set_tag(study_run_id, tags.STATUS, tags.COMPLETED)
    with timed(times, "report"):
        describe_and_report(client, study_run_id)
    client.log_batch(study_run_id, metrics=[Metric(k, v, int(time.time() * 1000), 0)
                                            for k, v in times.metrics().items()])
    mark_wrapped_up(client, study_run_id)
    return StudyOutcome(
        name=config.study.name, tracking_uri=uri, study_run_id=study_run_id,
        best=champion["best"], registered_model=config.registered_model,
        model_version=champion["version"], test_accuracy=champion["test_accuracy"],
        trials=len(results), outcomes=outcome_counts(ranked), phases=times.summary(),
    )


def describe_and_report(client, study_run_id: str) -> None:
    """The completed study's last words: its run's description and its HTML report."""
    from search.tracking.summary import update_study_run

    fault_points.reached("summary")
    update_study_run(client, study_run_id)
    _log_report(client, study_run_id)


def mark_wrapped_up(client, study_run_id: str) -> None:
    """The summary and the report are written: the study run ends (a later `resume` has
    nothing left to do)."""
    client.set_tag(study_run_id, tags.WRAPPED_UP, "true")
    client.set_terminated(study_run_id, "FINISHED")


def _log_report(client, study_run_id: str) -> None:
    """The study's HTML report as an artifact of its run (`report/report.html`).

    Without the PNG copies: drawing them drives a headless Chromium (4-5 s measured,
    benchmarks/RESULTS.md), paid by every study; `resnet-search report NAME` draws them on request.
    """
    from search.results.report import log_report

    fault_points.reached("report")
    try:
        log_report(client, study_run_id, png=False)
    except Exception as error:  # a report must never cost a finished study
        print(f"resnet-search: study report not logged ({type(error).__name__}: {error})",
              file=sys.stderr)


def _end_study_run(client, study_run_id: str, status: str) -> None:
    client.set_tag(study_run_id, tags.STATUS, status)
    client.set_terminated(study_run_id, "FINISHED" if status == tags.COMPLETED else "FAILED")
