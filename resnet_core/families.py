"""Network families: what each family is, described once, and the registry that holds them.

A family is one entry (like a timm registry entry with its metadata): whether it
pre-activates, has shortcuts and a width factor, which blocks it takes and the depth rule
of each, how its networks are named, the papers' parameter counts, and the module that
builds it. `ModelConfig`, the model names and `build_model` ask the family; nothing else
tests a family's name, so adding a family is `register_family(...)` plus its module.

Importable without torch: a command that only reads a tracking store names families too.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from resnet_core.errors import ConfigValueError

if TYPE_CHECKING:
    from torch import nn


BLOCKS = ("basic", "bottleneck")
_NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:-[a-z][a-z0-9]*)*")
_SIZE = re.compile(r"(?P<depth>\d+)(?:-(?P<k>\d+))?")


@dataclass(frozen=True)
class DepthRule:
    """Valid depths of one block kind: `step * n + offset` for n >= 1 (blocks per stage).

    With `layouts` (the ImageNet ResNets, whose stages differ in length) only those layouts
    are valid: each is the number of blocks of every stage, and its depth is
    `step * sum(blocks) + offset` (2 layers a basic block, 3 a bottleneck, + stem and head).
    """

    block: str
    step: int
    offset: int
    layouts: tuple[tuple[int, ...], ...] = ()

    def accepts(self, depth: int) -> bool:
        if self.layouts:
            return depth in self._depths()
        return depth > self.offset and (depth - self.offset) % self.step == 0

    def blocks_per_stage(self, depth: int) -> int:
        return (depth - self.offset) // self.step

    def stage_blocks(self, depth: int, stages: int) -> tuple[int, ...]:
        """The blocks of each stage at this depth: its layout, else n in each of `stages`."""
        if self.layouts:
            return self._depths()[depth]
        return (self.blocks_per_stage(depth),) * stages

    def _depths(self) -> dict[int, tuple[int, ...]]:
        return {self.step * sum(layout) + self.offset: layout for layout in self.layouts}

    def first(self, count: int) -> list[int]:
        if self.layouts:
            return sorted(self._depths())[:count]
        return [self.step * n + self.offset for n in range(1, count + 1)]

    def __str__(self) -> str:
        if self.layouts:
            return "one of " + ", ".join(map(str, sorted(self._depths())))
        return f"{self.step}n+{self.offset}"


# eq=False: a family is one registry entry, compared and hashed by identity.
@dataclass(frozen=True, eq=False)
class NetworkFamily:
    """One network family: its structure, depth rules, names and builder.

    Args:
        name: what `ModelConfig.family` and model names say (`resnet`, `wrn`).
        description: a few words for help texts ("post-activation").
        preactivation: BN-ReLU before each convolution (He et al. 2016).
        shortcuts: blocks add an identity or projection path (`plain` has none).
        depth_rules: one rule per block kind it accepts, the papers' usual block first.
        has_width: names carry the width factor k (`wrn-28-10`); others say `-x2` suffixes.
        has_bn_position: `bn_position="after_add"` applies (an addition followed by BN-ReLU).
        builder: the nn.Module class (or any callable) taking a ModelConfig, or its
            "module:attribute" path, imported when a network is first built.
        paper_params: the papers' named networks and their reported parameter counts.
        extra_models: further named networks (small baselines) that `list_models` shows.
        example: the name help texts and errors show; unset: the first named network.
        bottleneck_from_depth: with both blocks valid, depths from here get the bottleneck,
            as in the papers (ResNet-164 and -1001 use bottlenecks, -110 and -1202 do not).
        width_optional: names may leave out k = 1 (`imagenet-resnet-50` is k = 1,
            `imagenet-resnet-50-2` the wide one), as torchvision names them.
        stems: the stems its networks may start with, its usual one first (`ModelConfig.stem`);
            empty: the family's one stem, not a choice.
        projection_shortcuts: option B by default at every depth (the ImageNet ResNets).
    """

    name: str
    description: str
    preactivation: bool
    shortcuts: bool
    depth_rules: tuple[DepthRule, ...]
    has_width: bool = False
    has_bn_position: bool = False
    # Takes a ModelConfig (named in words: resnet_core.config imports this module).
    builder: str | Callable[[Any], nn.Module] = "resnet_core.models:ResidualNetwork"
    paper_params: Mapping[str, float] = field(default_factory=dict)
    extra_models: tuple[str, ...] = ()
    example: str = ""
    bottleneck_from_depth: int = 164
    width_optional: bool = False
    stems: tuple[str, ...] = ()
    projection_shortcuts: bool = False

    def __post_init__(self) -> None:
        if not _NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"family name {self.name!r} must be lowercase words joined by '-' "
                             f"(e.g. 'preact-resnet'), each starting with a letter")
        if not self.depth_rules:
            raise ValueError(f"family {self.name!r} needs a depth rule for at least one block")
        for rule in self.depth_rules:
            if rule.block not in BLOCKS or rule.step < 1 or rule.offset < 0:
                raise ValueError(f"family {self.name!r}: depth rule {rule} for {rule.block!r} "
                                 f"needs a block in {', '.join(BLOCKS)}, step >= 1, offset >= 0")
        # A named network that does not parse would break every listing of the zoo.
        for model in self.named_models():
            size = self.parse_size(model.removeprefix(f"{self.name}-"))
            if (not model.startswith(f"{self.name}-") or size is None
                    or not self.width_fits(size[1]) or not self.accepts_depth(size[0])):
                raise ValueError(f"family {self.name!r}: its network {model!r} is not named "
                                 f"{self.name_format} with a depth its rules accept")

    # ------------------------------------------------------------ blocks and depths

    @property
    def blocks(self) -> tuple[str, ...]:
        """The block kinds it accepts, its usual one first."""
        return tuple(rule.block for rule in self.depth_rules)

    @property
    def has_stem_choice(self) -> bool:
        """Whether a study can choose its stem (the CIFAR families have one stem)."""
        return len(self.stems) > 1

    @property
    def has_block_choice(self) -> bool:
        """Whether a study can choose its block (WRN cannot: basic blocks only)."""
        return len(self.depth_rules) > 1

    def depth_rule(self, block: str) -> DepthRule:
        for rule in self.depth_rules:
            if rule.block == block:
                return rule
        raise ConfigValueError("block", block, f"is not allowed: {self.name} uses "
                               f"{' or '.join(self.blocks)} blocks only")

    def default_block(self, depth: int) -> str:
        """The papers' block at this depth: the only one that fits it, the bottleneck from
        `bottleneck_from_depth` where both fit, else the family's usual block."""
        fitting = [rule.block for rule in self.depth_rules if rule.accepts(depth)]
        if len(fitting) == 1:
            return fitting[0]
        if "bottleneck" in fitting and depth >= self.bottleneck_from_depth:
            return "bottleneck"
        return self.blocks[0] if not fitting or self.blocks[0] in fitting else fitting[0]

    def accepts_depth(self, depth: int, block: str | None = None) -> bool:
        """Whether the depth fits the block's rule (unset block: the default block's)."""
        chosen = self.default_block(depth) if block is None else block
        return chosen in self.blocks and self.depth_rule(chosen).accepts(depth)

    def depths(self, candidates: Iterable[int], block: str | None = None) -> list[int]:
        """The candidate depths this family accepts with that block (unset: each depth's
        default block), in the candidates' order."""
        return [d for d in candidates if self.accepts_depth(d, block)]

    def depth_rule_text(self, block: str | None = None) -> str:
        """The rule in words: "wrn depths are 6n+4: 10, 16, 22, 28, ...";
        unset block on a family with a choice: every block's rule."""
        if block is not None or not self.has_block_choice:
            rule = self.depth_rule(block or self.blocks[0])
            who = block if self.has_block_choice else self.name
            if rule.layouts:
                return f"{who} depths are {rule}"
            return f"{who} depths are {rule}: {', '.join(map(str, rule.first(4)))}, ..."
        rules = " or ".join(f"{rule} ({rule.block})" for rule in self.depth_rules)
        if any(rule.layouts for rule in self.depth_rules):
            return f"depths are {rules}"
        first = sorted({d for rule in self.depth_rules for d in rule.first(4)})[:4]
        return f"depths are {rules}: {', '.join(map(str, first))}, ..."

    def default_shortcut(self, block: str) -> str:
        """Option A (zero padding) for basic post-activation blocks, as He et al. 2015
        trained them on CIFAR; B (projection) elsewhere, as the later papers did."""
        if self.projection_shortcuts:
            return "B"
        return "A" if not self.preactivation and block == "basic" else "B"

    # ------------------------------------------------------------ names

    @property
    def name_format(self) -> str:
        """How its names read: `resnet-D`, `wrn-D-K`."""
        if self.width_optional:
            return f"{self.name}-D[-K]"
        return f"{self.name}-D-K" if self.has_width else f"{self.name}-D"

    @property
    def example_name(self) -> str:
        return self.example or next(iter(self.named_models()), self.name_format)

    def model_name(self, depth: int | str, width: int | str = 1) -> str:
        """The name of its network at this depth (and width, for a family with one)."""
        if self.has_width and not (self.width_optional and str(width) == "1"):
            return f"{self.name}-{depth}-{width}"
        return f"{self.name}-{depth}"

    def width_fits(self, k: int | None) -> bool:
        """Whether a name's width part (None: the name has none) suits this family."""
        if k is None:
            return not self.has_width or self.width_optional
        return self.has_width

    def model_label(self, depth: int | str, width: int | str = 1, block: str | None = None,
                    bn_position: str | None = None) -> str:
        """A trained network as a table names it: the model name, the block where it is not
        the family's usual one, and "BN after add": `resnet-164 (bottleneck)`."""
        label = self.model_name(depth, width)
        if self.has_block_choice and block and block != self.blocks[0]:
            label += f" ({block})"
        if self.has_bn_position and bn_position == "after_add":
            label += " BN after add"
        return label

    def parse_size(self, rest: str) -> tuple[int, int | None] | None:
        """`56` -> (56, None), `28-10` -> (28, 10): what follows `name-` in a model name."""
        match = _SIZE.fullmatch(rest)
        if not match:
            return None
        return int(match["depth"]), None if match["k"] is None else int(match["k"])

    def named_models(self) -> tuple[str, ...]:
        """Its networks with names of their own: the papers' and the extra baselines."""
        return tuple(dict.fromkeys((*self.paper_params, *self.extra_models)))

    # ------------------------------------------------------------ building

    def build(self, config: Any) -> nn.Module:  # a ModelConfig
        """The network of a config of this family."""
        builder = self.builder
        if isinstance(builder, str):
            module, _, attribute = builder.partition(":")
            builder = getattr(importlib.import_module(module), attribute)
        return builder(config)


