"""The define-by-run space samples every searchable field that [space] names.

A field made searchable in resnet_core (`option(searchable=True)`) is a [space] key with no
edit in search/; these tests prove the sampler really varies it, so a key cannot pass
validation and then be dropped on the way to the trial.
"""

from __future__ import annotations

import itertools
from dataclasses import MISSING, fields
from typing import Any

import optuna
import pytest
import tomllib
from study_helpers import study_toml

from resnet_core import (
    FAMILIES,
    OPTIMIZERS,
    DataConfig,
    ModelConfig,
    TrainConfig,
    family,
    field_types,
    scalar_type,
    value_problem,
)
from search.space.sampler import SearchSpace
from search.studyfile.config import parse_study
from search.studyfile.space_rules import SPACE_KEYS, sampled_when
from search.trial.spec import TrialSpec


def _default(owner: type, key: str, model: dict[str, Any]) -> Any:
    """The value a trial has when the space leaves the key out (a network's resolved one)."""
    if owner is ModelConfig:
        return getattr(ModelConfig(**model), key)
    spec = owner.__dataclass_fields__[key]
    return None if spec.default is MISSING else spec.default


def _other_values(owner: type, key: str, default: Any) -> list[Any]:
    """Allowed values of the field other than its default, the likeliest first."""
    spec = owner.__dataclass_fields__[key]
    kind = scalar_type(field_types(owner)[key])
    if spec.metadata.get("choices"):
        candidates = list(spec.metadata["choices"])
    elif kind is bool:
        candidates = [not default]
    elif kind is int:
        candidates = [(default or 1) + 1, (default or 1) * 2]
    else:
        candidates = [default / 2 if default else 0.25, 0.5]
    return [v for v in candidates if v != default and value_problem(owner, key, v) is None]


def _networks():
    """(family, depth, depths) of every registered family: a depth of each block's rule, and
    the rule's first two depths."""
    for entry in (family(name) for name in FAMILIES):
        for rule in entry.depth_rules:
            for depth in rule.first(4):
                yield entry.name, depth, rule.first(2)


def _space_for(key: str) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """([space], [train], values): a space where `key` applies and is searched over values
    that differ from what the trial would have without it."""
    owner = SPACE_KEYS[key]
    for (name, depth, depths), optimizer in itertools.product(_networks(), OPTIMIZERS):
        if not sampled_when(key, {"family": name, "optimizer": optimizer}):
            continue
        model = {"family": name, "depth": depth}
        train = {"optimizer": optimizer} if key != "optimizer" else {}
        if key in ("family", "depth"):  # required: no default to differ from
            values = [name] if key == "family" else depths
            return {**model, key: values}, train, values
        for value in _other_values(owner, key, _default(owner, key, model)):
            try:  # a value that makes the network unbuildable (a block without that depth)
                if owner is ModelConfig:
                    ModelConfig(**{**model, key: value})
            except ValueError:
                continue
            return {**model, key: [value]}, train, [value]
    raise AssertionError(f"no space samples [space] {key}: no family or optimizer it applies to")


SEARCHABLE = [f"{cls.__name__}.{spec.name}" for cls in (ModelConfig, TrainConfig, DataConfig)
              for spec in fields(cls) if spec.metadata.get("searchable")]


def test_every_searchable_field_of_the_configs_is_a_space_key():
    assert sorted(SEARCHABLE) == sorted(f"{owner.__name__}.{key}"
                                        for key, owner in SPACE_KEYS.items())


@pytest.mark.parametrize("field", SEARCHABLE)
def test_every_searchable_field_is_sampled_when_it_is_in_the_space(field):
    key = field.split(".")[1]
    space, train, values = _space_for(key)
    raw = tomllib.loads(study_toml("sampled", replace_space=True, space=space,
                                   train={"epochs": 2, key: None, **train}))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    spec = SearchSpace(parse_study(raw)).sample(trial)
    config = {"ModelConfig": spec.model, "TrainConfig": spec.train, "DataConfig": spec.data}
    assert getattr(config[field.split(".")[0]], key) in values, (space, spec)
    # Optuna chose it: the value came through the searcher, not by a default that matched.
    assert any(name == key or name.startswith(f"{key}.") for name in trial.params), trial.params
    # And Tune carries it to the trial unchanged.
    assert TrialSpec.from_tune(SearchSpace(parse_study(raw))(trial)) == spec
