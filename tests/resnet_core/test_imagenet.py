"""The ImageNet ResNets: torchvision's parameter counts and logits, the FLOPs, the stems, and
`init`: torchvision's weights and our checkpoints as starting points, and every bad one."""

from __future__ import annotations

import pickle
import re

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from resnet_core import (
    IMAGENET_MEAN,
    DataConfig,
    InitWeightsError,
    ModelConfig,
    TrainConfig,
    TrainingRun,
    architecture_cost,
    build_model,
    count_flops,
    load_data,
    parse_model_name,
    read_init,
    torchvision_file,
)
from resnet_core.pretrained import load_starting_weights

# torchvision's own figures at 1000 classes (its model docs' "num_params").
TORCHVISION_PARAMS = {
    "imagenet-resnet-18": 11_689_512, "imagenet-resnet-34": 21_797_672,
    "imagenet-resnet-50": 25_557_032, "imagenet-resnet-101": 44_549_160,
    "imagenet-resnet-152": 60_192_808, "imagenet-resnet-50-2": 68_883_240,
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_counts_are_torchvisions_exactly(name):
    params, _ = architecture_cost(name, (224, 224), num_classes=1000)  # on the meta device
    assert params == TORCHVISION_PARAMS[name]


def test_names_blocks_and_the_wide_variant():
    assert parse_model_name("imagenet-resnet-18").block == "basic"
    assert parse_model_name("imagenet-resnet-50").block == "bottleneck"
    assert parse_model_name("imagenet-resnet-50-2").width == 2
    assert parse_model_name("imagenet-resnet-50").name == "imagenet-resnet-50"
    assert parse_model_name("imagenet-resnet-18", stem="cifar").name == \
        "imagenet-resnet-18-cifar-stem"
    with pytest.raises(ValueError, match="depth=20 is invalid for imagenet-resnet with basic "
                                         "blocks: depth must be one of 18, 34"):
        ModelConfig(family="imagenet-resnet", depth=20, block="basic")
    with pytest.raises(ValueError, match="stem='cifar' needs family 'imagenet-resnet' or "
                                         "'imagenet-preact-resnet'"):
        ModelConfig(family="resnet", depth=20, stem="cifar")


def _torchvision_model(name: str) -> torch.nn.Module:
    torch.manual_seed(1)
    model = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():  # BN statistics away from 0 and 1, so eval mode uses them
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize(("ours", "theirs"), [("imagenet-resnet-18", "resnet18"),
                                              ("imagenet-resnet-50", "resnet50"),
                                              ("imagenet-resnet-50-2", "wide_resnet50_2")])
def test_torchvision_weights_loaded_through_init_give_torchvisions_logits(ours, theirs, tmp_path):
    reference = _torchvision_model(theirs)
    path = tmp_path / f"{theirs}.pt"
    torch.save(reference.state_dict(), path)
    config = parse_model_name(ours, num_classes=1000)
    model = build_model(config)
    load_starting_weights(model, read_init(str(path), config), config.name)
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(image), reference(image), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("name", "options", "size"), [
    ("imagenet-resnet-50", {}, 64), ("imagenet-resnet-18", {"stem": "cifar"}, 32),
    ("imagenet-preact-resnet-50", {"width": 2}, 48)])
def test_flops_counted_from_shapes_match_torchs_counter(name, options, size):
    model = build_model(name, **options)
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 3, size, size))
    assert count_flops(model, (size, size)) == counter.get_total_flops() // 2


def test_the_cifar_stem_keeps_the_resolution_and_the_preact_family_trains():
    imagenet, cifar = (architecture_cost("imagenet-resnet-18", (64, 64), stem=s)[1]
                       for s in ("imagenet", "cifar"))
    assert 14 < cifar / imagenet < 17  # 16x the positions after the stem, but the stem's own
    model = build_model("imagenet-preact-resnet-50", dropout=0.5)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def _synthetic() -> object:
    return load_data(DataConfig(dataset="synthetic", synthetic_shape=(3, 16, 16),
                                synthetic_size=32))


