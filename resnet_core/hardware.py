"""What the hardware runs fast: the device to train on and whether bf16 pays."""

from __future__ import annotations

import functools
import os
import random

import numpy as np
import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 or AMX: the CPUs where bf16 autocast about doubles conv speed."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def bf16_is_fast(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# The oldest NVIDIA driver branch that runs each CUDA major release of the torch wheels
# (NVIDIA's CUDA release notes, "CUDA Toolkit and Corresponding Driver Versions"):
# CUDA 12.x needs R525+, CUDA 13.x needs R580+. cluster/README.md and the launcher's
# driver check say the same to the user.
MIN_DRIVER_FOR_CUDA = {12: 525, 13: 580}


def min_driver_branch(cuda_version: str | None = None) -> int | None:
    """The oldest driver branch that runs this torch build's CUDA (None: a CPU build)."""
    cuda_version = torch.version.cuda if cuda_version is None else cuda_version
    if not cuda_version:
        return None
    return MIN_DRIVER_FOR_CUDA.get(int(cuda_version.split(".")[0]))


class GpuUnusableError(RuntimeError):
    """A trial was given GPUs that torch cannot use (its message is one line)."""


def _cuda_init_error() -> str:
    """Why torch cannot initialise CUDA, as torch says it (first line only)."""
    try:
        torch.cuda.init()
    except Exception as error:  # torch raises RuntimeError/AssertionError by cause
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return "torch sees fewer CUDA devices than were assigned"


# Set to "cpu" to train on the CPU when the GPUs Ray assigned are logical only (e.g. a
# CPU-only cluster started with --num-gpus to try out GPU packing); never set in production.
GPU_FALLBACK_ENV = "RESNET_SEARCH_GPU_FALLBACK"


def trial_device(
    assigned_gpu_ids: list | tuple,
    cuda_available: bool | None = None,
    device_count: int | None = None,
) -> str:
    """The device a trial trains on: "cuda" or "cpu".

    A trial that was given GPUs (Ray's `get_gpu_ids()`) must train on them: when torch
    cannot use them (no driver, a driver too old for this CUDA build, a CPU-only
    wheel) this raises GpuUnusableError with one line that names the cause, instead
    of training for hours on the CPU. Without assigned GPUs the old rule holds: CUDA
    when torch sees it, else the CPU. `cuda_available` and `device_count` default to
    what torch reports (they are parameters so that the rule is testable anywhere).
    """
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if not assigned_gpu_ids:
        return "cuda" if cuda_available else "cpu"
    if device_count is None:
        device_count = torch.cuda.device_count() if cuda_available else 0
    if cuda_available and device_count >= len(assigned_gpu_ids):
        return "cuda"
    if os.environ.get(GPU_FALLBACK_ENV) == "cpu":
        return "cpu"  # logical GPUs on purpose (packing simulated on a CPU-only cluster)
    ids = ",".join(str(g) for g in assigned_gpu_ids)
    build = f"torch {torch.__version__}"
    if torch.version.cuda:
        need = min_driver_branch()
        build += f" (CUDA {torch.version.cuda} build; needs NVIDIA driver R{need} or newer)"
    else:
        build += " (a CPU-only build)"
    reason = _cuda_init_error() if not cuda_available else (
        f"torch sees {device_count} CUDA device(s)")
    raise GpuUnusableError(
        f"this trial was given GPU(s) {ids} but {build} cannot use them: {reason} "
        "(see 'GPU driver' in cluster/README.md)"
    )
