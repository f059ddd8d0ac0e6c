"""Images in one .npz file as a dataset (`dataset = "arrays"`, `path = "FILE.npz"`).

The file holds x_train, y_train, x_test, y_test, and optionally x_val, y_val and
class_names: images uint8, N x H x W (greyscale) or N x H x W x C; labels integers
0..K-1. Without x_val, validation is carved from the training images (stratified,
`val_size`, unset: 10%, seeded by `split_seed`). Mean and std are the training split's.
"""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import numpy as np

from resnet_core.dataset_types import (
    DataConfigError,
    DatasetNotFoundError,
    DataSplits,
    OwnDataSettings,
    Split,
    crop_padding_for,
)

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
EXPECTED = ("x_train, y_train, x_test, y_test (uint8 images N x H x W [x C], integer labels), "
            "optionally x_val, y_val and class_names")


def read_arrays(config: OwnDataSettings) -> dict[str, np.ndarray]:
    """The file's arrays, checked; images as (N, C, H, W). Read once per process and version
    of the file."""
    path = Path(config.path or "").expanduser()
    if not config.path or not path.is_file():
        raise DatasetNotFoundError(f"arrays file {path} not found: dataset = arrays needs "
                                   f"path = a .npz file holding {EXPECTED}")
    stat = path.stat()
    return _read(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _read(path: str, size: int, mtime_ns: int) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataConfigError(f"{path} is not a readable .npz file ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''}); it must "
                              f"hold {EXPECTED}") from None
    _check_present(path, arrays)
    for split in ("train", "val", "test"):
        if f"x_{split}" in arrays:
            arrays[f"x_{split}"] = _check_images(path, split, arrays[f"x_{split}"])
            arrays[f"y_{split}"] = _check_labels(path, split, arrays)
    _check_same_shape(path, arrays)
    _check_classes(path, arrays)
    return arrays


def _check_present(path: str, arrays: dict[str, np.ndarray]) -> None:
    missing = [key for key in REQUIRED if key not in arrays]
    if ("x_val" in arrays) != ("y_val" in arrays):
        missing.append("y_val" if "x_val" in arrays else "x_val")
    if missing:
        raise DataConfigError(f"{path} lacks {', '.join(missing)} (it holds "
                              f"{', '.join(sorted(arrays)) or 'nothing'}); it must hold {EXPECTED}")


def _check_images(path: str, split: str, images: np.ndarray) -> np.ndarray:
    key = f"x_{split}"
    if images.dtype != np.uint8:
        raise DataConfigError(f"{path}: {key} is {images.dtype}; images must be uint8 (0..255), "
                              f"e.g. (x * 255).round().astype(np.uint8) for a 0..1 scale")
    if images.ndim not in (3, 4) or len(images) == 0:
        raise DataConfigError(f"{path}: {key} has shape {images.shape}; images must be "
                              f"N x H x W or N x H x W x C with N >= 1")
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[3] > 4 and images.shape[1] <= 4:
        raise DataConfigError(f"{path}: {key} has shape {images.shape}, which looks channels-"
                              f"first; images must be N x H x W x C (np.moveaxis(x, 1, -1))")
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def _check_labels(path: str, split: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    labels, count = arrays[f"y_{split}"], len(arrays[f"x_{split}"])
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataConfigError(f"{path}: y_{split} is {labels.dtype} of shape {labels.shape}; "
                              f"labels must be one integer per image")
    if len(labels) != count:
        raise DataConfigError(f"{path}: x_{split} holds {count} images but y_{split} "
                              f"{len(labels)} labels; they must be the same length")
    if labels.min() < 0:
        raise DataConfigError(f"{path}: y_{split} holds {labels.min()}; labels must be 0..K-1")
    return labels.astype(np.int64)


def _check_same_shape(path: str, arrays: dict[str, np.ndarray]) -> None:
    shape = arrays["x_train"].shape[1:]
    for split in ("val", "test"):
        other = arrays.get(f"x_{split}")
        if other is not None and other.shape[1:] != shape:
            raise DataConfigError(f"{path}: x_{split} images are {other.shape[1:]} (C, H, W) but "
                                  f"x_train ones {shape}; every split must share one shape")


def _check_classes(path: str, arrays: dict[str, np.ndarray]) -> None:
    highest = max(int(arrays[key].max()) for key in arrays if key.startswith("y_"))
    names = arrays.get("class_names")
    if names is not None and (names.ndim != 1 or len(names) <= highest):
        raise DataConfigError(f"{path}: class_names holds {names.size} names but the labels go "
                              f"up to {highest}; it must name every class 0..{highest}")
    count = len(names) if names is not None else highest + 1
    if count < 2:
        raise DataConfigError(f"{path}: the labels hold one class; a classifier needs at least 2")


def arrays_class_names(config: OwnDataSettings) -> tuple[str, ...]:
    arrays = read_arrays(config)
    if "class_names" in arrays:
        return tuple(str(name) for name in arrays["class_names"])
    highest = max(int(arrays[key].max()) for key in arrays if key.startswith("y_"))
    return tuple(str(i) for i in range(highest + 1))


def arrays_image_shape(config: OwnDataSettings) -> tuple[int, int, int]:
    return tuple(int(n) for n in read_arrays(config)["x_train"].shape[1:])


def _train_val(config: OwnDataSettings) -> tuple[np.ndarray, np.ndarray | None]:
    """Row indices of training and of carved validation images (None: the file has x_val)."""
    from resnet_core.user_data import carve

    arrays = read_arrays(config)
    labels = arrays["y_train"]
    if "x_val" in arrays:
        if config.val_size is not None:
            raise DataConfigError(f"val_size={config.val_size} has nothing to carve: "
                                  f"{config.path} holds x_val; unset val_size")
        return np.arange(len(labels)), None
    size = config.val_size or 0.1
    val, train = carve(labels, size, config.split_seed, f"val_size={size} of {config.path}")
    return train, val


def arrays_normalisation(config: OwnDataSettings) -> tuple[tuple[float, ...], tuple[float, ...]]:
    train, _ = _train_val(config)
    images = read_arrays(config)["x_train"][train]
    mean = images.mean(axis=(0, 2, 3), dtype=np.float64)
    std = np.maximum(images.std(axis=(0, 2, 3), dtype=np.float64), 1.0)  # constant channels
    return tuple(float(m) / 255 for m in mean), tuple(float(s) / 255 for s in std)


def load_arrays(config: OwnDataSettings) -> DataSplits:
    import torch

    arrays = read_arrays(config)
    train, val = _train_val(config)
    if config.subset is not None:
        train = np.sort(np.random.default_rng(config.split_seed).permutation(train)[: config.subset])

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))

    x, y = arrays["x_train"], arrays["y_train"]
    val_split = split(x[val], y[val]) if val is not None else split(arrays["x_val"], arrays["y_val"])
    mean, std = arrays_normalisation(config)
    names = arrays_class_names(config)
    return DataSplits(
        name=config.dataset, train=split(x[train], y[train]), val=val_split,
        test=split(arrays["x_test"], arrays["y_test"]), num_classes=len(names), mean=mean,
        std=std, crop_padding=crop_padding_for(x.shape[2]) if config.augment else 0,
        flip=config.augment, class_names=names)


def describe_arrays(config: OwnDataSettings) -> str:
    arrays = read_arrays(config)
    train, val = _train_val(config)
    names = arrays_class_names(config)
    val_count = len(val) if val is not None else len(arrays["y_val"])
    channels, height, width = arrays_image_shape(config)
    return (f"arrays {Path(config.path).expanduser()}: {len(names)} classes "
            f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}); images: train "
            f"{len(train)}, val {val_count}{' (carved from x_train)' if val is not None else ''}, "
            f"test {len(arrays['y_test'])}; {channels}x{height}x{width} (channels x height x width)")
