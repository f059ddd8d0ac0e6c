"""The configs: one frozen dataclass per concern, every field defined once.

`ModelConfig` describes a network of the zoo and `TrainConfig` how to train it
(`resnet_core.data.DataConfig` the data). Each field carries its metadata, made
with `option()`: help, choices, bounds, and whether a study may search it. The
`train` command's flags, the study file's sections and [space] keys, and the
MLflow params are derived from that metadata, and `check_fields` validates every
instance with it, so adding a field with its metadata is the one edit it needs.

Defaults that differ between papers (block type, shortcut option) are filled in
from the family (`resnet_core.families`), so `ModelConfig(family="resnet",
depth=20)` is exactly the CIFAR ResNet-20 of He et al. 2015 and
`ModelConfig(family="wrn", depth=28, width=10)` is WRN-28-10.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from typing import Any

from resnet_core.errors import ConfigValueError
from resnet_core.families import BLOCKS, FAMILIES, registered_families
from resnet_core.families import family as network_family
from resnet_core.optim import OPTIMIZERS, SCHEDULES, WRN_STEP_FRACTIONS, WRN_STEP_GAMMA

SHORTCUTS = ("A", "B")  # A: identity + zero padding; B: 1x1 projection where shapes change
BN_POSITIONS = ("before_add", "after_add")
STEMS = ("imagenet", "cifar")  # 7x7 stride 2 + max-pool; 3x3 stride 1 (families with `stems`)


# ---------------------------------------------------------------- field metadata


@dataclass(frozen=True)
class Bounds:
    """An interval of allowed numbers; an open end excludes the end itself."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{self.low}, "
                    f"{self.high}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        return f"{'<' if self.high_open else '<='} {self.high}"


POSITIVE = Bounds(0, low_open=True)
NON_NEGATIVE = Bounds(0)
FRACTION = Bounds(0, 1, high_open=True)


def at_least(low: int) -> Bounds:
    return Bounds(low)


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    choices: Sequence[Any] = (),
    bounds: Bounds | None = None,
    searchable: bool = False,
    model_option: bool = False,
    integral_ranges: bool = False,
    secret: bool = False,
) -> Any:
    """A config field with the metadata that flags, study keys, checks and params derive from.

    Args:
        default: the default (leave out for a required field).
        help: one line for `--help` and `resnet-search check`.
        choices: the allowed values.
        bounds: the allowed interval of a number.
        searchable: a study may vary it under [space].
        model_option: a `train` flag that overrides what the --model name implies.
        integral_ranges: a [space] range of whole numbers samples integers (whole epochs).
        secret: never logged as an MLflow param (it may hold a password).
    """
    # A live sequence (the registered families) stays live; a list becomes a tuple.
    kept = choices if isinstance(choices, Sequence) and not isinstance(choices, list) else tuple(choices)
    metadata = {"help": help, "choices": kept, "bounds": bounds,
                "searchable": searchable, "model_option": model_option,
                "integral_ranges": integral_ranges, "secret": secret}
    return field(default=default, metadata=metadata)


