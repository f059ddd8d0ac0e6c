"""The errors resnet_core raises that its callers handle, importable without torch.

A command line that only reads a tracking store (`status`, `best`, `studies`) must not
pay torch's import (2-3 s) to name the errors it catches.
"""

from __future__ import annotations


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
