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

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif",
                              ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm"})
FORMATS_TEXT = "PNG, JPEG, BMP, GIF, WebP or TIFF"
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
# An unset image_size takes the images' most common size; photographs (thousands of pixels)
# are scaled down to this shorter side, the scale the CIFAR-style networks here are made for.
MAX_DEFAULT_SHORT_SIDE = 64
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# EXIF orientations 5-8 turn the image by 90 degrees: width and height swap.
TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
ORIENTATION_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM",
                         5: "TRANSPOSE", 6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}
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
    prefix = len(str(root)) + 1  # os.path, not pathlib: a scan of 10,000 files runs 3x faster
    for current, dirnames, filenames in os.walk(folder):
        hidden = [d for d in dirnames if d.startswith(".") or os.path.join(current, d) == str(skip)]
        ignored += len(hidden)
        dirnames[:] = sorted(d for d in dirnames if d not in hidden)
        for name in sorted(filenames):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                ignored += 1
                continue
            full = os.path.join(current, name)
            stat = os.stat(full)
            found.append((full[prefix:].replace(os.sep, "/"), stat.st_size, stat.st_mtime_ns))
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


def decode_errors() -> tuple[type[BaseException], ...]:
    """What a damaged, truncated or foreign file raises in Pillow's decoders."""
    from PIL import Image

    return (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def decode_failure(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# ---------------------------------------------------------------- one image


def prepare_image(image: str | os.PathLike | object, image_size: int | tuple[int, int],
                  channels: int) -> np.ndarray:
    """One image as the network sees it: uint8 (channels, height, width).

    EXIF orientation is applied; palette, alpha (over white), 16-bit and CMYK images are
    converted; the image is resized so that it covers `image_size` (its shorter side, for
    a square) and centre-cropped to it.

    Args:
        image: a file path or a PIL image.
        image_size: height and width (one number: a square).
        channels: 1 (greyscale) or 3 (RGB).
    """
    from PIL import Image

    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if isinstance(image, Image.Image):
        return _prepare(image, height, width, channels)
    with Image.open(image) as opened:
        return _prepare(opened, height, width, channels)


def _prepare(image, height: int, width: int, channels: int) -> np.ndarray:
    from PIL import Image

    # The EXIF orientation is read once (ImageOps.exif_transpose would parse it again):
    # from a JPEG's header before decoding, as drafting needs it; after decoding for
    # the other formats, whose EXIF may follow the pixels (PNG's eXIf chunk).
    orientation = _orientation(image) if image.format == "JPEG" else 1
    if image.format == "JPEG":
        # Decode a large JPEG at 1/2, 1/4 or 1/8 scale when that still covers the target.
        turned = orientation in TRANSPOSING_ORIENTATIONS
        image.draft(None, (height, width) if turned else (width, height))
    image.load()
    if image.format != "JPEG":
        orientation = _orientation(image)
    if orientation in ORIENTATION_TRANSPOSE:
        image = image.transpose(Image.Transpose[ORIENTATION_TRANSPOSE[orientation]])
    image = _resize_and_crop(_to_channels(image, channels), height, width)
    array = np.asarray(image, dtype=np.uint8)
    return array[None].copy() if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


def _orientation(image) -> int:
    orientation = image.getexif().get(0x0112, 1)
    return orientation if isinstance(orientation, int) else 1


def _to_channels(image, channels: int):
    from PIL import Image

    if image.mode in HIGH_DEPTH_MODES or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        # 16-bit levels map onto 8-bit ones (65535 -> 255); float images are taken as 0..255.
        scaled = values / 257.0 if image.mode in HIGH_DEPTH_MODES else values
        image = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ALPHA_MODES:
        # Transparent pixels hold arbitrary colours: show them over white, as a viewer does.
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("L" if channels == 1 else "RGB")


def _resize_and_crop(image, height: int, width: int):
    """Scaled to cover height x width and centre-cropped, in one resize of the centre box:
    no intermediate image, and the same scale on both axes (a resize of the whole image
    rounds each side to whole pixels)."""
    from PIL import Image

    w, h = image.size
    if (w, h) == (width, height):
        return image
    scale = max(width / w, height / h)
    # The side that decides the scale is the whole side: min() keeps rounding inside it.
    box_w, box_h = min(w, width / scale), min(h, height / scale)
    left, top = (w - box_w) / 2, (h - box_h) / 2
    return image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0,
                        box=(left, top, left + box_w, top + box_h))
