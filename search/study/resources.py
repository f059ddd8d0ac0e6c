"""Per-trial resources: CPUs, fractional GPUs, or several DDP workers.

`cpus_per_trial` and `gpus_per_trial` are what one trial uses in total. A
DDP trial (`workers_per_trial > 1`) splits them evenly among its workers, so
the quickstart with `workers_per_trial = 2` and `cpus_per_trial = 1` runs two
workers of half a CPU each on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.studyfile.config import StudyConfig
from search.trial.ddp_resources import DDP_DRIVER_CPU

# A probe task needs a fresh worker process on each node: Ray's default limit for
# starting one (worker_register_timeout_seconds) is 60 s.
STORAGE_PROBE_TIMEOUT_S = 60


@dataclass(frozen=True)
class TrialNeed:
    total_cpu: float
    total_gpu: float
    per_bundle_cpu: float  # the largest share that must fit on one node
    per_bundle_gpu: float
    workers: int


def gpus_per_trial(config: StudyConfig) -> float:
    gpus = config.resources.gpus_per_trial
    if gpus == "auto":
        from search.study.gpu_packing import auto_gpus_per_trial

        return auto_gpus_per_trial(config)
    return float(gpus)


def trial_resources(config: StudyConfig) -> TrialNeed:
    workers = config.resources.workers_per_trial
    cpus = config.resources.cpus_per_trial
    gpus = gpus_per_trial(config)
    if workers == 1:
        return TrialNeed(cpus, gpus, cpus, gpus, 1)
    # The driver's sliver comes out of the workers' share (search.trial.ddp_resources).
    return TrialNeed(cpus, gpus, cpus / workers, gpus / workers, workers)


def wrap_trainable(config: StudyConfig):
    """The trainable with its resource request attached."""
    from ray import tune

    need = trial_resources(config)
    if need.workers == 1:
        from search.trial.trainable import train_trial

        if config.resources.gpus_per_trial == "auto" and need.total_gpu:
            from search.study.gpu_packing import AutoGpuResources

            # Each trial gets the GPU share that its own sampled network needs.
            return tune.with_resources(train_trial, AutoGpuResources(need.total_cpu,
                                                                     config.data.dataset))
        resources = {"cpu": need.total_cpu}
        if need.total_gpu:
            resources["gpu"] = need.total_gpu
        return tune.with_resources(train_trial, resources)
    from search.trial.distributed import train_distributed_trial

    return tune.with_resources(train_distributed_trial, {"cpu": DDP_DRIVER_CPU})


def storage_visible_on_all_nodes(storage_path: str) -> list[str]:
    """Write a marker from the driver and look for it on every node; return nodes that miss it."""
    import os
    import uuid

    os.makedirs(storage_path, exist_ok=True)
    marker = os.path.join(storage_path, f".resnet-search-probe-{uuid.uuid4().hex}")
    with open(marker, "w") as handle:
        handle.write("probe\n")
    try:
        return nodes_missing(marker)
    finally:
        os.remove(marker)


def nodes_missing(path: str) -> list[str]:
    """The alive nodes on which `path` does not exist (a task pinned to each node looks), as
    "NODEID (ADDRESS)"."""
    import os

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return os.path.exists(path)

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    checks = {
        n["NodeID"][:12] + f" ({n.get('NodeManagerAddress', '?')})": sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(path)
        for n in nodes
    }
    return [name for name, ref in checks.items()
            if not ray.get(ref, timeout=STORAGE_PROBE_TIMEOUT_S)]
