"""The Ray a study runs on: joining a cluster or starting a private one, and what it can run.

Every check here fails before a trial starts, with one line naming the setting to change.
"""

from __future__ import annotations

import os
import threading

from resnet_core import GPU_FALLBACK_ENV
from search.study.autoscaling import Autoscaler, find_autoscaler
from search.study.ray_token import ensure_token, token_available
from search.studyfile.config import ConfigError, StudyConfig
from search.telemetry import telemetry_switches, turn_off_usage_reports

RAY_CONNECT_TIMEOUT_S = 5.0  # a live GCS answers a TCP connect at once; ray.init retries for minutes

# Ray starts a worker process per CPU when the first driver connects, for tasks without a
# runtime environment. A study runs none: Tune gives every trial actor its own runtime
# environment, so each trial starts its own process and the prestarted ones only take CPU
# (Python and Ray imports, ~1.5 s each) from the trials' start-up, then exit unused.
PRIVATE_RAY_CONFIG = {"prestart_worker_first_driver": False}

_stopping: threading.Thread | None = None  # a shutdown that stop_ray_in_background began


def use_the_token_found_here() -> None:
    """RAY_AUTH_MODE=token when it is unset and this machine holds a Ray token.

    Ray joins an explicit address without authentication unless told, and a cluster with
    token authentication (every cluster of cluster/) then refuses the driver for ~20 s and
    ends in "cannot connect". A token also works against a cluster without authentication,
    and for a private Ray it is Ray's own default, said explicitly (so no warning). A user's
    RAY_AUTH_MODE wins. Ray reads the mode once, when imported: call this before.
    """
    if "RAY_AUTH_MODE" not in os.environ and token_available():
        os.environ["RAY_AUTH_MODE"] = "token"


def check_ray_reachable(address: str, source: str) -> None:
    """Fail in seconds, naming the address, when nothing listens at a host:port Ray address."""
    import socket

    target = address.removeprefix("ray://")
    if address in ("auto", "local") or ":" not in target:
        return  # resolved by Ray itself (a local cluster's address file)
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=RAY_CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as error:
        raise ConfigError(f"{source} {address}: no Ray cluster answers there "
                          f"({type(error).__name__}: {error}); start one (`ray start --head`, "
                          f"`cluster/local.sh up 2`) or fix the address") from None


def start_ray(address: str | None) -> None:
    """Join --address / $RAY_ADDRESS, or start a private local Ray (dashboard on localhost)."""
    import ray

    source = "--address" if address else "$RAY_ADDRESS"
    address = ray_address(address)
    finish_stopping_ray()  # an earlier study's Ray (in-process callers) is gone first
    if ray.is_initialized():
        return
    turn_off_usage_reports()  # a private Ray reads it at start; Python callers skip main()
    # The trials' environment on a cluster is the cluster's: they get the switches too.
    runtime_env = {"env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning",
                                **telemetry_switches()}}
    if os.environ.get(GPU_FALLBACK_ENV):  # the trials decide their device: tell them
        runtime_env["env_vars"][GPU_FALLBACK_ENV] = os.environ[GPU_FALLBACK_ENV]
    if address:
        check_ray_reachable(address, source)
        try:
            ray.init(address=address, log_to_driver=False, runtime_env=runtime_env,
                     logging_level="WARNING" if os.environ.get("RESNET_SEARCH_QUIET") else "INFO")
        except ConnectionError as error:
            raise ConfigError(f"{source} {address}: cannot connect to a Ray cluster "
                              f"({str(error).splitlines()[0]}){_token_hint()}") from None
    else:
        # The dashboard has no authentication: localhost unless the user opens it up.
        dashboard_host = os.environ.get("RESNET_SEARCH_DASHBOARD_HOST", "127.0.0.1")
        if os.environ.get("RAY_AUTH_MODE", "token").lower() == "token":
            try:
                ensure_token()  # else Ray makes it, racing another study that starts now
            except OSError:
                pass  # a home it cannot write to: Ray tries, and says what is wrong
        # address="local": always a Ray of its own. Without it, ray.init() attaches to
        # whatever cluster /tmp/ray/ray_current_cluster names, a stale one included.
        ray.init(address="local", dashboard_host=dashboard_host, log_to_driver=False,
                 runtime_env=runtime_env,
                 configure_logging=True, logging_level="WARNING",
                 _system_config=PRIVATE_RAY_CONFIG)


