"""Network families: a new family is one registry entry plus its module, and the zoo's four
families answer the questions search asks (depths, blocks, widths, names) by their rules."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_core import (
    FAMILIES,
    ConfigValueError,
    DepthRule,
    ModelConfig,
    NetworkFamily,
    family,
    family_names,
    register_family,
    unregister_family,
)
from resnet_core.data import DataConfig, load_data
from resnet_core.models import (
    architecture_cost,
    build_model,
    count_parameters,
    list_models,
    parse_model_name,
)
from resnet_core.train import TrainConfig, TrainingRun, fit


class TwoStageNet(nn.Module):
    """The toy family's own network: a stem, two stages of `n` conv-BN-ReLU (8k and 16k
    channels, the second at stride 2), pooling and a linear head; depth = 2n + 2."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        n = config.blocks_per_stage
        narrow, wide = 8 * config.width, 16 * config.width
        layers = [self._conv(config.in_channels, narrow, 1)]
        layers += [self._conv(narrow, narrow, 1) for _ in range(n)]
        layers += [self._conv(narrow, wide, 2)] + [self._conv(wide, wide, 1) for _ in range(n - 1)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(wide, config.num_classes)

    @staticmethod
    def _conv(in_channels: int, out_channels: int, stride: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
                             nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(pooled, 1))


# toy-net-6-2 (n=2, k=2: 16 and 32 channels), counted by hand: stem 3*16*9 + BN 32; stage 1
# two 16->16 convs 2*(2304 + 32); stage 2 16->32 (4608 + 64) and 32->32 (9216 + 64); head
# 32*10 + 10.
TOY_NET_6_2_PARAMS = 464 + 4672 + 4672 + 9280 + 330

TOY = NetworkFamily(
    "toy-net", "two plain stages", preactivation=False, shortcuts=False,
    depth_rules=(DepthRule("basic", 2, 2),), has_width=True, builder=TwoStageNet,
    paper_params={"toy-net-6-2": TOY_NET_6_2_PARAMS}, extra_models=("toy-net-4-1",))


@pytest.fixture
def toy_family():
    before = (family_names(), list_models())
    register_family(TOY)
    yield TOY
    unregister_family(TOY.name)
    assert (family_names(), list_models()) == before


def test_a_registered_family_is_a_valid_family_everywhere(toy_family):
    assert FAMILIES[-1] == "toy-net" and "toy-net" in FAMILIES
    assert family("toy-net") is toy_family
    config = ModelConfig(family="toy-net", depth=6, width=2)
    assert (config.block, config.blocks_per_stage, config.name) == ("basic", 2, "toy-net-6-2")
    with pytest.raises(ValueError, match=r"depth=5 is invalid for toy-net: depth must be 2n\+2"):
        ModelConfig(family="toy-net", depth=5)
    with pytest.raises(ValueError, match="toy-net uses basic blocks only"):
        ModelConfig(family="toy-net", depth=6, block="bottleneck")


def test_a_registered_family_builds_parses_lists_and_counts(toy_family):
    assert {"toy-net-4-1", "toy-net-6-2"} <= set(list_models())
    assert list_models()[-2:] == ["toy-net-4-1", "toy-net-6-2"]  # registration order
    config = parse_model_name("toy-net-6-2", num_classes=10)
    assert (config.family, config.depth, config.width) == ("toy-net", 6, 2)
    model = build_model("toy-net-6-2")
    assert isinstance(model, TwoStageNet)
    assert count_parameters(model) == toy_family.paper_params["toy-net-6-2"]
    assert architecture_cost("toy-net-6-2")[0] == TOY_NET_6_2_PARAMS  # on the meta device
    with pytest.raises(ValueError, match="only wrn and toy-net names carry a width"):
        parse_model_name("toy-net-6")


def test_a_registered_family_trains(toy_family):
    data = load_data(DataConfig("digits", subset=64))
    run = TrainingRun(parse_model_name("toy-net-4-1"), TrainConfig(epochs=1, batch_size=32,
                                                                    amp=False), data, "cpu")
    (metrics,) = fit(run)
    assert isinstance(run.model, TwoStageNet)
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and metrics["train_loss"] > 0


def test_after_unregistering_the_family_is_unknown_again(toy_family):
    unregister_family("toy-net")
    with pytest.raises(ConfigValueError, match="family='toy-net' is not one of plain, resnet, "
                                               "preact-resnet, wrn"):
        ModelConfig(family="toy-net", depth=6)
    with pytest.raises(ValueError, match="unknown model 'toy-net-6-2'"):
        parse_model_name("toy-net-6-2")
    register_family(TOY)  # the fixture unregisters it


def test_a_name_is_registered_once_unless_replaced(toy_family):
    with pytest.raises(ValueError, match="'toy-net' is registered already"):
        register_family(TOY)
    wider = dataclasses.replace(TOY, description="two wider stages")
    register_family(wider, replace=True)
    assert family("toy-net") is wider and family_names().count("toy-net") == 1
    register_family(TOY, replace=True)


def test_a_family_whose_name_starts_another_parses_apart(toy_family):
    register_family(dataclasses.replace(TOY, name="toy", paper_params={}, extra_models=()))
    try:
        assert parse_model_name("toy-net-6-2").family == "toy-net"
        assert parse_model_name("toy-6-2").family == "toy"
    finally:
        unregister_family("toy")


@pytest.mark.parametrize(("name", "problem"), [
    ("Toy", "must be lowercase words"),
    ("toy-", "must be lowercase words"),
])
def test_a_family_needs_a_name_that_model_names_can_carry(name, problem):
    with pytest.raises(ValueError, match=problem):
        NetworkFamily(name, "", False, True, (DepthRule("basic", 2, 2),))


@pytest.mark.parametrize("model", ["toy-6", "toy-6-2-1", "tiny-6-2", "toy-5-2"])
def test_a_familys_named_networks_must_parse_as_its_own(model):
    with pytest.raises(ValueError, match=f"its network '{model}' is not named toy-D-K"):
        NetworkFamily("toy", "", False, True, (DepthRule("basic", 2, 2),), has_width=True,
                      extra_models=(model,))


def test_a_family_needs_known_blocks_and_a_rule():
    with pytest.raises(ValueError, match="needs a depth rule"):
        NetworkFamily("toy", "", False, True, ())
    with pytest.raises(ValueError, match="needs a block in basic, bottleneck"):
        NetworkFamily("toy", "", False, True, (DepthRule("dense", 2, 2),))


# ---------------------------------------------------------------- the zoo's families

def test_the_depth_rules_of_the_papers():
    assert family("resnet").depths(range(6, 30)) == [8, 11, 14, 20, 26, 29]
    assert family("resnet").depths(range(6, 30), "basic") == [8, 14, 20, 26]
    assert family("resnet").depths(range(6, 30), "bottleneck") == [11, 20, 29]
    assert family("wrn").depths(range(6, 30)) == [10, 16, 22, 28]
    assert family("wrn").depths(range(6, 30), "bottleneck") == []
    assert str(family("wrn").depth_rule("basic")) == "6n+4"
    assert family("wrn").depth_rule_text().startswith("wrn depths are 6n+4: 10, 16")
    assert family("resnet").depth_rule_text("bottleneck").startswith("bottleneck depths are 9n+2")


@pytest.mark.parametrize(("name", "depth", "block"), [
    ("resnet", 20, "basic"), ("resnet", 1202, "basic"), ("resnet", 11, "bottleneck"),
    ("resnet", 164, "bottleneck"), ("preact-resnet", 1001, "bottleneck"),
    ("preact-resnet", 110, "basic"), ("plain", 21, "basic"), ("wrn", 28, "basic"),
])
def test_the_default_block_is_the_papers(name, depth, block):
    assert family(name).default_block(depth) == block


def test_what_each_family_has():
    shape = {f: (family(f).blocks, family(f).has_width, family(f).has_bn_position,
                 family(f).preactivation, family(f).shortcuts) for f in family_names()}
    both = ("basic", "bottleneck")
    assert shape == {"plain": (both, False, False, False, False),
                     "resnet": (both, False, True, False, True),
                     "preact-resnet": (both, False, False, True, True),
                     "wrn": (("basic",), True, False, True, True),
                     "imagenet-resnet": (both, True, False, False, True),
                     "imagenet-preact-resnet": (both, True, False, True, True)}


def test_names_and_labels():
    assert family("wrn").model_name(28, 10) == "wrn-28-10"
    assert family("resnet").model_name(56, 4) == "resnet-56"
    assert family("wrn").name_format == "wrn-D-K" and family("plain").name_format == "plain-D"
    assert family("resnet").model_label("164", "1", "bottleneck") == "resnet-164 (bottleneck)"
    assert family("resnet").model_label(20, 1, "basic", "after_add") == "resnet-20 BN after add"
    assert family("wrn").model_label(16, 2, "basic") == "wrn-16-2"


def test_an_unknown_family_is_a_config_value_error_listing_the_families():
    with pytest.raises(ConfigValueError, match="family='densenet' is not one of plain, resnet, "
                                               "preact-resnet, wrn, imagenet-resnet, "
                                               "imagenet-preact-resnet") as error:
        family("densenet")
    assert error.value.choices == ("plain", "resnet", "preact-resnet", "wrn", "imagenet-resnet",
                                   "imagenet-preact-resnet")
