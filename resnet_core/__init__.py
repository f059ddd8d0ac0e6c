"""resnet_core: residual networks and how to train them (plain PyTorch).

`__all__` is the public API: `search` (and any other user) imports only these names.

Each name is imported from its module when first used (PEP 562): configs, errors and
dataset names come without torch, so a command that only reads a tracking store does not
pay torch's 2-3 s import; anything that builds or trains a network imports it then.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it, grouped as the API is.
_MODULE_OF: dict[str, str] = {
    # models
    **dict.fromkeys(("ModelConfig", "default_block", "is_valid_depth"), "config"),
    **dict.fromkeys(("FAMILIES", "DepthRule", "NetworkFamily", "family",
                     "family_names", "register_family", "registered_families", "unregister_family"),
                    "families"),
    **dict.fromkeys(("architecture_cost", "build_model", "count_flops", "count_parameters",
                     "list_models", "parse_model_name"), "models"),
    # data
    **dict.fromkeys(("DATASETS", "NUM_CLASSES", "DataConfig", "DataConfigError", "DataSplits",
                     "DatasetNotFoundError", "describe_dataset", "load_data", "normalisation"),
                    "data"),
    **dict.fromkeys(("IMAGE_EXTENSIONS", "prepare_image"), "image_folder"),
    "DeviceLoader": "loader",
    # training
    **dict.fromkeys(("OPTIMIZERS", "uses_momentum"), "optim"),
    **dict.fromkeys(("DivergedError", "CheckpointError"), "errors"),
    "TrainConfig": "config",
    **dict.fromkeys(("TrainingRun", "evaluate_model", "fit"), "train"),
    "configs_from_options": "run_configs",
    **dict.fromkeys(("bf16_is_fast", "default_device", "trial_device", "GPU_FALLBACK_ENV"),
                    "hardware"),
    # checkpoints and serving
    **dict.fromkeys(("CHECKPOINT_FILE", "InputSpec", "data_config_from_dict", "input_spec",
                     "load_checkpoint", "model_from_checkpoint", "save_checkpoint"), "checkpoint"),
    "PixelClassifier": "serving",
    # starting from pretrained weights
    **dict.fromkeys(("IMAGENET_MEAN", "IMAGENET_STD", "InitWeightsError", "StartingWeights",
                     "TORCHVISION", "check_init", "read_init", "torchvision_file", "torchvision_name"),
                    "pretrained"),
    # config fields: the one definition that study files, flags and params derive from
    **dict.fromkeys(("ConfigValueError", "accepts", "allowed_text", "check_fields", "field_types",
                     "help_text", "option", "scalar_type", "searchable_fields", "value_problem"),
                    "config"),
}

__all__ = list(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'resnet_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"resnet_core.{module}"), name)
    globals()[name] = value  # the next lookup is a plain global
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

