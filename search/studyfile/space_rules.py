"""[space] keys: which exist, what their values may be, when each is sampled, and which
depths each family accepts.

The keys are the searchable fields of resnet_core's `ModelConfig`, `TrainConfig` and
`DataConfig` (`option(searchable=True)`); their types, choices and bounds come from those
fields, so a field made searchable there is a [space] key here, and the sampler
(`search.space.sampler`) samples it. Which keys apply to which networks comes from the
family entries (`resnet_core.family`): no family is named here.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from typing import Any, NamedTuple

from resnet_core import (
    FAMILIES,
    OPTIMIZERS,
    DataConfig,
    ModelConfig,
    NetworkFamily,
    TrainConfig,
    accepts,
    allowed_text,
    family,
    field_types,
    registered_families,
    scalar_type,
    searchable_fields,
    uses_momentum,
    value_problem,
)


@dataclass(frozen=True)
class SpaceParam:
    """One key of [space]: a fixed value, a list of choices, or a range."""

    name: str
    kind: str  # "fixed" | "choice" | "int" | "float" | "conditional"
    value: Any = None
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    # kind "conditional": one param per value of `by` (e.g. lr per optimizer).
    by: str | None = None
    cases: tuple[tuple[str, SpaceParam], ...] = ()

    def candidates(self) -> tuple[Any, ...] | None:
        """All values for fixed/choice params (and conditional ones of those), None for ranges."""
        if self.kind == "fixed":
            return (self.value,)
        if self.kind == "choice":
            return self.choices
        if self.kind == "conditional":
            values = [case.candidates() for _, case in self.cases]
            if any(v is None for v in values):
                return None
            return tuple(dict.fromkeys(v for group in values for v in group))
        return None

    def case(self, value: str) -> SpaceParam:
        """The param that applies when `by` has this value (self when not conditional)."""
        return dict(self.cases)[value] if self.kind == "conditional" else self


def _owners(*classes: type) -> dict[str, type]:
    owners: dict[str, type] = {}
    for cls in classes:
        for spec in searchable_fields(cls):
            if spec.name in owners:  # a trial's sampled values are one flat namespace
                raise TypeError(f"[space] key {spec.name!r} is searchable in both "
                                f"{owners[spec.name].__name__} and {cls.__name__}")
            owners[spec.name] = cls
    return owners


# [space] key -> the resnet_core config that owns the field (types, choices, bounds).
SPACE_KEYS: dict[str, type] = _owners(ModelConfig, TrainConfig, DataConfig)
MODEL_KEYS = tuple(k for k, owner in SPACE_KEYS.items() if owner is ModelConfig)
TRAIN_KEYS = tuple(k for k, owner in SPACE_KEYS.items() if owner is TrainConfig)
DATA_KEYS = tuple(k for k, owner in SPACE_KEYS.items() if owner is DataConfig)
# The network's structure, sampled first and in this order: the family decides which
# blocks it takes, the family and the block which depths.
STRUCTURE_KEYS = ("family", "block", "depth")
# Fields a network cannot be built without must be in the space.
REQUIRED_SPACE_KEYS = tuple(
    spec.name for spec in searchable_fields(ModelConfig) if spec.default is MISSING)
RANGE_KEYS = {"low", "high", "log", "step"}
# A [space] table without range keys is a conditional entry, keyed by the values of this key.
CONDITION_KEY = "optimizer"


def space_key_type(key: str) -> type:
    """The Python type of a [space] key's values (`block: str | None` -> str)."""
    return scalar_type(field_types(SPACE_KEYS[key])[key])


