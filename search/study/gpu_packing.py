"""`gpus_per_trial = "auto"`: estimate a trial's GPU memory and pack trials onto GPUs.

The estimate adds up what training keeps on the device:

    parameters + gradients            4 + 4 bytes per parameter (fp32 master weights)
    optimizer state                   4 bytes per parameter and state tensor
                                      (momentum: 1, Adam/AdamW: 2, Adagrad: 1, RMSprop: 1-2)
    activations kept for backward     per image: every conv and BN output, and the ReLU
                                      output after each BN, at 2 bytes (bf16) or 4 (fp32),
                                      plus BACKWARD_BUFFERS for the gradients in flight
    the dataset                       uint8 images, resident on the device (fast loader)
    CUDA context and workspace        a fixed allowance (CUDA_OVERHEAD_BYTES)

Activations dominate for the CIFAR networks (WRN-28-10 at batch 128 in bf16:
about 5 GB), so the estimate is mostly a count of activation elements, taken
with forward hooks on a one-image probe. tests/search/study/test_gpu_packing.py checks
it against the peak memory that a real training step reaches on this CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from resnet_core import DataConfig, ModelConfig, build_model
from search.trial.spec import TrialSpec

CUDA_OVERHEAD_BYTES = 600 * 2**20  # context, cuDNN/cuBLAS workspaces, allocator slack
SAFETY = 0.85  # use at most this share of a GPU's memory
# Gradients of activations exist while backward runs: measured on CPU (fp32, batch 64-256,
# WRN-16-2/4, ResNet-20) the peak is about 1.3x the saved activations.
BACKWARD_BUFFERS = 1.3
MAX_TRIALS_PER_GPU = 8  # beyond this, trials mostly wait for each other's kernels
DEFAULT_GPU_MEMORY_BYTES = 16 * 2**30
OPTIMIZER_STATES = {"sgd": 1, "nesterov": 1, "adam": 2, "adamw": 2, "adagrad": 1, "rmsprop": 2}
DATASET_IMAGES = {"digits": 1797, "cifar10": 60000, "cifar100": 60000, "svhn": 99289}


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int  # bytes of weights + gradients
    optimizer: int
    activations: int
    data: int
    overhead: int

    @property
    def training(self) -> int:
        """What one training step adds on top of the weights and data (no CUDA overhead)."""
        return self.parameters // 2 + self.optimizer + self.activations

    @property
    def total(self) -> int:
        return self.parameters + self.optimizer + self.activations + self.data + self.overhead


def activation_elements_per_image(model: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """Elements that autograd keeps per image: conv and BN outputs, plus ReLU after BN."""
    total = 0

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        per_image = output[0].numel()
        # A BN output feeds a ReLU whose output is saved too.
        total += per_image * (2 if isinstance(module, nn.BatchNorm2d) else 1)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Dropout))]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *image_shape))
    finally:
        for handle in handles:
            handle.remove()
    return total


def estimate_training_memory(
    model_config: ModelConfig,
    batch_size: int,
    image_shape: tuple[int, int, int],
    *,
    optimizer: str = "sgd",
    amp: bool = True,
    dataset_images: int = 0,
    overhead: int = CUDA_OVERHEAD_BYTES,
) -> MemoryEstimate:
    model = build_model(model_config.replace(in_channels=image_shape[0]))
    params = sum(p.numel() for p in model.parameters())
    bytes_per_activation = 2 if amp else 4
    activations = activation_elements_per_image(model, image_shape) * batch_size
    return MemoryEstimate(
        parameters=params * 8,
        optimizer=params * 4 * OPTIMIZER_STATES.get(optimizer, 2),
        activations=int(activations * bytes_per_activation * BACKWARD_BUFFERS),
        data=dataset_images * math.prod(image_shape),
        overhead=overhead,
    )


def gpu_fraction(bytes_needed: int, gpu_bytes: int) -> float:
    """The smallest share 1/n of a GPU that holds the trial (n <= MAX_TRIALS_PER_GPU)."""
    usable = gpu_bytes * SAFETY
    if bytes_needed > usable:
        return 1.0  # a whole GPU; a larger model needs DDP workers or a larger GPU
    per_gpu = min(MAX_TRIALS_PER_GPU, int(usable // bytes_needed))
    return 1.0 / max(1, per_gpu)


def gpu_memory_bytes() -> int:
    """Memory of the GPUs trials will use: this machine's GPU, else a conservative default."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory
    return DEFAULT_GPU_MEMORY_BYTES


class AutoGpuResources:
    """Tune resource function: each trial gets the GPU share its own sampled network needs."""

    def __init__(self, cpus: float, dataset: str, gpu_bytes: int | None = None) -> None:
        self.cpus = cpus
        self.dataset = dataset
        self.gpu_bytes = gpu_bytes or gpu_memory_bytes()

    def fraction_for(self, trial_config: dict) -> float:
        """The share of a GPU for the trial Tune is about to start (`TrialSpec.to_tune`)."""
        spec = TrialSpec.from_tune(trial_config)
        estimate = estimate_training_memory(
            spec.model, spec.train.batch_size, DataConfig(self.dataset).image_shape,
            optimizer=spec.train.optimizer, amp=spec.train.amp is not False,
            dataset_images=DATASET_IMAGES.get(self.dataset, 0),
        )
        return gpu_fraction(estimate.total, self.gpu_bytes)

    def __call__(self, trial_config: dict) -> dict[str, float]:
        return {"cpu": self.cpus, "gpu": self.fraction_for(trial_config)}


def cluster_has_gpus() -> bool:
    import ray

    return bool(ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0)


def auto_gpus_per_trial(config) -> float:
    """The most any trial may ask for: a whole GPU, or none on a cluster without GPUs."""
    return 1.0 if cluster_has_gpus() else 0.0
