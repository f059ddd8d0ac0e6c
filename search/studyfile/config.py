"""Study files: TOML -> validated configs, before anything starts.

The [data] and [train] sections are resnet_core's `DataConfig` and
`TrainConfig`, and the [space] keys are their (and `ModelConfig`'s) searchable
fields: keys, types, choices and bounds all come from those dataclasses' field
metadata, so a field added there is a study key here with no edit.

Every error is a `ConfigError` with one line naming the file, the key, the
value and what is allowed, e.g.

    quickstart.toml: [space] lr: low=0.1 must be < high=0.01

The search space keeps its raw form (`SpaceParam`); `search.space.sampler` turns it
into an Optuna define-by-run function.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import tomllib

from resnet_core import ConfigValueError, DataConfig, ModelConfig, TrainConfig, check_fields, option
from search.studyfile.space_rules import (
    CONDITIONS,
    REQUIRED_SPACE_KEYS,
    SpaceParam,
    SpaceRules,
    applies_under,
    cheapest_architecture,
    check_depths,
    describe_param,
    did_you_mean,
    sampled_under,
)


class ConfigError(ValueError):
    """A study file or argument that cannot run; the message is one actionable line."""


# ---------------------------------------------------------------- sections

MAX_SEED = 2**31 - 1  # trial seeds add the trial number; numpy's seeds stop at 2**32 - 1
METRICS = {"val_accuracy": "max", "val_loss": "min", "best_val_accuracy": "max"}
# Cost objectives of a multi-objective study (all minimised) and the [constraints] that limit them.
COSTS = {"params": "max_params", "flops": "max_flops", "latency_ms": "max_latency_ms"}
TRACKING_SCHEMES = ("http://", "https://", "sqlite:///", "postgresql", "mysql", "file:")


class _Section:
    """A study-only section: field types are checked on creation, values by `_check_*`."""

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class StudySection(_Section):
    name: str
    num_samples: int = 12
    metric: str = "val_accuracy"
    mode: str | None = None  # None: the metric's own direction
    seed: int = 0
    max_concurrent_trials: int = 0  # 0: as many as resources allow
    sampler: str = "tpe"
    # e.g. postgresql://user:password@host/db, to warm-start later studies
    optuna_storage: str | None = option(None, secret=True)
    optuna_study: str | None = None  # the Optuna study in that storage (default: the name)
    # Multi-objective: the metric, then costs to minimise (params, flops, latency_ms).
    objectives: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode is None and self.metric in METRICS:  # the metric's own direction
            object.__setattr__(self, "mode", METRICS[self.metric])


@dataclass(frozen=True)
class ConstraintsSection(_Section):
    """Limits a trial must meet to be the champion; params and FLOPs are checked before training."""

    max_params: int | None = None
    max_flops: int | None = None  # multiply-adds per image
    max_latency_ms: float | None = None  # one image, measured on the trial's device

    def limits(self) -> dict[str, float]:
        """{cost: limit} of the limits that are set (cost names as in COSTS)."""
        return {cost: getattr(self, key) for cost, key in COSTS.items()
                if getattr(self, key) is not None}


@dataclass(frozen=True)
class SchedulerSection(_Section):
    kind: str = "asha"
    # The first rung: epoch-1 accuracy ranks trials barely better than chance (Spearman
    # 0.44 with the final best, 0.76 after epoch 2: benchmarks/SEARCH.md). Unset, it is
    # min(DEFAULT_GRACE_PERIOD, epochs), so a 1-epoch study stays valid.
    grace_period: int | None = None
    reduction_factor: int = 2


DEFAULT_GRACE_PERIOD = 2


@dataclass(frozen=True)
class ResourcesSection(_Section):
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | str = 0.0  # a fraction packs trials on a GPU; "auto" estimates
    workers_per_trial: int = 1
    # None: wait for the nodes an autoscaler adds when the joined cluster has one (a cloud
    # cluster starts with zero workers), else refuse a trial no node can run. true: wait on
    # any cluster; false: count only the nodes alive when the study starts.
    wait_for_autoscaler: bool | None = None
    # Retries of a failed trial, each from its last checkpoint (a dead process or node is
    # the usual cause). 0 fails a trial at its first error: for errors a retry repeats.
    max_failures: int = 3


@dataclass(frozen=True)
class TrackingSection(_Section):
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else the local SQLite store
    experiment: str = "resnet-search"
    registered_model: str | None = None  # None: the study name
    log_checkpoints: bool = True  # each trial's best checkpoint as an MLflow artifact


@dataclass(frozen=True)
class StorageSection(_Section):
    path: str | None = None  # None: the local results folder


@dataclass(frozen=True)
class StudyConfig:
    study: StudySection
    data: DataConfig
    train: TrainConfig
    space: dict[str, SpaceParam]
    scheduler: SchedulerSection
    resources: ResourcesSection
    tracking: TrackingSection
    storage: StorageSection
    constraints: ConstraintsSection = ConstraintsSection()
    source: str = ""  # the file's text, logged with the study
    path: str = ""

    @property
    def registered_model(self) -> str:
        return self.tracking.registered_model or self.study.name


SECTIONS: dict[str, type | None] = {
    "study": StudySection, "data": DataConfig, "train": TrainConfig, "space": None,
    "scheduler": SchedulerSection, "resources": ResourcesSection, "tracking": TrackingSection,
    "storage": StorageSection, "constraints": ConstraintsSection,
}

def config_params(**sections: Any) -> dict[str, str]:
    """MLflow params `section.field` of configs (dataclasses, or their dicts in a trial config).

    Secret fields (`option(secret=True)`, e.g. a database URL with a password)
    are left out.
    """
    classes = {**SECTIONS, "model": ModelConfig}
    params: dict[str, str] = {}
    for section, values in sections.items():
        values = asdict(values) if is_dataclass(values) else dict(values)
        cls = classes.get(section)
        secret = {f.name for f in fields(cls) if f.metadata.get("secret")} if cls else set()
        params.update({f"{section}.{key}": str(value)[:500] for key, value in values.items()
                       if key not in secret})
    return params


def study_params(config: StudyConfig) -> dict[str, str]:
    """The study run's params: every setting of the study file but the space and tracking."""
    return config_params(study=config.study, data=config.data, train=config.train,
                         scheduler=config.scheduler, resources=config.resources,
                         constraints=config.constraints)


