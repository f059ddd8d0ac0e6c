"""What an autoscaling Ray cluster can grow to, read from the cluster a study joins.

Cloud clusters start with a head that offers no CPUs and zero workers: a study that
counted only the nodes alive when it joined would refuse every trial, and the
autoscaler, which adds nodes for resource requests it sees, would never see one. So a
study that joins a cluster asks first whether an autoscaler runs there and, where it
can, what it may add:

- An autoscaler that manages node types reports them (node id -> type name) in the GCS;
  a cluster without one reports only Ray's read-only placeholders (`node_<id>`).
- The node types and their `max_workers` are in the autoscaling config that the head's
  monitor process was started with (the launcher's `~/ray_bootstrap_config.yaml`,
  `ray start --autoscaling-config`). A zero-CPU task pinned to the head reads it. On
  KubeRay the config lives in the RayCluster resource instead: the autoscaler is then
  known to be there, its limits are not, and the study waits for the nodes it adds.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, replace

# The GCS keys under which the autoscaler's monitor publishes its status every few seconds
# (version 1), and that say version 2 runs instead.
AUTOSCALING_STATUS_KEY = "__autoscaling_status"
AUTOSCALER_V2_KEY = "__autoscaler_v2_enabled"
FIRST_REPORT_WAIT_S = 10.0  # the monitor reports every 5 s
# The custom resource Ray gives the head node alone.
HEAD_RESOURCE = "node:__internal_head__"
READ_CONFIG_TIMEOUT_S = 60  # a task on the head may first need a worker process started


@dataclass(frozen=True)
class NodeType:
    """A kind of node the autoscaler can start, and how many of them at most."""

    name: str
    resources: dict[str, float]
    max_workers: int


@dataclass(frozen=True)
class Autoscaler:
    """An autoscaler of the joined cluster; `node_types` is empty where its config is unknown."""

    node_types: tuple[NodeType, ...] = ()
    max_workers: int | None = None  # the cluster-wide cap on worker nodes, where known
    running: tuple[tuple[str, int], ...] = ()  # (type name, nodes of it running now)

    def can_add(self) -> list[dict[str, float]]:
        """One resource dict per worker node it may still add (those it runs already count
        against each type's and the cluster's cap), largest types first."""
        running = dict(self.running)
        nodes = [dict(t.resources) for t in sorted(self.node_types, key=_size, reverse=True)
                 for _ in range(max(0, t.max_workers - running.get(t.name, 0)))]
        if self.max_workers is None:
            return nodes
        workers = sum(n for name, n in self.running if name in {t.name for t in self.node_types})
        return nodes[:max(0, self.max_workers - workers)]


def _size(node_type: NodeType) -> tuple[float, float]:
    return node_type.resources.get("GPU", 0.0), node_type.resources.get("CPU", 0.0)


def find_autoscaler(wait_s: float = FIRST_REPORT_WAIT_S) -> Autoscaler | None:
    """The autoscaler of the cluster this process joined (ray.init done), or None.

    A head's monitor publishes its first status a few seconds after the head starts, so a
    study that joins a cluster just started waits up to `wait_s` for it. A monitor still
    starting on a busy head may take longer (a study refused "the cluster has 0 CPUs" on
    the 2-core test machine under load, 2026-12-04): without a status, the head is asked
    whether a monitor runs there with an autoscaling config."""
    if _kv_get(AUTOSCALER_V2_KEY) == b"1":  # v2 publishes no status there; it exists all the same
        return read_autoscaling_config()
    deadline = time.monotonic() + wait_s
    while (status := _autoscaling_status()) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if status is None:
        config = _config_on_head()  # no nodes of its own yet: the monitor has reported none
        return None if config is None else autoscaler_from_config(config)
    mapping = (status.get("autoscaler_report") or {}).get("node_type_mapping") or {}
    if not any(not name.startswith("node_") for name in mapping.values()):
        return None  # the read-only monitor of a fixed cluster names types after node ids
    running = Counter(mapping.values())
    return replace(read_autoscaling_config(), running=tuple(sorted(running.items())))


def _kv_get(key: str) -> bytes | None:
    from ray.experimental import internal_kv

    return internal_kv._internal_kv_get(key)


def _autoscaling_status() -> dict | None:
    raw = _kv_get(AUTOSCALING_STATUS_KEY)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def read_autoscaling_config() -> Autoscaler:
    """The node types of the config the head's autoscaler runs with (none where unreadable)."""
    return autoscaler_from_config(_config_on_head() or {})


def _config_on_head() -> dict | None:
    """The autoscaling config of the head's monitor; None where no monitor has one (or the
    head cannot run the task that reads it)."""
    import ray

    @ray.remote(num_cpus=0, resources={HEAD_RESOURCE: 0.001})
    def config_on_head() -> dict | None:
        return autoscaling_config_of_monitor()

    try:
        return ray.get(config_on_head.remote(), timeout=READ_CONFIG_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - a head that cannot run the task
        return None


def autoscaling_config_of_monitor() -> dict | None:
    """On the head: the YAML named by the monitor process's --autoscaling-config flag."""
    import os
    from pathlib import Path

    import yaml

    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any("autoscaler" in a and a.endswith("monitor.py") for a in args):
            continue
        for arg in args:
            if arg.startswith("--autoscaling-config="):
                path = os.path.expanduser(arg.split("=", 1)[1])
                try:
                    return yaml.safe_load(Path(path).read_text())
                except (OSError, yaml.YAMLError):
                    return None
    return None


def autoscaler_from_config(config: dict) -> Autoscaler:
    """Worker node types with the resources they declare. A type that declares none (the
    launcher fills them in from the instance type) makes every limit unknown."""
    head = config.get("head_node_type")
    types = []
    for name, spec in (config.get("available_node_types") or {}).items():
        resources = {k: float(v) for k, v in (spec.get("resources") or {}).items()
                     if isinstance(v, (int, float))}
        max_workers = int(spec.get("max_workers", config.get("max_workers", 0)) or 0)
        if name == head or max_workers <= 0:
            continue
        if not resources:
            return Autoscaler()  # one type of unknown size: what it can run is unknown
        types.append(NodeType(name, resources, max_workers))
    cap = config.get("max_workers")
    return Autoscaler(tuple(types), int(cap) if isinstance(cap, int) else None)