# ---------------------------------------------------------------- the registry

_REGISTRY: dict[str, NetworkFamily] = {}


def register_family(entry: NetworkFamily, *, replace: bool = False) -> NetworkFamily:
    """Add a family (last in the order); `replace=True` swaps one of the same name in place."""
    if entry.name in _REGISTRY and not replace:
        raise ValueError(f"family {entry.name!r} is registered already (replace=True swaps it)")
    _REGISTRY[entry.name] = entry
    return entry


def unregister_family(name: str) -> NetworkFamily:
    """Remove a family (a test's or a plug-in's); returns what was registered."""
    entry = family(name)
    del _REGISTRY[name]
    return entry


def family(name: str) -> NetworkFamily:
    """The registered family of this name; an unknown one is a ConfigValueError of `family`."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        names = family_names()
        raise ConfigValueError("family", name, f"is not one of {', '.join(names)}",
                               names) from None


def family_names() -> tuple[str, ...]:
    """The registered families' names, in registration order."""
    return tuple(_REGISTRY)


def registered_families() -> tuple[NetworkFamily, ...]:
    """The registered families, in registration order."""
    return tuple(_REGISTRY.values())


def split_model_name(name: str) -> tuple[NetworkFamily, str] | None:
    """The family a model name starts with and the rest (`wrn-28-10` -> (wrn, "28-10")).

    The longest family name wins, so `preact-resnet-110` is not read as `preact` + ...
    """
    for entry in sorted(_REGISTRY.values(), key=lambda f: -len(f.name)):
        if name.startswith(entry.name + "-"):
            return entry, name[len(entry.name) + 1:]
    return None