def redact_url(url: str) -> str:
    """A URL fit to print: any password replaced by ***."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    if ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


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


# A name becomes a folder (Ray's results, the report's default folder), an MLflow run and
# registered model name, and a word on the command lines people paste: none of those may
# leave their folder or be read by a shell as anything but a name.
NAME_FORBIDDEN = "/\\:;|&$`<>*?'\"!"
NAME_MAX_LENGTH = 200


def name_problem(name: str) -> str | None:
    """What is wrong with a study or registered model name, or None."""
    if not name.strip() or name != name.strip():
        return "must be a non-empty name without leading or trailing spaces"
    if name in (".", "..") or name.startswith("-"):
        return "must not be '.', '..' or start with '-'"
    if any(c in NAME_FORBIDDEN or not c.isprintable() for c in name):
        return f"must be printable, without slashes, ':' or shell characters ({NAME_FORBIDDEN})"
    if len(name) > NAME_MAX_LENGTH:
        return f"must be at most {NAME_MAX_LENGTH} characters"
    return None


def parse_study(raw: dict[str, Any], label: str = "study", name: str | None = None) -> StudyConfig:
    """Validate a parsed study; raises ConfigError naming the first problem."""
    if name is not None and name_problem(name):  # said of the flag, not of the file
        raise ConfigError(f"--name {name!r}: {name_problem(name)}")
    check = _Checker(label)
    for key in raw:
        if key not in SECTIONS:
            check.fail(f"unknown section [{key}]{did_you_mean(key, SECTIONS)}; "
                       f"allowed: {', '.join(f'[{s}]' for s in SECTIONS)}")
        if not isinstance(raw[key], dict):
            check.fail(f"[{key}] must be a table, got {raw[key]!r}")
    study_raw = dict(raw.get("study", {}))
    if name is not None:
        study_raw["name"] = name
    if "name" not in study_raw:
        check.fail("[study] name: missing; give the study a name (or pass --name)")
    sections = {key: check.section(key, cls, study_raw if key == "study" else raw.get(key, {}))
                for key, cls in SECTIONS.items() if cls is not None}
    if "space" not in raw:
        check.fail("[space]: missing; a study needs at least `family` and `depth` under [space]")
    space = {key: check.space_param(key, value) for key, value in raw["space"].items()}
    if sections["scheduler"].grace_period is None:
        grace = min(DEFAULT_GRACE_PERIOD, sections["train"].epochs)
        sections["scheduler"] = replace(sections["scheduler"], grace_period=grace)
    config = StudyConfig(space=space, **sections)
    for check_section in (_check_study, _check_space, _check_scheduler, _check_resources,
                          _check_tracking, _check_objectives, _check_constraints):
        check_section(check, config, raw)
    return config


class _Checker(SpaceRules):
    def __init__(self, label: str) -> None:
        self.label = label

    def fail(self, message: str) -> None:
        raise ConfigError(f"{self.label}: {message}")

    def one_of(self, where: str, value: Any, options: Any) -> None:
        if value not in options:
            self.fail(f"{where}: {value!r} is not one of {', '.join(options)}"
                      f"{did_you_mean(str(value), options)}")

    def section(self, section: str, cls: type, values: dict[str, Any]) -> Any:
        """The section's dataclass; its own checks' ValueError gets the file and section."""
        allowed = [spec.name for spec in fields(cls)]
        for key in values:
            if key not in allowed:
                self.fail(f"[{section}] unknown key {key!r}{did_you_mean(key, allowed)}; "
                          f"allowed: {', '.join(allowed)}")
        try:
            return cls(**values)
        except ConfigValueError as error:
            hint = did_you_mean(str(error.value), error.choices) if error.choices else ""
            self.fail(f"[{section}] {error.field}: {error.value!r} {error.problem}{hint}")

# ---------------------------------------------------------------- rules across fields


def _check_study(check: _Checker, config: StudyConfig, raw: dict[str, Any]) -> None:
    study = config.study
    problem = name_problem(study.name)
    if problem:
        check.fail(f"[study] name: {study.name!r} {problem}")
    if study.num_samples < 1:
        check.fail(f"[study] num_samples: {study.num_samples} must be >= 1")
    check.one_of("[study] metric", study.metric, METRICS)
    if not 0 <= study.seed <= MAX_SEED:
        # Trials seed numpy and torch with seed + trial number: numpy takes < 2**32.
        check.fail(f"[study] seed: {study.seed} must be between 0 and {MAX_SEED}")
    if study.mode not in ("max", "min"):
        check.fail(f"[study] mode: {study.mode!r} must be \"max\" or \"min\"")
    if study.mode != METRICS[study.metric]:
        check.fail(f"[study] mode: {study.mode!r} contradicts metric {study.metric!r}, "
                   f"which is best at its {METRICS[study.metric]}")
    if study.max_concurrent_trials < 0:
        check.fail(f"[study] max_concurrent_trials: {study.max_concurrent_trials} must be >= 0 "
                   f"(0: as many as resources allow)")
    if study.optuna_study is not None and study.optuna_storage is None:
        check.fail(f"[study] optuna_study: {study.optuna_study!r} names a study in "
                   f"optuna_storage, which is not set; set optuna_storage (an RDB URL) "
                   f"or remove optuna_study")
    if study.sampler not in ("tpe", "random"):
        check.fail(f"[study] sampler: {study.sampler!r} must be \"tpe\" or \"random\"")


def _check_space(check: _Checker, config: StudyConfig, raw: dict[str, Any]) -> None:
    space = config.space
    duplicated = sorted(set(space) & set(raw.get("train", {})))
    if duplicated:
        check.fail(f"[space] {duplicated[0]} is also set in [train]; set it in one place "
                   f"([space] to search it, [train] to fix it)")
    for key in REQUIRED_SPACE_KEYS:
        if key not in space:
            check.fail(f"[space] {key}: missing; the space needs `{key}` "
                       f"(a value, a list, or {{ low, high }})")
    check_depths(check, space)
    _check_warmup_fits(check, config)
    _check_each_key_is_sampled(check, config)
    for param in space.values():
        if param.kind == "conditional":
            _check_cases(check, param, space.get(param.by), getattr(config.train, param.by))


def _check_warmup_fits(check: _Checker, config: StudyConfig) -> None:
    """A sampled warm-up longer than the training (whose epochs are never searched) would be
    cut short behind Optuna's back: refused, as [train] warmup_epochs is."""
    warmup = config.space.get("warmup_epochs")
    if warmup is None or warmup.kind == "conditional":
        return
    longest = warmup.high if warmup.candidates() is None else max(warmup.candidates())
    if longest > config.train.epochs:
        check.fail(f"[space] warmup_epochs: up to {longest} is longer than [train] epochs = "
                   f"{config.train.epochs}; a warm-up must fit in the training")


