"""What an autoscaler can add, read from the deployment files users start clusters with."""

from __future__ import annotations

from dataclasses import replace

import yaml
from common import ROOT

from search.study.autoscaling import autoscaler_from_config


def _launcher(name: str) -> dict:
    return yaml.safe_load((ROOT / "cluster" / name).read_text())


def test_the_launcher_files_give_their_gpu_workers_and_caps():
    for name in ("aws.yaml", "gcp.yaml"):
        config = _launcher(name)
        autoscaler = autoscaler_from_config(config)
        head = config["head_node_type"]
        workers = {n: t for n, t in config["available_node_types"].items() if n != head}
        assert {t.name for t in autoscaler.node_types} == set(workers), name
        added = autoscaler.can_add()
        assert len(added) == min(config["max_workers"],
                                 sum(t["max_workers"] for t in workers.values())), name
        assert all(node.get("GPU", 0) >= 1 for node in added), name


def test_nodes_running_count_against_each_cap():
    config = {"max_workers": 3, "head_node_type": "head",
              "available_node_types": {
                  "head": {"resources": {"CPU": 0}, "max_workers": 0},
                  "gpu": {"resources": {"CPU": 8, "GPU": 1}, "max_workers": 2},
                  "cpu": {"resources": {"CPU": 4}, "max_workers": 4}}}
    autoscaler = autoscaler_from_config(config)
    # The largest first, and no more than the cluster's cap of 3 workers.
    assert autoscaler.can_add() == [{"CPU": 8, "GPU": 1}] * 2 + [{"CPU": 4}]
    one_gpu_running = replace(autoscaler, running=(("gpu", 1), ("head", 1)))
    assert one_gpu_running.can_add() == [{"CPU": 8, "GPU": 1}, {"CPU": 4}]


def test_a_worker_type_of_unknown_size_leaves_the_limits_unknown():
    """The launcher fills in an instance type's resources when the file gives none: what
    the cluster can grow to is then unknown, and the study waits rather than refuses."""
    config = {"max_workers": 2, "head_node_type": "head",
              "available_node_types": {"head": {"resources": {"CPU": 0}},
                                       "gpu": {"node_config": {}, "max_workers": 2}}}
    assert autoscaler_from_config(config).node_types == ()
    assert autoscaler_from_config({}).node_types == ()
