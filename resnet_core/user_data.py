"""Users' own data: a folder of images (`dataset = "folder"`) as DataSplits, its
statistics, and what `check` says about it.

Splits: a folder's val/ and test/ class folders are those splits; a split without one
is carved from the training images, stratified by class: test first, with a fixed seed
(the test split never moves with the study's seeds), then validation with `split_seed`.
`val_size` and `test_size` are counts or fractions (unset: 10% and 20%).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resnet_core.dataset_types import DataConfigError, DataSplits, OwnDataSettings, Split, crop_padding_for
from resnet_core.image_cache import (
    cache_folder,
    check_cache_writable,
    load_cache,
    read_manifest,
    resolve_shape,
    staleness,
)
from resnet_core.image_folder import class_names, folder_root, scan_folder

TEST_SPLIT_SEED = 20260101  # the same fixed seed as digits' test split
DEFAULT_HOLDOUT = {"val": 0.1, "test": 0.2}
SIZE_FIELD = {"val": "val_size", "test": "test_size"}
DESCRIBED_CLASSES = 20  # per-class rows `describe_dataset` shows before "and N more"


def carve(labels: np.ndarray, size: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Stratified hold-out: (held-out indices, the rest), each sorted.

    `size` is a count (>= 1) or a fraction in (0, 1); each class gives its share
    (largest remainders round), so class proportions hold in both parts.
    """
    n = len(labels)
    count = int(size) if size >= 1 else max(1, round(size * n))
    if count >= n:
        raise DataConfigError(f"{what} must be smaller than the {n} images it is carved from")
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * count / n
    take = np.floor(exact).astype(np.int64)
    rng = np.random.default_rng(seed)
    # Largest remainders first; equal ones in a seeded order, not always the first classes.
    order = rng.permutation(len(classes))
    order = order[np.argsort(-(exact - take)[order], kind="stable")]
    take[order[: count - int(take.sum())]] += 1
    held = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)]
    held_index = np.sort(np.concatenate(held))
    return held_index, np.setdiff1d(np.arange(n), held_index)


def split_rows(labels: np.ndarray, splits: np.ndarray, usable: np.ndarray, config: OwnDataSettings,
               root: Path, classes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Row indices of train / val / test: the folders' own splits, or carved from train."""
    pool = np.flatnonzero((splits == "train") & usable)
    rows = {}
    for split, seed in (("test", TEST_SPLIT_SEED), ("val", config.split_seed)):
        size = getattr(config, SIZE_FIELD[split])
        own = np.flatnonzero((splits == split) & usable)
        if np.any(splits == split):
            if size is not None:
                raise DataConfigError(
                    f"{SIZE_FIELD[split]}={size} has nothing to carve: {root} has its own "
                    f"{split} folder; unset {SIZE_FIELD[split]} or merge the folder into train")
            rows[split] = own
            continue
        what = f"{SIZE_FIELD[split]}={size if size is not None else DEFAULT_HOLDOUT[split]}"
        held, rest = carve(labels[pool], size or DEFAULT_HOLDOUT[split], seed,
                           f"{what} of {root}")
        rows[split], pool = pool[held], pool[rest]
    empty = [classes[c] for c in range(len(classes)) if not np.any(labels[pool] == c)]
    if empty:
        raise DataConfigError(f"class {empty[0]!r} of {root} has no training image left after "
                              f"the val/test hold-outs; add images or lower val_size/test_size")
    rows["train"] = pool
    return rows


def _rows_of(manifest: dict[str, Any], config: OwnDataSettings) -> dict[str, np.ndarray]:
    unreadable = {name for name, _ in manifest["unreadable"]}
    usable = np.array([name not in unreadable for name, _, _ in manifest["files"]], dtype=bool)
    return split_rows(np.asarray(manifest["labels"]), np.asarray(manifest["splits"]), usable,
                      config, Path(manifest["root"]), tuple(manifest["classes"]))


def train_statistics(stats: np.ndarray, rows: np.ndarray,
                     pixels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) on the 0..1 scale from per-image sums and sums of squares."""
    total = stats[rows].sum(0)
    count = len(rows) * pixels
    mean = total[:, 0] / count
    std = np.sqrt(np.maximum(total[:, 1] / count - mean**2, 0.0))
    # A channel of one constant value would divide by zero; 1/255 keeps it finite.
    std = np.maximum(std, 1.0)
    return tuple(float(m) / 255 for m in mean), tuple(float(s) / 255 for s in std)


def load_folder(config: OwnDataSettings, build_cache: bool = True) -> DataSplits:
    """The folder's splits as uint8 tensors (decoded once, then read from the cache;
    `build_cache=False`: only read, see image_cache.load_cache)."""
    import torch

    cache = load_cache(config, build=build_cache)
    manifest = cache.manifest
    rows = _rows_of(manifest, config)
    channels, height, width = manifest["image_shape"]
    mean, std = train_statistics(cache.stats, rows["train"], height * width)
    train = np.random.default_rng(config.split_seed).permutation(rows["train"])
    if config.subset is not None:
        train = train[: config.subset]
    labels = np.asarray(manifest["labels"], dtype=np.int64)

    def split(index: np.ndarray) -> Split:
        return Split(torch.from_numpy(np.ascontiguousarray(cache.images[np.sort(index)])),
                     torch.from_numpy(labels[np.sort(index)]))

    return DataSplits(
        name=config.dataset, train=split(train), val=split(rows["val"]), test=split(rows["test"]),
        num_classes=len(manifest["classes"]), mean=mean, std=std,
        crop_padding=crop_padding_for(height) if config.augment else 0, flip=config.augment,
        class_names=tuple(manifest["classes"]))


def folder_normalisation(config: OwnDataSettings) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The training split's (mean, std), from the cache's per-image sums (no pixel is read)."""
    cache = load_cache(config)
    _, height, width = cache.manifest["image_shape"]
    return train_statistics(cache.stats, _rows_of(cache.manifest, config)["train"], height * width)


