"""One DDP worker of a multi-worker trial: the same trial body as a single-worker trial.

Each of the W workers builds the trial's `TrainingRun` on its share of every
epoch (`rank`, `world_size`) with the model wrapped by Ray Train's
`prepare_model`, and runs `search.trial.trainable.train_and_report` with
`ray.train.report` as the reporter: every rank reports each epoch, rank 0
attaches the checkpoint. Train metrics are all-reduced inside the run, so the
ranks report the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from resnet_core import TrainingRun
from search.trial.trainable import build_run, noting_once, train_and_report, trial_identity


def report_to_train(result: dict[str, Any], directory: str | None) -> None:
    checkpoint = ray.train.Checkpoint.from_directory(directory) if directory else None
    ray.train.report(result, checkpoint=checkpoint)


def announce_workers(loop_config: dict[str, Any]) -> None:
    """Tell the trial's launcher where this run's workers live (see `search.trial.distributed`)."""
    launcher = loop_config.get("launcher")
    if launcher is not None and ray.train.get_context().get_world_rank() == 0:
        ray.get(launcher.set_placement_group.remote(ray.util.get_current_placement_group()))


def worker_run(loop_config: dict[str, Any], restore_notes: list[str] | None = None) -> TrainingRun:
    """This worker's share of the trial, restored from the trial's checkpoint if it has one
    (a torn one: from an older readable one or from scratch, said in `restore_notes`)."""
    torch.set_num_threads(int(loop_config.get("threads", 1)))
    context = ray.train.get_context()
    device = ray.train.torch.get_device()
    if isinstance(device, list):
        device = device[0]
    return build_run(
        loop_config["trial"], device, loop_config.get("resume_from"), restore_notes=restore_notes,
        rank=context.get_world_rank(), world_size=context.get_world_size(),
        wrap_model=lambda model: ray.train.torch.prepare_model(model, move_to_device=False),
    )


def run_worker(loop_config: dict[str, Any],
               before_training: Callable[[TrainingRun], None] | None = None) -> TrainingRun:
    """The body of `train_loop_per_worker`; returns the run (tests inspect each rank's state,
    and may set it up to record what it trains on with `before_training`)."""
    announce_workers(loop_config)
    notes: list[str] = []
    run = worker_run(loop_config, notes)
    if before_training is not None:
        before_training(run)
    extra = {**trial_identity(), "resumed_from_epoch": run.epoch,
             "device": str(run.device.type), "amp": int(run.amp), "world_size": run.world_size,
             "rank": run.rank}
    # Rank 0's first result carries the restore note to the trial's MLflow run, as a
    # single-worker trial's does.
    report = noting_once(report_to_train, notes[0]) if notes and run.rank == 0 else report_to_train
    train_and_report(run, extra, report)
    return run


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """One DDP worker: train epoch by epoch, report every epoch (rank 0: with a checkpoint)."""
    run_worker(loop_config)
