"""[space] -> an Optuna define-by-run function that only proposes buildable networks.

The space is conditional:
- `block` is sampled only for families that have a choice (WRN is basic only),
- `bn_position` only for the post-activation `resnet` family,
- `width` (the WRN k) only for `wrn`,
- `momentum` only for optimizers that use it (sgd, nesterov, rmsprop),
- `depth` only among the values that the sampled family and block accept.
- a per-optimizer entry (`lr.sgd = {...}`, `lr.adam = {...}`) from the sampled
  optimizer's entry, under its own Optuna name (`lr.sgd`).

The cost of the sampled network (parameters, multiply-adds) is computed on the
meta device before the recipe is sampled; a network over a [constraints] limit
raises `InfeasibleArchitecture`, which the searcher (`search.space.searcher`) tells
Optuna and answers by sampling again, so it is never trained.

Optuna needs one distribution per parameter name, so a parameter whose
choices depend on earlier ones gets a context suffix (`depth.wrn`,
`depth.resnet.bottleneck`). The function returns the resolved trial as
`{"model": {...}, "train": {...}, "data": {...}}`, which is what trials receive.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from resnet_core import FAMILIES, ModelConfig, TrainConfig, searchable_fields
from search.studyfile.config import COSTS, StudyConfig
from search.studyfile.space_rules import (
    CONDITIONS,
    SpaceParam,
    network_cost,
    sampled_under,
    sampled_when,
    valid_depths,
)

MODEL_KEYS = tuple(spec.name for spec in searchable_fields(ModelConfig))
TRAIN_KEYS = tuple(spec.name for spec in searchable_fields(TrainConfig))

class InfeasibleArchitecture(Exception):
    """A sampled network over a [constraints] limit; the searcher resamples without training it."""

    def __init__(self, violations: list[float], cost: dict[str, float]) -> None:
        super().__init__(f"network over the [constraints] limits: {cost}")
        self.violations = violations
        self.cost = cost


def constraint_violations(cost: dict[str, float], limits: dict[str, float]) -> list[float]:
    """One value per cost of COSTS: > 0 (the relative excess) when over its limit, else <= 0.

    The order and length are fixed, as Optuna's constrained samplers expect.
    """
    return [cost[name] / limits[name] - 1.0 if name in limits and name in cost else 0.0
            for name in COSTS]


class SearchSpace:
    """Callable define-by-run space (a class, so Ray can pickle it with the searcher state)."""

    def __init__(self, config: StudyConfig) -> None:
        self.params = dict(config.space)
        # Lists, not tuples: the trial config is plain data (JSON, MLflow params, Ray).
        self.train = _plain(asdict(config.train))
        self.data = _plain(asdict(config.data))
        self.seed = config.study.seed
        self.image_shape = tuple(config.data.image_shape)
        self.num_classes = config.data.num_classes  # a user's folder: counted once, here
        self.limits = config.constraints.limits()
        # Latency costs ~17 forward passes per trial: measured only when the study asks for it.
        self.measure_latency = ("latency_ms" in self.limits
                                or "latency_ms" in config.study.objectives)
        self.workers = config.resources.workers_per_trial
        gpus = config.resources.gpus_per_trial
        # What a DDP trial (search.trial.distributed) splits among its workers: the trial totals / workers.
        self.resources = {
            "workers": self.workers,
            "cpus_per_worker": config.resources.cpus_per_trial / self.workers,
            "gpus_per_worker": 0.0 if gpus == "auto" else float(gpus) / self.workers,
        }

    def __call__(self, trial: Any) -> dict[str, Any]:
        model = self._sample_model(trial)
        # Known before training: a network over a [constraints] limit is never trained.
        cost = network_cost(model, self.image_shape, self.num_classes)
        violations = constraint_violations(cost, self.limits)
        if any(v > 0 for v in violations):
            raise InfeasibleArchitecture(violations, cost)
        train = self._sample_train(trial)
        # Every trial starts from a different initialisation; splits stay fixed.
        train["seed"] = self.seed + self.train["seed"] + int(getattr(trial, "number", 0))
        data = {**self.data, "split_seed": self.seed + self.data["split_seed"]}
        return {"model": model, "network": ModelConfig(**model).name,  # as `models` names it
                "train": train, "data": data, "cost": cost,
                "constraints": dict(self.limits), "measure_latency": self.measure_latency,
                "optuna_trial_number": int(getattr(trial, "number", -1)),
                "resources": dict(self.resources)}

    def _sample_model(self, trial: Any) -> dict[str, Any]:
        family = self._suggest(trial, "family")
        model: dict[str, Any] = {"family": family}
        if not sampled_when("block", model):
            model["block"] = "basic"
        elif "block" in self.params:
            model["block"] = self._suggest(trial, "block", context=family)
        depth = self.params["depth"]
        allowed = valid_depths(family, model.get("block"), depth)
        context = family + (f".{model['block']}" if "block" in model else "")
        if len(allowed) == 1:
            model["depth"] = allowed[0]
        elif depth.kind == "int" and _evenly_spaced(allowed):
            # An ordered range lets TPE model depth as a number, not a label.
            model["depth"] = trial.suggest_int(f"depth.{context}", allowed[0], allowed[-1],
                                               step=allowed[1] - allowed[0])
        else:
            model["depth"] = trial.suggest_categorical(f"depth.{context}", allowed)
        for key in ("width", "bn_position"):
            if key in self.params and sampled_when(key, model):
                model[key] = self._suggest(trial, key)
        for key in ("shortcut", "dropout"):
            if key in self.params:
                model[key] = self._suggest(trial, key)
        # Resolve the family's defaults (block, shortcut, ...) so every trial lists every key.
        resolved = ModelConfig(**model).to_dict()
        return {k: resolved[k] for k in MODEL_KEYS}

    def _sample_train(self, trial: Any) -> dict[str, Any]:
        train = dict(self.train)
        for key in TRAIN_KEYS:  # the optimizer first: per-optimizer entries depend on it
            if key in self.params and key != "momentum" and self.params[key].kind != "conditional":
                train[key] = self._suggest(trial, key)
        for key in TRAIN_KEYS:
            param = self.params.get(key)
            if param is not None and param.kind == "conditional" and sampled_when(key, train):
                train[key] = self._suggest(trial, key, context=train[param.by])
        if "momentum" in self.params and self.params["momentum"].kind != "conditional" \
                and sampled_when("momentum", train):
            train["momentum"] = self._suggest(trial, "momentum", context=train["optimizer"])
        return train

    def _suggest(self, trial: Any, key: str, context: str | None = None) -> Any:
        param: SpaceParam = self.params[key]
        name = key if context is None else f"{key}.{context}"
        if param.kind == "conditional":  # context is the value of param.by
            param = param.case(context)
        if param.kind == "fixed":
            return param.value
        if param.kind == "choice":
            return trial.suggest_categorical(name, list(param.choices))
        if param.kind == "int":
            step = int(param.step) if param.step else 1
            return trial.suggest_int(name, int(param.low), int(param.high), step=step,
                                     log=param.log)
        return trial.suggest_float(name, float(param.low), float(param.high), step=param.step,
                                   log=param.log)


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


def _evenly_spaced(values: list[int]) -> bool:
    if len(values) < 2:
        return False
    step = values[1] - values[0]
    return all(b - a == step for a, b in zip(values, values[1:], strict=False))


def describe_space(config: StudyConfig) -> dict[str, str]:
    """The space as short strings, for the study run's parameters."""
    return {key: _domain(param) for key, param in config.space.items()}


