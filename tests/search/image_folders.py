"""A user's folder of labelled images, made from scikit-learn's digits, and a study on it.

The folder is laid out as users' folders are: a folder per class, PNG and JPEG, greyscale
and RGB, mixed-case extensions, a nested folder, a hidden file and a README."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from study_helpers import study_toml

from resnet_core.data import _digits_rows

EXTENSIONS = (".png", ".PNG", ".Jpg", ".jpeg")


def write_digit_folder(root: Path, every: int = 1) -> None:
    """ROOT/train/d<k>/... and ROOT/test/d<k>/... (every fifth digit) of the digits, 32x32;
    `every`: only every n-th digit (a smaller folder)."""
    rows = _digits_rows()
    labels = rows[:, 64].astype(int)
    images = np.round(rows[:, :64].reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)
    for i in range(0, len(labels), every):
        split = "test" if i % 5 == 0 else "train"
        folder = root / split / f"d{labels[i]}" / ("nested" if i % 7 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(np.kron(images[i], np.ones((4, 4), np.uint8)), "L")
        if i % 3 == 0:
            picture = picture.convert("RGB")
        picture.save(folder / f"img{i}{EXTENSIONS[i % len(EXTENSIONS)]}", quality=95)
    (root / "README.txt").write_text("the digits, a folder per class")
    (root / "train" / "d0" / ".hidden.png").write_bytes(b"not an image")


def folder_study(name: str, folder: Path, samples: int = 2, epochs: int = 8) -> str:
    return study_toml(
        name, study={"num_samples": samples, "seed": 0},
        data={"dataset": "folder", "path": str(folder), "image_size": 16},
        train={"epochs": epochs, "batch_size": 64, "optimizer": "adam"},
        space={"family": "wrn", "depth": 10, "width": 2, "lr": [0.002, 0.004]},
        replace_space=True)