_KINDS = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
          float: ("a number", "numbers"), str: ("a string", "strings")}


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of every field (annotations are strings in these modules)."""
    return typing.get_type_hints(cls)


def _alternatives(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def is_optional(annotation: Any) -> bool:
    return type(None) in _alternatives(annotation)


def scalar_type(annotation: Any) -> Any:
    """The annotation without `None`: `str | None` -> str."""
    kept = [a for a in _alternatives(annotation) if a is not type(None)]
    return kept[0] if len(kept) == 1 else annotation


def accepts(annotation: Any, value: Any) -> tuple[bool, Any]:
    """Whether `value` has the annotated type; lists become tuples for tuple fields."""
    if len(_alternatives(annotation)) > 1:
        for alternative in _alternatives(annotation):
            ok, converted = accepts(alternative, value)
            if ok:
                return True, converted
        return False, value
    if annotation is type(None):
        return value is None, value
    if annotation is float:  # TOML and argparse give ints for whole numbers
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and math.isfinite(value), value
    if annotation in (int, str, bool):
        return isinstance(value, annotation) and (annotation is bool or not isinstance(value, bool)
                                                  ), value
    if typing.get_origin(annotation) is tuple and isinstance(value, (list, tuple)):
        items = typing.get_args(annotation)
        items = items[:1] * len(value) if items[-1] is Ellipsis else items
        checked = [accepts(t, v) for t, v in zip(items, value, strict=False)]
        if len(items) == len(value) and all(ok for ok, _ in checked):
            return True, tuple(v for _, v in checked)
    return False, value


def kind_text(annotation: Any) -> str:
    """`float | None` -> "a number", `tuple[int, int, int]` -> "a list of 3 integers"."""
    texts = []
    for alternative in _alternatives(annotation):
        if alternative is type(None):
            continue
        if typing.get_origin(alternative) is tuple:
            items = typing.get_args(alternative)
            count = "" if items[-1] is Ellipsis else f"{len(items)} "
            texts.append(f"a list of {count}{_KINDS[items[0]][1]}")
        else:
            texts.append(_KINDS[alternative][0])
    return " or ".join(texts)


def allowed_text(cls: type, name: str, with_kind: bool = False) -> str:
    """What a field allows, e.g. "an integer >= 1", "in [0, 1)", "> 0 or unset"."""
    spec = cls.__dataclass_fields__[name]
    annotation = field_types(cls)[name]
    bounds, choices = spec.metadata.get("bounds"), spec.metadata.get("choices")
    if choices:
        return f"one of {', '.join(map(str, choices))}"
    # An integer field says so: 0.5 epochs is not "< 1" but not an integer either.
    parts = [kind_text(annotation)] if with_kind or scalar_type(annotation) is int else []
    text = " ".join([*parts, str(bounds)] if bounds else parts) or kind_text(annotation)
    return f"{text} or unset" if is_optional(annotation) and not with_kind else text


def value_problem(cls: type, name: str, value: Any, with_kind: bool = False) -> str | None:
    """Why a value of the right type is not allowed (choices, bounds), or None."""
    spec = cls.__dataclass_fields__[name]
    choices, bounds = spec.metadata.get("choices"), spec.metadata.get("bounds")
    if value is None:
        return None
    if choices and value not in choices:
        return f"is not one of {', '.join(map(str, choices))}"
    if bounds is not None and isinstance(value, (int, float)) and value not in bounds:
        return f"must be {allowed_text(cls, name, with_kind)}"
    return None


def check_fields(config: Any) -> None:
    """Check every field's type, choices and bounds (raises ConfigValueError); lists -> tuples."""
    cls = type(config)
    for spec in fields(config):
        value = getattr(config, spec.name)
        ok, converted = accepts(field_types(cls)[spec.name], value)
        if not ok:
            raise ConfigValueError(spec.name, value,
                                   f"must be {allowed_text(cls, spec.name, with_kind=True)}"
                                   + (" or unset" if is_optional(field_types(cls)[spec.name])
                                      else ""))
        if converted is not value:
            object.__setattr__(config, spec.name, converted)
        problem = value_problem(cls, spec.name, converted)
        if problem:
            raise ConfigValueError(spec.name, converted, problem, spec.metadata.get("choices", ()))


def searchable_fields(cls: type) -> list[Field]:
    return [f for f in fields(cls) if f.metadata.get("searchable")]


def help_text(spec: Field) -> str:
    return spec.metadata.get("help", "")


# ---------------------------------------------------------------- model


def depth_rule(family: str, block: str) -> tuple[int, int]:
    """Return (a, b) such that valid depths are a*n + b for n >= 1."""
    rule = network_family(family).depth_rule(block)
    return rule.step, rule.offset


def is_valid_depth(family: str, block: str, depth: int) -> bool:
    return network_family(family).accepts_depth(depth, block)


def default_block(family: str, depth: int) -> str:
    """The block of the papers' named networks (`NetworkFamily.default_block`).

    ResNet-164 and ResNet-1001 (He et al. 2016) use bottlenecks; ResNet-20..110
    and ResNet-1202 (He et al. 2015) use basic blocks. Depths that only one block
    type accepts get that block; the deep ones that both accept (164, 326, ...)
    get the bottleneck, as in the papers.
    """
    return network_family(family).default_block(depth)


def _family_help() -> str:
    described = [f"{f.name} ({f.description})" for f in registered_families()]
    return ", ".join(described[:-1]) + " or " + described[-1]


