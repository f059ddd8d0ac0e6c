"""Multi-worker (DDP) trials: one Tune trial runs a Ray Train `TorchTrainer` of W workers.

How a trial with `workers_per_trial = W` runs:

- The Tune trial process only drives: it asks Tune for `DDP_DRIVER_CPU` and
  starts a Ray Train V2 `TorchTrainer` whose W workers share the rest of the
  trial's CPUs and GPUs (`search.trial.ddp_resources`; Train places them in a
  placement group of its own). NCCL joins the workers on whole GPUs, gloo
  elsewhere. Each worker runs the same trial body as a single-worker trial
  (`search.trial.ddp_worker`); `batch_size` is global and each worker computes
  `batch_size / W` of every step.
- Rank 0's result and checkpoint reach the trial through `ForwardToTrial`
  (a public Train `UserCallback`) and a Ray queue; the trial reports them with
  `ray.tune.report`: the same metric keys, checkpoints and resume semantics as
  a single-worker trial, plus `world_size`.
- A restarted trial hands Tune's checkpoint to the workers, which all load it.
  Train itself never retries (`max_failures = 0`): failures go to Tune, whose
  `FailureConfig` restarts the trial from its last checkpoint.
- A trial that Tune stops (ASHA) or that dies frees its workers: see
  `TrainRunLauncher`.

Ray's documented bridge, `ray.tune.integration.ray_train.TuneReportCallback`,
is not used: it hands Tune only the checkpoint's path as a metric, so Tune
would keep no checkpoint (no champion, no resume; ray-project/ray#55556 made
it a metrics-only queue). And Train frees the placement group of a run whose
controller died only through the state API of a full `ray[default]` install
(ray-project/ray#58515, for #54305), so the launcher removes it itself.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import ray
import ray.train
from ray import tune

from search.trial.ddp_resources import backend_for, reserved_cpus_per_worker, torch_threads
from search.trial.ddp_worker import train_loop_per_worker
from search.trial.spec import TrialSpec

# Folder (inside the Tune trial's storage folder) where Ray Train stages the
# checkpoints of rank 0 before the trial process hands them to Tune.
TRAIN_RUNS_DIR = "ddp-train"
# How often the trial drains its result queue and the launcher checks on the trial.
POLL_S = 0.5
# Ray Train's own limit on starting a run's workers (its setting, with its default):
# the launcher of a stopped trial waits this long for the workers to appear or the
# run to end before it gives up on the run.
WORKER_GROUP_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
RAY_DEFAULT_WORKER_GROUP_START_TIMEOUT_S = 60.0


def worker_group_start_timeout_s() -> float:
    return float(os.environ.get(WORKER_GROUP_START_TIMEOUT_ENV,
                                RAY_DEFAULT_WORKER_GROUP_START_TIMEOUT_S))


def build_trainer(spec: TrialSpec, *, resume_from: tune.Checkpoint | None = None,
                  storage_path: str | None = None, storage_filesystem: Any = None,
                  name: str | None = None, callbacks: list | None = None,
                  loop: Callable[[dict[str, Any]], None] | None = None,
                  extra_loop_config: dict[str, Any] | None = None) -> Any:
    """The `TorchTrainer` that runs one trial's W workers.

    `loop` replaces `train_loop_per_worker` and `extra_loop_config` adds to what
    the workers receive (tests drive the same worker set-up with their own loop).
    """
    from ray.train.torch import TorchConfig, TorchTrainer

    need = spec.resources
    per_worker = {"CPU": reserved_cpus_per_worker(need.cpus_per_worker, need.workers)}
    if need.gpus_per_worker:
        per_worker["GPU"] = need.gpus_per_worker
    loop_config = {
        "trial": spec,
        "threads": torch_threads(need.cpus_per_worker),
        "resume_from": resume_from,
        **(extra_loop_config or {}),
    }
    return TorchTrainer(
        loop or train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend=backend_for(need.gpus_per_worker)),
        scaling_config=ray.train.ScalingConfig(
            num_workers=need.workers, use_gpu=need.gpus_per_worker > 0,
            resources_per_worker=per_worker,
        ),
        run_config=ray.train.RunConfig(
            name=name or f"ddp-{uuid.uuid4().hex[:8]}",
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            callbacks=callbacks or [],
            failure_config=ray.train.FailureConfig(max_failures=0),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=None),
        ),
    )


class ForwardToTrial(ray.train.UserCallback):
    """Runs in the Train controller: hands rank 0's result and the checkpoint to the trial."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        self.queue.put((dict(metrics[0]), checkpoint))


