"""The ImageNet ResNets (He et al. 2015, Table 1), module for module as torchvision builds them.

A stem (7x7 stride-2 convolution, BN-ReLU, 3x3 stride-2 max-pool), four stages of 64, 128,
256 and 512 base channels (stride 1, 2, 2, 2, the stride on the 3x3 convolution as in
torchvision's "ResNet v1.5"), global average pooling, dropout and a linear head. Basic
blocks for ResNet-18/34, bottlenecks (4x expansion) for ResNet-50/101/152; a width factor
k widens each block's inner convolutions (Wide ResNet-50-2 is k = 2).

Modules carry torchvision's names (`conv1`, `bn1`, `layer1`..`layer4`, `downsample.0/1`,
`fc`), so a torchvision state dict loads into the network as it is, and ours into
torchvision's. The pre-activation family (`imagenet-preact-resnet`, He et al. 2016) puts
BN-ReLU before each convolution and a last BN-ReLU (`bn_final`) before pooling; its first
block takes the stem's activation as its own, as in the paper's code.
"""

from __future__ import annotations

import torch
from torch import nn

from resnet_core.config import ModelConfig
from resnet_core.families import family
from resnet_core.models import ZeroPadShortcut, conv_cost, init_weights

STAGE_CHANNELS = (64, 128, 256, 512)
STEM_CHANNELS = 64


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def downsample(option: str, in_channels: int, out_channels: int, stride: int,
               with_bn: bool) -> nn.Module | None:
    """None where shapes match; else option A (zero padding) or B (1x1 projection, with BN
    in post-activation networks: torchvision's `downsample.0` and `.1`)."""
    if stride == 1 and in_channels == out_channels:
        return None
    if option == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    layers: list[nn.Module] = [conv1x1(in_channels, out_channels, stride)]
    if with_bn:
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers)


def branch(in_channels: int, channels: int, stride: int, bottleneck: bool, width: int
           ) -> list[nn.Conv2d]:
    """The residual branch: 3x3-3x3 (inner width channels x k), or 1x1-3x3-1x1 (inner
    width channels x k, output 4 x channels); the stride on the 3x3."""
    inner = channels * width
    if bottleneck:
        return [conv1x1(in_channels, inner), conv3x3(inner, inner, stride),
                conv1x1(inner, channels * 4)]
    return [conv3x3(in_channels, inner, stride), conv3x3(inner, channels)]


class Block(nn.Module):
    """torchvision's BasicBlock and Bottleneck: conv-BN-ReLU ..., conv-BN, add, ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int, *, bottleneck: bool,
                 width: int, shortcut: str) -> None:
        super().__init__()
        convs = branch(in_channels, channels, stride, bottleneck, width)
        for i, conv in enumerate(convs, 1):  # conv1, bn1, conv2, bn2[, conv3, bn3]
            setattr(self, f"conv{i}", conv)
            setattr(self, f"bn{i}", nn.BatchNorm2d(conv.out_channels))
        self.depth = len(convs)
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = convs[-1].out_channels
        self.downsample = downsample(shortcut, in_channels, self.out_channels, stride, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        if self.depth == 3:
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
        else:
            out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


class PreActBlock(nn.Module):
    """He et al. 2016: BN-ReLU-conv ..., add; a projection sees the pre-activated input.
    `preactivate=False` (the first block): the stem's BN-ReLU is its pre-activation."""

    def __init__(self, in_channels: int, channels: int, stride: int, *, bottleneck: bool,
                 width: int, shortcut: str, preactivate: bool = True) -> None:
        super().__init__()
        convs = branch(in_channels, channels, stride, bottleneck, width)
        for i, conv in enumerate(convs, 1):  # bn1, conv1, bn2, conv2[, bn3, conv3]
            first = i == 1 and not preactivate
            setattr(self, f"bn{i}", nn.Identity() if first else nn.BatchNorm2d(conv.in_channels))
            setattr(self, f"conv{i}", conv)
        self.depth = len(convs)
        self.preactivate = preactivate
        self.out_channels = convs[-1].out_channels
        self.downsample = downsample(shortcut, in_channels, self.out_channels, stride, False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = torch.relu(self.bn1(x)) if self.preactivate else x
        skip = x if self.downsample is None else self.downsample(activated)
        out = self.conv1(activated)
        out = self.conv2(torch.relu(self.bn2(out)))
        if self.depth == 3:
            out = self.conv3(torch.relu(self.bn3(out)))
        return out + skip


class ImageNetResNet(nn.Module):
    """ResNet-18/34/50/101/152 (and -200, and any width k) for images of any size."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        entry = family(config.family)
        self.preactivation = entry.preactivation
        if config.stem == "cifar":  # full resolution into the first stage
            self.conv1 = conv3x3(config.in_channels, STEM_CHANNELS)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(config.in_channels, STEM_CHANNELS, 7, stride=2, padding=3,
                                   bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        layout = entry.depth_rule(config.block).stage_blocks(config.depth, len(STAGE_CHANNELS))
        channels = STEM_CHANNELS
        for stage, (base, blocks) in enumerate(zip(STAGE_CHANNELS, layout, strict=True), 1):
            layer = []
            for i in range(blocks):
                layer.append(self._block(channels, base, 2 if stage > 1 and i == 0 else 1,
                                         first=stage == 1 and i == 0))
                channels = layer[-1].out_channels
            setattr(self, f"layer{stage}", nn.Sequential(*layer))
        if self.preactivation:
            self.bn_final = nn.BatchNorm2d(channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels, config.num_classes)
        init_weights(self)

    def _block(self, in_channels: int, channels: int, stride: int, first: bool) -> nn.Module:
        config = self.config
        options = {"bottleneck": config.block == "bottleneck", "width": config.width,
                   "shortcut": config.shortcut}
        if self.preactivation:
            return PreActBlock(in_channels, channels, stride, preactivate=not first, **options)
        return Block(in_channels, channels, stride, **options)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for layer in self.stages():
            x = layer(x)
        if self.preactivation:
            x = torch.relu(self.bn_final(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))

    def multiply_adds(self, input_size: tuple[int, int]) -> int:
        """Multiply-adds of one image (`count_flops`), from the layers' shapes alone: a search
        prices every sampled network, and a forward pass even on the meta device costs
        seconds. Counted as torchvision's FLOPs are (convolutions and the head)."""
        total, size = conv_cost(self.conv1, tuple(input_size))
        if isinstance(self.maxpool, nn.MaxPool2d):
            size = conv_cost(self.maxpool, size)[1]
        for layer in self.stages():
            for block in layer:
                if isinstance(block.downsample, nn.Sequential):
                    total += conv_cost(block.downsample[0], size)[0]
                for i in range(1, block.depth + 1):
                    flops, size = conv_cost(getattr(block, f"conv{i}"), size)
                    total += flops
        return total + self.fc.in_features * self.fc.out_features
