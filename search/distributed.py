"""Multi-worker (DDP) trials: one Tune trial runs a Ray Train `TorchTrainer` of W workers.

How a trial with `workers_per_trial = W` runs:

- The Tune trial process only drives: it asks Tune for `DDP_DRIVER_CPU` and
  starts a Ray Train V2 `TorchTrainer` whose W workers share the rest of
  `cpus_per_trial` evenly (`cpus_per_trial / W - DDP_DRIVER_CPU / W` each, so
  the trial holds exactly `cpus_per_trial`) and `gpus_per_trial / W` GPUs each
  (Train places them in a placement group of its own). NCCL joins the workers
  on GPUs (gloo when a worker holds less than one GPU, since NCCL cannot put
  two ranks on one device), gloo on CPUs. Each worker runs torch with
  `max(1, int(cpus_per_trial / W))` threads.
- `batch_size` is global: each optimizer step sees `batch_size` images, of
  which each worker computes `batch_size / W` (it must divide evenly). Each
  epoch is split into W disjoint equal shares; the gradients are all-reduced
  by DDP, so the W replicas stay identical, and train loss / accuracy are
  summed over all shares. Every worker scores the whole validation split.
- Every worker reports each epoch (`ray.train.report`); rank 0 attaches the
  checkpoint. A Train callback forwards rank 0's result and checkpoint to the
  trial process, which reports them to Tune (`ray.tune.report`): the same
  metric keys, checkpoints and resume semantics as a single-worker trial
  (`search.trainable`), plus `world_size`. Ray's `TuneReportCallback` is not
  used because it forwards only the checkpoint's path as a metric, so Tune
  would keep no checkpoint (no champion, no resume).
- A restarted trial passes Tune's checkpoint to the workers, which all load it.
  Train itself never retries (`max_failures = 0`): failures go to Tune, whose
  `FailureConfig` restarts the trial from its last checkpoint.
- A non-finite loss on any worker stops all of them at the same step (the
  check is all-reduced), they report the diverged result and the trial ends
  cleanly with `diverged = 1`.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray.train.v2._internal.execution.callback import ControllerCallback
from ray.train.v2.api.callback import UserCallback

from resnet_core.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from resnet_core.data import load_data
from resnet_core.train import DivergedError, TrainingRun
from search.resources import DDP_DRIVER_CPU
from search.trainable import configs_from_trial, diverged_result, trial_identity

# Folder (inside the Tune trial's storage folder) where Ray Train stages the
# checkpoints of rank 0 before the trial process hands them to Tune.
TRAIN_RUNS_DIR = "ddp-train"
POLL_S = 0.5


# ---------------------------------------------------------------- resources


def worker_resources(config: dict[str, Any]) -> dict[str, float]:
    """The trial's `resources` entry (see `search.space.SearchSpace`), validated."""
    resources = config.get("resources")
    if not resources or "workers" not in resources:
        raise ValueError("a distributed trial needs config['resources'] = {'workers': W, "
                         "'cpus_per_worker': c, 'gpus_per_worker': g} (search.space.SearchSpace)")
    workers = int(resources["workers"])
    cpus = float(resources.get("cpus_per_worker", 1.0))
    gpus = float(resources.get("gpus_per_worker", 0.0) or 0.0)
    if workers < 1 or cpus <= 0 or gpus < 0:
        raise ValueError(f"invalid trial resources {resources}")
    return {"workers": workers, "cpus_per_worker": cpus, "gpus_per_worker": gpus}


def torch_threads(cpus_per_worker: float) -> int:
    return max(1, int(cpus_per_worker))


def reserved_cpus_per_worker(cpus_per_worker: float, workers: int) -> float:
    """What each worker reserves: its share less its part of the trial driver's sliver.

    The trial's own process holds `DDP_DRIVER_CPU`, so a trial reserves exactly
    `cpus_per_trial` in all: two trials of `cpus_per_trial = 1` fill two cores.
    Rounded down to Ray's resource granularity (1e-4) so that sums never overshoot.
    """
    share = cpus_per_worker - DDP_DRIVER_CPU / workers
    return max(math.floor(share * 1e4) / 1e4, 1e-4)


def backend_for(gpus_per_worker: float) -> str:
    """NCCL needs one whole GPU per rank; gloo runs everywhere (CPU, shared GPUs)."""
    return "nccl" if gpus_per_worker >= 1 else "gloo"


