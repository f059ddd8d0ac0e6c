"""The errors resnet_core raises that its callers handle, importable without torch.

A command line that only reads a tracking store (`status`, `best`, `studies`) must not
pay torch's import (2-3 s) to name the errors it catches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ConfigValueError(ValueError):
    """A field holds a value it does not allow; reads `field=value problem`.

    The parts stay apart so that callers can put them in their own format
    (the study file says `[train] lr: -1 must be > 0`).
    """

    def __init__(self, name: str, value: Any, problem: str, choices: Sequence[Any] = ()) -> None:
        super().__init__(f"{name}={value!r} {problem}")
        self.field = name
        self.value = value
        self.problem = problem
        self.choices = tuple(choices)


class CheckpointError(ValueError):
    """A file that is not a loadable resnet-search checkpoint."""


class DivergedError(RuntimeError):
    """Training produced a non-finite loss; the run cannot go on."""

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        super().__init__(f"diverged: non-finite training loss ({loss}) in epoch {epoch}, "
                         f"step {step}; try a lower learning rate or gradient clipping")
        self.epoch = epoch
        self.step = step
        self.loss = loss