def folder_num_classes(config: OwnDataSettings) -> int:
    return len(class_names(folder_root(config.path), cache_folder(config)))


def folder_image_shape(config: OwnDataSettings) -> tuple[int, int, int]:
    """(channels, height, width), without decoding: the settings, a fresh manifest, or the
    image headers."""
    if config.image_size and config.channels:
        return (config.channels, *config.image_size)
    folder = cache_folder(config)
    listing = scan_folder(config.path, skip=folder)
    manifest = read_manifest(folder)
    if staleness(manifest, listing, config) is None:
        return tuple(manifest["image_shape"])
    return resolve_shape(listing, config)


# ---------------------------------------------------------------- check


def describe_folder(config: OwnDataSettings) -> str:
    """What `check` prints about a folder: classes, images per class and split, image shape,
    cache state, ignored and unreadable files. Decodes nothing."""
    folder = cache_folder(config)
    listing = scan_folder(config.path, skip=folder)
    manifest = read_manifest(folder)
    stale = staleness(manifest, listing, config)
    if stale is not None:
        check_cache_writable(folder)  # run would fail there: say it now
    unreadable = {name for name, _ in manifest["unreadable"]} if stale is None else set()
    usable = np.array([name not in unreadable for name, _, _ in listing.files], dtype=bool)
    labels, splits = np.asarray(listing.labels), np.asarray(listing.splits)
    rows = split_rows(labels, splits, usable, config, listing.root, listing.classes)
    channels, height, width = (manifest["image_shape"] if stale is None
                               else resolve_shape(listing, config))
    origin = {"class-folders": "one folder per class; val and test carved from it",
              "split-folders": f"split folders {', '.join(sorted(set(listing.splits)))}"}
    lines = [f"folder {listing.root} ({origin[listing.layout]})",
             f"  {len(listing.classes)} classes; images: {_split_counts(rows)}",
             *_class_table(listing.classes, labels, rows),
             f"  images become {channels}x{height}x{width} (channels x height x width)"
             f"{_shape_origin(config)}",
             f"  cache {folder}: {_cache_state(manifest, stale)}",
             f"  ignored: {listing.ignored} hidden or non-image file(s)"]
    if unreadable:
        lines.append(f"  unreadable: {len(unreadable)} skipped (skip_unreadable = true)")
    return "\n".join(lines)


def _split_counts(rows: dict[str, np.ndarray]) -> str:
    total = sum(len(r) for r in rows.values())
    return f"{total} (train {len(rows['train'])}, val {len(rows['val'])}, test {len(rows['test'])})"


def _class_table(classes: tuple[str, ...], labels: np.ndarray,
                 rows: dict[str, np.ndarray]) -> list[str]:
    width = max(5, *(len(name) for name in classes[:DESCRIBED_CLASSES]))
    lines = [f"    {'class':<{width}}  {'train':>6} {'val':>6} {'test':>6}"]
    for label, name in enumerate(classes[:DESCRIBED_CLASSES]):
        counts = [int(np.sum(labels[rows[s]] == label)) for s in ("train", "val", "test")]
        lines.append(f"    {name:<{width}}  {counts[0]:>6} {counts[1]:>6} {counts[2]:>6}")
    if len(classes) > DESCRIBED_CLASSES:
        lines.append(f"    ... and {len(classes) - DESCRIBED_CLASSES} more classes")
    return lines


def _shape_origin(config: OwnDataSettings) -> str:
    notes = []
    if config.image_size is None:
        notes.append("size: the most common, scaled to a shorter side of at most 64")
    if config.channels is None:
        notes.append("channels: 1 only if every image is greyscale")
    return f" ({'; '.join(notes)})" if notes else ""


def _cache_state(manifest: dict[str, Any] | None, stale: str | None) -> str:
    if stale is None:
        return f"fresh (built {manifest['built']})"
    if manifest is None:
        return "will be built at the first load (each image decoded once)"
    return f"stale, will be rebuilt: {stale}"
