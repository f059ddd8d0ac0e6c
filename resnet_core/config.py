"""The model configuration: one frozen dataclass, validated where it is created.

A `ModelConfig` fully describes a network of the zoo. Defaults that differ
between papers (block type, shortcut option) are filled in from the family, so
`ModelConfig(family="resnet", depth=20)` is exactly the CIFAR ResNet-20 of
He et al. 2015 and `ModelConfig(family="wrn", depth=28, width=10)` is WRN-28-10.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

FAMILIES = ("plain", "resnet", "preact-resnet", "wrn")
BLOCKS = ("basic", "bottleneck")
SHORTCUTS = ("A", "B")  # A: identity + zero padding; B: 1x1 projection where shapes change
BN_POSITIONS = ("before_add", "after_add")

# Depth = (convolutions in the blocks) + stem conv + classifier (+ 2 for WRN,
# which counts the projection convolutions of the stage transitions).
DEPTH_RULES = {
    ("basic", False): (6, 2),
    ("bottleneck", False): (9, 2),
    ("basic", True): (6, 4),  # WRN
}


def depth_rule(family: str, block: str) -> tuple[int, int]:
    """Return (a, b) such that valid depths are a*n + b for n >= 1."""
    if family == "wrn":
        return DEPTH_RULES[("basic", True)]
    return DEPTH_RULES[(block, False)]


def is_valid_depth(family: str, block: str, depth: int) -> bool:
    a, b = depth_rule(family, block)
    return depth > b and (depth - b) % a == 0


def default_block(family: str, depth: int) -> str:
    """The block of the papers' named networks.

    ResNet-164 and ResNet-1001 (He et al. 2016) use bottlenecks; ResNet-20..110
    and ResNet-1202 (He et al. 2015) use basic blocks. Depths that only one block
    type accepts get that block; the deep ones that both accept (164, 326, ...)
    get the bottleneck, as in the papers.
    """
    if family == "wrn":
        return "basic"
    basic_ok = is_valid_depth(family, "basic", depth)
    bottleneck_ok = is_valid_depth(family, "bottleneck", depth)
    if bottleneck_ok and (not basic_ok or depth >= 164):
        return "bottleneck"
    return "basic"


@dataclass(frozen=True)
class ModelConfig:
    """A network of the zoo.

    Args:
        family: "plain" (no shortcuts), "resnet" (post-activation), "preact-resnet"
            (pre-activation, Identity Mappings) or "wrn" (Wide ResNet).
        depth: total depth as the papers count it (6n+2, 9n+2 or 6n+4 for WRN).
        width: width factor k; stage widths are 16k, 32k, 64k.
        block: "basic" (3x3-3x3) or "bottleneck" (1x1-3x3-1x1, 4x expansion).
            None picks the papers' block for this family and depth.
        shortcut: "A" (identity with zero padding) or "B" (1x1 projection where
            the shape changes). None: A for basic post-activation ResNets, else B.
        bn_position: "before_add" (standard) or "after_add" (BN moved after the
            addition, the ablation of Gross & Wilber; post-activation ResNet only).
        dropout: dropout probability between the convolutions of each block.
        num_classes: classifier outputs.
        in_channels: image channels (1 for grayscale).
    """

    family: str
    depth: int
    width: int = 1
    block: str | None = None
    shortcut: str | None = None
    bn_position: str = "before_add"
    dropout: float = 0.0
    num_classes: int = 10
    in_channels: int = 3

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family={self.family!r} is not one of {', '.join(FAMILIES)}")
        _check_int("depth", self.depth, minimum=1)
        _check_int("width", self.width, minimum=1)
        _check_int("num_classes", self.num_classes, minimum=2)
        _check_int("in_channels", self.in_channels, minimum=1)
        if self.block is None:
            object.__setattr__(self, "block", default_block(self.family, self.depth))
        if self.block not in BLOCKS:
            raise ValueError(f"block={self.block!r} is not one of {', '.join(BLOCKS)}")
        if self.family == "wrn" and self.block != "basic":
            raise ValueError(f"block={self.block!r}: wrn uses basic blocks only")
        if self.shortcut is None:
            post_activation_basic = self.family in ("resnet", "plain") and self.block == "basic"
            object.__setattr__(self, "shortcut", "A" if post_activation_basic else "B")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut={self.shortcut!r} is not one of {', '.join(SHORTCUTS)}")
        if self.bn_position not in BN_POSITIONS:
            raise ValueError(
                f"bn_position={self.bn_position!r} is not one of {', '.join(BN_POSITIONS)}"
            )
        if self.bn_position == "after_add" and self.family != "resnet":
            raise ValueError(
                f"bn_position='after_add' needs family 'resnet' (an addition followed by "
                f"BN-ReLU), not {self.family!r}"
            )
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout={self.dropout!r} must be a number in [0, 1)")
        if not is_valid_depth(self.family, self.block, self.depth):
            a, b = depth_rule(self.family, self.block)
            kind = "" if self.family == "wrn" else f" with {self.block} blocks"
            raise ValueError(
                f"depth={self.depth} is invalid for {self.family}{kind}: "
                f"depth must be {a}n+{b} with n >= 1 (e.g. {a + b}, {2 * a + b}, {3 * a + b})"
            )

    @property
    def blocks_per_stage(self) -> int:
        a, b = depth_rule(self.family, self.block)
        return (self.depth - b) // a

    @property
    def name(self) -> str:
        """The canonical registry name, with suffixes for non-default options."""
        base = (
            f"wrn-{self.depth}-{self.width}"
            if self.family == "wrn"
            else f"{self.family}-{self.depth}"
        )
        defaults = ModelConfig(family=self.family, depth=self.depth)
        if self.family != "wrn" and self.width != 1:
            base += f"-x{self.width}"
        if self.block != defaults.block:
            base += f"-{self.block}"
        if self.shortcut != ModelConfig(self.family, self.depth, block=self.block).shortcut:
            base += f"-shortcut{self.shortcut}"
        if self.bn_position != "before_add":
            base += "-bn-after-add"
        return base

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return dataclass_from_dict(cls, data, "model config")

    def replace(self, **changes: Any) -> ModelConfig:
        return replace(self, **changes)


def dataclass_from_dict(cls: type, data: dict[str, Any], what: str) -> Any:
    """Build a config dataclass from a dict, naming unknown keys (e.g. from a newer checkpoint)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; allowed: {sorted(known)}")
    return cls(**data)


def _check_int(field: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{field}={value!r} must be an integer >= {minimum}")
