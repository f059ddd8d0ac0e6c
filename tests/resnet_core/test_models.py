"""The model zoo: every registered network and option builds, trains and matches the papers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnet_core.config import ModelConfig
from resnet_core.models import (
    PAPER_MODELS,
    PostActivationBlock,
    PreActivationBlock,
    ZeroPadShortcut,
    architecture_cost,
    build_model,
    count_flops,
    count_parameters,
    list_models,
    parse_model_name,
)


def _forward_backward(model: nn.Module, in_channels: int = 3, size: int = 8, classes: int = 10):
    x = torch.randn(4, in_channels, size, size)
    out = model(x)
    assert out.shape == (4, classes)
    assert torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_and_trains(name):
    torch.manual_seed(0)
    _forward_backward(build_model(name))


OPTION_SWEEP = [
    {"family": "plain", "depth": 8},
    {"family": "plain", "depth": 11, "block": "bottleneck"},
    {"family": "resnet", "depth": 8, "shortcut": "A"},
    {"family": "resnet", "depth": 8, "shortcut": "B"},
    {"family": "resnet", "depth": 11, "block": "bottleneck"},
    {"family": "resnet", "depth": 11, "block": "bottleneck", "shortcut": "A"},
    {"family": "resnet", "depth": 8, "bn_position": "after_add"},
    {"family": "resnet", "depth": 11, "block": "bottleneck", "bn_position": "after_add"},
    {"family": "resnet", "depth": 8, "width": 2, "dropout": 0.3},
    {"family": "preact-resnet", "depth": 8},
    {"family": "preact-resnet", "depth": 8, "shortcut": "A"},
    {"family": "preact-resnet", "depth": 11, "block": "bottleneck", "dropout": 0.2},
    {"family": "wrn", "depth": 10, "width": 2, "dropout": 0.3},
    {"family": "wrn", "depth": 10, "width": 1, "shortcut": "A"},
]


@pytest.mark.parametrize("options", OPTION_SWEEP, ids=lambda o: ModelConfig(**o).name)
def test_every_family_and_option_builds_and_trains(options):
    torch.manual_seed(0)
    _forward_backward(build_model(ModelConfig(**options)))


@pytest.mark.parametrize("size", [8, 12, 28, 32, 33])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_any_input_size_and_channels(size, in_channels):
    model = build_model("wrn-10-1", in_channels=in_channels,
                        num_classes=7)
    assert model(torch.randn(2, in_channels, size, size)).shape == (2, 7)


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_parameter_counts_match_the_papers(name):
    count = count_parameters(build_model(name))
    expected = PAPER_MODELS[name]
    assert abs(count - expected) / expected < 0.02, f"{name}: {count} vs paper {expected}"


def test_paper_names_get_the_papers_blocks():
    assert parse_model_name("resnet-20").block == "basic"
    assert parse_model_name("resnet-20").shortcut == "A"
    assert parse_model_name("resnet-1202").block == "basic"
    assert parse_model_name("resnet-164").block == "bottleneck"
    assert parse_model_name("preact-resnet-164").block == "bottleneck"
    assert parse_model_name("preact-resnet-1001").block == "bottleneck"
    assert parse_model_name("preact-resnet-110").block == "basic"
    assert parse_model_name("wrn-28-10").block == "basic"
    assert parse_model_name("wrn-28-10").width == 10
    assert parse_model_name("resnet-56", block="bottleneck").block == "bottleneck"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"family": "resnet", "depth": 21}, "depth=21 is invalid for resnet with basic blocks: "
                                            "depth must be 6n+2"),
        ({"family": "resnet", "depth": 26, "block": "bottleneck"}, "depth must be 9n+2"),
        ({"family": "wrn", "depth": 28 + 1, "width": 10}, "depth=29 is invalid for wrn"),
        ({"family": "wrn", "depth": 16, "block": "bottleneck"}, "wrn uses basic blocks only"),
        ({"family": "preact-resnet", "depth": 20, "bn_position": "after_add"},
         "bn_position='after_add' needs family 'resnet'"),
        ({"family": "densenet", "depth": 20}, "family='densenet' is not one of"),
        ({"family": "resnet", "depth": 20, "dropout": 1.0}, "dropout=1.0 must be"),
        ({"family": "resnet", "depth": 20, "shortcut": "C"}, "shortcut='C' is not one of A, B"),
    ],
)
def test_invalid_configs_raise_value_errors_naming_the_value(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        ModelConfig(**options)


def test_unknown_names_list_what_exists():
    with pytest.raises(ValueError, match="registered: .*resnet-20.*wrn-28-10"):
        parse_model_name("vgg-16")
    with pytest.raises(ValueError, match="depth=15 is invalid"):
        parse_model_name("wrn-15-2")


def test_plain_networks_have_no_shortcuts_and_resnets_do():
    plain, resnet = build_model("plain-20"), build_model("resnet-20")
    assert count_parameters(plain) == count_parameters(resnet)  # option A adds no parameters
    assert all(b.shortcut is None for b in plain.blocks)
    assert all(b.shortcut is not None for b in resnet.blocks)
    assert any(isinstance(b.shortcut, ZeroPadShortcut) for b in resnet.blocks)
    # With the residual branch's last BN zeroed, a ResNet block passes its input
    # through (ReLU of identity) while a plain block outputs zeros.
    x = torch.rand(2, 16, 8, 8)
    for model, expect_identity in ((plain, False), (resnet, True)):
        block = model.blocks[0].eval()
        nn.init.zeros_(block.bns[-1].weight)
        out = block(x)
        assert torch.allclose(out, x) == expect_identity


def _call_order(module: nn.Module, x: torch.Tensor) -> list[str]:
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(type(m).__name__))
             for m in module.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    module(x)
    for h in hooks:
        h.remove()
    return order


def test_pre_activation_blocks_normalise_before_each_conv():
    pre = build_model("preact-resnet-8").blocks[0]
    post = build_model("resnet-8").blocks[0]
    assert isinstance(pre, PreActivationBlock) and isinstance(post, PostActivationBlock)
    x = torch.randn(2, 16, 8, 8)
    assert _call_order(pre, x) == ["BatchNorm2d", "Conv2d", "BatchNorm2d", "Conv2d"]
    assert _call_order(post, x) == ["Conv2d", "BatchNorm2d", "Conv2d", "BatchNorm2d"]
    # Post-activation blocks end with ReLU (non-negative); the pre-activation
    # identity path is clean, so its output can be negative.
    assert (post(x) >= 0).all()
    assert (pre(x) < 0).any()


def test_bn_after_addition_normalises_the_sum():
    block = build_model("resnet-8", bn_position="after_add").blocks[0].eval()
    x = torch.randn(2, 16, 8, 8)
    seen = {}
    block.bns[-1].register_forward_hook(lambda m, i, o: seen.setdefault("bn_in", i[0]))
    block.convs[-1].register_forward_hook(lambda m, i, o: seen.setdefault("conv_out", o))
    out = block(x)
    # The last BN's input is conv output + shortcut, and the block ends with BN-ReLU.
    assert torch.allclose(seen["bn_in"], seen["conv_out"] + x)
    assert torch.allclose(out, torch.relu(block.bns[-1](seen["conv_out"] + x)))
    standard = build_model("resnet-8").blocks[0]
    assert _call_order(standard, x)[-1] == "BatchNorm2d"


def test_wrn_puts_dropout_between_the_convolutions():
    block = build_model("wrn-10-2", dropout=0.3).blocks[0]
    assert isinstance(block.dropout, nn.Dropout) and block.dropout.p == 0.3
    order: list[str] = []
    for m in block.modules():
        if isinstance(m, (nn.Conv2d, nn.Dropout)):
            m.register_forward_hook(lambda m, i, o: order.append(type(m).__name__))
    block(torch.randn(2, 16, 8, 8))
    assert order.index("Dropout") > order.index("Conv2d")
    assert order[-1] == "Conv2d"
    assert order.count("Conv2d") == 3  # two 3x3 convs and the 1x1 projection 16 -> 32


def test_initialisation_follows_the_papers():
    model = build_model("resnet-20")
    bn = model.stem_bn
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    conv = model.blocks[5].convs[0]  # 3x3, 32 -> 32: He normal with fan_out = 9 * 32
    expected_std = (2.0 / (9 * 32)) ** 0.5
    assert abs(conv.weight.std().item() - expected_std) / expected_std < 0.1


def test_flop_counter_counts_multiply_adds():
    config = ModelConfig(family="resnet", depth=8, num_classes=10)  # n=1 per stage
    model = build_model(config)
    expected = (
        32 * 32 * 16 * 3 * 9                 # stem
        + 2 * 32 * 32 * 16 * 16 * 9          # stage 1
        + 16 * 16 * 32 * 16 * 9 + 16 * 16 * 32 * 32 * 9  # stage 2 (stride 2)
        + 8 * 8 * 64 * 32 * 9 + 8 * 8 * 64 * 64 * 9      # stage 3
        + 64 * 10                            # classifier
    )
    assert count_flops(model, (32, 32)) == expected
    # ResNet-20 is about 41M multiply-adds on CIFAR (the usual figure); WRN-28-10 5.25G
    # (Zagoruyko & Komodakis count 5.2G multiply-adds).
    assert 40e6 < count_flops(build_model("resnet-20")) < 42e6
    assert 5.2e9 < count_flops(build_model("wrn-28-10")) < 5.3e9


@pytest.mark.parametrize("size", [(24, 24), (13, 9)], ids=["24x24", "13x9"])
@pytest.mark.parametrize(("name", "options"), [
    ("resnet-20", {}), ("resnet-20", {"shortcut": "B"}), ("resnet-56", {"block": "bottleneck"}),
    ("resnet-20", {"bn_position": "after_add"}), ("preact-resnet-164", {}),
    ("preact-resnet-20", {"shortcut": "A"}), ("wrn-16-4", {}), ("plain-20", {})])
def test_flop_count_is_half_of_torchs_flop_counter(name, options, size):
    """torch's FlopCounterMode (2 FLOPs per multiply-add) is the independent reference for
    the count from the layers' shapes (odd sizes: strided layers round up)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(name, **options).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, *size))
    assert count_flops(model, size) * 2 == counter.get_total_flops()


def test_a_network_outside_the_zoo_is_counted_by_running_it():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 5 * 5, 10))
    assert count_flops(model, (11, 11)) == 5 * 5 * 8 * 3 * 9 + 200 * 10
    assert next(model.parameters()).device.type == "cpu"  # counted on a copy


@pytest.mark.parametrize("name", ["resnet-20", "preact-resnet-164", "wrn-16-4", "plain-20"])
def test_architecture_cost_equals_the_built_network(name):
    """Cost before training (meta device, no weights) is the cost of the real network."""
    model = build_model(name, in_channels=1)
    assert architecture_cost(name, (8, 8), in_channels=1) == (
        count_parameters(model), count_flops(model, (8, 8)))
