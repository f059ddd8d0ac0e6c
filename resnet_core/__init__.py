"""resnet_core: residual networks for small images, and how to train them (plain PyTorch)."""

from resnet_core.config import ModelConfig
from resnet_core.data import DataConfig, DatasetNotFoundError, DataSplits, load_data
from resnet_core.models import build_model, count_flops, count_parameters, list_models
from resnet_core.train import DivergedError, TrainConfig, TrainingRun, fit

__all__ = [
    "DataConfig",
    "DataSplits",
    "DatasetNotFoundError",
    "DivergedError",
    "ModelConfig",
    "TrainConfig",
    "TrainingRun",
    "build_model",
    "count_flops",
    "count_parameters",
    "fit",
    "list_models",
    "load_data",
]