class SpaceRules:
    """The [space] value rules; a subclass says how to `fail` (one line naming the file)."""

    def fail(self, message: str) -> None:
        raise NotImplementedError

    def space_param(self, key: str, value: Any, where: str | None = None) -> SpaceParam:
        where = where or f"[space] {key}"
        if key not in SPACE_KEYS:
            self.fail(f"[space] unknown key {key!r}{did_you_mean(key, SPACE_KEYS)}; "
                      f"allowed: {', '.join(SPACE_KEYS)}")
        owner, kind = SPACE_KEYS[key], space_key_type(key)
        choices = owner.__dataclass_fields__[key].metadata.get("choices", ())

        def check_value(v: Any, what: str = "") -> Any:
            problem = (value_problem(owner, key, v, with_kind=True) if accepts(kind, v)[0]
                       else f"must be {allowed_text(owner, key, with_kind=True)}")
            if problem:
                self.fail(f"{where}{what}: {v!r} {problem}{did_you_mean(str(v), choices)}")
            return v

        if isinstance(value, list):
            if not value:
                self.fail(f"{where}: an empty list has nothing to choose from")
            values = tuple(check_value(v, f"[{i}]") for i, v in enumerate(value))
            if len(set(map(repr, values))) != len(values):
                self.fail(f"{where}: {value!r} lists a value twice")
            return SpaceParam(key, "choice", choices=values)
        if isinstance(value, dict) and value and not set(value) & RANGE_KEYS:
            return self._conditional_param(key, value, where)
        if isinstance(value, dict):
            return self._range_param(key, value, kind, check_value, where)
        return SpaceParam(key, "fixed", value=check_value(value))

    def _conditional_param(self, key: str, value: dict[str, Any], where: str) -> SpaceParam:
        """`lr = { sgd = { low, high }, adam = [...] }`: one entry per value of the optimizer."""
        if where != f"[space] {key}":
            self.fail(f"{where}: a conditional entry cannot be nested; give a value, a list "
                      f"or {{ low, high }}")
        if key not in searchable_names(TrainConfig) or key == CONDITION_KEY:
            self.fail(f"{where}: a table without low/high is a per-{CONDITION_KEY} entry, which "
                      f"only [train] keys other than {CONDITION_KEY} may have; for a range write "
                      f"{{ low = ..., high = ... }}")
        for name in value:
            if name not in OPTIMIZERS:
                self.fail(f"{where}: {name!r} is not one of {', '.join(OPTIMIZERS)}"
                          f"{did_you_mean(name, OPTIMIZERS)} (a per-{CONDITION_KEY} entry is "
                          f"keyed by {CONDITION_KEY}; a range needs low and high)")
        cases = tuple((name, self.space_param(key, case, f"{where}.{name}"))
                      for name, case in value.items())
        return SpaceParam(key, "conditional", by=CONDITION_KEY, cases=cases)

    def _range_param(self, key: str, value: dict[str, Any], kind: type, check_value: Any,
                     where: str) -> SpaceParam:
        unknown = set(value) - RANGE_KEYS
        if unknown:
            bad = sorted(unknown)[0]
            self.fail(f"{where}: unknown range key {bad!r}{did_you_mean(bad, RANGE_KEYS)}; "
                      f"allowed: low, high, log, step")
        if kind is str:
            self.fail(f"{where}: a range needs numbers; list the choices instead, e.g. "
                      f"{key} = [\"...\", \"...\"]")
        if "low" not in value or "high" not in value:
            self.fail(f"{where}: a range needs both low and high, got {value!r}")
        low = check_value(value["low"], ".low")
        high = check_value(value["high"], ".high")
        if not low < high:
            self.fail(f"{where}: low={low!r} must be < high={high!r}")
        log = value.get("log", False)
        if not isinstance(log, bool):
            self.fail(f"{where}.log: {log!r} must be true or false")
        if log and low <= 0:
            self.fail(f"{where}: log=true needs low > 0, got low={low!r}")
        step = value.get("step")
        if step is not None and (not _is_number(step) or step <= 0):
            self.fail(f"{where}.step: {step!r} must be a number > 0")
        if step is not None and log:
            self.fail(f"{where}: step and log=true cannot be combined")
        if kind is int and step is not None and not _is_int(step):
            self.fail(f"{where}.step: {step!r} must be an integer for {key}")
        # Whole numbers sample integers only where the field counts something (epochs).
        integral = SPACE_KEYS[key].__dataclass_fields__[key].metadata.get("integral_ranges")
        integer = kind is int or (integral and _is_int(low) and _is_int(high)
                                  and (step is None or _is_int(step)))
        return SpaceParam(key, "int" if integer else "float", low=low, high=high, log=log,
                          step=step)