def _token_hint() -> str:
    """Why a live cluster may refuse this driver: token authentication it was not set up for."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode == "token":
        return ""
    if mode:
        return (f"; RAY_AUTH_MODE={mode}: a cluster with token authentication refuses such a "
                f"driver")
    return ("; if the cluster uses token authentication, put its token in ~/.ray/auth_token "
            "(or RAY_AUTH_TOKEN)")


def stop_ray_in_background() -> None:
    """Stop Ray (or leave the cluster) in a thread: a study needs it no more once its trials
    are done. A private Ray's shutdown stops its processes one after another, 1-2 s measured
    (benchmarks/RESULTS.md), which overlaps the champion's export and the report instead of
    following them. The process waits for it before exiting (an exit handler), as does the
    next `start_ray`.

    Called explicitly, `ray.shutdown` also skips the 0.5 s that Ray's own exit handler sleeps
    to let log lines print: the trials' logs go to files here, not to the driver.
    """
    global _stopping
    import atexit

    import ray

    if not ray.is_initialized() or _stopping is not None:
        return
    _stopping = threading.Thread(target=ray.shutdown, name="resnet-search-ray-shutdown")
    _stopping.start()
    # Registered after Ray's own exit handler, so it runs before it (last in, first out).
    atexit.register(finish_stopping_ray)


def finish_stopping_ray() -> None:
    """Wait for a shutdown begun by stop_ray_in_background, if any."""
    global _stopping
    if _stopping is not None:
        _stopping.join()
        _stopping = None


def check_resources(config: StudyConfig, nodes: list[dict[str, float]] | None = None,
                    where: str = "the Ray cluster", autoscaler: Autoscaler | None = None) -> None:
    """Resources a trial needs must exist somewhere, now or once the autoscaler has added
    the nodes it may: an error now, never a study that waits for nodes that cannot come.

    `nodes`: each node's resources ({"CPU": .., "GPU": ..}); by default the running Ray's.
    An autoscaler whose limits are unknown (KubeRay) and `wait_for_autoscaler = true` on a
    cluster without one are taken on trust: the trials wait for nodes.
    """
    from search.study.resources import trial_resources

    if autoscaler is not None and not autoscaler.node_types:
        return
    if autoscaler is None and config.resources.wait_for_autoscaler:
        return
    if nodes is None:
        import ray

        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    added = autoscaler.can_add() if autoscaler is not None else []
    need = trial_resources(config)
    total_cpu, total_gpu = (sum(n.get(r, 0) for n in nodes + added) for r in ("CPU", "GPU"))
    max_node_cpu = max((n.get("CPU", 0) for n in nodes + added), default=0)
    max_node_gpu = max((n.get("GPU", 0) for n in nodes + added), default=0)
    if autoscaler is None:
        has = f"{where} has"
        grow_hint = " (set wait_for_autoscaler = true to wait for nodes added later)"
    else:
        has = f"{where}, with the {len(added)} more node(s) its autoscaler may add, has at most"
        grow_hint = ""
    if need.total_cpu > total_cpu + 1e-9:
        raise ConfigError(f"[resources] a trial needs {need.total_cpu:g} CPUs but {has} "
                          f"{total_cpu:g}; lower cpus_per_trial/workers_per_trial or add nodes"
                          f"{grow_hint}")
    if need.per_bundle_cpu > max_node_cpu + 1e-9:
        raise ConfigError(f"[resources] cpus_per_trial needs {need.per_bundle_cpu:g} CPUs on one "
                          f"node but the largest node {'it can have ' if added else ''}has "
                          f"{max_node_cpu:g}")
    if need.total_gpu > total_gpu + 1e-9 or need.per_bundle_gpu > max_node_gpu + 1e-9:
        raise ConfigError(f"[resources] gpus_per_trial={config.resources.gpus_per_trial} needs "
                          f"{need.total_gpu:g} GPUs but {has} {total_gpu:g}; use "
                          f"gpus_per_trial = 0 on CPU-only machines")


def joined_autoscaler(config: StudyConfig, address: str | None) -> Autoscaler | None:
    """The autoscaler of the cluster the study joined, unless the study said not to wait
    for one (`wait_for_autoscaler = false`); a private Ray has none."""
    if not ray_address(address) or config.resources.wait_for_autoscaler is False:
        return None
    return find_autoscaler()


def ray_address(address: str | None) -> str | None:
    """The Ray a study joins: --address, else $RAY_ADDRESS; None starts a private one."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_resources_before_start(config: StudyConfig, address: str | None) -> None:
    """A private Ray would have this machine's CPUs and GPUs: check them before starting it,
    so a study it cannot run is refused with nothing started (a cluster is checked once
    joined). Never stricter than Ray: it counts no more CPUs than the OS reports."""
    if ray_address(address):
        return
    import torch

    check_resources(config, [{"CPU": float(os.cpu_count() or 1),
                              "GPU": float(torch.cuda.device_count())}], where="this machine")


def check_storage_shared(storage_path: str, image_cache: str | None = None) -> None:
    """On a multi-node cluster a local results folder, and a folder dataset's decode cache
    (built by the driver, read by every trial), must be visible to every node."""
    import ray

    from search.study.resources import nodes_missing, storage_visible_on_all_nodes

    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) <= 1:
        return
    missing = [] if "://" in storage_path else storage_visible_on_all_nodes(storage_path)
    if missing:
        raise ConfigError(f"[storage] path {storage_path} is not shared: node(s) "
                          f"{', '.join(missing)} cannot see it; use a shared file system (NFS) "
                          f"or an object store URI (s3://, gs://) visible to all nodes")
    missing = nodes_missing(image_cache) if image_cache else []
    if missing:
        raise ConfigError(f"the image cache {image_cache} is not shared: node(s) "
                          f"{', '.join(missing)} cannot see it; put [storage] path (or "
                          f"[data] cache_dir) on a file system all nodes mount")


def concurrent_trial_capacity(config: StudyConfig, autoscaler: Autoscaler | None = None) -> int:
    """How many trials the cluster's CPUs and GPUs can run side by side, counting the nodes
    the autoscaler may add: Tune keeps this many trials pending, and each pending trial's
    resource request is what makes the autoscaler add a node. An autoscaler of unknown
    limits gets as many as the study may run at once."""
    import math

    import ray

    from search.study.resources import trial_resources

    need = trial_resources(config)
    limits = [config.study.num_samples]
    if config.study.max_concurrent_trials:
        limits.append(config.study.max_concurrent_trials)
    if autoscaler is not None and not autoscaler.node_types:
        return max(1, min(limits))
    available = dict(ray.cluster_resources())
    for node in autoscaler.can_add() if autoscaler is not None else []:
        for resource, amount in node.items():
            available[resource] = available.get(resource, 0) + amount
    if need.total_cpu:
        limits.append(math.floor(available.get("CPU", 0) / need.total_cpu + 1e-9))
    if need.total_gpu:
        limits.append(math.floor(available.get("GPU", 0) / need.total_gpu + 1e-9))
    return max(1, min(limits))
