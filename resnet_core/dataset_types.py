"""What every dataset module shares, below them all: the splits a dataset becomes, the
errors a dataset raises, and the settings a user's own data is read with.

resnet_core.data chooses the loader of a DataConfig; the loaders of a user's folder and
arrays (user_data, npz_arrays, image_cache, image_folder) import from here, not from
resnet_core.data, so that no module imports one that imports it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # torch is imported by load_data: configs and names here come without it
    import torch


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing from the data root."""


class DatasetDownloadError(DatasetNotFoundError):
    """A dataset's files could not be fetched (no network, DNS, a proxy, a bad checksum)."""


class DataConfigError(ValueError):
    """The data settings do not fit the dataset (e.g. a validation split larger than it)."""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class DataSplits:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]  # per channel, on the 0..1 scale
    std: tuple[float, ...]
    crop_padding: int  # 0 disables random crops
    flip: bool
    class_names: tuple[str, ...] = ()  # label i is class_names[i]; unset: "0", "1", ...

    def __post_init__(self) -> None:
        if not self.class_names:
            object.__setattr__(self, "class_names", tuple(map(str, range(self.num_classes))))

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.images.shape[2]), int(self.train.images.shape[3])


def crop_padding_for(height: int) -> int:
    """The CIFAR recipe pads 4 pixels of 32; smaller images get proportionally less."""
    return max(1, round(4 * height / 32))


class OwnDataSettings(Protocol):
    """The DataConfig fields that a user's folder or arrays are read with."""

    dataset: str
    path: str | None
    image_size: tuple[int, ...] | None
    channels: int | None
    val_size: float | None
    test_size: float | None
    split_seed: int
    subset: int | None
    augment: bool
    skip_unreadable: bool
    cache_dir: str | None