def family_blocks(entry: NetworkFamily, blocks: SpaceParam | None) -> tuple[str | None, ...]:
    """The blocks a trial of this family can have: its own where it has no choice, else the
    space's choice, else None (each depth's usual block)."""
    if not entry.has_block_choice:
        return entry.blocks
    return (blocks.candidates() or (None,)) if blocks is not None else (None,)


def check_depths(check: Any, space: dict[str, SpaceParam]) -> None:
    """Every family/block combination the space can produce must have a valid depth."""
    blocks_param = space.get("block")
    depth = space["depth"]
    for name in space["family"].candidates() or FAMILIES:
        entry = family(name)
        searched = blocks_param.candidates() if blocks_param else None
        if not entry.has_block_choice and searched and not set(entry.blocks) & set(searched):
            check.fail(f"[space] block: {list(searched)!r} has no block for family {name!r}, "
                       f"which uses {' or '.join(entry.blocks)} blocks only")
        for block in family_blocks(entry, blocks_param):
            if not valid_depths(name, block, depth):
                with_blocks = f" with {block} blocks" if block and entry.has_block_choice else ""
                check.fail(f"[space] depth: {describe_param(depth)} has no valid depth for "
                           f"family {name!r}{with_blocks} ({entry.depth_rule_text(block)})")
    if "bn_position" in space and "after_add" in (space["bn_position"].candidates() or ()):
        families = space["family"].candidates() or FAMILIES
        if not any(family(name).has_bn_position for name in families):
            needed = " or ".join(repr(f.name) for f in registered_families() if f.has_bn_position)
            check.fail(f"[space] bn_position: 'after_add' needs family {needed} in [space] family")


def network_cost(model: dict[str, Any], image_shape: tuple[int, int, int], num_classes: int
                 ) -> dict[str, int]:
    """{"params", "flops"} (multiply-adds per image) of a sampled network, on the meta device."""
    # Imported here: it loads torch, which `check` pays only for a space with [constraints].
    from resnet_core import architecture_cost

    channels, height, width = image_shape
    config = {**model, "in_channels": channels, "num_classes": num_classes}
    params, flops = architecture_cost(config, (height, width))
    return {"params": params, "flops": flops}


def cheapest_architecture(space: dict[str, SpaceParam], image_shape: tuple[int, int, int],
                          num_classes: int = 10) -> dict[str, tuple[int, str]]:
    """The fewest parameters and FLOPs any network of the space has: {cost: (value, name)}."""
    widths = _smallest(space.get("width"))
    shortcuts = space["shortcut"].candidates() if "shortcut" in space else (None,)
    best: dict[str, tuple[int, str]] = {}
    for name in space["family"].candidates() or FAMILIES:
        entry = family(name)
        width = widths if entry.has_width else 1
        for block in family_blocks(entry, space.get("block")):
            for depth in valid_depths(name, block, space["depth"]):
                for shortcut in shortcuts or (None,):
                    model = {"family": name, "depth": depth, "block": block,
                             "shortcut": shortcut, "width": width}
                    for cost, value in network_cost(model, image_shape, num_classes).items():
                        if cost not in best or value < best[cost][0]:
                            best[cost] = (value, entry.model_name(depth, width))
    return best


def _smallest(param: SpaceParam | None) -> int:
    if param is None:
        return 1
    values = param.candidates()
    return int(min(values)) if values else int(math.ceil(param.low))


def valid_depths(name: str, block: str | None, depth: SpaceParam) -> list[int]:
    """The depths of a [space] depth entry that the family and block accept.

    With `block=None` (not searched) the papers' default block of each depth
    is used, so `resnet` accepts 6n+2 depths and the bottleneck-only 9n+2 ones.
    """
    if depth.kind in ("fixed", "choice"):
        candidates = [d for d in depth.candidates() if _is_int(d)]
    else:
        candidates = list(range(math.ceil(depth.low), math.floor(depth.high) + 1))
    return family(name).depths(candidates, block)