def _check_each_key_is_sampled(check: _Checker, config: StudyConfig) -> None:
    """A conditional key that no trial of the space can sample (a width where no family has
    one, momentum with only adam) would be dropped without a word: refused, as a
    per-optimizer entry for an optimizer never sampled is."""
    for key, param in config.space.items():
        if (key in CONDITIONS and param.kind != "conditional"
                and sampled_under(key, config.space, config.train.optimizer) is None):
            deciding, rule = CONDITIONS[key].deciding, CONDITIONS[key].rule
            source = (f"[space] {deciding} = {list(config.space[deciding].candidates())!r}"
                      if deciding in config.space else
                      f"[train] {deciding} = {getattr(config.train, deciding)!r}")
            check.fail(f"[space] {key}: no trial can sample it: it applies when {rule}, and "
                       f"{source} has none; remove it")


def _check_cases(check: _Checker, param: SpaceParam, by_param: SpaceParam | None,
                 fixed: Any) -> None:
    """A per-optimizer entry covers exactly the optimizers that can reach it."""
    by = param.by
    sampled = by_param.candidates() if by_param is not None else (fixed,)
    source = f"[space] {by} {list(sampled)!r}" if by_param is not None else f"[train] {by}={fixed!r}"
    needed = [v for v in sampled if applies_under(param.name, by, v)]
    given = [name for name, _ in param.cases]
    for value in needed:
        if value not in given:
            check.fail(f"[space] {param.name}: no entry for {by} {value!r}, which {source} can "
                       f"sample; add {value} = {{ low = ..., high = ... }} (or a value)")
    for value in given:
        if value not in needed:
            check.fail(f"[space] {param.name}.{value}: {by} {value!r} is never sampled with "
                       f"{param.name} ({source}); remove it")