def build_trainer(config: dict[str, Any], *, resume_from: tune.Checkpoint | None = None,
                  storage_path: str | None = None, storage_filesystem=None,
                  name: str | None = None, callbacks: list | None = None,
                  loop: Callable[[dict[str, Any]], None] | None = None,
                  extra_loop_config: dict[str, Any] | None = None):
    """The `TorchTrainer` that runs one trial's W workers.

    `loop` replaces `train_loop_per_worker` and `extra_loop_config` adds to what
    the workers receive (tests drive the same worker set-up with their own loop).
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    need = worker_resources(config)
    per_worker = {"CPU": reserved_cpus_per_worker(need["cpus_per_worker"], need["workers"])}
    if need["gpus_per_worker"]:
        per_worker["GPU"] = need["gpus_per_worker"]
    loop_config = {
        "trial": {k: v for k, v in config.items() if k != "resources"},
        "threads": torch_threads(need["cpus_per_worker"]),
        "resume_from": resume_from,
        **(extra_loop_config or {}),
    }
    return TorchTrainer(
        loop or train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend=backend_for(need["gpus_per_worker"])),
        scaling_config=ray.train.ScalingConfig(
            num_workers=need["workers"], use_gpu=need["gpus_per_worker"] > 0,
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


# ---------------------------------------------------------------- the workers


def worker_run(loop_config: dict[str, Any]) -> tuple[TrainingRun, dict[str, Any], int]:
    """This worker's share of the trial: (run, data config, epoch resumed from)."""
    import ray.train
    import ray.train.torch

    torch.set_num_threads(int(loop_config.get("threads", 1)))
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    model_config, train_config, data_config = configs_from_trial(loop_config["trial"])
    device = ray.train.torch.get_device()
    if isinstance(device, list):
        device = device[0]
    data = load_data(data_config)
    run = TrainingRun(
        model_config, train_config, data, device, rank=rank, world_size=world_size,
        wrap_model=lambda model: ray.train.torch.prepare_model(model, move_to_device=False),
    )
    resumed_from = 0
    checkpoint = loop_config.get("resume_from")
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            run.load_state_dict(load_checkpoint(directory))
        resumed_from = run.epoch
    return run, {**data_config.__dict__}, resumed_from


def _report(result: dict[str, Any], state: dict[str, Any] | None) -> None:
    """Every rank reports; only a rank holding `state` (rank 0) attaches a checkpoint."""
    import ray.train

    if state is None:
        ray.train.report(result)
        return
    with tempfile.TemporaryDirectory(prefix="resnet-search-ckpt-") as directory:
        save_checkpoint(state, Path(directory) / CHECKPOINT_FILE)
        ray.train.report(result, checkpoint=ray.train.Checkpoint.from_directory(directory))


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """One DDP worker: train epoch by epoch, report every epoch (rank 0: with a checkpoint)."""
    run_worker(loop_config)


def run_worker(loop_config: dict[str, Any]) -> TrainingRun:
    """The body of `train_loop_per_worker`; returns the run (tests inspect each rank's state)."""
    run, data_config, resumed_from = worker_run(loop_config)
    metric = loop_config["trial"].get("metric", "val_accuracy")
    extra = {**trial_identity(), "resumed_from_epoch": resumed_from,
             "device": str(run.device.type), "amp": int(run.amp), "world_size": run.world_size,
             "rank": run.rank}
    best = max((m["val_accuracy"] for m in run.history), default=0.0)
    if run.finished and run.history:
        # Restored from the final checkpoint: report the last epoch again (see search.trainable).
        _report({**run.history[-1], "best_val_accuracy": best, "diverged": 0, **extra}, None)
        return run
    while not run.finished:
        try:
            metrics = run.train_epoch()
        except DivergedError as error:
            _report({**diverged_result(metric, run, error), **extra}, None)
            return run
        best = max(best, metrics["val_accuracy"])
        state = None
        if run.rank == 0:
            state = run.state_dict()
            state["data_config"] = data_config
        _report({**metrics, "best_val_accuracy": best, "diverged": 0, **extra}, state)
    return run


# ---------------------------------------------------------------- the Tune trial


class ForwardToTrial(UserCallback):
    """Runs in the Train controller: hands rank 0's result and the checkpoint to the trial."""

    def __init__(self, queue) -> None:
        self.queue = queue

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        self.queue.put((dict(metrics[0]), checkpoint))


class AnnounceController(ControllerCallback):
    """Runs in the Train controller: tells the launcher which controller to abort if need be."""

    def __init__(self, launcher) -> None:
        self.launcher = launcher

    def after_controller_start(self, train_run_context) -> None:
        ray.get(self.launcher.set_controller.remote(ray.get_runtime_context().current_actor))


