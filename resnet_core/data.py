"""Datasets as uint8 tensors with deterministic train / validation / test splits.

Every dataset comes back as `DataSplits`: three `TensorDataset`-like pairs of
uint8 images (N, C, H, W) and int64 labels, plus the normalisation statistics
and the augmentation that suits it. The fast loader (`resnet_core.loader`)
does the rest on the training device.

CIFAR and SVHN are read from the files of their official distributions (the
python pickles of CIFAR, the .mat files of SVHN); `download=True` fetches them
through torchvision, which verifies their checksums. Users' own data is a folder
of images (`dataset = "folder"`, resnet_core.user_data) or a .npz file of arrays
(`dataset = "arrays"`, resnet_core.npz_arrays).
"""

from __future__ import annotations

import contextlib
import pickle
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resnet_core.config import POSITIVE, Bounds, ConfigValueError, at_least, check_fields, option
from resnet_core.dataset_types import (  # noqa: F401 - re-exported: resnet_core.data's names
    DataConfigError,
    DatasetDownloadError,
    DatasetNotFoundError,
    DataSplits,
    Split,
    crop_padding_for,
)

if TYPE_CHECKING:  # torch is imported by load_data: configs and names here come without it
    pass

DATASETS = ("digits", "cifar10", "cifar100", "svhn", "synthetic", "folder", "arrays")
OWN_DATASETS = ("folder", "arrays")  # the user's files, under `path`
IMAGE_SHAPES = {"digits": (1, 8, 8), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32),
                "svhn": (3, 32, 32)}
NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "svhn": 10, "synthetic": 10}


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is split; each field's meaning is its `help` below."""

    dataset: str = option("digits", "the dataset", choices=DATASETS)
    root: str = option("data", "where datasets live (CIFAR in ROOT/cifar-10-batches-py, ...)")
    download: bool = option(False, "fetch missing files (CIFAR, SVHN) with torchvision")
    val_size: float | None = option(
        None, "images carved from the training set for validation: a count, or a fraction "
              "in (0, 1) (unset: 5000 for CIFAR and SVHN, 10% of digits, folder and arrays)",
        bounds=POSITIVE)
    subset: int | None = option(None, "train on this many images only (unset: all)",
                                bounds=at_least(1))
    split_seed: int = option(0, "seed of the train/validation split (in a study: added to "
                                "[study] seed, fixed for every trial)")
    augment: bool = option(True, "random crops and flips where they suit the dataset")
    synthetic_shape: tuple[int, int, int] = option((3, 32, 32), "(channels, height, width) of "
                                                                "synthetic images")
    synthetic_size: int = option(1024, "training images of synthetic (test gets a fifth)",
                                 bounds=at_least(1))
    path: str | None = option(
        None, "your data: a folder of class folders, DIR/<class>/<image> or DIR/train|val|test/"
              "<class>/<image> (dataset folder), or a .npz file with x_train, y_train, x_test, "
              "y_test [, x_val, y_val, class_names] (dataset arrays)")
    image_size: tuple[int, ...] | None = option(
        None, "height and width (one number: a square) that folder images are resized (shorter "
              "side) and centre-cropped to (unset: their most common size, scaled down to a "
              "shorter side of 64 where larger)")
    channels: int | None = option(
        None, "1 (greyscale) or 3 (RGB) for folder images (unset: 1 only if every image is "
              "greyscale)", bounds=Bounds(1, 3))
    test_size: float | None = option(
        None, "images carved from a folder without a test/ folder for the test split: a count, "
              "or a fraction in (0, 1) (unset: 20%)", bounds=POSITIVE)
    skip_unreadable: bool = option(False, "train without folder images that cannot be decoded "
                                          "(they are counted) instead of stopping")
    cache_dir: str | None = option(None, "where a folder's decoded images are cached (unset: "
                                         "DIR/.resnet-search-cache)")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of this dataset's images, without decoding them (a
        folder's come from the settings, a fresh cache, or the image headers)."""
        if self.dataset == "synthetic":
            return tuple(self.synthetic_shape)
        if self.dataset == "folder":
            from resnet_core.user_data import folder_image_shape

            return folder_image_shape(self)
        if self.dataset == "arrays":
            from resnet_core.npz_arrays import arrays_image_shape

            return arrays_image_shape(self)
        return IMAGE_SHAPES[self.dataset]

    @property
    def num_classes(self) -> int:
        """Classes of this dataset, without loading it (a folder's: its class folders)."""
        if self.dataset == "folder":
            from resnet_core.user_data import folder_num_classes

            return folder_num_classes(self)
        if self.dataset == "arrays":
            from resnet_core.npz_arrays import arrays_class_names

            return len(arrays_class_names(self))
        return NUM_CLASSES[self.dataset]

    def __post_init__(self) -> None:
        if isinstance(self.image_size, int) and not isinstance(self.image_size, bool):
            object.__setattr__(self, "image_size", (self.image_size,))
        check_fields(self)
        _check_own_data_fields(self)