class FamilyNames(Sequence[str]):
    """The registered families' names as a live tuple: `FAMILIES` and ModelConfig's
    `family` choices, so a family registered later is a valid choice everywhere."""

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...

    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return family_names()[index]

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(family_names())

    def __contains__(self, value: object) -> bool:
        return value in _REGISTRY

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]  # it changes as families are registered

    def __repr__(self) -> str:
        return repr(family_names())

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return FamilyNames, ()


FAMILIES = FamilyNames()


# ---------------------------------------------------------------- the zoo's families

_BASIC_AND_BOTTLENECK = (DepthRule("basic", 6, 2), DepthRule("bottleneck", 9, 2))

register_family(NetworkFamily(
    "plain", "no shortcuts", preactivation=False, shortcuts=False,
    depth_rules=_BASIC_AND_BOTTLENECK,
    extra_models=("plain-20", "plain-56"), example="plain-20"))
# Parameter counts as the papers report them for CIFAR-10.
register_family(NetworkFamily(
    "resnet", "post-activation", preactivation=False, shortcuts=True,
    depth_rules=_BASIC_AND_BOTTLENECK, has_bn_position=True,
    paper_params={"resnet-20": 0.27e6, "resnet-32": 0.46e6, "resnet-44": 0.66e6,
                  "resnet-56": 0.85e6, "resnet-110": 1.7e6, "resnet-1202": 19.4e6,
                  "resnet-164": 1.7e6},
    example="resnet-56"))