def searchable_names(cls: type) -> tuple[str, ...]:
    return tuple(spec.name for spec in searchable_fields(cls))


def describe_param(param: SpaceParam) -> str:
    if param.kind == "conditional":
        return "{ " + ", ".join(f"{name} = {describe_param(case)}"
                                for name, case in param.cases) + " }"
    if param.kind == "fixed":
        return repr(param.value)
    if param.kind == "choice":
        return repr(list(param.choices))
    log = ", log = true" if param.log else ""
    return f"{{ low = {param.low}, high = {param.high}{log} }}"


def did_you_mean(word: str, options: Any) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Condition(NamedTuple):
    """When a [space] key is sampled: when `applies` to the trial's value of `deciding`
    (its family or optimizer); other trials keep the key's default."""

    deciding: str
    applies: Callable[[Any], bool]
    describe: Callable[[], str]  # the rule in words, from the families registered now
    # Optuna names the parameter per deciding value (`momentum.sgd`): its best value differs.
    per_value: bool = False

    @property
    def rule(self) -> str:
        return self.describe()


def _family_condition(flag: str, what: str) -> Condition:
    """Sampled for the families whose entry sets `flag` (`has_width`, ...)."""

    def describe() -> str:
        names = [entry.name for entry in registered_families() if getattr(entry, flag)]
        which = f"is {names[0]}" if len(names) == 1 else f"in {', '.join(names)}"
        return f"family {which} ({what})"

    return Condition("family", lambda name: getattr(family(name), flag), describe)


MOMENTUM_OPTIMIZERS = tuple(name for name in OPTIMIZERS if uses_momentum(name))

# The conditional keys: sampled only when the trial's family or optimizer is one they
# apply to; otherwise the trial keeps the default (for `resnet-search check` and for a
# study file whose space can never sample one).
CONDITIONS: dict[str, Condition] = {
    "block": _family_condition("has_block_choice", "a family with a choice of block"),
    "width": _family_condition("has_width", "a family with a width factor"),
    "bn_position": _family_condition("has_bn_position", "a family with a choice of BN position"),
    "stem": _family_condition("has_stem_choice", "a family with a choice of stem"),
    "momentum": Condition("optimizer", uses_momentum,
                          lambda: f"optimizer in {', '.join(MOMENTUM_OPTIMIZERS)}", per_value=True),
}


def sampled_when(key: str, chosen: dict[str, Any]) -> bool:
    """Whether a key applies to a trial with these values (`chosen` holds its deciding key)."""
    if key not in CONDITIONS:
        return True
    return CONDITIONS[key].applies(chosen[CONDITIONS[key].deciding])


def applies_under(key: str, deciding: str, value: Any) -> bool:
    """Whether a key can apply where `deciding` has this value (a per-optimizer entry's case)."""
    condition = CONDITIONS.get(key)
    return condition is None or condition.deciding != deciding or condition.applies(value)


def possible_trials(space: dict[str, SpaceParam], optimizer: str) -> list[dict[str, Any]]:
    """Every family x optimizer that a trial of this space can have: what CONDITIONS test.
    `optimizer` is the study's fixed one, for a space that does not search it."""
    families = space["family"].candidates() or FAMILIES
    optimizers = (space["optimizer"].candidates() or OPTIMIZERS
                  if "optimizer" in space else (optimizer,))
    return [{"family": f, "optimizer": o} for f in families for o in optimizers]


def sampled_under(key: str, space: dict[str, SpaceParam], optimizer: str) -> str | None:
    """When this space samples a conditional key, in its own values ("family is wrn",
    "optimizer in sgd, nesterov"); None when no trial of the space can."""
    deciding = CONDITIONS[key].deciding
    values = list(dict.fromkeys(trial[deciding] for trial in possible_trials(space, optimizer)
                                if sampled_when(key, trial)))
    if not values:
        return None
    return f"{deciding} is {values[0]}" if len(values) == 1 else f"{deciding} in {', '.join(values)}"