def test_a_start_from_weights_replaces_the_head_and_standardises_as_they_were_trained(tmp_path):
    reference = _torchvision_model("resnet18")
    path = tmp_path / "resnet18.pt"
    torch.save(reference.state_dict(), path)
    run = TrainingRun(parse_model_name("imagenet-resnet-18"),
                      TrainConfig(epochs=1, init=str(path), backbone_lr_factor=0.1, lr=0.05),
                      _synthetic(), "cpu")
    assert torch.equal(run.model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert run.model.fc.out_features == 10  # a fresh head for the data's 10 classes
    assert [g["lr"] for g in run.optimizer.param_groups] == [pytest.approx(0.005), 0.05]
    assert run.state_dict()["data_info"]["mean"] == list(IMAGENET_MEAN)  # predict and serve
    # One of our checkpoints starts a run too, with the standardisation it recorded.
    ours = tmp_path / "checkpoint.pt"
    torch.save(run.state_dict(), ours)
    again = TrainingRun(parse_model_name("imagenet-resnet-18"), TrainConfig(init=str(ours)),
                        _synthetic(), "cpu")
    assert torch.equal(again.model.fc.weight, run.model.fc.weight)  # same classes: kept
    assert again.data.mean == IMAGENET_MEAN


class Code:
    def __reduce__(self):
        return (print, ("ran code",))


def _bad_files(tmp_path):
    resnet18 = _torchvision_model("resnet18").state_dict()
    files = {"list.pt": [1, 2], "code.pt": Code(), "resnet18.pt": resnet18,
             "missing-keys.pt": {k: v for k, v in resnet18.items() if not k.startswith("layer4.1.")}}
    for name, value in files.items():
        torch.save(value, tmp_path / name)
    (tmp_path / "text.pt").write_text("not torch")
    return tmp_path


# Each bad init and the words of its one line (the study-file and CLI tests check the exit).
BAD_INITS = [
    ("nowhere.pt", "imagenet-resnet-18", "is not a file"),
    ("list.pt", "imagenet-resnet-18", "is not a state dict (names -> tensors) or a resnet-search "
                                      "checkpoint (it holds a list)"),
    ("code.pt", "imagenet-resnet-18", "holds objects other than tensors"),
    ("text.pt", "imagenet-resnet-18", "holds objects other than tensors and plain values, or is "
                                      "not a torch file"),
    ("resnet18.pt", "imagenet-resnet-50", "does not fit imagenet-resnet-50: missing "
                                          "layer1.0.conv3.weight, layer1.0.bn3.weight"),
    ("missing-keys.pt", "imagenet-resnet-18", "does not fit imagenet-resnet-18: missing "
                                              "layer4.1.conv1.weight, layer4.1.bn1.weight, "
                                              "layer4.1.bn1.bias, ... (12 in all)"),
    ("resnet18.pt", "imagenet-resnet-18-cifar-stem", "conv1.weight is [64, 3, 7, 7] there but "
                                                     "[64, 3, 3, 3] in the network"),
]


@pytest.mark.parametrize(("file", "network", "words"), BAD_INITS, ids=[b[0] + "-" + b[1]
                                                                       for b in BAD_INITS])
def test_a_bad_init_is_one_line_naming_it(file, network, words, tmp_path, capsys):
    folder = _bad_files(tmp_path)
    config = parse_model_name(network.removesuffix("-cifar-stem"),
                              stem="cifar" if network.endswith("cifar-stem") else None)
    with pytest.raises(InitWeightsError, match=re.escape(words)) as error:
        TrainingRun(config, TrainConfig(init=str(folder / file)), _synthetic(), "cpu")
    assert str(error.value).startswith(f"init '{folder / file}' ")
    assert "\n" not in str(error.value)
    assert "ran code" not in capsys.readouterr().out


def test_torchvision_weights_come_from_torch_hubs_cache_and_offline_name_the_file(
        tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # nothing answers: offline
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    config = parse_model_name("imagenet-resnet-18")
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert torchvision_file(config) == expected
    with pytest.raises(InitWeightsError, match=f"init 'torchvision' could not fetch "
                                               f"ResNet18_Weights.IMAGENET1K_V1 of "
                                               f"imagenet-resnet-18 from https://download.pytorch"
                                               f".org/models/resnet18-f37072fd.pth .*; place that "
                                               f"file by hand at {expected}"):
        read_init("torchvision", config)
    # Placed by hand (here: random weights under that name), it is what `init` loads.
    expected.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_torchvision_model("resnet18").state_dict(), expected)
    assert torch.equal(read_init("torchvision", config).tensors["fc.bias"],
                       _torchvision_model("resnet18").fc.bias)
    with pytest.raises(InitWeightsError, match="has no ImageNet weights for "
                                               "imagenet-preact-resnet-50"):
        read_init("torchvision", parse_model_name("imagenet-preact-resnet-50"))


def test_code_in_an_init_file_never_runs(tmp_path, capsys):
    with pytest.raises(pickle.UnpicklingError):
        torch.load(_bad_files(tmp_path) / "code.pt", weights_only=True)
    assert "ran code" not in capsys.readouterr().out
