"""`resnet-search predict`: a trained network's classes for new image files.

The network comes from a study's champion (by the study's name), a registered or logged
model (`models:/NAME@champion`, `models:/NAME/3`, `runs:/...`) or a checkpoint file. Each
image gets what the training images got: resized (shorter side) and centre-cropped to the
training image size, converted to its channels, standardised with the training statistics
(all recorded in the checkpoint, `resnet_core.input_spec`). A file that cannot be read is
reported with its reason, and the others are still classified.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from resnet_core import (
    IMAGE_EXTENSIONS,
    InputSpec,
    PixelClassifier,
    input_spec,
    model_from_checkpoint,
    prepare_image,
)
from search.results.retrieve import download_model_checkpoint
from search.tracking import store


@dataclass(frozen=True)
class Prediction:
    """One file's most likely classes, best first, or why it could not be classified."""

    file: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (class name, probability)
    error: str | None = None

    def to_dict(self) -> dict:
        return {"file": self.file, "error": self.error,
                "predictions": [{"class": name, "probability": p} for name, p in self.top]}


def predict_files(source: str, paths: list[str], *, top_k: int = 3, device: str = "cpu",
                  batch_size: int = 64, tracking_uri: str | None = None) -> list[Prediction]:
    """Classify image files (folders: every image in them, recursively) with a study's
    champion, a models:/ or runs:/ URI, or a checkpoint file."""
    model, spec = load_network(source, tracking_uri)
    classifier = PixelClassifier(model, spec.mean, spec.std).to(device).eval()
    files, missing = image_files(paths)
    predictions = [Prediction(str(p), error="no such file or folder") for p in missing]
    for start in range(0, len(files), batch_size):
        predictions += _predict_batch(classifier, spec, files[start:start + batch_size],
                                      min(top_k, len(spec.class_names)), device)
    return predictions


def load_network(source: str, tracking_uri: str | None = None
                 ) -> tuple[torch.nn.Module, InputSpec]:
    """The network of `source` in eval mode, and what its input and output are."""
    with tempfile.TemporaryDirectory(prefix="resnet-search-predict-") as scratch:
        model, state = model_from_checkpoint(_checkpoint(source, tracking_uri, Path(scratch)))
    return model.float(), input_spec(state)


def _checkpoint(source: str, tracking_uri: str | None, scratch: Path) -> Path:
    if Path(source).is_file():
        return Path(source)
    if "://" in source or source.startswith("models:/"):
        return download_model_checkpoint(source, tracking_uri, scratch)
    _, client, study_run = store.open_study(source, tracking_uri)
    champion = store.registered_champion(client, study_run, source)
    return download_model_checkpoint(champion["uri"], tracking_uri, scratch)


def image_files(paths: list[str]) -> tuple[list[Path], list[Path]]:
    """(image files, paths that do not exist): folders give every image file in them,
    recursively and sorted, hidden ones left out; a file named explicitly is always tried."""
    files, missing = [], []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file()
                            and p.suffix.lower() in IMAGE_EXTENSIONS
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            files.append(path)
        else:
            missing.append(path)
    return files, missing


def _predict_batch(classifier: torch.nn.Module, spec: InputSpec, files: list[Path], top_k: int,
                   device: str) -> list[Prediction]:
    """The files' predictions in their order; an unreadable file is one with its error."""
    channels, height, width = spec.image_shape
    images: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for i, path in enumerate(files):
        try:
            images[i] = prepare_image(path, (height, width), channels)
        except Exception as error:  # Pillow raises several kinds for a file it cannot decode
            errors[i] = f"cannot read it as an image ({type(error).__name__}: {error})"
    top: dict[int, list[tuple[str, float]]] = {}
    if images:
        pixels = torch.from_numpy(np.stack(list(images.values()))).float().to(device)
        with torch.inference_mode():
            best = classifier(pixels).cpu().topk(top_k, dim=1)
        for i, values, indices in zip(images, best.values.tolist(), best.indices.tolist(),
                                      strict=True):
            top[i] = [(spec.class_names[c], p) for p, c in zip(values, indices, strict=True)]
    return [Prediction(str(path), top.get(i, []), errors.get(i)) for i, path in enumerate(files)]