@dataclass(frozen=True)
class ModelConfig:
    """A network of the zoo; each field's meaning is its `help` below."""

    family: str = option(help=_family_help(), choices=FAMILIES, searchable=True)
    depth: int = option(
        help="total depth as the papers count it: 6n+2 (basic), 9n+2 (bottleneck), 6n+4 (wrn)",
        bounds=at_least(1), searchable=True)
    width: int = option(1, "width factor k (the WRN k); stage widths are 16k, 32k, 64k "
                           "(ImageNet ResNets: each block's inner width x k, wide_resnet50_2 "
                           "is k=2)", bounds=at_least(1), searchable=True)
    block: str | None = option(
        None, "basic (3x3-3x3) or bottleneck (1x1-3x3-1x1, 4x expansion); "
              "unset: the papers' block for this family and depth",
        choices=BLOCKS, searchable=True, model_option=True)
    shortcut: str | None = option(
        None, "A (identity with zero padding) or B (1x1 projection where the shape changes); "
              "unset: A for basic post-activation ResNets, else B",
        choices=SHORTCUTS, searchable=True, model_option=True)
    bn_position: str = option(
        "before_add", "before_add (standard) or after_add (BN after the addition, the "
                      "Gross & Wilber ablation; resnet only)",
        choices=BN_POSITIONS, searchable=True, model_option=True)
    stem: str | None = option(
        None, "imagenet (7x7 stride 2 and a max-pool: a quarter of each side) or cifar (3x3 "
              "stride 1: full resolution, for 32-128 px images); ImageNet ResNets only; "
              "unset: the family's usual stem", choices=STEMS, searchable=True,
        model_option=True)
    dropout: float = option(0.0, "dropout probability between the convolutions of each block "
                                 "(ImageNet ResNets: before the classifier)",
                            bounds=FRACTION, searchable=True, model_option=True)
    num_classes: int = option(10, "classifier outputs (set from the data)", bounds=at_least(2))
    in_channels: int = option(3, "image channels, 1 for grayscale (set from the data)",
                              bounds=at_least(1))

    def __post_init__(self) -> None:
        check_fields(self)
        entry = network_family(self.family)
        if self.block is None:
            object.__setattr__(self, "block", entry.default_block(self.depth))
        rule = entry.depth_rule(self.block)  # a block the family does not take raises here
        if self.shortcut is None:
            object.__setattr__(self, "shortcut", entry.default_shortcut(self.block))
        if self.bn_position == "after_add" and not entry.has_bn_position:
            needed = " or ".join(repr(f.name) for f in registered_families() if f.has_bn_position)
            raise ConfigValueError("bn_position", self.bn_position,
                                   f"needs family {needed} (an addition followed by BN-ReLU), "
                                   f"not {self.family!r}")
        self._check_stem(entry)
        if not rule.accepts(self.depth):
            a, b = rule.step, rule.offset
            kind = f" with {self.block} blocks" if entry.has_block_choice else ""
            if rule.layouts:
                raise ConfigValueError("depth", self.depth, f"is invalid for {self.family}{kind}: "
                                       f"depth must be {rule}")
            raise ConfigValueError(
                "depth", self.depth, f"is invalid for {self.family}{kind}: depth must be "
                f"{a}n+{b} with n >= 1 (e.g. {a + b}, {2 * a + b}, {3 * a + b})")

    def _check_stem(self, entry: Any) -> None:
        """A stem only where the family has a choice of stems; unset: its usual one."""
        if self.stem is None:
            object.__setattr__(self, "stem", entry.stems[0] if entry.stems else None)
        elif self.stem not in entry.stems:
            having = " or ".join(repr(f.name) for f in registered_families() if f.stems)
            raise ConfigValueError("stem", self.stem, f"needs family {having} (a choice of "
                                                      f"stem), not {self.family!r}")

    @property
    def blocks_per_stage(self) -> int:
        return network_family(self.family).depth_rule(self.block).blocks_per_stage(self.depth)

    @property
    def name(self) -> str:
        """The canonical registry name, with suffixes for non-default options."""
        entry = network_family(self.family)
        base = entry.model_name(self.depth, self.width)
        if not entry.has_width and self.width != 1:
            base += f"-x{self.width}"
        if self.block != entry.default_block(self.depth):
            base += f"-{self.block}"
        if self.shortcut != entry.default_shortcut(self.block):
            base += f"-shortcut{self.shortcut}"
        if self.bn_position != "before_add":
            base += "-bn-after-add"
        if entry.stems and self.stem != entry.stems[0]:
            base += f"-{self.stem}-stem"
        return base

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return dataclass_from_dict(cls, data, "model config")

    def replace(self, **changes: Any) -> ModelConfig:
        return replace(self, **changes)


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the defaults are the recipe that the quickstart and tests rely on."""

    # A study samples the searchable fields in this order: keep it, or a seeded
    # study stops sampling the trials it sampled before.
    epochs: int = option(15, "passes over the training split", bounds=at_least(1))
    optimizer: str = option("sgd", "the optimizer", choices=OPTIMIZERS, searchable=True)
    lr: float = option(0.1, "base (peak) learning rate", bounds=POSITIVE, searchable=True)
    momentum: float = option(0.9, "momentum of sgd, nesterov and rmsprop", bounds=FRACTION,
                             searchable=True)
    weight_decay: float = option(5e-4, "L2 penalty (decoupled for adamw)", bounds=NON_NEGATIVE,
                                 searchable=True)
    exempt_bn_and_bias: bool = option(False, "no weight decay on BN parameters and biases")
    batch_size: int = option(128, "images per optimizer step, over all workers together",
                             bounds=at_least(1), searchable=True)
    label_smoothing: float = option(0.0, "cross-entropy label smoothing", bounds=FRACTION,
                                    searchable=True)
    schedule: str = option("cosine", "learning-rate schedule; step is the WRN recipe "
                                     "(x0.2 at 0.3, 0.6 and 0.8 of training)",
                           choices=SCHEDULES, searchable=True)
    milestones: tuple[float, ...] = option(
        WRN_STEP_FRACTIONS, "fractions of training where the milestones schedule decays by gamma")
    gamma: float = option(WRN_STEP_GAMMA, "decay factor of the step and milestones schedules",
                          bounds=POSITIVE)
    warmup_epochs: float = option(0.0, "linear warm-up length in epochs (may be fractional)",
                                  bounds=NON_NEGATIVE, searchable=True, integral_ranges=True)
    grad_clip: float | None = option(None, "clip the global gradient norm to this (unset: off)",
                                     bounds=POSITIVE)
    amp: bool | None = option(None, "bf16 autocast (unset: on where bf16 is fast)")
    channels_last: bool = option(True, "channels-last memory format (faster convolutions)")
    compile: bool = option(False, "wrap the model in torch.compile")
    seed: int = option(0, "seed of initialisation, shuffling and augmentation (in a study: "
                          "added to [study] seed + the trial number)")
    deterministic: bool = option(False, "bit-reproducible kernels (slower on GPU)")
    # Last: a study samples the searchable fields in this order (see above).
    init: str | None = option(
        None, "start from these weights: a torchvision state dict or a resnet-search checkpoint "
              "(PATH), or \"torchvision\" (its ImageNet weights of this network); the head is "
              "replaced when the classes differ (unset: a fresh initialisation)")
    backbone_lr_factor: float = option(
        1.0, "the learning rate of every layer but the classifier, as a fraction of lr "
             "(fine-tuning pretrained weights: e.g. 0.1)", bounds=Bounds(0, 1),
        searchable=True)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.warmup_epochs > self.epochs:
            raise ConfigValueError("warmup_epochs", self.warmup_epochs,
                                   f"must be in [0, epochs={self.epochs}]")
        if self.init is not None and not self.init.strip():
            raise ConfigValueError("init", self.init, "must be a file's path or \"torchvision\"")
        if not self.milestones or any(not 0 < m < 1 for m in self.milestones):
            raise ConfigValueError("milestones", list(self.milestones),
                                   "must be fractions of training in (0, 1), e.g. [0.5, 0.75]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return dataclass_from_dict(cls, data, "train config")


def dataclass_from_dict(cls: type, data: dict[str, Any], what: str) -> Any:
    """Build a config dataclass from a dict, naming unknown keys (e.g. from a newer checkpoint)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; allowed: {sorted(known)}")
    return cls(**data)
