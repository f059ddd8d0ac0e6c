"""[space] -> an Optuna define-by-run function that only proposes buildable networks.

The space is conditional (`search.studyfile.space_rules.CONDITIONS`, from the family
entries):
- `block` is sampled only for families that have a choice (WRN is basic only),
- `bn_position` only for families where BN may follow the addition,
- `width` only for families with a width factor (the WRN k, the ImageNet ResNets' k),
- `stem` only for families with a choice of stem (the ImageNet ResNets),
- `momentum` only for optimizers that use it (sgd, nesterov, rmsprop),
- `depth` only among the values that the sampled family and block accept.
- a per-optimizer entry (`lr.sgd = {...}`, `lr.adam = {...}`) from the sampled
  optimizer's entry, under its own Optuna name (`lr.sgd`).
Every other searchable field of the model, recipe and data configs is sampled when it is
in [space]: the keys come from the configs, not from this module.

The cost of the sampled network (parameters, multiply-adds) is computed on the
meta device before the recipe is sampled; a network over a [constraints] limit
raises `InfeasibleArchitecture`, which the searcher (`search.space.searcher`) tells
Optuna and answers by sampling again, so it is never trained.

Optuna needs one distribution per parameter name, so a parameter whose
choices depend on earlier ones gets a context suffix (`depth.wrn.basic`,
`depth.resnet.bottleneck`). A trial is a `search.trial.spec.TrialSpec`; Tune
receives it as `TrialSpec.to_tune()`.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from resnet_core import FAMILIES, DataConfig, ModelConfig, TrainConfig, family
from search.studyfile.config import COSTS, StudyConfig
from search.studyfile.space_rules import (
    CONDITIONS,
    DATA_KEYS,
    MODEL_KEYS,
    STRUCTURE_KEYS,
    TRAIN_KEYS,
    SpaceParam,
    family_blocks,
    network_cost,
    sampled_under,
    sampled_when,
    valid_depths,
)
from search.trial.spec import TrialResources, TrialSpec

# After the structure, the keys a family decides, then the others: the order a seeded
# study has always sampled in, so it samples the trials it sampled before.
MODEL_ORDER = tuple(sorted((k for k in MODEL_KEYS if k not in STRUCTURE_KEYS),
                           key=lambda k: k not in CONDITIONS))


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
        self.train = config.train
        self.data = config.data
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
        self.resources = TrialResources(
            workers=self.workers, cpus_per_worker=config.resources.cpus_per_trial / self.workers,
            gpus_per_worker=0.0 if gpus == "auto" else float(gpus) / self.workers)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A searcher a resumed study saved before the typed spec held the recipe as dicts.
        if isinstance(state.get("train"), dict):
            state["train"] = TrainConfig(**state["train"])
            state["data"] = DataConfig(**state["data"])
            state["resources"] = TrialResources(**state["resources"])
        self.__dict__.update(state)

    def __call__(self, trial: Any) -> dict[str, Any]:
        """The define-by-run function: the trial Tune carries (see `sample`)."""
        return self.sample(trial).to_tune()

    def sample(self, trial: Any) -> TrialSpec:
        """One trial of the space: its network, then (if the network is within the
        [constraints]) its recipe and data."""
        model = ModelConfig(**self._sample_model(trial))  # resolves the family's defaults
        # Known before training: a network over a [constraints] limit is never trained.
        cost = network_cost(_searched(model), self.image_shape, self.num_classes)
        violations = constraint_violations(cost, self.limits)
        if any(v > 0 for v in violations):
            raise InfeasibleArchitecture(violations, cost)
        number = int(getattr(trial, "number", -1))
        recipe = self._sample_keys(trial, self._recipe_order(),
                                   {**asdict(self.train), **asdict(self.data)})
        # Every trial starts from a different initialisation; splits stay fixed.
        train = replace(self.train, **{k: recipe[k] for k in TRAIN_KEYS},
                        seed=self.seed + self.train.seed + max(number, 0))
        data = replace(self.data, **{k: recipe[k] for k in DATA_KEYS},
                       split_seed=self.seed + self.data.split_seed)
        return TrialSpec(model=model, train=train, data=data, resources=self.resources,
                         number=number, cost=cost, constraints=dict(self.limits),
                         measure_latency=self.measure_latency)

    def _sample_model(self, trial: Any) -> dict[str, Any]:
        name = self._suggest(trial, "family")
        chosen: dict[str, Any] = {"family": name}
        if not sampled_when("block", chosen):  # a family without a choice: its one block
            chosen["block"] = family(name).blocks[0]
        elif "block" in self.params:
            chosen["block"] = self._suggest(trial, "block", context=name)
        chosen["depth"] = self._sample_depth(trial, name, chosen.get("block"))
        return self._sample_keys(trial, MODEL_ORDER, chosen)

    def _sample_depth(self, trial: Any, name: str, block: str | None) -> int:
        depth = self.params["depth"]
        allowed = valid_depths(name, block, depth)
        context = name + (f".{block}" if block else "")
        if len(allowed) == 1:
            return allowed[0]
        if depth.kind == "int" and _evenly_spaced(allowed):
            # An ordered range lets TPE model depth as a number, not a label.
            return trial.suggest_int(f"depth.{context}", allowed[0], allowed[-1],
                                     step=allowed[1] - allowed[0])
        return trial.suggest_categorical(f"depth.{context}", allowed)

    def _recipe_order(self) -> list[str]:
        """The recipe's keys of this space: plain ones first (the optimizer among them), then
        the per-optimizer entries and the conditional keys, which depend on the optimizer."""
        keys = [k for k in (*TRAIN_KEYS, *DATA_KEYS) if k in self.params]
        plain = [k for k in keys if k not in CONDITIONS and self.params[k].kind != "conditional"]
        per_value = [k for k in keys if self.params[k].kind == "conditional"]
        return plain + per_value + [k for k in keys if k not in plain + per_value]

    def _sample_keys(self, trial: Any, keys: Any, chosen: dict[str, Any]) -> dict[str, Any]:
        """`chosen`, with each key of the space in `keys` that applies to it sampled, in order."""
        chosen = dict(chosen)
        for key in keys:
            param = self.params.get(key)
            if param is None or not sampled_when(key, chosen):
                continue
            if param.kind == "conditional":
                context = chosen[param.by]
            elif key in CONDITIONS and CONDITIONS[key].per_value:
                context = chosen[CONDITIONS[key].deciding]
            else:
                context = None
            chosen[key] = self._suggest(trial, key, context=context)
        return chosen

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


def _searched(model: ModelConfig) -> dict[str, Any]:
    values = model.to_dict()
    return {key: values[key] for key in MODEL_KEYS}


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
    out = {}
    for name in families:
        # A family without a choice of block: its depths under its own name (`wrn`).
        blocks = family_blocks(family(name), config.space.get("block"))
        for block in blocks if family(name).has_block_choice else (None,):
            label = name if block is None else f"{name}.{block}"
            out[label] = valid_depths(name, block, config.space["depth"])
    return out