def _check_objectives(check: _Checker, config: StudyConfig, raw: dict[str, Any]) -> None:
    objectives, metric = config.study.objectives, config.study.metric
    if not objectives:
        return
    example = f'e.g. ["{metric}", "params"]'
    if objectives[0] != metric:
        check.fail(f"[study] objectives[0]: {objectives[0]!r} must be the study metric "
                   f"{metric!r} (ASHA prunes on it), then costs; {example}")
    for i, name in enumerate(objectives[1:], 1):
        check.one_of(f"[study] objectives[{i}]", name, COSTS)
    if len(objectives) < 2:
        check.fail(f"[study] objectives: {list(objectives)!r} needs at least one cost after the "
                   f"metric ({', '.join(COSTS)}); {example}")
    if len(set(objectives)) != len(objectives):
        check.fail(f"[study] objectives: {list(objectives)!r} lists an objective twice")


def _check_constraints(check: _Checker, config: StudyConfig, raw: dict[str, Any]) -> None:
    for cost, limit in config.constraints.limits().items():
        if not limit > 0:
            check.fail(f"[constraints] {COSTS[cost]}: {limit!r} must be > 0")
    limits = {c: v for c, v in config.constraints.limits().items() if c != "latency_ms"}
    if not limits:
        return
    cheapest = cheapest_architecture(config.space, config.data.image_shape,
                                     config.data.num_classes)
    for cost, limit in limits.items():
        if cheapest[cost][0] > limit:
            value, model = cheapest[cost]
            check.fail(f"[constraints] {COSTS[cost]}: {limit!r} is below every network of "
                       f"[space]; the smallest, {model}, has {value:,} {cost}")


