"""Study files: TOML -> validated dataclasses, before anything starts.

Every error is a `ConfigError` with one line naming the file, the key, the
value and what is allowed, e.g.

    quickstart.toml: [space] lr: low=0.1 must be < high=0.01

The search space keeps its raw form (`SpaceParam`); `search.space` turns it
into an Optuna define-by-run function.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from resnet_core.config import BLOCKS, BN_POSITIONS, FAMILIES, SHORTCUTS, is_valid_depth
from resnet_core.data import DATASETS
from resnet_core.optim import OPTIMIZERS, SCHEDULES


class ConfigError(ValueError):
    """A study file or argument that cannot run; the message is one actionable line."""


# ---------------------------------------------------------------- sections

METRICS = {"val_accuracy": "max", "val_loss": "min", "best_val_accuracy": "max"}
TRACKING_SCHEMES = ("http://", "https://", "sqlite:///", "postgresql", "mysql", "file:")


@dataclass(frozen=True)
class StudySection:
    name: str
    num_samples: int = 12
    metric: str = "val_accuracy"
    mode: str | None = None  # None: the metric's own direction
    seed: int = 0
    max_concurrent_trials: int = 0  # 0: as many as resources allow
    sampler: str = "tpe"
    optuna_storage: str | None = None  # e.g. postgresql://host/db, to warm-start later studies
    optuna_study: str | None = None  # the Optuna study in that storage (default: the name)

    def __post_init__(self) -> None:
        if self.mode is None and self.metric in METRICS:  # the metric's own direction
            object.__setattr__(self, "mode", METRICS[self.metric])


@dataclass(frozen=True)
class DataSection:
    dataset: str = "digits"
    root: str = "data"
    download: bool = False
    val_size: int | None = None
    subset: int | None = None
    augment: bool = True


@dataclass(frozen=True)
class TrainSection:
    epochs: int = 15
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.3, 0.6, 0.8)  # fractions of training, for "milestones"
    gamma: float = 0.2
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    exempt_bn_and_bias: bool = False
    deterministic: bool = False
    amp: bool | None = None  # None: on where bf16 is fast
    channels_last: bool = True
    compile: bool = False


@dataclass(frozen=True)
class SchedulerSection:
    kind: str = "asha"
    grace_period: int = 1
    reduction_factor: int = 2


@dataclass(frozen=True)
class ResourcesSection:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | str = 0.0  # a fraction packs trials on a GPU; "auto" estimates
    workers_per_trial: int = 1
    wait_for_autoscaler: bool = False


@dataclass(frozen=True)
class TrackingSection:
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else the local SQLite store
    experiment: str = "resnet-search"
    registered_model: str | None = None  # None: the study name
    log_checkpoints: bool = True  # each trial's best checkpoint as an MLflow artifact


@dataclass(frozen=True)
class StorageSection:
    path: str | None = None  # None: the local results folder


@dataclass(frozen=True)
class SpaceParam:
    """One key of [space]: a fixed value, a list of choices, or a range."""

    name: str
    kind: str  # "fixed" | "choice" | "int" | "float"
    value: Any = None
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def candidates(self) -> tuple[Any, ...] | None:
        """All values for fixed/choice params, None for ranges."""
        if self.kind == "fixed":
            return (self.value,)
        if self.kind == "choice":
            return self.choices
        return None


@dataclass(frozen=True)
class StudyConfig:
    study: StudySection
    data: DataSection
    train: TrainSection
    space: dict[str, SpaceParam]
    scheduler: SchedulerSection
    resources: ResourcesSection
    tracking: TrackingSection
    storage: StorageSection
    source: str = ""  # the file's text, logged with the study
    path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def registered_model(self) -> str:
        return self.tracking.registered_model or self.study.name


# ---------------------------------------------------------------- [space] rules

# name -> (type, allowed values or None, check on numbers, description of allowed)
SPACE_KEYS: dict[str, tuple[type, tuple | None, Any, str]] = {
    "family": (str, FAMILIES, None, f"one of {', '.join(FAMILIES)}"),
    "depth": (int, None, lambda v: v >= 3, "an integer depth (6n+2, 9n+2 or 6n+4 for wrn)"),
    "width": (int, None, lambda v: v >= 1, "an integer >= 1"),
    "dropout": (float, None, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "lr": (float, None, lambda v: v > 0, "a number > 0"),
    "optimizer": (str, OPTIMIZERS, None, f"one of {', '.join(OPTIMIZERS)}"),
    "weight_decay": (float, None, lambda v: v >= 0, "a number >= 0"),
    "momentum": (float, None, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "batch_size": (int, None, lambda v: v >= 1, "an integer >= 1"),
    "block": (str, BLOCKS, None, f"one of {', '.join(BLOCKS)}"),
    "bn_position": (str, BN_POSITIONS, None, f"one of {', '.join(BN_POSITIONS)}"),
    "shortcut": (str, SHORTCUTS, None, f"one of {', '.join(SHORTCUTS)}"),
    "label_smoothing": (float, None, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "schedule": (str, SCHEDULES, None, f"one of {', '.join(SCHEDULES)}"),
    "warmup_epochs": (float, None, lambda v: v >= 0, "a number >= 0"),
}
REQUIRED_SPACE_KEYS = ("family", "depth")
RANGE_KEYS = {"low", "high", "log", "step"}


# ---------------------------------------------------------------- loading


def load_study(path: str | Path, name: str | None = None) -> StudyConfig:
    """Read and validate a study file; `name` overrides [study] name."""
    path = Path(path)
    label = path.name
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"study file {path} not found") from None
    except OSError as error:
        raise ConfigError(f"study file {path} cannot be read: {error.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{label}: invalid TOML: {error}") from None
    config = parse_study(raw, label=label, name=name)
    return StudyConfig(**{**config.__dict__, "source": text, "path": str(path.resolve())})


def parse_study(raw: dict[str, Any], label: str = "study", name: str | None = None) -> StudyConfig:
    """Validate a parsed study; raises ConfigError naming the first problem."""
    check = _Checker(label)
    sections = {
        "study": StudySection, "data": DataSection, "train": TrainSection,
        "space": None, "scheduler": SchedulerSection, "resources": ResourcesSection,
        "tracking": TrackingSection, "storage": StorageSection,
    }
    for key in raw:
        if key not in sections:
            check.fail(f"unknown section [{key}]{_did_you_mean(key, sections)}; "
                       f"allowed: {', '.join(f'[{s}]' for s in sections)}")
        if not isinstance(raw[key], dict):
            check.fail(f"[{key}] must be a table, got {raw[key]!r}")
    study_raw = dict(raw.get("study", {}))
    if name is not None:
        study_raw["name"] = name
    if "name" not in study_raw:
        check.fail("[study] name: missing; give the study a name (or pass --name)")
    study = check.section("study", StudySection, study_raw)
    data = check.section("data", DataSection, raw.get("data", {}))
    train = check.section("train", TrainSection, raw.get("train", {}))
    scheduler = check.section("scheduler", SchedulerSection, raw.get("scheduler", {}))
    resources = check.section("resources", ResourcesSection, raw.get("resources", {}))
    tracking = check.section("tracking", TrackingSection, raw.get("tracking", {}))
    storage = check.section("storage", StorageSection, raw.get("storage", {}))
    if "space" not in raw:
        check.fail("[space]: missing; a study needs at least `family` and `depth` under [space]")
    space = {key: check.space_param(key, value) for key, value in raw["space"].items()}
    config = StudyConfig(study, data, train, space, scheduler, resources, tracking, storage)
    _check_values(check, config, raw)
    return config


class _Checker:
    def __init__(self, label: str) -> None:
        self.label = label

    def fail(self, message: str) -> None:
        raise ConfigError(f"{self.label}: {message}")

    def one_of(self, where: str, value: Any, options: Any) -> None:
        if value not in options:
            self.fail(f"{where}: {value!r} is not one of {', '.join(options)}"
                      f"{_did_you_mean(str(value), options)}")

    def section(self, section: str, cls: type, values: dict[str, Any]) -> Any:
        allowed = {name: spec for name, spec in cls.__dataclass_fields__.items()}
        for key, value in values.items():
            if key not in allowed:
                self.fail(f"[{section}] unknown key {key!r}{_did_you_mean(key, allowed)}; "
                          f"allowed: {', '.join(allowed)}")
            self._check_type(f"[{section}] {key}", value, allowed[key].type)
        return cls(**values)

    def _check_type(self, where: str, value: Any, annotation: str) -> None:
        expected = annotation.replace(" ", "")
        ok = {
            "str": isinstance(value, str),
            "int": _is_int(value),
            "float": _is_number(value),
            "bool": isinstance(value, bool),
            "str|None": isinstance(value, str),
            "int|None": _is_int(value),
            "float|None": _is_number(value),
            "bool|None": isinstance(value, bool),
            "float|str": _is_number(value) or isinstance(value, str),
            "tuple[float,...]": isinstance(value, list) and all(_is_number(v) for v in value),
        }.get(expected, True)
        if not ok:
            kind = {"str": "a string", "int": "an integer", "float": "a number",
                    "bool": "true or false", "tuple[float,...]": "a list of numbers"
                    }[expected.split("|")[0]]
            self.fail(f"{where}: {value!r} must be {kind}")

    def space_param(self, key: str, value: Any) -> SpaceParam:
        where = f"[space] {key}"
        if key not in SPACE_KEYS:
            self.fail(f"[space] unknown key {key!r}{_did_you_mean(key, SPACE_KEYS)}; "
                      f"allowed: {', '.join(SPACE_KEYS)}")
        kind, allowed, predicate, description = SPACE_KEYS[key]

        def check_value(v: Any, what: str = "") -> Any:
            label = f"{where}{what}"
            if kind is str:
                if not isinstance(v, str) or (allowed and v not in allowed):
                    self.fail(f"{label}: {v!r} is not {description}"
                              f"{_did_you_mean(str(v), allowed or ())}")
                return v
            if kind is int and not _is_int(v):
                self.fail(f"{label}: {v!r} must be {description}")
            if kind is float and not _is_number(v):
                self.fail(f"{label}: {v!r} must be {description}")
            if predicate is not None and not predicate(v):
                self.fail(f"{label}: {v!r} must be {description}")
            return v

        if isinstance(value, list):
            if not value:
                self.fail(f"{where}: an empty list has nothing to choose from")
            choices = tuple(check_value(v, f"[{i}]") for i, v in enumerate(value))
            if len(set(map(repr, choices))) != len(choices):
                self.fail(f"{where}: {value!r} lists a value twice")
            return SpaceParam(key, "choice", choices=choices)
        if isinstance(value, dict):
            return self._range_param(key, value, kind, check_value, description)
        return SpaceParam(key, "fixed", value=check_value(value))

    def _range_param(self, key, value, kind, check_value, description) -> SpaceParam:
        where = f"[space] {key}"
        unknown = set(value) - RANGE_KEYS
        if unknown:
            bad = sorted(unknown)[0]
            self.fail(f"{where}: unknown range key {bad!r}{_did_you_mean(bad, RANGE_KEYS)}; "
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
        integer = kind is int or (_is_int(low) and _is_int(high) and (step is None or _is_int(step))
                                  and key not in ("lr", "dropout", "weight_decay", "momentum",
                                                  "label_smoothing"))
        if kind is int and step is not None and not _is_int(step):
            self.fail(f"{where}.step: {step!r} must be an integer for {key}")
        return SpaceParam(key, "int" if integer else "float", low=low, high=high, log=log,
                          step=step)


def _check_values(check: _Checker, config: StudyConfig, raw: dict[str, Any]) -> None:
    study, train, space = config.study, config.train, config.space
    if not study.name.strip() or any(c in study.name for c in "/\\") or study.name != study.name.strip():
        check.fail(f"[study] name: {study.name!r} must be a non-empty name without slashes")
    if study.num_samples < 1:
        check.fail(f"[study] num_samples: {study.num_samples} must be >= 1")
    check.one_of("[study] metric", study.metric, METRICS)
    if study.seed < 0:
        check.fail(f"[study] seed: {study.seed} must be >= 0")
    if study.mode not in ("max", "min"):
        check.fail(f"[study] mode: {study.mode!r} must be \"max\" or \"min\"")
    if study.mode != METRICS[study.metric]:
        check.fail(f"[study] mode: {study.mode!r} contradicts metric {study.metric!r}, "
                   f"which is best at its {METRICS[study.metric]}")
    if study.max_concurrent_trials < 0:
        check.fail(f"[study] max_concurrent_trials: {study.max_concurrent_trials} must be >= 0 "
                   f"(0: as many as resources allow)")
    if study.sampler not in ("tpe", "random"):
        check.fail(f"[study] sampler: {study.sampler!r} must be \"tpe\" or \"random\"")

    data = config.data
    check.one_of("[data] dataset", data.dataset, DATASETS)
    for key in ("val_size", "subset"):
        value = getattr(data, key)
        if value is not None and value < 1:
            check.fail(f"[data] {key}: {value} must be >= 1")

    if train.epochs < 1:
        check.fail(f"[train] epochs: {train.epochs} must be >= 1")
    if train.batch_size < 1:
        check.fail(f"[train] batch_size: {train.batch_size} must be >= 1")
    check.one_of("[train] optimizer", train.optimizer, OPTIMIZERS)
    check.one_of("[train] schedule", train.schedule, SCHEDULES)
    if not train.lr > 0:
        check.fail(f"[train] lr: {train.lr} must be > 0")
    if not 0 <= train.warmup_epochs <= train.epochs:
        check.fail(f"[train] warmup_epochs: {train.warmup_epochs} must be in [0, epochs={train.epochs}]")
    if not 0 <= train.label_smoothing < 1:
        check.fail(f"[train] label_smoothing: {train.label_smoothing} must be in [0, 1)")
    if not train.milestones or any(not 0 < m < 1 for m in train.milestones):
        check.fail(f"[train] milestones: {list(train.milestones)} must be fractions of training "
                   f"in (0, 1), e.g. [0.5, 0.75]")
    if not train.gamma > 0:
        check.fail(f"[train] gamma: {train.gamma} must be > 0")
    if train.weight_decay < 0:
        check.fail(f"[train] weight_decay: {train.weight_decay} must be >= 0")
    if not 0 <= train.momentum < 1:
        check.fail(f"[train] momentum: {train.momentum} must be in [0, 1)")
    if train.grad_clip is not None and not train.grad_clip > 0:
        check.fail(f"[train] grad_clip: {train.grad_clip} must be > 0 (or left out)")

    duplicated = sorted(set(space) & set(raw.get("train", {})))
    if duplicated:
        check.fail(f"[space] {duplicated[0]} is also set in [train]; set it in one place "
                   f"([space] to search it, [train] to fix it)")
    for key in REQUIRED_SPACE_KEYS:
        if key not in space:
            check.fail(f"[space] {key}: missing; the space needs `{key}` "
                       f"(a value, a list, or {{ low, high }})")
    _check_depths(check, space)

    scheduler = config.scheduler
    if scheduler.kind not in ("asha", "none"):
        check.fail(f"[scheduler] kind: {scheduler.kind!r} must be \"asha\" or \"none\"")
    if scheduler.grace_period < 1 or scheduler.grace_period > train.epochs:
        check.fail(f"[scheduler] grace_period: {scheduler.grace_period} must be in "
                   f"[1, epochs={train.epochs}]")
    if scheduler.reduction_factor < 2:
        check.fail(f"[scheduler] reduction_factor: {scheduler.reduction_factor} must be >= 2")

    resources = config.resources
    if not resources.cpus_per_trial > 0:
        check.fail(f"[resources] cpus_per_trial: {resources.cpus_per_trial} must be > 0")
    gpus = resources.gpus_per_trial
    if isinstance(gpus, str) and gpus != "auto":
        check.fail(f"[resources] gpus_per_trial: {gpus!r} must be a number >= 0 or \"auto\"")
    if not isinstance(gpus, str) and (gpus < 0 or (gpus > 1 and gpus != int(gpus))):
        check.fail(f"[resources] gpus_per_trial: {gpus} must be a fraction in [0, 1] or a "
                   f"whole number of GPUs")
    if resources.workers_per_trial < 1:
        check.fail(f"[resources] workers_per_trial: {resources.workers_per_trial} must be >= 1")
    if gpus == "auto" and resources.workers_per_trial > 1:
        check.fail("[resources] gpus_per_trial: \"auto\" packs single-worker trials; with "
                   f"workers_per_trial={resources.workers_per_trial} give the GPUs per trial "
                   "as a number")
    workers = resources.workers_per_trial
    batch_param = space.get("batch_size")
    if batch_param is not None and batch_param.kind == "int" and workers > 1:
        step = int(batch_param.step or 1)
        if batch_param.low % workers or step % workers:
            check.fail(f"[space] batch_size: {_describe(batch_param)} can sample batches that "
                       f"{workers} workers cannot split; use low and step divisible by "
                       f"workers_per_trial={workers}, or a list")
    batch_sizes = batch_param.candidates() if batch_param is not None else (train.batch_size,)
    for batch in batch_sizes or ():
        if batch % resources.workers_per_trial:
            check.fail(f"batch_size {batch} is not divisible by [resources] workers_per_trial="
                       f"{resources.workers_per_trial}; batch_size is the global batch")

    tracking = config.tracking
    if tracking.uri is not None and not tracking.uri.startswith(TRACKING_SCHEMES):
        check.fail(f"[tracking] uri: {tracking.uri!r} is not a tracking URI; use "
                   f"http(s)://host:port, sqlite:///path, postgresql://... or mysql://...")
    if not tracking.experiment.strip():
        check.fail("[tracking] experiment: must not be empty")


def _check_depths(check: _Checker, space: dict[str, SpaceParam]) -> None:
    """Every family/block combination the space can produce must have a valid depth."""
    families = space["family"].candidates() or FAMILIES
    blocks_param = space.get("block")
    depth = space["depth"]
    for family in families:
        blocks = ("basic",) if family == "wrn" else (
            blocks_param.candidates() if blocks_param else (None,))
        for block in blocks:
            if family == "wrn" and blocks_param and "basic" not in (blocks_param.candidates() or ()):
                check.fail(f"[space] block: {list(blocks_param.candidates())!r} has no block for "
                           f"family 'wrn', which uses basic blocks only")
            if not valid_depths(family, block, depth):
                rule = _rule_text(family, block)
                blocks_label = "" if block is None or family == "wrn" else f" with {block} blocks"
                check.fail(f"[space] depth: {_describe(depth)} has no valid depth for family "
                           f"{family!r}{blocks_label} "
                           f"({rule})")
    if "bn_position" in space and "after_add" in (space["bn_position"].candidates() or ()):
        if "resnet" not in families:
            check.fail("[space] bn_position: 'after_add' needs family 'resnet' in [space] family")


def valid_depths(family: str, block: str | None, depth: SpaceParam) -> list[int]:
    """The depths of a [space] depth entry that the family and block accept.

    With `block=None` (not searched) the papers' default block of each depth
    is used, so `resnet` accepts 6n+2 depths and the bottleneck-only 9n+2 ones.
    """
    from resnet_core.config import default_block

    if depth.kind in ("fixed", "choice"):
        candidates = [d for d in depth.candidates() if _is_int(d)]
    else:
        candidates = list(range(math.ceil(depth.low), math.floor(depth.high) + 1))
    result = []
    for d in candidates:
        chosen = "basic" if family == "wrn" else (block or default_block(family, d))
        if is_valid_depth(family, chosen, d):
            result.append(d)
    return result


def _rule_text(family: str, block: str | None) -> str:
    if family == "wrn":
        return "wrn depths are 6n+4: 10, 16, 22, 28, 40, ..."
    if block == "bottleneck":
        return "bottleneck depths are 9n+2: 11, 20, 29, ..., 164"
    if block == "basic":
        return "basic depths are 6n+2: 8, 14, 20, 32, 44, 56, 110"
    return "depths are 6n+2 (basic) or 9n+2 (bottleneck): 8, 14, 20, 32, 56, 110, 164"


def _describe(param: SpaceParam) -> str:
    if param.kind == "fixed":
        return repr(param.value)
    if param.kind == "choice":
        return repr(list(param.choices))
    return f"{{ low = {param.low}, high = {param.high} }}"


def _did_you_mean(word: str, options: Any) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