def _domain(param: SpaceParam) -> str:
    if param.kind == "conditional":
        return "; ".join(f"{name}: {_domain(case)}" for name, case in param.cases)
    if param.kind == "fixed":
        return repr(param.value)
    if param.kind == "choice":
        return repr(list(param.choices))
    scale = " log" if param.log else ""
    step = f" step {param.step}" if param.step else ""
    return f"[{param.low}, {param.high}]{scale}{step}"


def explain_space(config: StudyConfig) -> list[dict[str, Any]]:
    """Each [space] parameter: its domain and when it is sampled (for `resnet-search check`)."""
    described = describe_space(config)
    families = config.space["family"].candidates() or FAMILIES
    rows = []
    for key, param in config.space.items():
        row = {"name": key, "kind": param.kind, "domain": described[key], "sampled": "always"}
        if key in CONDITIONS:  # the study file was refused if no trial could sample it
            row["sampled"] = f"when {sampled_under(key, config.space, config.train.optimizer)}"
        if param.kind == "conditional":
            names = ", ".join(f"{key}.{name}" for name, _ in param.cases)
            row["sampled"] = (f"per {param.by}, from the {param.by}'s entry (Optuna "
                              f"parameters {names})")
        if key == "depth":
            row["sampled"] = "among the depths the sampled family (and block) accept"
            row["depths"] = _depths_by_family(config, families)
        rows.append(row)
    return rows


def _depths_by_family(config: StudyConfig, families: tuple[str, ...]) -> dict[str, list[int]]:
    blocks = config.space["block"].candidates() if "block" in config.space else None
    out = {}
    for family in families:
        for block in (None,) if family == "wrn" or not blocks else blocks:
            label = family if block is None else f"{family}.{block}"
            out[label] = valid_depths(family, block, config.space["depth"])
    return out