def _check_scheduler(check: _Checker, config: StudyConfig, raw: dict[str, Any]) -> None:
    scheduler, epochs = config.scheduler, config.train.epochs
    if scheduler.kind not in ("asha", "none"):
        check.fail(f"[scheduler] kind: {scheduler.kind!r} must be \"asha\" or \"none\"")
    if scheduler.grace_period < 1 or scheduler.grace_period > epochs:
        check.fail(f"[scheduler] grace_period: {scheduler.grace_period} must be in "
                   f"[1, epochs={epochs}]")
    if scheduler.reduction_factor < 2:
        check.fail(f"[scheduler] reduction_factor: {scheduler.reduction_factor} must be >= 2")


def _check_resources(check: _Checker, config: StudyConfig, raw: dict[str, Any]) -> None:
    resources = config.resources
    if not resources.cpus_per_trial > 0:
        check.fail(f"[resources] cpus_per_trial: {resources.cpus_per_trial} must be > 0")
    gpus, workers = resources.gpus_per_trial, resources.workers_per_trial
    if isinstance(gpus, str) and gpus != "auto":
        check.fail(f"[resources] gpus_per_trial: {gpus!r} must be a number >= 0 or \"auto\"")
    if not isinstance(gpus, str) and (gpus < 0 or (gpus > 1 and gpus != int(gpus))):
        check.fail(f"[resources] gpus_per_trial: {gpus} must be a fraction in [0, 1] or a "
                   f"whole number of GPUs")
    if workers < 1:
        check.fail(f"[resources] workers_per_trial: {workers} must be >= 1")
    if resources.max_failures < 0:
        check.fail(f"[resources] max_failures: {resources.max_failures} must be >= 0 "
                   f"(retries of a failed trial; 0: none)")
    if gpus == "auto" and workers > 1:
        check.fail("[resources] gpus_per_trial: \"auto\" packs single-worker trials; with "
                   f"workers_per_trial={workers} give the GPUs per trial as a number")
    _check_batch_split(check, config.space.get("batch_size"), config.train.batch_size, workers)


def _check_batch_split(check: _Checker, batch_param: SpaceParam | None, fixed_batch: int,
                       workers: int) -> None:
    """batch_size is the global batch: every sampled value must split among the DDP workers."""
    if batch_param is not None and batch_param.kind == "conditional":
        for _, case in batch_param.cases:
            _check_batch_split(check, case, fixed_batch, workers)
        return
    if batch_param is not None and batch_param.kind == "int" and workers > 1:
        step = int(batch_param.step or 1)
        if batch_param.low % workers or step % workers:
            check.fail(f"[space] batch_size: {describe_param(batch_param)} can sample batches that "
                       f"{workers} workers cannot split; use low and step divisible by "
                       f"workers_per_trial={workers}, or a list")
    batch_sizes = batch_param.candidates() if batch_param is not None else (fixed_batch,)
    for batch in batch_sizes or ():
        if batch % workers:
            check.fail(f"batch_size {batch} is not divisible by [resources] workers_per_trial="
                       f"{workers}; batch_size is the global batch")


def _check_tracking(check: _Checker, config: StudyConfig, raw: dict[str, Any]) -> None:
    tracking = config.tracking
    if tracking.uri is not None and not tracking.uri.startswith(TRACKING_SCHEMES):
        check.fail(f"[tracking] uri: {tracking.uri!r} is not a tracking URI; use "
                   f"http(s)://host:port, sqlite:///path, postgresql://... or mysql://...")
    if not tracking.experiment.strip():
        check.fail("[tracking] experiment: must not be empty")
    # MLflow refuses '/' and ':' in a registered model's name, and would only say so once the
    # trials are done, at the champion's registration.
    if tracking.registered_model is not None and name_problem(tracking.registered_model):
        check.fail(f"[tracking] registered_model: {tracking.registered_model!r} "
                   f"{name_problem(tracking.registered_model)}")
