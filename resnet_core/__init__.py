"""resnet_core: residual networks for small images, and how to train them (plain PyTorch).

`__all__` is the public API: `search` (and any other user) imports only these names.
"""

from resnet_core.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    data_config_from_dict,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from resnet_core.config import (
    FAMILIES,
    ConfigValueError,
    ModelConfig,
    TrainConfig,
    accepts,
    allowed_text,
    check_fields,
    default_block,
    field_types,
    help_text,
    is_valid_depth,
    option,
    scalar_type,
    searchable_fields,
    value_problem,
)
from resnet_core.data import (
    DATASETS,
    NUM_CLASSES,
    DataConfig,
    DataConfigError,
    DatasetNotFoundError,
    DataSplits,
    load_data,
)
from resnet_core.hardware import GPU_FALLBACK_ENV, bf16_is_fast, default_device, trial_device
from resnet_core.loader import DeviceLoader
from resnet_core.models import (
    architecture_cost,
    build_model,
    count_flops,
    count_parameters,
    list_models,
    parse_model_name,
)
from resnet_core.optim import OPTIMIZERS, uses_momentum
from resnet_core.serving import PixelClassifier
from resnet_core.train import DivergedError, TrainingRun, evaluate_model, fit

__all__ = [
    # models
    "FAMILIES", "ModelConfig", "architecture_cost", "build_model", "count_flops", "count_parameters",
    "default_block", "is_valid_depth", "list_models", "parse_model_name",
    # data
    "DATASETS", "NUM_CLASSES", "DataConfig", "DataConfigError", "DataSplits", "DatasetNotFoundError",
    "DeviceLoader", "load_data",
    # training
    "OPTIMIZERS", "DivergedError", "TrainConfig", "TrainingRun", "evaluate_model", "fit",
    "uses_momentum", "bf16_is_fast", "default_device", "trial_device", "GPU_FALLBACK_ENV",
    # checkpoints and serving
    "CHECKPOINT_FILE", "CheckpointError", "data_config_from_dict", "load_checkpoint",
    "model_from_checkpoint", "save_checkpoint", "PixelClassifier",
    # config fields: the one definition that study files, flags and params derive from
    "ConfigValueError", "accepts", "allowed_text", "check_fields", "field_types", "help_text",
    "option", "scalar_type", "searchable_fields", "value_problem",
]
