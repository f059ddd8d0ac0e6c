"""Safe checkpoints: one file, written atomically, loaded without running code.

A checkpoint is a dict of state dicts, tensors and plain Python values, so it
loads with `torch.load(weights_only=True)`: a file from someone else cannot
execute anything on load. `TrainingRun.state_dict()` writes it, with these keys:

    format_version   1
    model_config     ModelConfig as a dict (num_classes / in_channels of the data)
    train_config     TrainConfig as a dict
    data_config      DataConfig as a dict, or None (a run built from bare splits)
    data_info        what the network takes and says: image_shape (C, H, W), the mean and
                     std its input is standardised with, class_names (label i is
                     class_names[i]); a user's folder may be gone where the model is used
    epoch            epochs completed
    model            weights of the unwrapped model
    optimizer, scheduler, rng, history

Every writer (the `train` command, Tune trials, DDP rank 0) saves that dict
unchanged; checkpoints of earlier versions had the same keys but data_info, which
`input_spec` then derives from their data_config.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_core.config import ModelConfig
from resnet_core.data import DataConfig, DataSplits, normalisation
from resnet_core.errors import CheckpointError

# torch is imported by the functions that read and write files: a command that only names
# the checkpoint file or catches CheckpointError does not pay its import.
if TYPE_CHECKING:
    from torch import nn

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a checkpoint."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file (or a directory holding `checkpoint.pt`) onto the CPU."""
    import torch

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        _check_crc(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Either not a checkpoint at all, or one that holds code: never load it unsafely.
        raise CheckpointError(f"{path} is not a resnet-search checkpoint (it holds objects "
                              f"other than tensors and plain values, or is not a torch file)"
                              ) from None
    except Exception as error:  # a torn file fails in many ways: EOF, zip, OS, pickle keys
        # A writer killed half-way, a full disk or a bad copy: truncated or corrupt.
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt: "
                              f"{_first_sentence(error)})") from None
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise CheckpointError(f"{path} is not a resnet-search checkpoint (no model / model_config)")
    return state


def _check_crc(path: Path) -> None:
    """torch does not check the CRCs of its zip records: zeros over the weights load silently."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"record {bad.split('/', 1)[-1]} fails its CRC check")


def _first_sentence(error: Exception) -> str:
    """`Type: first sentence` of an error (torch's zip errors run to a paragraph)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text.split(". ")[0].rstrip(".")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def data_config_to_dict(config: DataConfig) -> dict[str, Any]:
    return asdict(config)


def data_config_from_dict(data: dict[str, Any] | None) -> DataConfig:
    """The DataConfig of a checkpoint (or of MLflow params, where tuples became lists)."""
    values = dict(data or {})
    if "synthetic_shape" in values:
        values["synthetic_shape"] = tuple(values["synthetic_shape"])
    return DataConfig(**values)


def model_from_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network from the checkpoint alone; returns (model in eval mode, state)."""
    from resnet_core.models import build_model

    state = load_checkpoint(path)
    try:
        model = build_model(ModelConfig.from_dict(state["model_config"]))
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path} holds weights that do not fit its model_config "
                              f"({_first_sentence(error)})") from None
    try:  # what evaluating or serving it will read: refused here, in the checkpoint's words
        data_config_from_dict(state.get("data_config"))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path} holds a data_config this version cannot use "
                              f"({_first_sentence(error)})") from None
    try:  # the standardisation its input takes (a pretrained start's may not be its data's)
        input_spec(state)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} holds a data_info this version cannot use "
                              f"({_first_sentence(error)})") from None
    return model.eval(), state


@dataclass(frozen=True)
class InputSpec:
    """What a checkpoint's network takes and says: the images it was trained on, the
    standardisation of its input, and the name of each class it outputs."""

    image_shape: tuple[int, int, int]  # channels, height, width
    mean: tuple[float, ...]  # per channel, 0..1 scale: input = (pixels / 255 - mean) / std
    std: tuple[float, ...]
    class_names: tuple[str, ...]


def data_info(data: DataSplits) -> dict[str, Any]:
    """The checkpoint's `data_info` of a run on `data` (plain values: weights_only loads it)."""
    return {"image_shape": [data.in_channels, *data.image_size], "mean": list(data.mean),
            "std": list(data.std), "class_names": list(data.class_names)}


def input_spec(state: dict[str, Any]) -> InputSpec:
    """A checkpoint's InputSpec: its `data_info`, else (older checkpoints, built-in datasets)
    what its data_config says, with the classes named by their numbers."""
    info = state.get("data_info")
    if info:
        return InputSpec(tuple(info["image_shape"]), tuple(info["mean"]), tuple(info["std"]),
                         tuple(info["class_names"]))
    config = data_config_from_dict(state.get("data_config"))
    mean, std = normalisation(config)
    classes = int(state["model_config"]["num_classes"])
    return InputSpec(tuple(config.image_shape), tuple(mean), tuple(std),
                     tuple(str(i) for i in range(classes)))
