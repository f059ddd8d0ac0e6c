"""A fast loader: the whole split lives on the training device as one uint8 tensor.

Shuffling, random crops (reflect padding), flips and normalisation happen on
whole batches with tensor operations, so there is no per-image Python work and
no worker processes. For DDP, every rank draws the same permutation and takes
its own strided share, so ranks see disjoint images each epoch.

A split too large for the GPU (over DEVICE_DATA_SHARE of its free memory when the
loader is made: a user's folder of many large images) stays in pinned host memory
and each batch is copied over; the augmentation still runs on the GPU.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from resnet_core.data import DataSplits, Split

# The most of a GPU's free memory a split may take; the network's weights, optimizer
# state and activations need the rest.
DEVICE_DATA_SHARE = 0.25


def storage_device(images: torch.Tensor, device: torch.device,
                   share: float | None = None) -> torch.device:
    """Where a split's images are kept: on `device`, unless they would take more than
    `share` (default DEVICE_DATA_SHARE) of a GPU's free memory (then in host memory)."""
    if device.type != "cuda":
        return device
    share = DEVICE_DATA_SHARE if share is None else share
    free, _ = torch.cuda.mem_get_info(device)
    return device if images.numel() * images.element_size() <= share * free else torch.device("cpu")


class DeviceLoader:
    """Iterate (images, labels) batches of one split, augmented on the device.

    Args:
        split: uint8 images and labels.
        batch_size: images per batch on this rank.
        mean, std: per-channel normalisation (0..1 scale).
        device: where the data lives and batches are made.
        shuffle: draw a new permutation every epoch.
        crop_padding: reflect-pad by this much and crop back at a random offset (0: off).
        flip: random horizontal flips.
        drop_last: drop a final incomplete batch (training).
        channels_last: return batches in channels-last memory format.
        generator: the RNG of shuffles and augmentation (saved in checkpoints).
        rank, world_size: this rank's share of each epoch.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device | str = "cpu",
        *,
        shuffle: bool = False,
        crop_padding: int = 0,
        flip: bool = False,
        drop_last: bool = False,
        channels_last: bool = False,
        generator: torch.Generator | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.device = torch.device(device)
        self.storage = storage_device(split.images, self.device)
        self.images = split.images.to(self.storage)
        if self.storage != self.device:  # pinned: batches copy to the GPU asynchronously
            self.images = self.images.pin_memory()
        self.labels = split.labels.to(self.device)
        self.batch_size = batch_size
        channels = self.images.shape[1]
        self.mean = torch.tensor(mean, device=self.device).view(1, channels, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(std, device=self.device).view(1, channels, 1, 1) * 255.0)
        self.shuffle = shuffle
        self.crop_padding = crop_padding
        self.flip = flip
        self.drop_last = drop_last
        self.channels_last = channels_last
        # Random draws happen on the CPU generator so that results do not depend on
        # the device and the generator state can be checkpointed as a plain tensor.
        self.generator = generator if generator is not None else torch.Generator()
        self.rank = rank
        self.world_size = world_size
        # Set to a list to have each batch's sample indices appended to it (tests check
        # with it that DDP ranks share out every epoch); None costs nothing.
        self.index_log: list[torch.Tensor] | None = None

    @property
    def num_images(self) -> int:
        """Images this rank sees per epoch."""
        per_rank = len(self.labels) // self.world_size if self.world_size > 1 else len(self.labels)
        if self.drop_last:
            return (per_rank // self.batch_size) * self.batch_size
        return per_rank

    def __len__(self) -> int:
        n = self.num_images
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            per_rank = n // self.world_size  # equal shares keep DDP ranks in step
            order = order[self.rank : per_rank * self.world_size : self.world_size]
        order = order[: self.num_images].to(self.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            if self.index_log is not None:
                self.index_log.append(index.cpu())
            yield self._make_batch(index), self.labels[index]

    def _make_batch(self, index: torch.Tensor) -> torch.Tensor:
        raw = self.images[index] if self.storage == self.device else \
            self.images[index.cpu()].pin_memory().to(self.device, non_blocking=True)
        images = (raw.float() - self.mean) * self.inv_std
        if self.crop_padding:
            images = self._random_crop(images)
        if self.flip:
            flip = self._to_device(torch.rand(len(index), generator=self.generator) < 0.5)
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Move CPU-drawn random numbers to the device without waiting for queued GPU work."""
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def _random_crop(self, images: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = images.shape
        pad = self.crop_padding
        padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
        offsets = self._to_device(
            torch.randint(0, 2 * pad + 1, (2, batch), generator=self.generator)
        )
        rows = (offsets[0].view(-1, 1) + torch.arange(height, device=self.device)).view(
            batch, 1, height, 1
        )
        cols = (offsets[1].view(-1, 1) + torch.arange(width, device=self.device)).view(
            batch, 1, 1, width
        )
        # Gather rows, then columns: two batched index operations for the whole batch.
        channels = images.shape[1]
        padded = padded.gather(2, rows.expand(batch, channels, height, width + 2 * pad))
        return padded.gather(3, cols.expand(batch, channels, height, width))


def make_loaders(
    data: DataSplits,
    batch_size: int,
    device: torch.device | str = "cpu",
    *,
    channels_last: bool = False,
    generator: torch.Generator | None = None,
    rank: int = 0,
    world_size: int = 1,
    eval_batch_size: int | None = None,
) -> tuple[DeviceLoader, DeviceLoader, DeviceLoader]:
    """Training (shuffled, augmented), validation and test loaders of one dataset."""
    common = {"mean": data.mean, "std": data.std, "device": device,
              "channels_last": channels_last}
    eval_batch = eval_batch_size or max(batch_size, 256)
    # Training needs at least one full batch per epoch on every rank.
    train_drop_last = len(data.train) // world_size >= batch_size
    train = DeviceLoader(
        data.train, batch_size, shuffle=True, crop_padding=data.crop_padding, flip=data.flip,
        drop_last=train_drop_last, generator=generator, rank=rank, world_size=world_size,
        **common,
    )
    # Every rank scores the whole validation split: exact metrics, no remainder lost.
    val = DeviceLoader(data.val, eval_batch, **common)
    test = DeviceLoader(data.test, eval_batch, **common)
    return train, val, test
