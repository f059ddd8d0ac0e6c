"""Depth as the papers count it: the layers a built network really has.

Its own module: with a wrong rule the registry itself no longer parses, which would stop
test_models.py at collection and prove nothing about the rule.
"""

from __future__ import annotations

import pytest
from torch import nn

from resnet_core.config import ModelConfig
from resnet_core.models import build_model


def counted_layers(model: nn.Module) -> int:
    """Convolutions and the classifier: what "depth" counts (shortcut A adds no convolution)."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


@pytest.mark.parametrize(("block", "depth"), [("basic", 20), ("basic", 32), ("bottleneck", 29),
                                              ("bottleneck", 47)])
def test_the_depth_rule_gives_a_network_of_that_many_layers(block, depth):
    # 6n+2 (basic: 2 convolutions per block) and 9n+2 (bottleneck: 3): 20 and 29 are valid
    # under either rule, so only the layer count tells a swapped rule.
    config = ModelConfig(family="resnet", depth=depth, block=block, shortcut="A")
    assert counted_layers(build_model(config)) == depth
