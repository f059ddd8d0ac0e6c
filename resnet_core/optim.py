"""Optimizers and learning-rate schedules by name.

Schedules are multipliers of the base learning rate as a function of the
iteration, stepped once per batch, so warm-up and decays are smooth and a
schedule means the same thing at any batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

# torch is imported where an optimizer is built, not here: resnet_core.config reads the
# names below, and a command that only reads a tracking store needs no torch.
if TYPE_CHECKING:
    import torch
    from torch import nn

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw", "adagrad", "rmsprop")
SCHEDULES = ("step", "milestones", "cosine", "constant")
# The WRN recipe: multiply the learning rate by 0.2 at 30%, 60% and 80% of training.
WRN_STEP_FRACTIONS = (0.3, 0.6, 0.8)
WRN_STEP_GAMMA = 0.2


def parameter_groups(
    model: nn.Module, weight_decay: float, exempt_bn_and_bias: bool,
    head: nn.Module | None = None, backbone_lr: float | None = None,
) -> list[dict]:
    """Split parameters so that BN weights and biases can skip weight decay, and (with
    `backbone_lr`) so that every layer but the `head` learns at that rate."""
    if head is not None and backbone_lr is not None:
        head_ids = {id(p) for p in head.parameters()}
        groups = []
        for group in parameter_groups(model, weight_decay, exempt_bn_and_bias):
            body = [p for p in group["params"] if id(p) not in head_ids]
            top = [p for p in group["params"] if id(p) in head_ids]
            groups += [{**group, "params": body, "lr": backbone_lr}, {**group, "params": top}]
        return [group for group in groups if group["params"]]
    if not exempt_bn_and_bias or weight_decay == 0:
        return [{"params": [p for p in model.parameters() if p.requires_grad],
                 "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        # 1-D parameters are BN scales/shifts and biases.
        (no_decay if param.ndim <= 1 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    name: str,
    model: nn.Module,
    lr: float,
    *,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    exempt_bn_and_bias: bool = False,
    head: nn.Module | None = None,
    backbone_lr_factor: float = 1.0,
) -> torch.optim.Optimizer:
    """`sgd` (heavy-ball momentum), `nesterov`, `adam`, `adamw`, `adagrad`, `rmsprop`.

    `backbone_lr_factor` < 1: every parameter outside `head` learns at lr x factor (a
    pretrained backbone fine-tuned gently under a fresh classifier); 1 keeps one rate."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r} is not one of {', '.join(OPTIMIZERS)}")
    if not lr > 0:
        raise ValueError(f"lr={lr!r} must be > 0")
    import torch

    split = head is not None and backbone_lr_factor != 1.0
    groups = parameter_groups(model, weight_decay, exempt_bn_and_bias, head if split else None,
                              lr * backbone_lr_factor if split else None)
    if name in ("sgd", "nesterov"):
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=name == "nesterov")
    if name == "adam":
        # Adam's own weight decay is L2 added to the gradient (the classic form).
        return torch.optim.Adam(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    return torch.optim.RMSprop(groups, lr=lr, momentum=momentum)


def uses_momentum(optimizer: str) -> bool:
    """Whether the `momentum` hyperparameter changes this optimizer."""
    return optimizer in ("sgd", "nesterov", "rmsprop")


def lr_multiplier(
    schedule: str,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    milestones: Sequence[float] = WRN_STEP_FRACTIONS,
    gamma: float = WRN_STEP_GAMMA,
    min_factor: float = 0.0,
) -> Callable[[int], float]:
    """A function step -> factor of the base learning rate.

    Args:
        schedule: `step` (x gamma at fractions 0.3/0.6/0.8 of training),
            `milestones` (x gamma at the given fractions of training), `cosine`
            (to `min_factor` at the end) or `constant`.
        total_steps: optimizer steps of the whole run.
        warmup_steps: linear warm-up from ~0 to 1 over these first steps.
        milestones: fractions of training (0..1) at which to decay.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not one of {', '.join(SCHEDULES)}")
    if any(not 0 < m < 1 for m in milestones):
        raise ValueError(f"milestones={list(milestones)} must be fractions of training in (0, 1)")
    boundaries = sorted(int(round(m * total_steps)) for m in milestones)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule in ("step", "milestones"):
            return gamma ** sum(step >= b for b in boundaries)
        if schedule == "cosine":
            span = max(1, total_steps - warmup_steps)
            progress = min(1.0, (step - warmup_steps) / span)
            return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, factor: Callable[[int], float]
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration scheduler; its state dict holds only plain numbers."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
