"""Residual networks for small images: one builder, two block classes, a registry.

Every network is three stages of `n` blocks (16k, 32k, 64k channels, stride 1,
2, 2), a 3x3 stem with 16 channels, global average pooling and a linear head.
The families differ only inside the blocks:

- post-activation (`resnet`, `plain`): conv-BN-ReLU-conv-BN, add, ReLU
  (with `bn_position="after_add"`: conv-BN-ReLU-conv, add, BN-ReLU);
- pre-activation (`preact-resnet`, `wrn`): BN-ReLU-conv-BN-ReLU-conv, add, and a
  final BN-ReLU before pooling, so the identity path stays clean;
- `plain`: no addition at all.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnet_core.config import ModelConfig
from resnet_core.families import family, family_names, registered_families, split_model_name

BOTTLENECK_EXPANSION = 4
STEM_CHANNELS = 16
STAGE_WIDTHS = (16, 32, 64)


class ZeroPadShortcut(nn.Module):
    """Option A of He et al. 2015: subsample spatially, pad new channels with zeros."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(
                f"shortcut 'A' cannot reduce channels ({in_channels} -> {out_channels})"
            )
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return x


def make_shortcut(
    option: str, in_channels: int, out_channels: int, stride: int, with_bn: bool
) -> nn.Module:
    """Identity where shapes match; otherwise option A (zero pad) or B (1x1 projection)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if option == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    projection: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
    ]
    if with_bn:  # post-activation nets normalise the projection like the residual branch
        projection.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*projection)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def branch_convs(in_channels: int, width: int, stride: int, bottleneck: bool) -> list[nn.Conv2d]:
    """The residual branch's convolutions: 3x3-3x3, or 1x1-3x3-1x1 with 4x expansion."""
    if bottleneck:
        out_channels = width * BOTTLENECK_EXPANSION
        return [
            nn.Conv2d(in_channels, width, 1, bias=False),
            conv3x3(width, width, stride),
            nn.Conv2d(width, out_channels, 1, bias=False),
        ]
    return [conv3x3(in_channels, width, stride), conv3x3(width, width)]


class PostActivationBlock(nn.Module):
    """He et al. 2015 block (basic or bottleneck), optionally without shortcut (plain).

    With `bn_after_add`, the last BN of the branch moves after the addition and
    the block ends with BN-ReLU of the sum.
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        *,
        bottleneck: bool,
        residual: bool,
        shortcut: str,
        bn_after_add: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        convs = branch_convs(in_channels, width, stride, bottleneck)
        out_channels = convs[-1].out_channels
        self.residual = residual
        self.bn_after_add = bn_after_add
        self.convs = nn.ModuleList(convs)
        self.bns = nn.ModuleList(nn.BatchNorm2d(c.out_channels) for c in convs)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = (
            make_shortcut(shortcut, in_channels, out_channels, stride, with_bn=True)
            if residual
            else None
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        last = len(self.convs) - 1
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            out = conv(out)
            if i < last:
                out = F.relu(bn(out))
                if i == last - 1:
                    out = self.dropout(out)
            elif not self.bn_after_add:
                out = bn(out)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        if self.bn_after_add:
            out = self.bns[last](out)
        return F.relu(out)


class PreActivationBlock(nn.Module):
    """He et al. 2016 / Zagoruyko & Komodakis 2016 block: BN-ReLU before each conv.

    A projection shortcut takes the pre-activated input, as in the reference
    implementations; identity shortcuts take the raw input.
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        *,
        bottleneck: bool,
        shortcut: str,
        dropout: float,
    ) -> None:
        super().__init__()
        convs = branch_convs(in_channels, width, stride, bottleneck)
        out_channels = convs[-1].out_channels
        self.convs = nn.ModuleList(convs)
        self.bns = nn.ModuleList(nn.BatchNorm2d(c.in_channels) for c in convs)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride, with_bn=False)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preactivated = F.relu(self.bns[0](x))
        is_identity = isinstance(self.shortcut, nn.Identity)
        skip = x if is_identity else self.shortcut(preactivated)
        out = self.convs[0](preactivated)
        last = len(self.convs) - 1
        for i in range(1, len(self.convs)):
            out = F.relu(self.bns[i](out))
            if i == last:
                out = self.dropout(out)
            out = self.convs[i](out)
        return out + skip