class TrainRunLauncher:
    """Owns one attempt's Train run, outside the Tune trial's process (a detached actor).

    Tune stops a trial (ASHA pruning, or the last epoch under ASHA) by removing
    the trial's placement group, which kills the trial process at once; a Train
    run owned by that process would leave its workers' placement group reserved
    (see the module docstring) and the next trials would wait forever. The
    launcher owns the run instead, watches the trial's result queue (which dies
    with the trial), and when the trial is gone removes the workers' placement
    group, which rank 0 announced: the workers end, the run fails, its CPUs/GPUs
    are free again.
    """

    def __init__(self, queue: Any) -> None:
        self.queue = queue  # owned by the trial: alive exactly as long as the trial
        self.placement_group = None
        self.staging: tuple[Any, str] | None = None
        self.done = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def set_placement_group(self, placement_group: Any) -> None:
        with self.lock:
            self.placement_group = placement_group
        if self.stop.is_set():  # the trial went away while the workers started
            self._free_workers()

    def fit(self, spec: TrialSpec, resume_from: Any, storage_path: str,
            storage_filesystem: Any, name: str, **trainer_options: Any) -> None:
        """Run the trial's Train run to its end (`trainer_options` go to `build_trainer`)."""
        launcher = ray.get_runtime_context().current_actor
        self.staging = (storage_filesystem, storage_path)
        try:
            build_trainer(spec, resume_from=resume_from, storage_path=storage_path,
                          storage_filesystem=storage_filesystem, name=name,
                          callbacks=[ForwardToTrial(self.queue)],
                          extra_loop_config={"launcher": launcher}, **trainer_options).fit()
        finally:
            self.done.set()

    def request_stop(self) -> None:
        self.stop.set()

    def watch(self, poll_s: float = POLL_S) -> None:
        """Until the trial says stop or disappears; then end a run still going, and exit."""
        while not self.stop.is_set() and self._trial_alive(poll_s):
            self.stop.wait(poll_s)
        self.stop.set()
        if not self.done.is_set():
            self._free_workers()
            # Workers still starting announce their placement group (freed on arrival).
            self.done.wait(worker_group_start_timeout_s())
        if self.staging is not None:  # Train's staging folder: Tune holds the checkpoints
            _delete(*self.staging)
        ray.actor.exit_actor()

    def _free_workers(self) -> None:
        with self.lock:
            placement_group, self.placement_group = self.placement_group, None
        if placement_group is not None:
            ray.util.remove_placement_group(placement_group)

    def _trial_alive(self, wait_s: float) -> bool:
        probe = self.queue.actor.qsize.remote()
        try:
            ray.get(probe, timeout=wait_s)
        except ray.exceptions.GetTimeoutError:
            return True  # busy or briefly unreachable: ask again
        except ray.exceptions.RayActorError:
            return False
        return True


def _trial_storage() -> tuple[str, Any]:
    """The Tune trial's folder on the study storage (shared by all nodes) and its filesystem."""
    storage = tune.get_context().get_storage()
    if storage is None:
        raise RuntimeError("train_distributed_trial must run as a Ray Tune trial")
    return storage.trial_fs_path, storage.storage_filesystem


def _delete(filesystem: Any, path: str) -> None:
    try:
        filesystem.delete_dir(path)
    except (FileNotFoundError, OSError):
        pass


def remove_staging_folders(experiment_path: str) -> None:
    """Train's staging folders left in the trial folders of a finished fit.

    A trial Tune stopped (ASHA, or its last epoch under ASHA) leaves the deletion to its
    launcher, which notices within a poll; the last such trial of a study can outlive the
    study's driver, and Ray's shutdown ends the launcher first. Tune holds every checkpoint.
    """
    import pyarrow.fs

    if "://" in experiment_path:
        filesystem, root = pyarrow.fs.FileSystem.from_uri(experiment_path)
    else:
        filesystem, root = pyarrow.fs.LocalFileSystem(), experiment_path
    try:
        entries = filesystem.get_file_info(pyarrow.fs.FileSelector(root))
    except (FileNotFoundError, OSError):
        return
    for entry in entries:
        if entry.type == pyarrow.fs.FileType.Directory and entry.base_name.startswith("trial_"):
            _delete(filesystem, f"{entry.path}/{TRAIN_RUNS_DIR}")


def start_launcher(queue: Any) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    launcher = ray.remote(TrainRunLauncher).options(
        num_cpus=0, max_concurrency=8, lifetime="detached",
        # Out of the trial's placement group (Tune removes it when it stops the trial).
        scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=True),
    ).remote(queue)
    launcher.watch.remote(POLL_S)
    return launcher


def _forward_results(queue: Any, fit: ray.ObjectRef) -> None:
    """Report every result the run forwards to Tune, until the run has ended and all are in."""
    from ray.util.queue import Empty

    while True:
        finished = bool(ray.wait([fit], timeout=0)[0])  # first: results before the end drain
        try:
            metrics, checkpoint = queue.get(block=not finished, timeout=POLL_S)
        except Empty:
            if finished:
                return
            continue
        if checkpoint is None:
            tune.report(metrics)
            continue
        tune.report(metrics, checkpoint=tune.Checkpoint(path=checkpoint.path,
                                                        filesystem=checkpoint.filesystem))
        _delete(checkpoint.filesystem, checkpoint.path)  # Tune holds its own copy now


def train_distributed_trial(config: dict[str, Any]) -> None:
    """Ray Tune entry point for trials of `workers_per_trial > 1` DDP workers (`config`:
    `TrialSpec.to_tune`)."""
    from ray.util.queue import Queue

    trial_path, filesystem = _trial_storage()
    storage_path = f"{trial_path.rstrip('/')}/{TRAIN_RUNS_DIR}"
    # A fresh Train run per attempt: Train never restores on its own, Tune's checkpoint rules.
    name = f"attempt-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    queue = Queue(actor_options={"num_cpus": 0})
    launcher = start_launcher(queue)
    fit = launcher.fit.remote(TrialSpec.from_tune(config), tune.get_checkpoint(), storage_path,
                              filesystem, name)
    try:
        _forward_results(queue, fit)
        ray.get(fit)  # raises the run's error: Tune retries the trial from its checkpoint
        _delete(filesystem, storage_path)  # Train's staging folder: Tune holds the checkpoints
    finally:
        # Normal end: the launcher just cleans up and exits. Stopped by Tune (SystemExit in
        # tune.report) or failed: it ends the run first (it also notices a killed trial).
        launcher.request_stop.remote()
