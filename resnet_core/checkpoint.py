"""Safe checkpoints: one file, written atomically, loaded without running code.

A checkpoint is a dict of state dicts, tensors and plain Python values, so it
loads with `torch.load(weights_only=True)`: a file from someone else cannot
execute anything on load.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_core.config import ModelConfig
from resnet_core.models import build_model

CHECKPOINT_FILE = "checkpoint.pt"


class CheckpointError(ValueError):
    """A file that is not a loadable resnet-search checkpoint."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a checkpoint."""
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
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Either not a checkpoint at all, or one that holds code: never load it unsafely.
        raise CheckpointError(f"{path} is not a resnet-search checkpoint (it holds objects "
                              f"other than tensors and plain values, or is not a torch file)"
                              ) from None
    except RuntimeError as error:
        raise CheckpointError(f"{path} is not a readable torch file: "
                              f"{str(error).splitlines()[0]}") from None
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise CheckpointError(f"{path} is not a resnet-search checkpoint (no model / model_config)")
    return state


def model_from_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network from the checkpoint alone; returns (model in eval mode, state)."""
    state = load_checkpoint(path)
    model = build_model(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval(), state
