"""One training run outside any search: the `train` and `evaluate` commands.

`train_to_directory` writes `DIR/checkpoint.pt` after every epoch (so an
interrupted run continues with `--resume`) and `DIR/metrics.json` at the end.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from resnet_core import (
    CHECKPOINT_FILE,
    CheckpointError,
    DataConfig,
    DeviceLoader,
    ModelConfig,
    TrainConfig,
    TrainingRun,
    bf16_is_fast,
    count_flops,
    count_parameters,
    data_config_from_dict,
    default_device,
    evaluate_model,
    fit,
    input_spec,
    load_checkpoint,
    load_data,
    model_from_checkpoint,
    save_checkpoint,
)

METRICS_FILE = "metrics.json"

__all__ = ["data_config_from_dict", "evaluate_checkpoint", "evaluate_module",
           "train_to_directory", "trained_normalisation"]


def train_to_directory(
    model_config: ModelConfig,
    train_config: TrainConfig,
    data_config: DataConfig,
    out: Path,
    *,
    device: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one model, checkpointing every epoch; returns what metrics.json holds."""
    run = TrainingRun.from_configs(model_config, train_config, data_config, device)
    checkpoint_path = out / CHECKPOINT_FILE
    if resume and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path)
        _check_same_run(state, run, checkpoint_path)
        run.load_state_dict(state)
        print(f"resumed from {checkpoint_path} at epoch {run.epoch}", file=sys.stderr)
    elif resume:
        print(f"--resume: no checkpoint in {out}; training from scratch", file=sys.stderr)
    bar = _progress_bar(train_config.epochs, run.epoch, run.model_config.name, progress)

    def on_epoch(run: TrainingRun, metrics: dict[str, float]) -> None:
        save_checkpoint(run.state_dict(), checkpoint_path)  # --resume continues from here
        bar.set_postfix(loss=f"{metrics['train_loss']:.3f}", val_acc=f"{metrics['val_accuracy']:.4f}",
                        img_s=f"{metrics['images_per_second']:.0f}")
        bar.update(1)

    fit(run, on_epoch=on_epoch)
    bar.close()
    test_loss, test_accuracy = run.test()
    last = run.history[-1]
    summary = {
        "model": run.model_config.name,
        "val_accuracy": last["val_accuracy"],
        "val_loss": last["val_loss"],
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "parameters": count_parameters(run.model),
        "flops": count_flops(run.model, run.data.image_size),
        "device": str(run.device),
        "amp": run.amp,
        "config": {
            "model": run.model_config.to_dict(),
            "train": train_config.to_dict(),
            "data": asdict(data_config),
        },
        "history": run.history,
    }
    (out / METRICS_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _progress_bar(total: int, initial: int, description: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit="epoch",
                disable=not enabled, file=sys.stderr)


# How a run executes, not what it trains: another machine may resume with other settings.
EXECUTION_FIELDS = frozenset({"amp", "channels_last", "compile", "deterministic"})
# Where the data lives, not which data: a moved dataset folder resumes.
LOCATION_FIELDS = frozenset({"root", "download"})


def _check_same_run(state: dict[str, Any], run: TrainingRun, checkpoint_path: Path) -> None:
    """--resume continues the run its checkpoint holds. Another network would not load (torch's
    missing/unexpected keys traceback); another recipe or dataset would train on with the saved
    optimizer and schedule anyway, while metrics.json recorded the new values."""
    saved_model = ModelConfig.from_dict(state["model_config"])
    if saved_model != run.model_config:
        raise CheckpointError(
            f"--resume: {checkpoint_path} holds {saved_model.name} "
            f"({_differences(saved_model, run.model_config)}), not the network asked for; pass "
            f"its options again or another --out")
    recipe = _differences(TrainConfig.from_dict(state["train_config"]), run.train_config,
                          skip=EXECUTION_FIELDS)
    if not recipe and state.get("data_config") and run.data_config is not None:
        recipe = _differences(data_config_from_dict(state["data_config"]), run.data_config,
                              skip=LOCATION_FIELDS)
    if recipe:
        raise CheckpointError(
            f"--resume: {checkpoint_path} was trained with another recipe ({recipe}); resume with "
            f"its flags as first given, or pass another --out for a new run")


def _differences(saved: Any, asked: Any, skip: frozenset[str] = frozenset()) -> str:
    """`depth 10 there, 16 asked` for each field of two configs (dataclasses) that differs."""
    return ", ".join(f"{spec.name} {getattr(saved, spec.name)} there, "
                     f"{getattr(asked, spec.name)} asked"
                     for spec in fields(saved) if spec.name not in skip
                     and getattr(saved, spec.name) != getattr(asked, spec.name))


def evaluate_checkpoint(
    checkpoint: Path,
    *,
    dataset: str | None = None,
    root: str | None = None,
    split: str = "test",
    device: str | None = None,
    batch_size: int = 512,
) -> dict[str, Any]:
    """Rebuild a model from its checkpoint alone and score it on a split."""
    model, state = model_from_checkpoint(checkpoint)
    data_config = data_config_from_dict(state.get("data_config"))
    return evaluate_module(model, data_config, dataset=dataset, root=root, split=split,
                           device=device, batch_size=batch_size,
                           source=str(checkpoint), normalisation=trained_normalisation(state))


def trained_normalisation(state: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) a checkpoint's network was trained with (a pretrained start's, which
    may not be its dataset's): what scoring and serving it must standardise with."""
    spec = input_spec(state)
    return spec.mean, spec.std


def evaluate_module(
    model: torch.nn.Module,
    data_config: DataConfig,
    *,
    dataset: str | None = None,
    root: str | None = None,
    split: str = "test",
    device: str | None = None,
    batch_size: int = 512,
    source: str = "",
    normalisation: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> dict[str, Any]:
    """Score a ready model on one split of its dataset (or another given dataset), its input
    standardised with `normalisation` (mean, std: the model's own), else the dataset's."""
    overrides: dict[str, Any] = {}
    if dataset is not None:
        overrides["dataset"] = dataset
    if root is not None:
        overrides["root"] = root
    data_config = DataConfig(**{**asdict(data_config), **overrides})
    data = load_data(data_config)
    _check_model_fits_data(model, data)
    chosen = torch.device(device) if device else default_device()
    model = model.to(chosen).eval()
    # Plain batches (no shuffling, no augmentation), whichever split is scored.
    mean, std = normalisation or (data.mean, data.std)
    loader = DeviceLoader(getattr(data, split), batch_size, mean, std, chosen)
    confusion = torch.zeros(data.num_classes, data.num_classes, dtype=torch.int64)
    loss, accuracy = evaluate_model(model, loader, amp=bf16_is_fast(chosen), confusion=confusion)
    return {
        "source": source,
        "dataset": data_config.dataset,
        "split": split,
        "images": loader.num_images,
        "accuracy": accuracy,
        "loss": loss,
        "class_names": list(data.class_names),
        "confusion": confusion.tolist(),  # [true class][predicted class] image counts
    }


def _check_model_fits_data(model: torch.nn.Module, data) -> None:
    """A model trained on other images cannot score these: say so instead of crashing."""
    from resnet_core import DataConfigError

    config = getattr(model, "config", None)
    if config is None:
        return
    if config.in_channels != data.in_channels or config.num_classes != data.num_classes:
        raise DataConfigError(
            f"the model takes {config.in_channels}-channel images and predicts "
            f"{config.num_classes} classes, but {data.name} has {data.in_channels} channel(s) and "
            f"{data.num_classes} classes; evaluate it on the dataset it was trained on")