register_family(NetworkFamily(
    "preact-resnet", "pre-activation, Identity Mappings", preactivation=True, shortcuts=True,
    depth_rules=_BASIC_AND_BOTTLENECK,
    paper_params={"preact-resnet-110": 1.7e6, "preact-resnet-164": 1.7e6,
                  "preact-resnet-1001": 10.2e6},
    example="preact-resnet-1001"))
# WRN counts the projection convolutions of the two stage transitions: 6n+4.
register_family(NetworkFamily(
    "wrn", "Wide ResNet", preactivation=True, shortcuts=True,
    depth_rules=(DepthRule("basic", 6, 4),), has_width=True,
    paper_params={"wrn-16-4": 2.7e6, "wrn-16-8": 11.0e6, "wrn-28-10": 36.5e6,
                  "wrn-40-4": 8.9e6},
    extra_models=("wrn-16-1", "wrn-16-2", "wrn-22-2", "wrn-28-2"), example="wrn-28-10"))

# The ImageNet ResNets (He et al. 2015, Table 1): a 7x7 stride-2 stem and a max-pool, four
# stages of 64, 128, 256, 512 base channels, the stages' lengths per depth. Named and built
# as torchvision's (`imagenet-resnet-50` is torchvision's resnet50, `-50-2` wide_resnet50_2),
# so torchvision's weights load as they are. ResNet-200 is the Identity Mappings paper's.
_IMAGENET_RULES = (
    DepthRule("basic", 2, 2, layouts=((2, 2, 2, 2), (3, 4, 6, 3))),
    DepthRule("bottleneck", 3, 2, layouts=((3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3),
                                            (3, 24, 36, 3))))
# Stems: "imagenet" (7x7 stride 2, max-pool: a quarter of each side), "cifar" (3x3 stride 1,
# no pool), which keeps the resolution of 32-128 px images for the four stages.
IMAGENET_STEMS = ("imagenet", "cifar")
register_family(NetworkFamily(
    "imagenet-resnet", "ImageNet ResNet, torchvision's", preactivation=False, shortcuts=True,
    depth_rules=_IMAGENET_RULES, has_width=True, width_optional=True, stems=IMAGENET_STEMS,
    projection_shortcuts=True, builder="resnet_core.imagenet:ImageNetResNet",
    # Their parameter counts are torchvision's at 1000 classes, exactly: the papers' are
    # for CIFAR-10 (`paper_params`), so these are named networks of their own.
    extra_models=("imagenet-resnet-18", "imagenet-resnet-34", "imagenet-resnet-50",
                  "imagenet-resnet-101", "imagenet-resnet-152", "imagenet-resnet-50-2"),
    example="imagenet-resnet-50"))
register_family(NetworkFamily(
    "imagenet-preact-resnet", "ImageNet ResNet, pre-activation", preactivation=True,
    shortcuts=True, depth_rules=_IMAGENET_RULES, has_width=True, width_optional=True,
    stems=IMAGENET_STEMS, projection_shortcuts=True,
    builder="resnet_core.imagenet:ImageNetResNet",
    extra_models=("imagenet-preact-resnet-50",), example="imagenet-preact-resnet-50"))