# Fields that only some datasets read: set for another, they would be silently ignored.
OWN_DATA_FIELDS = {"path": OWN_DATASETS, "image_size": ("folder",), "channels": ("folder",),
                   "test_size": ("folder",), "skip_unreadable": ("folder",),
                   "cache_dir": ("folder",)}


def _check_own_data_fields(config: DataConfig) -> None:
    for name, datasets in OWN_DATA_FIELDS.items():
        value = getattr(config, name)
        if value not in (None, False) and config.dataset not in datasets:
            raise ConfigValueError(name, value, f"applies to dataset {' or '.join(datasets)} "
                                                f"only, not {config.dataset!r}")
    if config.dataset in OWN_DATASETS and not config.path:
        what = "a folder of class folders" if config.dataset == "folder" else "a .npz file"
        raise ConfigValueError("path", config.path, f"is required for dataset "
                                                    f"{config.dataset!r} ({what})")
    size = config.image_size
    if size is not None:
        if len(size) not in (1, 2) or min(size) < 1:
            raise ConfigValueError("image_size", list(size), "must be one integer >= 1 or "
                                                             "[height, width]")
        object.__setattr__(config, "image_size", (size[0], size[-1]))
    if config.channels == 2:
        raise ConfigValueError("channels", 2, "must be 1 (greyscale) or 3 (RGB)")
    for name in ("val_size", "test_size"):
        value = getattr(config, name)
        if value is not None and value >= 1 and value != int(value):
            raise ConfigValueError(name, value, "must be a whole count >= 1 or a fraction "
                                                "in (0, 1)")
        if value is not None and value >= 1:
            object.__setattr__(config, name, int(value))


# Per-channel statistics of the training sets (0..1 scale).
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))
DIGITS_STATS = ((0.3051,), (0.3751,))
DEFAULT_VAL_SIZE = {"cifar10": 5000, "cifar100": 5000, "svhn": 5000}


