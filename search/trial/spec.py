"""What one trial trains: its network, data, recipe, seed and resources, as one typed object.

The searcher builds a `TrialSpec` once from what Optuna samples (`search.space.sampler`),
and the trainable, the DDP workers, the GPU packer and the tracking callback read it by
attribute. Ray Tune carries a trial's config as a plain dict (saved with the experiment,
so it must stay JSON and pickle friendly, and a resumed study hands back the dict it
saved): `to_tune` and `from_tune` are the one conversion each way, and no other module
reads that dict by key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from resnet_core import DataConfig, ModelConfig, TrainConfig, searchable_fields

# The network's fields a trial's dict (and its MLflow params) carries: the searchable ones.
# `num_classes` and `in_channels` come from the data when the run is built.
MODEL_KEYS = tuple(spec.name for spec in searchable_fields(ModelConfig))

# Columns of Tune's live trial table: paths into the dict `to_tune` writes -> headers.
PROGRESS_COLUMNS = {"network": "network", "model/dropout": "dropout",
                    "train/optimizer": "optimizer", "train/lr": "lr"}


@dataclass(frozen=True)
class TrialResources:
    """How a trial's CPUs and GPUs are split among its DDP workers (one worker: all of them)."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.workers < 1 or self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ValueError(f"invalid trial resources {self}: a trial needs workers >= 1, "
                             f"cpus_per_worker > 0 and gpus_per_worker >= 0")


@dataclass(frozen=True)
class TrialSpec:
    """One trial: the network, the data, the recipe (its `seed` included), and the resources.

    Args:
        model: the sampled network.
        train: the recipe, with the trial's own seed.
        data: the study's data, with the study's split seed.
        resources: the DDP split of the trial's CPUs and GPUs.
        number: Optuna's trial number (-1 outside a searcher).
        cost: `params` and `flops` of the network, known before training.
        constraints: the study's [constraints] limits, keyed by cost (`latency_ms`).
        measure_latency: time the forward pass (the study limits or optimises latency).
    """

    model: ModelConfig
    train: TrainConfig
    data: DataConfig = field(default_factory=DataConfig)
    resources: TrialResources = field(default_factory=TrialResources)
    number: int = -1
    cost: Mapping[str, int] = field(default_factory=dict)
    constraints: Mapping[str, float] = field(default_factory=dict)
    measure_latency: bool = True

    @property
    def seed(self) -> int:
        """The seed of initialisation, shuffling and augmentation."""
        return self.train.seed

    @property
    def network(self) -> str:
        """The network's registry name, as `models` lists it."""
        return self.model.name

    def model_values(self) -> dict[str, Any]:
        """The network's searchable fields as plain data (what MLflow logs as `model.*`)."""
        values = self.model.to_dict()
        return {key: values[key] for key in MODEL_KEYS}

    def train_values(self) -> dict[str, Any]:
        return _plain(asdict(self.train))

    def data_values(self) -> dict[str, Any]:
        return _plain(asdict(self.data))

    def to_tune(self) -> dict[str, Any]:
        """The dict Tune carries: plain data (lists, not tuples: JSON, MLflow, Ray)."""
        return {"model": self.model_values(), "network": self.network,
                "train": self.train_values(), "data": self.data_values(),
                "cost": dict(self.cost), "constraints": dict(self.constraints),
                "measure_latency": self.measure_latency, "optuna_trial_number": self.number,
                "resources": asdict(self.resources)}

    @classmethod
    def from_tune(cls, config: Mapping[str, Any]) -> TrialSpec:
        """The spec of Tune's dict: one `to_tune` wrote, or one a resumed study saved.

        The searcher's flat Optuna parameters (`lr`, `depth.resnet`) beside it are Tune's
        and Optuna's; the spec holds their resolved values already.
        """
        return cls(
            model=ModelConfig(**config["model"]), train=TrainConfig(**config.get("train", {})),
            data=DataConfig(**config.get("data", {})),
            resources=TrialResources(**config.get("resources") or {}),
            number=int(config.get("optuna_trial_number", -1)),
            cost=dict(config.get("cost") or {}), constraints=dict(config.get("constraints") or {}),
            measure_latency=bool(config.get("measure_latency", True)))


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}
