"""The training loop: one `TrainingRun` trains epoch by epoch and reports metrics.

A run owns the model, optimizer, scheduler and loaders; its `state_dict()` is
a complete checkpoint (the format is described in `resnet_core.checkpoint`), so
a run restored from it continues exactly where it stopped. `fit()` is the only
epoch loop: the `train` command, the Ray Tune trial and each DDP worker call it
and do their own work (checkpoint, report, progress bar) in `on_epoch`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnet_core.checkpoint import data_config_from_dict, data_config_to_dict, data_info
from resnet_core.config import ModelConfig, TrainConfig
from resnet_core.data import DataConfig, DataSplits, load_data
from resnet_core.errors import DivergedError
from resnet_core.hardware import bf16_is_fast, default_device, seed_everything
from resnet_core.loader import DeviceLoader, make_loaders
from resnet_core.models import build_model
from resnet_core.optim import build_optimizer, build_scheduler, lr_multiplier
from resnet_core.pretrained import classifier_name, load_starting_weights, read_init

# Check the loss for NaN/inf every this many steps: each check waits for the
# device, so checking every step would slow GPU training.
DIVERGENCE_CHECK_EVERY = 20
# Version 1 checkpoints of search trials held `data_config` too; those of plain runs lacked it.
CHECKPOINT_FORMAT_VERSION = 1


def configure_determinism(deterministic: bool) -> None:
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic


class TrainingRun:
    """One model trained on one dataset with one recipe.

    Args:
        model_config: the network (`num_classes` and `in_channels` are set from the data).
        train_config: the recipe.
        data: the splits (see `resnet_core.data.load_data`).
        device: defaults to CUDA when available.
        rank, world_size: this worker's place in a DDP job (1 worker: plain training).
        wrap_model: turns the model into its DDP form (the search layer passes Ray
            Train's `prepare_model`); the unwrapped model is what checkpoints hold.
        data_config: how `data` was made; checkpoints carry it so that a model can be
            scored on its own data later (`TrainingRun.from_configs` sets it).
    """

    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        data: DataSplits,
        device: torch.device | str | None = None,
        *,
        rank: int = 0,
        world_size: int = 1,
        wrap_model: Callable[[nn.Module], nn.Module] | None = None,
        data_config: DataConfig | None = None,
    ) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.train_config = train_config
        self.data_config = data_config
        self.model_config = model_config.replace(
            num_classes=data.num_classes, in_channels=data.in_channels
        )
        self.data = data
        self.rank, self.world_size = rank, world_size
        self.amp = bf16_is_fast(self.device) if train_config.amp is None else train_config.amp
        configure_determinism(train_config.deterministic)
        seed_everything(train_config.seed)

        memory_format = torch.channels_last if train_config.channels_last else torch.preserve_format
        model = build_model(self.model_config)
        if train_config.init is not None:
            starting = read_init(train_config.init, self.model_config)
            load_starting_weights(model, starting, self.model_config.name)
            # The weights expect the input standardised as they were trained: the loaders
            # apply it, and the checkpoint's data_info records it for predict and serve.
            data = self.data = replace(data, mean=tuple(starting.mean), std=tuple(starting.std))
        self.model = model.to(self.device, memory_format=memory_format)
        self.train_model: nn.Module = wrap_model(self.model) if wrap_model else self.model
        if train_config.compile:
            self.train_model = torch.compile(self.train_model)

        if train_config.batch_size % world_size:
            raise ValueError(f"batch_size={train_config.batch_size} must be divisible by the "
                             f"{world_size} workers of the trial")
        self.generator = torch.Generator().manual_seed(train_config.seed)
        self.train_loader, self.val_loader, self.test_loader = make_loaders(
            data, train_config.batch_size // world_size, self.device,
            channels_last=train_config.channels_last, generator=self.generator,
            rank=rank, world_size=world_size,
        )
        self._build_optimization()
        self.epoch = 0
        self.history: list[dict[str, float]] = []

    @classmethod
    def from_configs(
        cls,
        model_config: ModelConfig,
        train_config: TrainConfig,
        data_config: DataConfig,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> TrainingRun:
        """Load the data of `data_config` and build the run (which remembers the config)."""
        return cls(model_config, train_config, load_data(data_config), device,
                   data_config=data_config, **kwargs)

    def _build_optimization(self) -> None:
        """Optimizer and per-step LR schedule (the schedule counts this rank's steps)."""
        train_config = self.train_config
        self.optimizer = build_optimizer(
            train_config.optimizer, self.model, train_config.lr,
            momentum=train_config.momentum, weight_decay=train_config.weight_decay,
            exempt_bn_and_bias=train_config.exempt_bn_and_bias,
            head=self.model.get_submodule(classifier_name(self.model)),
            backbone_lr_factor=train_config.backbone_lr_factor,
        )
        steps_per_epoch = len(self.train_loader)
        self.scheduler = build_scheduler(self.optimizer, lr_multiplier(
            train_config.schedule, train_config.epochs * steps_per_epoch,
            warmup_steps=int(round(train_config.warmup_epochs * steps_per_epoch)),
            milestones=train_config.milestones, gamma=train_config.gamma,
        ))

    # ------------------------------------------------------------ training

    @property
    def finished(self) -> bool:
        return self.epoch >= self.train_config.epochs

    @property
    def best_val_accuracy(self) -> float:
        """The best validation accuracy of any epoch so far (0 before the first)."""
        return max((m["val_accuracy"] for m in self.history), default=0.0)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def train_epoch(self) -> dict[str, float]:
        """Train one epoch, then score the validation split. Raises DivergedError."""
        config = self.train_config
        self.train_model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        for step, (images, labels) in enumerate(self.train_loader):
            with self._autocast():
                logits = self.train_model(images)
                loss = F.cross_entropy(logits.float(), labels,
                                       label_smoothing=config.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
            if step % DIVERGENCE_CHECK_EVERY == 0:
                self._check_finite(loss_sum, step)
        self._check_finite(loss_sum, len(self.train_loader))
        train_loss, train_correct, train_seen = _all_reduce_sums(
            [loss_sum.item(), correct.item(), seen], self.device, self.world_size
        )
        train_seconds = time.perf_counter() - start
        val_loss, val_accuracy = self.evaluate(self.val_loader)
        self.epoch += 1
        metrics = {
            "epoch": self.epoch,
            "train_loss": train_loss / train_seen,
            "train_accuracy": train_correct / train_seen,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "lr": self.optimizer.param_groups[-1]["lr"],  # the head's: lr itself
            "epoch_seconds": time.perf_counter() - start,
            "train_seconds": train_seconds,
            "val_seconds": time.perf_counter() - start - train_seconds,
            "images_per_second": train_seen / train_seconds,
        }
        self.history.append(metrics)
        return metrics

    def _check_finite(self, loss_sum: torch.Tensor, step: int) -> None:
        value = loss_sum.item()
        if self.world_size > 1 and torch.distributed.is_initialized():
            # All ranks decide together: a rank that stopped alone would leave the
            # others waiting in the next all-reduce forever.
            flag = torch.tensor([0.0 if math.isfinite(value) else 1.0], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if flag.item() and math.isfinite(value):
                value = float("nan")  # another rank diverged: so does the run
        if not math.isfinite(value):
            raise DivergedError(self.epoch + 1, step, value)

    @torch.no_grad()
    def evaluate(self, loader: DeviceLoader) -> tuple[float, float]:
        """(mean loss, accuracy) of the unwrapped model on a split."""
        return evaluate_model(self.model, loader, amp=self.amp)

    def test(self) -> tuple[float, float]:
        """Score the held-out test split: once, at the end, never for selection."""
        return self.evaluate(self.test_loader)

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: configs, weights, optimizer, scheduler, RNGs and history.

        This is the one checkpoint format (see `resnet_core.checkpoint`); callers
        save it as it is and never add keys. `data_config` is None for a run built
        from splits without their config.
        """
        rng = {"torch": torch.get_rng_state(), "loader": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "model_config": self.model_config.to_dict(),
            "train_config": self.train_config.to_dict(),
            "data_config": data_config_to_dict(self.data_config) if self.data_config else None,
            "data_info": data_info(self.data),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["loader"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        if self.data_config is None and state.get("data_config"):
            self.data_config = data_config_from_dict(state["data_config"])


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: DeviceLoader, amp: bool = False,
                   confusion: torch.Tensor | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of a model on every image of a loader.

    `confusion`: a (classes, classes) int64 tensor that gets each image counted at
    [true class, predicted class], in the same pass."""
    was_training = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    device_type = loader.device.type
    for images, labels in loader:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            logits = model(images).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        predicted = logits.argmax(1)
        correct += int((predicted == labels).sum())
        seen += len(labels)
        if confusion is not None:
            pairs = (labels * confusion.shape[1] + predicted).cpu()
            confusion += torch.bincount(pairs, minlength=confusion.numel()).view_as(confusion)
    model.train(was_training)
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def _all_reduce_sums(values: list[float], device: torch.device, world_size: int) -> list[float]:
    """Sum per-worker counters over a DDP job (no-op for one worker)."""
    if world_size == 1 or not torch.distributed.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


# What `fit` calls after every epoch with the run and that epoch's metrics: it saves
# a checkpoint, reports, or moves a progress bar; returning True stops training.
EpochHook = Callable[[TrainingRun, dict[str, float]], bool | None]


def fit(run: TrainingRun, on_epoch: EpochHook | None = None) -> list[dict[str, float]]:
    """The epoch loop: train until the configured epochs, or until `on_epoch` returns True.

    Raises DivergedError (before calling `on_epoch`) when the loss becomes non-finite.
    Returns the run's history (a resumed run's history includes the epochs before).
    """
    while not run.finished:
        metrics = run.train_epoch()
        if on_epoch is not None and on_epoch(run, metrics):
            break
    return run.history
