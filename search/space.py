"""[space] -> an Optuna define-by-run function that only proposes buildable networks.

The space is conditional:
- `block` is sampled only for families that have a choice (WRN is basic only),
- `bn_position` only for the post-activation `resnet` family,
- `width` (the WRN k) only for `wrn`,
- `momentum` only for optimizers that use it (sgd, nesterov, rmsprop),
- `depth` only among the values that the sampled family and block accept.

Optuna needs one distribution per parameter name, so a parameter whose
choices depend on earlier ones gets a context suffix (`depth.wrn`,
`depth.resnet.bottleneck`). The function returns the resolved trial as
`{"model": {...}, "train": {...}, "data": {...}}`, which is what trials receive.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from resnet_core.config import ModelConfig
from resnet_core.optim import uses_momentum
from search.config import SpaceParam, StudyConfig, valid_depths

MODEL_KEYS = ("family", "depth", "width", "block", "shortcut", "bn_position", "dropout")
TRAIN_KEYS = ("optimizer", "lr", "momentum", "weight_decay", "batch_size", "label_smoothing",
              "schedule", "warmup_epochs")


class SearchSpace:
    """Callable define-by-run space (a class, so Ray can pickle it with the searcher state)."""

    def __init__(self, config: StudyConfig) -> None:
        self.params = dict(config.space)
        self.train = asdict(config.train)
        self.data = {**asdict(config.data)}
        self.seed = config.study.seed
        self.workers = config.resources.workers_per_trial
        gpus = config.resources.gpus_per_trial
        # What a DDP trial (search.distributed) splits among its workers: the trial totals / workers.
        self.resources = {
            "workers": self.workers,
            "cpus_per_worker": config.resources.cpus_per_trial / self.workers,
            "gpus_per_worker": 0.0 if gpus == "auto" else float(gpus) / self.workers,
        }

    def __call__(self, trial: Any) -> dict[str, Any]:
        family = self._suggest(trial, "family")
        model: dict[str, Any] = {"family": family}
        if family == "wrn":
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
        if family == "wrn" and "width" in self.params:
            model["width"] = self._suggest(trial, "width")
        if family == "resnet" and "bn_position" in self.params:
            model["bn_position"] = self._suggest(trial, "bn_position")
        for key in ("shortcut", "dropout"):
            if key in self.params:
                model[key] = self._suggest(trial, key)

        # Resolve the family's defaults (block, shortcut, ...) so every trial lists every key.
        resolved = ModelConfig(**model).to_dict()
        model = {k: resolved[k] for k in MODEL_KEYS}

        train = dict(self.train)
        for key in TRAIN_KEYS:
            if key == "momentum" or key not in self.params:
                continue
            train[key] = self._suggest(trial, key)
        if "momentum" in self.params and uses_momentum(train["optimizer"]):
            train["momentum"] = self._suggest(trial, "momentum", context=train["optimizer"])
        train["warmup_epochs"] = min(train["warmup_epochs"], train["epochs"])
        # Every trial starts from a different initialisation; splits stay fixed.
        train["seed"] = self.seed + int(getattr(trial, "number", 0))
        data = {**self.data, "split_seed": self.seed}
        return {"model": model, "train": train, "data": data,
                "optuna_trial_number": int(getattr(trial, "number", -1)),
                "resources": dict(self.resources)}

    def _suggest(self, trial: Any, key: str, context: str | None = None) -> Any:
        param: SpaceParam = self.params[key]
        name = key if context is None else f"{key}.{context}"
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


def _evenly_spaced(values: list[int]) -> bool:
    if len(values) < 2:
        return False
    step = values[1] - values[0]
    return all(b - a == step for a, b in zip(values, values[1:], strict=False))


def describe_space(config: StudyConfig) -> dict[str, str]:
    """The space as short strings, for the study run's parameters."""
    out = {}
    for key, param in config.space.items():
        if param.kind == "fixed":
            out[key] = repr(param.value)
        elif param.kind == "choice":
            out[key] = repr(list(param.choices))
        else:
            scale = " log" if param.log else ""
            step = f" step {param.step}" if param.step else ""
            out[key] = f"[{param.low}, {param.high}]{scale}{step}"
    return out
