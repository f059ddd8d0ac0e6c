"""Torn checkpoints: a file cut short or overwritten is one CheckpointError, never another crash."""

from __future__ import annotations

import os

import pytest
import torch

from resnet_core.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from resnet_core.data import DataConfig
from resnet_core.models import parse_model_name
from resnet_core.train import TrainConfig, TrainingRun


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    """A real checkpoint of an untrained resnet-8 on digits (weights, optimizer, RNG, configs)."""
    run = TrainingRun.from_configs(parse_model_name("resnet-8"), TrainConfig(epochs=1),
                                   DataConfig("digits"), "cpu")
    path = save_checkpoint(run.state_dict(), tmp_path_factory.mktemp("ck") / "checkpoint.pt")
    return path.read_bytes()


def torn_variants(data: bytes) -> dict[str, bytes]:
    """What a writer killed half-way, a full disk or a bad copy leaves behind."""
    middle = len(data) // 2
    return {
        "empty": b"",
        "first 100 bytes": data[:100],
        "half": data[:middle],
        "last 10 bytes cut": data[:-10],
        "zeros over the middle": data[:middle] + bytes(4096) + data[middle + 4096:],
        "text": b"not a checkpoint\n",
    }


def test_every_torn_variant_is_a_checkpoint_error(checkpoint_bytes, tmp_path):
    path = tmp_path / "checkpoint.pt"
    for what, blob in torn_variants(checkpoint_bytes).items():
        path.write_bytes(blob)
        with pytest.raises(CheckpointError, match=r"checkpoint\.pt is not a") as raised:
            load_checkpoint(path)
        assert "\n" not in str(raised.value), what


def test_a_checkpoint_cut_at_any_point_is_a_checkpoint_error(checkpoint_bytes, tmp_path):
    path = tmp_path / "checkpoint.pt"
    step = max(1, len(checkpoint_bytes) // 60)
    for cut in range(0, len(checkpoint_bytes), step):
        path.write_bytes(checkpoint_bytes[:cut])
        with pytest.raises(CheckpointError):
            load_checkpoint(path)


def test_weights_that_do_not_fit_the_model_config_are_a_checkpoint_error(tmp_path):
    run = TrainingRun.from_configs(parse_model_name("resnet-8"), TrainConfig(epochs=1),
                                   DataConfig("digits"), "cpu")
    state = run.state_dict()
    state["model_config"] = {**state["model_config"], "depth": 14}
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="do not fit its model_config"):
        model_from_checkpoint(tmp_path)


def test_an_interrupted_save_leaves_the_previous_checkpoint_whole(checkpoint_bytes, tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(checkpoint_bytes)

    class Unsaveable:  # torch.save fails half-way through writing the temp file
        def __reduce__(self):
            raise OSError("No space left on device")

    with pytest.raises(OSError):
        save_checkpoint({"model": {"w": torch.zeros(1000)}, "x": Unsaveable()}, path)
    assert path.read_bytes() == checkpoint_bytes
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left



def test_a_checkpoint_that_holds_code_is_refused_and_runs_no_code(tmp_path):
    """A file from someone else: loading it must not run what its pickle asks for."""
    marker = tmp_path / "code-ran"

    class RunsCodeOnLoad:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "model_config": {}, "payload": RunsCodeOnLoad()}, path)
    with pytest.raises(CheckpointError, match="holds objects other than tensors"):
        load_checkpoint(path)
    assert not marker.exists()


def test_input_spec_is_the_checkpoints_own_and_older_ones_get_their_datasets():
    """A checkpoint says what its network takes and outputs (a user's folder may be gone
    where the model is used); one written before it said so gets its dataset's values."""
    from resnet_core import input_spec
    from resnet_core.data import DIGITS_STATS

    recorded = {"data_info": {"image_shape": [3, 24, 20], "mean": [0.1, 0.2, 0.3],
                              "std": [0.5, 0.5, 0.5], "class_names": ["cat", "dog"]}}
    spec = input_spec(recorded)
    assert (spec.image_shape, spec.class_names) == ((3, 24, 20), ("cat", "dog"))
    assert (spec.mean, spec.std) == ((0.1, 0.2, 0.3), (0.5, 0.5, 0.5))
    older = input_spec({"data_config": {"dataset": "digits"}, "model_config": {"num_classes": 10}})
    assert older.image_shape == (1, 8, 8) and (older.mean, older.std) == DIGITS_STATS
    assert older.class_names == tuple(str(i) for i in range(10))