class ResidualNetwork(nn.Module):
    """The generic CIFAR-style network; `config` decides the family and options."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        entry = family(config.family)
        preact = entry.preactivation
        bottleneck = config.block == "bottleneck"
        self.stem = conv3x3(config.in_channels, STEM_CHANNELS)
        # Post-activation nets normalise the stem; pre-activation nets leave that
        # to the first block's BN-ReLU.
        self.stem_bn = nn.Identity() if preact else nn.BatchNorm2d(STEM_CHANNELS)
        self.stem_relu = not preact
        blocks: list[nn.Module] = []
        channels = STEM_CHANNELS
        for stage, base_width in enumerate(STAGE_WIDTHS):
            width = base_width * config.width
            for i in range(config.blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                if preact:
                    block: nn.Module = PreActivationBlock(
                        channels, width, stride, bottleneck=bottleneck,
                        shortcut=config.shortcut, dropout=config.dropout,
                    )
                else:
                    block = PostActivationBlock(
                        channels, width, stride, bottleneck=bottleneck,
                        residual=entry.shortcuts, shortcut=config.shortcut,
                        bn_after_add=config.bn_position == "after_add",
                        dropout=config.dropout,
                    )
                blocks.append(block)
                channels = block.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.final_bn = nn.BatchNorm2d(channels) if preact else nn.Identity()
        self.final_relu = preact
        self.classifier = nn.Linear(channels, config.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_bn(self.stem(x))
        if self.stem_relu:
            x = F.relu(x)
        x = self.blocks(x)
        x = self.final_bn(x)
        if self.final_relu:
            x = F.relu(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def init_weights(model: nn.Module) -> None:
    """He-normal convolutions (fan_out, as in the reference code), BN weight 1 and bias 0."""
    if any(p.is_meta for p in model.parameters()):
        # A network on the meta device (`architecture_cost`) has no values to fill (and
        # normal_ there runs torch's Python reference kernel, priced per sampled network).
        return
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
            nn.init.zeros_(module.bias)


# ---------------------------------------------------------------- registry

# The zoo's named networks: the papers' with the figure they report (parameters for
# CIFAR-10), and the small baselines that the quickstart and the degradation study use.
PAPER_MODELS: dict[str, float] = {name: params for entry in registered_families()
                                  for name, params in entry.paper_params.items()}
EXTRA_MODELS = tuple(name for entry in registered_families() for name in entry.extra_models)


def list_models() -> list[str]:
    """Names of the registered families' named networks (any valid depth also parses)."""
    names = {name for entry in registered_families() for name in entry.named_models()}
    return sorted(names, key=_sort_key)


def _sort_key(name: str) -> tuple[int, int, int]:
    config = parse_model_name(name)
    return (family_names().index(config.family), config.depth, config.width)


def parse_model_name(name: str, **overrides: Any) -> ModelConfig:
    """`resnet-56`, `plain-20`, `preact-resnet-1001`, `wrn-28-10` -> ModelConfig.

    Any depth that the family's rule accepts parses; keyword overrides change
    options (`block`, `shortcut`, `dropout`, `num_classes`, ...).
    """
    cleaned = name.strip().lower()
    split = split_model_name(cleaned)
    size = split[0].parse_size(split[1]) if split else None
    if split is None or size is None:
        formats = [entry.name_format for entry in registered_families()]
        raise ValueError(
            f"unknown model {name!r}: expected {', '.join(formats[:-1])} or {formats[-1]} "
            f"(registered: {', '.join(list_models())})"
        )
    entry, (depth, k) = split[0], size
    if not entry.width_fits(k):
        wide = [f for f in registered_families() if f.has_width and not f.width_optional]
        optional = [f.name for f in registered_families() if f.width_optional]
        examples = ", ".join(f"{f.name_format}, e.g. {f.example_name}" for f in wide)
        may = f"; {' and '.join(optional)} names may" if optional else ""
        raise ValueError(
            f"unknown model {name!r}: only {' and '.join(f.name for f in wide)} names carry a "
            f"width ({examples}){may}" if wide else f"unknown model {name!r}: no family has a width"
        )
    fields: dict[str, Any] = {"family": entry.name, "depth": depth}
    if k is not None:
        fields["width"] = k
    fields.update(overrides)
    return ModelConfig(**fields)


def build_model(name_or_config: str | ModelConfig | dict[str, Any], **overrides: Any) -> nn.Module:
    """Build a network from a registry name, a ModelConfig or its dict form.

    Example: `build_model("wrn-16-2", num_classes=10, in_channels=1, dropout=0.3)`.
    """
    config = resolve_model_config(name_or_config, **overrides)
    return family(config.family).build(config)


