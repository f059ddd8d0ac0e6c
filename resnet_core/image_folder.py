"""A folder of images as users lay it out: what it holds, and how one image becomes an array.

Two layouts (torchvision's ImageFolder convention):

    DIR/<class>/...                       one pool, carved into train / val / test
    DIR/train/<class>/... [DIR/val/<class>/...] [DIR/test/<class>/...]

Classes are the sorted folder names of the training split; subfolders inside a class
folder belong to it. Hidden entries and files that are not images (by extension, in
any case) are ignored and counted. `prepare_image` is the one way a file becomes
pixels, at training and at predict time alike.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_core.dataset_types import DataConfigError, DatasetNotFoundError
from resnet_core.image_pixels import (  # noqa: F401 (decode_errors, decode_failure: re-exported)
    GREY_MODES,
    TRANSPOSING_ORIENTATIONS,
    decode_errors,
    decode_failure,
    prepared_pixels,
)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif",
                              ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm"})
FORMATS_TEXT = "PNG, JPEG, BMP, GIF, WebP or TIFF"
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
# An unset image_size takes the images' most common size; photographs (thousands of pixels)
# are scaled down to this shorter side, the scale the CIFAR-style networks here are made for.
MAX_DEFAULT_SHORT_SIDE = 64
UNREADABLE_SHOWN = 3  # files an error names before "and N more"


@dataclass(frozen=True)
class FolderListing:
    """The image files of a folder, in a fixed order, with their class and split."""

    root: Path
    layout: str  # "class-folders" or "split-folders"
    classes: tuple[str, ...]
    files: tuple[tuple[str, int, int], ...]  # (path relative to root, size, mtime_ns)
    labels: tuple[int, ...]
    splits: tuple[str, ...]  # "train", "val" or "test" per file ("train" is the pool to carve)
    ignored: int  # hidden entries and files that are not images

    def split_folders(self) -> set[str]:
        return set(self.splits)


def folder_root(path: str | None) -> Path:
    """The dataset folder, or DatasetNotFoundError naming it."""
    root = Path(path or "").expanduser()
    if not path or not root.is_dir():
        what = "is not a folder" if root.exists() else "not found"
        raise DatasetNotFoundError(
            f"image folder {root} {what}: dataset = folder needs path = a folder holding "
            f"DIR/<class>/<image> or DIR/train/<class>/<image>")
    return root.resolve()


def split_roots(root: Path) -> dict[str, Path]:
    """Where each split's class folders are: {"train": DIR} alone in the flat layout."""
    found = {}
    for split, names in SPLIT_FOLDERS.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    return found if "train" in found else {"train": root}


def class_names(root: Path, skip: Path | None = None) -> tuple[str, ...]:
    """Sorted class folder names of the training split, from one directory listing (`skip`:
    a cache folder kept there)."""
    train = split_roots(root)["train"]
    names = tuple(sorted(entry.name for entry in os.scandir(train) if entry.is_dir()
                         and not entry.name.startswith(".") and Path(entry.path) != skip))
    if not names:
        raise DataConfigError(
            f"no class folders in {train}: expected {train}/<class>/<image> (one folder per "
            f"class, images of {FORMATS_TEXT} inside)")
    if len(names) == 1:
        raise DataConfigError(f"{train} has one class folder ({names[0]!r}); a classifier "
                              f"needs at least 2")
    return names


def scan_folder(path: str | None, skip: Path | None = None) -> FolderListing:
    """Walk the dataset folder (no image is opened); `skip` is a folder inside it to pass over
    (a cache kept there)."""
    root = folder_root(path)
    roots = split_roots(root)
    classes = class_names(root, skip)
    files: list[tuple[str, int, int]] = []
    labels: list[int] = []
    splits: list[str] = []
    ignored = _ignored_beside_splits(root, roots, skip)
    for split, split_root in roots.items():
        present = [entry.name for entry in os.scandir(split_root) if entry.is_dir()
                   and not entry.name.startswith(".") and Path(entry.path) != skip]
        _check_classes_known(split_root, present, classes, roots["train"])
        ignored += sum(1 for entry in os.scandir(split_root) if Path(entry.path) != skip
                       and (not entry.is_dir() or entry.name.startswith(".")))
        for label, name in enumerate(classes):
            if name not in present:
                continue
            found, skipped = _class_files(root, split_root / name, skip)
            if not found and split == "train":
                raise DataConfigError(f"class folder {split_root / name} holds no images "
                                      f"({FORMATS_TEXT}); add images or remove the folder")
            files += found
            labels += [label] * len(found)
            splits += [split] * len(found)
            ignored += skipped
    layout = "class-folders" if roots["train"] == root else "split-folders"
    return FolderListing(root, layout, classes, tuple(files), tuple(labels), tuple(splits),
                         ignored)