def normalisation(config: DataConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel, 0..1 scale, that the dataset's loader normalises with: what a
    trained network expects its input divided by 255 to be standardised with."""
    fixed = {"digits": DIGITS_STATS, "cifar10": CIFAR10_STATS, "cifar100": CIFAR100_STATS,
             "svhn": SVHN_STATS}
    if config.dataset == "folder":
        from resnet_core.user_data import folder_normalisation

        return folder_normalisation(config)
    if config.dataset == "arrays":
        from resnet_core.npz_arrays import arrays_normalisation

        return arrays_normalisation(config)
    if config.dataset in fixed:
        return fixed[config.dataset]
    channels = config.synthetic_shape[0]
    return (0.5,) * channels, (0.29,) * channels


def load_data(config: DataConfig, *, build_cache: bool = True) -> DataSplits:
    """Load a dataset and split it into train / validation / test.

    `build_cache=False` (trials): a folder's decode cache is only read, never started; a
    cache this process cannot read is a DataConfigError naming its folder."""
    import torch

    if config.dataset == "folder":
        from resnet_core.user_data import load_folder

        return load_folder(config, build_cache)
    if config.dataset == "arrays":
        from resnet_core.npz_arrays import load_arrays

        return load_arrays(config)
    loader = {
        "digits": _load_digits,
        "cifar10": lambda c: _load_cifar(c, "cifar10"),
        "cifar100": lambda c: _load_cifar(c, "cifar100"),
        "svhn": _load_svhn,
        "synthetic": _load_synthetic,
    }[config.dataset]
    (train_x, train_y), (test_x, test_y), meta = loader(config)
    val_size = config.val_size or DEFAULT_VAL_SIZE.get(config.dataset) or max(1, len(train_y) // 10)
    if val_size < 1:  # a fraction of the training images
        val_size = max(1, round(val_size * len(train_y)))
    if val_size >= len(train_y):
        raise DataConfigError(
            f"val_size={val_size} must be smaller than the {len(train_y)} training images "
            f"of {config.dataset}"
        )
    generator = torch.Generator().manual_seed(config.split_seed)
    order = torch.randperm(len(train_y), generator=generator)
    val_idx, train_idx = order[:val_size], order[val_size:]
    if config.subset is not None:
        train_idx = train_idx[: config.subset]
    train_x, train_y = torch.as_tensor(train_x), torch.as_tensor(train_y, dtype=torch.int64)
    mean, std, num_classes, crop, flip = meta
    return DataSplits(
        name=config.dataset,
        train=Split(train_x[train_idx].contiguous(), train_y[train_idx]),
        val=Split(train_x[val_idx].contiguous(), train_y[val_idx]),
        test=Split(torch.as_tensor(test_x), torch.as_tensor(test_y, dtype=torch.int64)),
        num_classes=num_classes,
        mean=mean,
        std=std,
        crop_padding=crop if config.augment else 0,
        flip=flip and config.augment,
    )


def describe_dataset(config: DataConfig) -> str:
    """What `check` says about the data: classes, images per class and split, image shape,
    and for a folder its cache state and ignored files. Decodes nothing."""
    if config.dataset == "folder":
        from resnet_core.user_data import describe_folder

        return describe_folder(config)
    if config.dataset == "arrays":
        from resnet_core.npz_arrays import describe_arrays

        return describe_arrays(config)
    channels, height, width = config.image_shape
    return (f"{config.dataset} (built in): {config.num_classes} classes, "
            f"{channels}x{height}x{width} images (channels x height x width)")


# ---------------------------------------------------------------- digits


def _digits_rows() -> np.ndarray:
    """scikit-learn's digits (1797 rows: 64 grey levels 0..16, then the label), read from
    the file scikit-learn ships. Importing scikit-learn for `load_digits` costs ~2 s per
    process (SciPy's stats come with it), once in every trial process; reading the file
    is 0.01 s. Without the file where it has always been, `load_digits` reads it."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return np.loadtxt(path, delimiter=",")
    from sklearn.datasets import load_digits

    data, target = load_digits(return_X_y=True)
    return np.column_stack([data, target])


def _load_digits(config: DataConfig):
    rows = _digits_rows()
    # 0..16 grey levels -> 0..255 uint8, (N, 1, 8, 8)
    images = np.round(rows[:, :64].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = rows[:, 64].astype(np.int64)
    # A fixed test split (20%), independent of the study's seeds: never tuned on.
    order = np.random.default_rng(20260101).permutation(len(labels))
    n_test = len(labels) // 5
    test, train = order[:n_test], order[n_test:]
    meta = (*normalisation(config), NUM_CLASSES["digits"], crop_padding_for(8), False)
    return (images[train], labels[train]), (images[test], labels[test]), meta


# ---------------------------------------------------------------- CIFAR

CIFAR_LAYOUT = {
    # folder, training files, test file, label key, torchvision class
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                "labels", "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels", "CIFAR100"),
}


def _load_cifar(config: DataConfig, name: str):
    folder, train_files, test_file, label_key, tv_class = CIFAR_LAYOUT[name]
    base = Path(config.root).expanduser() / folder
    files = [base / f for f in [*train_files, test_file]]
    if not all(f.is_file() for f in files):
        _download_or_fail(config, name, tv_class, [f for f in files if not f.is_file()])
    train = [_read_cifar_batch(base / f, label_key) for f in train_files]
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    test_x, test_y = _read_cifar_batch(base / test_file, label_key)
    meta = (*normalisation(config), NUM_CLASSES[name], 4, True)
    return (train_x, train_y), (test_x, test_y), meta


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    # The official CIFAR python distribution is pickled dicts of numpy arrays;
    # torchvision reads it the same way after checking the archive's MD5.
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="latin1")
    images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    return images, labels


# ---------------------------------------------------------------- SVHN


def _load_svhn(config: DataConfig):
    base = Path(config.root).expanduser() / "svhn"
    files = [base / "train_32x32.mat", base / "test_32x32.mat"]
    if not all(f.is_file() for f in files):
        _download_or_fail(config, "svhn", "SVHN", [f for f in files if not f.is_file()])
    train = _read_svhn_mat(files[0])
    test = _read_svhn_mat(files[1])
    # No flips: flipping digits changes them.
    return train, test, (*normalisation(config), NUM_CLASSES["svhn"], 4, False)


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    mat = loadmat(str(path))
    images = np.transpose(mat["X"], (3, 2, 0, 1)).astype(np.uint8)  # HWCN -> NCHW
    labels = mat["y"].astype(np.int64).reshape(-1)
    labels[labels == 10] = 0  # SVHN stores the digit 0 as label 10
    return images, labels


# ---------------------------------------------------------------- synthetic


def _load_synthetic(config: DataConfig):
    channels, height, width = config.synthetic_shape
    rng = np.random.default_rng(config.split_seed)
    n_train, n_test = config.synthetic_size, max(1, config.synthetic_size // 5)
    images = rng.integers(0, 256, (n_train + n_test, channels, height, width), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES["synthetic"], n_train + n_test).astype(np.int64)
    meta = (*normalisation(config), NUM_CLASSES["synthetic"], crop_padding_for(height), True)
    return (images[:n_train], labels[:n_train]), (images[n_train:], labels[n_train:]), meta


# ---------------------------------------------------------------- download


def _download_or_fail(config: DataConfig, name: str, tv_class: str, missing: list[Path]) -> None:
    root = Path(config.root).expanduser()
    if not config.download:
        raise DatasetNotFoundError(
            f"dataset {name!r} not found: missing {', '.join(str(p) for p in missing)}. "
            f"Download it with `--download` (or `download = true` under [data]), or place the "
            f"official files under {root}"
        )
    import torchvision.datasets as tvd

    dataset_class = getattr(tvd, tv_class)
    if name == "svhn":
        files = " and ".join(dataset_class.split_list[split][1] for split in ("train", "test"))
        for split in ("train", "test"):
            url = dataset_class.split_list[split][0]
            with _download_errors(name, url, files, root / "svhn"):
                dataset_class(str(root / "svhn"), split=split, download=True)
    else:
        with _download_errors(name, dataset_class.url, dataset_class.filename, root):
            dataset_class(str(root), train=True, download=True)


@contextlib.contextmanager
def _download_errors(name: str, url: str, files: str, folder: Path) -> Iterator[None]:
    """A failed download is one line: the dataset, the URL, why, and where to put the file."""
    try:
        yield
    except (OSError, RuntimeError, EOFError, tarfile.TarError) as error:
        raise DatasetDownloadError(
            f"dataset {name!r} could not be downloaded from {url}: {_download_reason(error)}; "
            f"download {files} by hand into {folder} (download = true then checks its MD5 "
            f"and uses it), or run where the host is reachable") from None


def _download_reason(error: BaseException) -> str:
    """Why a download failed, in words: DNS, refused, proxy, HTTP status, checksum, timeout."""
    import socket
    import urllib.error

    reason = getattr(error, "reason", error) if isinstance(error, urllib.error.URLError) else error
    if isinstance(error, urllib.error.HTTPError):
        proxy = " (the proxy asks for credentials)" if error.code == 407 else ""
        return f"HTTP {error.code} {error.msg}{proxy}"
    if isinstance(reason, socket.gaierror):
        return f"the host's name does not resolve, no network or DNS ({reason.strerror})"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (by the host, or by the proxy in $https_proxy / $http_proxy)"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "the connection timed out"
    if isinstance(error, RuntimeError) and "corrupted" in str(error):
        return "the downloaded file failed its MD5 checksum (a partial or altered file)"
    if isinstance(error, (EOFError, tarfile.TarError)):
        return f"the downloaded archive is damaged ({type(error).__name__})"
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else ""
    return f"{type(reason).__name__}: {text}" if text else type(reason).__name__
