"""The Ray Tune function trainable: one trial = one `resnet_core` training run.

Each epoch reports its metrics and a checkpoint with `ray.tune.report`; a
restarted trial (its process was killed, or the study was resumed) continues
from `ray.tune.get_checkpoint()`. A diverged run ends as a finished trial with
the worst score and `diverged = 1`, so the study goes on.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from resnet_core.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from resnet_core.config import ModelConfig
from resnet_core.data import DataConfig, DataSplits, load_data
from resnet_core.train import DivergedError, TrainConfig, TrainingRun

# The score a diverged trial reports: the worst possible for each metric.
WORST_SCORE = {"val_accuracy": 0.0, "best_val_accuracy": 0.0, "val_loss": 1e9}


def configs_from_trial(config: dict[str, Any]) -> tuple[ModelConfig, TrainConfig, DataConfig]:
    """The resolved trial (see `search.space.SearchSpace`) as resnet_core configs."""
    train = {k: v for k, v in config["train"].items()}
    data = dict(config["data"])
    return ModelConfig(**config["model"]), TrainConfig(**train), DataConfig(**data)


def trial_identity() -> dict[str, Any]:
    """Where the trial runs: reported with every result (lineage and multi-node checks)."""
    try:
        node_id = ray.get_runtime_context().get_node_id()
        gpu_ids = ",".join(str(g) for g in ray.get_gpu_ids())
    except Exception:  # outside Ray (direct calls in tests)
        node_id, gpu_ids = "", ""
    return {"node_id": node_id, "pid": os.getpid(), "hostname": os.uname().nodename,
            "gpu_ids": gpu_ids}


def report_epoch(
    metrics: dict[str, Any], state: dict[str, Any] | None, extra: dict[str, Any]
) -> None:
    """Report one epoch to Tune, with a checkpoint directory when `state` is given."""
    result = {**metrics, **extra}
    if state is None:
        tune.report(result)
        return
    with tempfile.TemporaryDirectory(prefix="resnet-search-ckpt-") as directory:
        save_checkpoint(state, Path(directory) / CHECKPOINT_FILE)
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(directory))


def diverged_result(metric: str, run: TrainingRun, error: DivergedError) -> dict[str, Any]:
    best = max((m["val_accuracy"] for m in run.history), default=0.0)
    return {
        "epoch": run.epoch + 1,
        "val_accuracy": 0.0,
        "best_val_accuracy": best,
        "val_loss": WORST_SCORE["val_loss"],
        metric: WORST_SCORE.get(metric, 0.0),
        "diverged": 1,
        "error": str(error),
    }


def train_trial(config: dict[str, Any]) -> None:
    """Ray Tune entry point for single-worker trials."""
    model_config, train_config, data_config = configs_from_trial(config)
    metric = config.get("metric", "val_accuracy")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data: DataSplits = load_data(data_config)
    run = TrainingRun(model_config, train_config, data, device)
    resumed_from = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            run.load_state_dict(load_checkpoint(directory))
        resumed_from = run.epoch
    identity = {**trial_identity(), "resumed_from_epoch": resumed_from,
                "device": device, "amp": int(run.amp)}
    best = max((m["val_accuracy"] for m in run.history), default=0.0)
    if run.finished and run.history:
        # Restored from its final checkpoint (the driver died before recording the end):
        # report the last epoch again so the trial's final result is complete.
        report_epoch({**run.history[-1], "best_val_accuracy": best, "diverged": 0}, None, identity)
        return
    while not run.finished:
        try:
            metrics = run.train_epoch()
        except DivergedError as error:
            report_epoch(diverged_result(metric, run, error), None, identity)
            return
        best = max(best, metrics["val_accuracy"])
        state = run.state_dict()
        state["data_config"] = {**data_config.__dict__}
        report_epoch({**metrics, "best_val_accuracy": best, "diverged": 0}, state, identity)