def _ignored_beside_splits(root: Path, roots: dict[str, Path], skip: Path | None) -> int:
    """Entries of DIR beside train/val/test in the split layout (the flat layout counts its
    own top-level files as a split root's)."""
    if roots["train"] == root:
        return 0
    kept = {p.name for p in roots.values()}
    return sum(1 for entry in os.scandir(root)
               if entry.name not in kept and Path(entry.path) != skip)


def _check_classes_known(split_root: Path, present: Iterable[str], classes: tuple[str, ...],
                         train_root: Path) -> None:
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise DataConfigError(
            f"{split_root} has class folder(s) {', '.join(map(repr, unknown))} that "
            f"{train_root} lacks (its classes: {', '.join(classes)})")


def _class_files(root: Path, folder: Path,
                 skip: Path | None) -> tuple[list[tuple[str, int, int]], int]:
    """Image files under one class folder, nested folders included; and how many entries
    were ignored."""
    found, ignored = [], 0
    # Strings, not pathlib (3x faster), and each folder's relative name made once, not per
    # file: every cache load lists the folder (10,000 files, warm: 19 ms against 28 ms).
    prefix = len(str(root)) + 1
    for current, dirnames, filenames in os.walk(folder):
        hidden = [d for d in dirnames if d.startswith(".") or os.path.join(current, d) == str(skip)]
        ignored += len(hidden)
        dirnames[:] = sorted(d for d in dirnames if d not in hidden)
        relative = current[prefix:].replace(os.sep, "/")
        for name in sorted(filenames):
            dot = name.rfind(".")
            if name.startswith(".") or dot < 0 or name[dot:].lower() not in IMAGE_EXTENSIONS:
                ignored += 1
                continue
            stat = os.stat(f"{current}{os.sep}{name}")
            found.append((f"{relative}/{name}", stat.st_size, stat.st_mtime_ns))
    return found, ignored


# ---------------------------------------------------------------- size and channels


def probe_image(path: Path) -> tuple[int, int, bool]:
    """(height, width, greyscale) as the image will be seen, from its header (no decode)."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112, 1) in TRANSPOSING_ORIENTATIONS:
            width, height = height, width
        return height, width, image.mode in GREY_MODES


def default_image_size(sizes: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """The most common (height, width), scaled down to a shorter side of
    MAX_DEFAULT_SHORT_SIDE where larger."""
    (height, width), _ = Counter(sizes).most_common(1)[0]
    scale = MAX_DEFAULT_SHORT_SIDE / min(height, width)
    if scale >= 1:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def unreadable_error(root: Path, failures: list[tuple[str, str]], total: int) -> DataConfigError:
    """One line naming the first few files that could not be decoded, and why."""
    shown = "; ".join(f"{name} ({why})" for name, why in failures[:UNREADABLE_SHOWN])
    more = f" and {len(failures) - UNREADABLE_SHOWN} more" if len(failures) > UNREADABLE_SHOWN else ""
    return DataConfigError(
        f"{len(failures)} of {total} images in {root} cannot be decoded: {shown}{more}; "
        f"remove or replace them, or set skip_unreadable = true to train without them")


# ---------------------------------------------------------------- one image


def prepare_image(image: str | os.PathLike | object, image_size: int | tuple[int, int],
                  channels: int, out: np.ndarray | None = None) -> np.ndarray:
    """One image as the network sees it: uint8 (channels, height, width).

    EXIF orientation is applied; palette, alpha (over white), 16-bit and CMYK images are
    converted; the image is resized so that it covers `image_size` (its shorter side, for
    a square) and centre-cropped to it.

    Args:
        image: a file path or a PIL image.
        image_size: height and width (one number: a square).
        channels: 1 (greyscale) or 3 (RGB).
        out: a uint8 (channels, height, width) array to write into (a row of the decode
            cache) instead of a new one; returned.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    pixels = prepared_pixels(image, height, width, channels)
    if out is None:
        out = np.empty((channels, height, width), np.uint8)
    out[...] = np.frombuffer(pixels, np.uint8).reshape(height, width, channels).transpose(2, 0, 1)
    return out
