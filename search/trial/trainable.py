"""The Ray Tune function trainable: one trial = one `resnet_core` training run.

The trial body (`train_and_report`) is shared with each DDP worker
(`search.trial.ddp_worker`): `resnet_core.train.fit` runs the epochs and every epoch
is reported with its metrics and, from rank 0, the run's checkpoint, unchanged.
Only the reporter differs: `ray.tune.report` here, `ray.train.report` there. A
restarted trial (its process was killed, or the study was resumed) continues
from `ray.tune.get_checkpoint()`. A diverged run ends as a finished trial with
the worst score and `diverged = 1`, so the study goes on.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from resnet_core import (
    CHECKPOINT_FILE,
    CheckpointError,
    DataConfig,
    DataSplits,
    DivergedError,
    TrainingRun,
    fit,
    load_checkpoint,
    load_data,
    save_checkpoint,
)
from search import fault_points
from search.trial.spec import TrialSpec

# The score a diverged trial reports: the worst possible for each metric.
WORST_SCORE = {"val_accuracy": 0.0, "val_loss": 1e9}

# Reports one result; the second argument is a directory holding the checkpoint, or None.
Reporter = Callable[[dict[str, Any], "str | None"], None]


@functools.lru_cache(maxsize=2)
def cached_data(config: DataConfig) -> DataSplits:
    """A dataset loaded once per trial process: Tune reuses the process for the next trial.

    The splits are read-only to training (batches are fresh tensors), so trials can share them.
    A folder's cache is only read: the driver built it before any trial started, and a node
    that cannot see it fails with one line naming it instead of decoding the folder again.
    """
    return load_data(config, build_cache=False)


def build_run(trial: TrialSpec, device: torch.device | str, checkpoint: Any,
              restore_notes: list[str] | None = None, **run_options: Any) -> TrainingRun:
    """The trial's training run, restored from a Ray checkpoint (Tune's or Train's) if given.

    A torn checkpoint (a writer killed half-way, a bad copy) never fails the trial: the run
    restores the newest readable checkpoint of the trial, else starts from scratch, and says
    so on stderr and in `restore_notes` (reported, then tagged on the trial's MLflow run).
    """
    run = TrainingRun(trial.model, trial.train, cached_data(trial.data), device,
                      data_config=trial.data, **run_options)
    if checkpoint is not None:
        state, note = newest_readable_state(checkpoint)
        if note:
            print(f"resnet-search: {note}", file=sys.stderr, flush=True)
            if restore_notes is not None:
                restore_notes.append(note)
        if state is not None:
            run.load_state_dict(state)
    return run


def newest_readable_state(checkpoint: Any) -> tuple[dict[str, Any] | None, str]:
    """(state, note): the newest loadable checkpoint of the trial; the note names those skipped."""
    skipped: list[str] = []
    for candidate in _newest_first(checkpoint):
        try:
            with candidate.as_directory() as directory:
                state = load_checkpoint(directory)
        except (CheckpointError, FileNotFoundError) as error:
            skipped.append(str(error))
            continue
        if not skipped:
            return state, ""
        return state, (f"{'; '.join(skipped)}; restarted from the older checkpoint "
                       f"{candidate.path} (epoch {state.get('epoch', '?')})")
    return None, f"{'; '.join(skipped)}; no readable checkpoint left, restarted from scratch"


def _newest_first(checkpoint: Any):
    """The given checkpoint, then the trial's other `checkpoint_NNNNNN` folders, newest first."""
    import pyarrow.fs

    yield checkpoint
    parent, name = os.path.split(str(checkpoint.path).rstrip("/"))
    try:
        entries = checkpoint.filesystem.get_file_info(pyarrow.fs.FileSelector(parent))
    except OSError:
        return
    older = sorted((e.base_name for e in entries if e.type == pyarrow.fs.FileType.Directory
                    and e.base_name.startswith("checkpoint_") and e.base_name < name), reverse=True)
    for folder in older:
        yield type(checkpoint)(path=f"{parent}/{folder}", filesystem=checkpoint.filesystem)


def trial_identity() -> dict[str, Any]:
    """Where the trial runs: reported with every result (lineage and multi-node checks)."""
    try:
        node_id = ray.get_runtime_context().get_node_id()
        gpu_ids = ",".join(str(g) for g in ray.get_gpu_ids())
    except Exception:  # outside Ray (direct calls in tests)
        node_id, gpu_ids = "", ""
    return {"node_id": node_id, "pid": os.getpid(), "hostname": os.uname().nodename,
            "gpu_ids": gpu_ids}


def diverged_result(run: TrainingRun, error: DivergedError) -> dict[str, Any]:
    return {
        "epoch": run.epoch + 1,
        **WORST_SCORE,
        "best_val_accuracy": run.best_val_accuracy,
        "diverged": 1,
        "error": str(error),
    }


def train_and_report(run: TrainingRun, extra: dict[str, Any], report: Reporter) -> None:
    """The trial body: `fit` the run, reporting every epoch (rank 0: with its checkpoint)."""

    def epoch_result(metrics: dict[str, Any]) -> dict[str, Any]:
        return {**metrics, "best_val_accuracy": run.best_val_accuracy, "diverged": 0, **extra}

    if run.finished and run.history:
        # Restored from its final checkpoint (the driver died before recording the end):
        # report the last epoch again so the trial's final result is complete.
        report(epoch_result(run.history[-1]), None)
        return

    # The platform's own costs per epoch, reported with the next epoch (the phase breakdown).
    costs = {"checkpoint_seconds": 0.0, "report_seconds": 0.0}

    def on_epoch(run: TrainingRun, metrics: dict[str, float]) -> None:
        start = time.perf_counter()
        if run.rank != 0:
            report({**epoch_result(metrics), **costs}, None)
            costs["report_seconds"] = time.perf_counter() - start
            return
        with tempfile.TemporaryDirectory(prefix="resnet-search-ckpt-") as directory:
            save_checkpoint(run.state_dict(), Path(directory) / CHECKPOINT_FILE)
            fault_points.reached("checkpoint")
            saved = time.perf_counter()
            report({**epoch_result(metrics), **costs}, directory)
        costs.update(checkpoint_seconds=saved - start, report_seconds=time.perf_counter() - saved)

    try:
        fit(run, on_epoch=on_epoch)
    except DivergedError as error:
        report({**diverged_result(run, error), **extra}, None)


def report_to_tune(result: dict[str, Any], directory: str | None) -> None:
    checkpoint = tune.Checkpoint.from_directory(directory) if directory else None
    tune.report(result, checkpoint=checkpoint)


@torch.no_grad()
def forward_latency_ms(run: TrainingRun, batch: int, repeats: int = 10) -> float:
    """Median milliseconds of one inference forward pass of `batch` images on the run's device.

    Zeros as input and eval mode: no RNG is drawn and no BN statistic moves, so
    measuring leaves the training run exactly as it was.
    """
    height, width = run.data.image_size
    images = torch.zeros(batch, run.data.in_channels, height, width, device=run.device)
    was_training = run.model.training
    run.model.eval()
    times = []
    try:
        for i in range(repeats + 2):  # two warm-up passes
            start = time.perf_counter()
            with run._autocast():
                run.model(images)
            if run.device.type == "cuda":
                torch.cuda.synchronize(run.device)
            if i >= 2:
                times.append((time.perf_counter() - start) * 1000)
    finally:
        run.model.train(was_training)
    return sorted(times)[len(times) // 2]


def latency_result(run: TrainingRun, limits: dict[str, float]) -> dict[str, Any]:
    """Latency at batch 1 (`latency_ms`, what max_latency_ms limits) and at the study's batch.

    `limits` is `ConstraintsSection.limits()`: keyed by cost (`latency_ms`), not by the
    study file's key."""
    latency = forward_latency_ms(run, 1)
    batch = forward_latency_ms(run, run.train_config.batch_size, repeats=3)
    feasible = "latency_ms" not in limits or latency <= limits["latency_ms"]
    return {"latency_ms": latency, "latency_ms_batch": batch, "feasible": int(feasible)}


def noting_once(report: Reporter, note: str) -> Reporter:
    """`report`, with the restore note (`checkpoint_restore`) in the first result only: the
    driver tags the trial's run and says it once."""
    pending = [note]

    def noted(result: dict[str, Any], directory: str | None) -> None:
        report({**result, "checkpoint_restore": pending.pop()} if pending else result, directory)

    return noted


def train_trial(config: dict[str, Any]) -> None:
    """Ray Tune entry point for single-worker trials (`config`: `TrialSpec.to_tune`)."""
    # A trial given a GPU that torch cannot use (driver too old for the CUDA build) fails
    # with one line instead of training on the CPU unnoticed.
    from resnet_core import trial_device

    started = time.perf_counter()
    device = trial_device(ray.get_gpu_ids())
    notes: list[str] = []
    spec = TrialSpec.from_tune(config)
    run = build_run(spec, device, tune.get_checkpoint(), restore_notes=notes)
    extra = {**trial_identity(), "resumed_from_epoch": run.epoch, "device": device,
             "amp": int(run.amp), "setup_seconds": time.perf_counter() - started}
    extra.update(spec.cost)
    if spec.measure_latency:
        extra.update(latency_result(run, dict(spec.constraints)))
    if not extra.get("feasible", 1):  # over max_latency_ms: never the champion, so not trained
        report_to_tune({"epoch": 0, **WORST_SCORE, "best_val_accuracy": 0.0, "diverged": 0,
                        **extra}, None)
        return
    train_and_report(run, extra, noting_once(report_to_tune, notes[0]) if notes else report_to_tune)
