"""A trained network as a service sees it: raw pixels in, class probabilities out.

Clients send images as the datasets store them (float32, N x C x H x W, pixel
values 0..255); the wrapper does the normalisation the training loader did and
returns softmax probabilities, so nothing about training leaks into a client.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class PixelClassifier(nn.Module):
    """`model` behind the training normalisation: (N, C, H, W) 0..255 -> (N, classes) probabilities.

    Args:
        model: the trained network (expects normalised input).
        mean, std: the per-channel statistics the training loader used (0..1 scale).
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        channels = len(mean)
        if len(std) != channels:
            raise ValueError(f"mean has {channels} channels but std has {len(std)}")
        # Buffers, not Python floats: they travel with the weights and into an export.
        self.register_buffer("offset", torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1) * 255)
        self.register_buffer("scale", 1 / (torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1)
                                           * 255))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = self.model((pixels - self.offset) * self.scale)
        return torch.softmax(logits.float(), dim=1)