def resolve_model_config(name_or_config: str | ModelConfig | dict[str, Any], **overrides: Any
                         ) -> ModelConfig:
    """The ModelConfig of a registry name, a ModelConfig or its dict form, with overrides."""
    if isinstance(name_or_config, str):
        return parse_model_name(name_or_config, **overrides)
    if isinstance(name_or_config, dict):
        return ModelConfig.from_dict({**name_or_config, **overrides})
    return name_or_config.replace(**overrides) if overrides else name_or_config


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: tuple[int, int] = (32, 32)) -> int:
    """Multiply-adds of one forward pass of one image (convolutions and linear layers).

    Counted as the papers count: each convolution's and linear layer's multiply-adds
    from the shape of its output (BN, ReLU, pooling and additions left out), giving
    ResNet-20's 40.55M and WRN-28-10's 5.24G. Tests check the count against torch's
    FlopCounterMode (which reports 2 FLOPs per multiply-add, and is ~50x slower on deep
    networks).

    A zoo network is counted from its layers' shapes alone, with no forward pass: a
    search prices every sampled network, and even a forward pass on the meta device
    costs seconds (its first one imports torch._dynamo, ~2 s; ResNet-1202 ~1.8 s).
    Any other network is probed with forward hooks on a meta copy.
    """
    if isinstance(model, ResidualNetwork):
        return _residual_network_flops(model, input_size)
    if callable(getattr(model, "multiply_adds", None)):  # a network that counts its own
        return model.multiply_adds(tuple(input_size))
    first = _first_conv(model)
    probe = model if first.weight.device.type == "meta" else copy.deepcopy(model).to("meta")
    total = 0

    def conv(module: nn.Conv2d, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() * (module.in_channels // module.groups) * kernel

    def linear(module: nn.Linear, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    hooks = [module.register_forward_hook(conv if isinstance(module, nn.Conv2d) else linear)
             for module in probe.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            probe.eval()
            probe(torch.zeros(1, first.in_channels, *input_size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def conv_cost(module: nn.Conv2d | nn.MaxPool2d, size: tuple[int, int]
              ) -> tuple[int, tuple[int, int]]:
    """(multiply-adds, output height and width) of a convolution (a max-pool: 0 and its
    output size) on an input of this height and width, from its shape alone."""
    def pair(value: int | tuple[int, ...]) -> tuple[int, ...]:
        return value if isinstance(value, tuple) else (value, value)

    out = tuple(
        (side + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
        for side, pad, dilation, kernel, stride in zip(
            size, pair(module.padding), pair(module.dilation), pair(module.kernel_size),
            pair(module.stride), strict=True))
    if not isinstance(module, nn.Conv2d):
        return 0, out
    per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
    return out[0] * out[1] * module.out_channels * per_output, out


def _residual_network_flops(model: ResidualNetwork, input_size: tuple[int, int]) -> int:
    """count_flops of a ResidualNetwork from its layers: the stem sees the image; in each
    block the branch's convolutions run one after another, a projection shortcut sees the
    block's input; the classifier sees the pooled channels."""
    conv = conv_cost
    total, size = conv(model.stem, tuple(input_size))
    for block in model.blocks:
        if block.shortcut is not None:
            total += sum(conv(m, size)[0] for m in block.shortcut.modules()
                         if isinstance(m, nn.Conv2d))
        for branch_conv in block.convs:
            flops, size = conv(branch_conv, size)
            total += flops
    return total + model.classifier.in_features * model.classifier.out_features


def architecture_cost(config: str | ModelConfig | dict[str, Any], input_size: tuple[int, int] = (32, 32),
                      **overrides: Any) -> tuple[int, int]:
    """(parameters, multiply-adds per image) of a network, without allocating its weights.

    The cost of a sampled architecture is known before a single training step, so a
    search can reject networks over a parameter or FLOP budget at no cost.
    """
    resolved = resolve_model_config(config, **overrides)
    # Dropout has no weights and no multiply-adds: one cost for every rate.
    return _architecture_cost(resolved.replace(dropout=0.0), tuple(input_size))


@functools.lru_cache(maxsize=1024)
def _architecture_cost(config: ModelConfig, input_size: tuple[int, int]) -> tuple[int, int]:
    """Cached: a search prices every sampled network, most of them seen before."""
    with torch.device("meta"):
        model = build_model(config)
    return count_parameters(model), count_flops(model, input_size)


def _first_conv(model: nn.Module) -> nn.Conv2d:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ValueError("model has no convolution")
