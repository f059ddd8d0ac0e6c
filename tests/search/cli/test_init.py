"""`[train] init` / `--init` on the command line: every bad starting point is one line and
exit 2 from `check`, `train` and `run`, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from study_helpers import cli_in_process, study_toml


class Code:
    def __reduce__(self):
        return (print, ("ran code",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("init")
    resnet18 = torchvision.models.resnet18(weights=None).state_dict()
    for name, value in {"list.pt": [1, 2], "code.pt": Code(), "resnet18.pt": resnet18,
                        "missing-keys.pt": {k: v for k, v in resnet18.items()
                                            if not k.startswith("layer4.")}}.items():
        torch.save(value, folder / name)
    return folder


# (file, [space] depths, what the line says after "init 'PATH' ")
BAD = [
    ("nowhere.pt", 18, "is not a file"),
    ("list.pt", 18, "is not a state dict (names -> tensors) or a resnet-search checkpoint"),
    ("code.pt", 18, "is not a state dict or a resnet-search checkpoint (it holds objects other "
                    "than tensors"),
    ("resnet18.pt", [18, 50], "does not fit imagenet-resnet-50: missing layer1.0.conv3.weight"),
    ("missing-keys.pt", 18, "does not fit imagenet-resnet-18: missing layer4.0.conv1.weight"),
]


def _study(tmp_path: Path, init: str, depth) -> Path:
    path = tmp_path / "init.toml"
    path.write_text(study_toml(
        "init", data={"dataset": "synthetic", "synthetic_shape": [3, 16, 16],
                      "synthetic_size": 64},
        train={"epochs": 1, "init": init},
        space={"family": "imagenet-resnet", "depth": depth}, replace_space=True))
    return path


def _one_line(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RESNET_SEARCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


@pytest.mark.parametrize(("file", "depth", "words"), BAD, ids=[b[0] for b in BAD])
def test_check_and_train_refuse_a_bad_init_in_one_line(file, depth, words, files, tmp_path,
                                                       home, capsys):
    init = str(files / file)
    line = _one_line(*cli_in_process(["check", str(_study(tmp_path, init, depth))])[::2])
    assert line == f"resnet-search: error: init.toml: [train] init: {init!r} {words}" \
        or line.startswith(f"resnet-search: error: init.toml: [train] init: {init!r} {words}")
    network = "imagenet-resnet-50" if depth != 18 else "imagenet-resnet-18"
    line = _one_line(*cli_in_process(["train", "--model", network, "--dataset", "synthetic",
                                      "--synthetic-size", "32", "--epochs", "1", "--init", init,
                                      "--out", str(tmp_path / "out"), "--quiet"])[::2])
    assert line.startswith(f"resnet-search: error: init {init!r} {words}"), line
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written
    assert "ran code" not in capsys.readouterr().out


def test_run_refuses_weights_that_do_not_fit_before_anything_starts(files, tmp_path, home):
    init = str(files / "resnet18.pt")
    code, _, err = cli_in_process(["run", str(_study(tmp_path, init, [18, 34]))])
    assert _one_line(code, err).startswith(f"resnet-search: error: init.toml: [train] init: "
                                           f"{init!r} does not fit imagenet-resnet-34: missing")
    assert not (home / "ray_results").exists()  # no trial, no Ray


def test_torchvision_offline_names_the_file_to_place_by_hand(tmp_path, home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # nothing answers there: offline
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    code, _, err = cli_in_process(["check", str(_study(tmp_path, "torchvision", 18))])
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    line = _one_line(code, err)
    assert line.startswith("resnet-search: error: init.toml: [train] init: 'torchvision' could "
                           "not fetch ResNet18_Weights.IMAGENET1K_V1 of imagenet-resnet-18 from "
                           "https://download.pytorch.org/models/resnet18-f37072fd.pth"), line
    assert line.endswith(f"; place that file by hand at {expected}")
    # A network torchvision has no weights for is refused without a download.
    study = _study(tmp_path, "torchvision", 18).read_text().replace(
        'family = "imagenet-resnet"', 'family = "imagenet-preact-resnet"')
    (tmp_path / "init.toml").write_text(study)
    code, _, err = cli_in_process(["check", str(tmp_path / "init.toml")])
    assert "'torchvision' has no ImageNet weights for imagenet-preact-resnet-18" in \
        _one_line(code, err)