class TrainRunLauncher:
    """Owns one attempt's Train run, outside the Tune trial's process (a detached actor).

    Tune stops a trial (ASHA pruning, or the last epoch under ASHA) by removing
    the trial's placement group, which kills the trial process at once. A Train
    controller owned by that process would die with it, without shutting its
    run down; Ray Train's own clean-up of the workers' placement group needs the
    state API of a full `ray[default]` dashboard, so the run's CPUs/GPUs would
    stay reserved and the next trials would wait forever. The launcher owns the
    controller instead, watches the trial's result queue (which dies with the
    trial), and aborts the run through the controller when the trial is gone.
    """

    def __init__(self, queue) -> None:
        self.queue = queue  # owned by the trial: alive exactly as long as the trial
        self.controller = None
        self.staging: tuple[Any, str] | None = None
        self.done = threading.Event()
        self.stop = threading.Event()

    def set_controller(self, controller) -> None:
        self.controller = controller

    def fit(self, config: dict[str, Any], resume_from, storage_path: str, storage_filesystem,
            name: str) -> None:
        launcher = ray.get_runtime_context().current_actor
        self.staging = (storage_filesystem, storage_path)
        try:
            build_trainer(config, resume_from=resume_from, storage_path=storage_path,
                          storage_filesystem=storage_filesystem, name=name,
                          callbacks=[ForwardToTrial(self.queue), AnnounceController(launcher)],
                          ).fit()
        finally:
            self.done.set()

    def request_stop(self) -> None:
        self.stop.set()

    def watch(self, poll_s: float = 1.0) -> None:
        """Until the trial says stop or disappears; then abort a run still going, and exit."""
        while not self.stop.is_set() and self._trial_alive():
            self.stop.wait(poll_s)
        if not self.done.is_set():
            deadline = time.monotonic() + 120  # a run still starting announces its controller
            while self.controller is None and not self.done.is_set() \
                    and time.monotonic() < deadline:
                self.done.wait(0.2)
            if self.controller is not None and not self.done.is_set():
                try:
                    ray.get(self.controller.abort.remote(), timeout=60)
                except Exception:  # the controller exits while it answers
                    pass
        if self.staging is not None:  # Train's staging folder: Tune holds the checkpoints
            _delete(*self.staging)
        ray.actor.exit_actor()

    def _trial_alive(self) -> bool:
        try:
            ray.get(self.queue.actor.qsize.remote(), timeout=30)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.ActorUnavailableError):
            return True  # busy or briefly unreachable: ask again
        except ray.exceptions.RayActorError:
            return False
        return True


def _trial_storage() -> tuple[str, Any]:
    """The Tune trial's folder on the study storage (shared by all nodes) and its filesystem."""
    from ray.train._internal.session import get_session

    session = get_session()
    if session is None or getattr(session, "storage", None) is None:
        raise RuntimeError("train_distributed_trial must run as a Ray Tune trial")
    return session.storage.trial_fs_path, session.storage.storage_filesystem


def _delete(filesystem, path: str) -> None:
    try:
        filesystem.delete_dir(path)
    except (FileNotFoundError, OSError):
        pass


def train_distributed_trial(config: dict[str, Any]) -> None:
    """Ray Tune entry point for trials of `workers_per_trial > 1` DDP workers."""
    from ray.util.queue import Empty, Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    trial_path, filesystem = _trial_storage()
    storage_path = f"{trial_path.rstrip('/')}/{TRAIN_RUNS_DIR}"
    # A fresh Train run per attempt: Train never restores on its own, Tune's checkpoint rules.
    name = f"attempt-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    queue = Queue(actor_options={"num_cpus": 0})
    launcher = ray.remote(TrainRunLauncher).options(
        num_cpus=0, max_concurrency=8, lifetime="detached",
        # Out of the trial's placement group (Tune removes it when it stops the trial).
        scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=True),
    ).remote(queue)
    launcher.watch.remote(POLL_S * 2)
    fit = launcher.fit.remote(config, tune.get_checkpoint(), storage_path, filesystem, name)
    try:
        while True:
            finished = bool(ray.wait([fit], timeout=0)[0])  # first: results before the end drain
            try:
                metrics, checkpoint = queue.get(block=not finished, timeout=POLL_S)
            except Empty:
                if finished:
                    break
                continue
            if checkpoint is None:
                tune.report(metrics)
                continue
            tune.report(metrics, checkpoint=tune.Checkpoint(path=checkpoint.path,
                                                            filesystem=checkpoint.filesystem))
            _delete(checkpoint.filesystem, checkpoint.path)  # Tune holds its own copy now
        ray.get(fit)  # raises the run's error: Tune retries the trial from its checkpoint
        _delete(filesystem, storage_path)  # Train's staging folder: Tune holds the checkpoints
    finally:
        # Normal end: the launcher just cleans up and exits. Stopped by Tune (SystemExit in
        # tune.report) or failed: it aborts the run first (it also notices a killed trial).
        launcher.request_stop.remote()
