"""The three configs of one training run from one flat set of options.

A command line (`resnet-search train`) or a script holds the options of a run in one
namespace: a model name, and field values of ModelConfig, TrainConfig and DataConfig,
whose field names do not overlap. Each option goes to the config with a field of its name;
the rest keep the dataclass defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from resnet_core.config import ModelConfig, TrainConfig
from resnet_core.data import DataConfig


def options_for(cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options that name a field of `cls`."""
    return {spec.name: options[spec.name] for spec in fields(cls) if spec.name in options}


def configs_from_options(model: str, options: Mapping[str, Any]
                         ) -> tuple[ModelConfig, TrainConfig, DataConfig]:
    """(model, train, data) configs of a run: `model` is a registry name (`resnet-20`) whose
    options (block, shortcut, dropout, ...) `options` may override.

    Example: `configs_from_options("wrn-16-2", {"lr": 0.05, "dataset": "digits"})`.
    """
    from resnet_core.models import parse_model_name  # torch: only once a run is configured

    return (parse_model_name(model, **options_for(ModelConfig, options)),
            TrainConfig(**options_for(TrainConfig, options)),
            DataConfig(**options_for(DataConfig, options)))
