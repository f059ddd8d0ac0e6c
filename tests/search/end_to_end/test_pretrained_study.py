"""A study on a folder of images that starts from pretrained weights: `check`, `run` and
`predict`, with the weights' own input standardisation from the first batch to the served
model (issue 28's end to end; what it pays is in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from common import cli
from image_folders import write_digit_folder
from study_helpers import study_toml

from resnet_core import (
    DataConfig,
    PixelClassifier,
    TrainConfig,
    TrainingRun,
    parse_model_name,
    save_checkpoint,
)
from search.results.retrieve import load_best

# A test-made "pretrained" checkpoint: ImageNet ResNet-18 trained one epoch on random 3x16x16
# images, standardised with synthetic's statistics, which differ from the folder's.
PRETRAINED_MEAN = (0.5, 0.5, 0.5)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    data = DataConfig(dataset="synthetic", synthetic_shape=(3, 16, 16), synthetic_size=64)
    run = TrainingRun.from_configs(parse_model_name("imagenet-resnet-18"),
                                   TrainConfig(epochs=1, batch_size=32), data, "cpu")
    run.train_epoch()
    assert tuple(run.data.mean) == PRETRAINED_MEAN
    return save_checkpoint(run.state_dict(), tmp_path_factory.mktemp("weights") / "start.pt")


@pytest.mark.slow
def test_a_folder_study_from_a_checkpoint_runs_from_check_to_predict(studies, pretrained,
                                                                     tmp_path):
    folder = tmp_path / "digits"
    write_digit_folder(folder, every=3)
    study = studies.write("pretrained", study_toml(
        "pretrained", study={"num_samples": 1, "seed": 0},
        data={"dataset": "folder", "path": str(folder), "image_size": 32},
        train={"epochs": 1, "batch_size": 64, "optimizer": "adam", "init": str(pretrained)},
        space={"family": "imagenet-resnet", "depth": 18, "stem": ["imagenet", "cifar"],
               "lr": 0.002, "backbone_lr_factor": [0.1, 0.5]}, replace_space=True))
    checked = cli("check", str(study), env={"RESNET_SEARCH_HOME": str(studies.home)})
    # A 3x3 stem cannot take the 7x7 stem's weights: refused before anything starts.
    assert checked.returncode == 2, checked.stdout
    assert f"[train] init: '{pretrained}' does not fit imagenet-resnet-18-cifar-stem: " \
           f"conv1.weight is [64, 3, 7, 7] there but [64, 3, 3, 3] in the network" in checked.stderr
    study.write_text(study.read_text().replace('stem = ["imagenet", "cifar"]', 'stem = "imagenet"'))
    checked = cli("check", str(study), env={"RESNET_SEARCH_HOME": str(studies.home)})
    assert checked.returncode == 0, checked.stderr
    assert f"init                 {pretrained}" in checked.stdout

    result = studies.cli("run", str(study))
    assert result.returncode == 0, result.stderr[-3000:]
    model, config = load_best("pretrained", studies.tracking_uri)
    assert config["train"]["init"] == str(pretrained)
    # Trained, scored and served with the weights' standardisation, not the folder's.
    assert tuple(config["mean"]) == PRETRAINED_MEAN
    import mlflow
    import numpy as np
    import torch

    mlflow.set_tracking_uri(studies.tracking_uri)
    mlflow.set_registry_uri(studies.tracking_uri)  # an earlier test in this process set its own
    served = mlflow.pyfunc.load_model(config["model_uri"])  # what `serve` answers with
    pixels = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    expected = PixelClassifier(model, config["mean"], config["std"])(pixels.float())
    answered = served.predict(pixels.float().numpy())
    np.testing.assert_allclose(np.asarray(answered), expected.detach().numpy(), atol=1e-4)

    predicted = studies.cli("predict", "pretrained", str(folder / "test"), "--json")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = json.loads(predicted.stdout)
    assert len(rows) == len(list((folder / "test").rglob("img*")))
    assert all(row["predictions"][0]["class"].startswith("d") for row in rows)
