"""How a DDP trial's resources are split among its workers (pure arithmetic, no Ray).

`cpus_per_trial` and `gpus_per_trial` are what one trial uses in total. The
trial's own process only drives the Ray Train run and holds `DDP_DRIVER_CPU`;
the W workers share the rest evenly, so a trial reserves exactly
`cpus_per_trial` (two trials of `cpus_per_trial = 1` fill two cores).
"""

from __future__ import annotations

import math

# The trial's own process only launches the DDP workers: it needs (almost) nothing,
# but Tune refuses an empty request ("empty head and zero worker bundles").
DDP_DRIVER_CPU = 0.01
# Ray's resource granularity: requests are rounded to 4 decimal places.
RESOURCE_DIGITS = 4


def torch_threads(cpus_per_worker: float) -> int:
    return max(1, int(cpus_per_worker))


def reserved_cpus_per_worker(cpus_per_worker: float, workers: int) -> float:
    """What each worker reserves: its share less its part of the trial driver's sliver.

    Rounded down to Ray's resource granularity so that sums never overshoot.
    """
    share = cpus_per_worker - DDP_DRIVER_CPU / workers
    scale = 10**RESOURCE_DIGITS
    return max(math.floor(share * scale) / scale, 1 / scale)


def backend_for(gpus_per_worker: float) -> str:
    """NCCL needs one whole GPU per rank; gloo runs everywhere (CPU, shared GPUs)."""
    return "nccl" if gpus_per_worker >= 1 else "gloo"
