"""A study on a real multi-node Ray cluster on this machine (cluster/local.sh)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cost_aware import assert_pareto_front_recorded_and_shown, pareto_study
from local_cluster import LocalCluster, multinode_study

from search.tracking import tags

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_storage_that_the_nodes_do_not_share_is_a_clear_error(studies, tmp_path):
    storage = tmp_path / "not-shared"
    storage.mkdir()
    path = studies.write("unshared", multinode_study(name="unshared", samples=2, cpus=1, gpus=0,
                                                  storage=storage))
    with LocalCluster(tmp_path / "cluster", workers=1,
                      WORKER_PRIVATE_DIR=str(storage)) as address:
        result = studies.cli("run", str(path), "--address", address,
                             env={"RAY_AUTH_MODE": "token"})
    assert result.returncode == 2, result.stderr[-3000:]
    line = [x for x in result.stderr.splitlines() if x.startswith("resnet-search")]
    assert len(line) == 1
    assert f"[storage] path {storage} is not shared: node(s)" in line[0]
    assert "shared file system" in line[0]
    assert not studies.trial_runs("unshared")  # nothing started


def test_fractional_gpus_pack_four_trials_on_one_gpu(studies, tmp_path):
    # A head with 2 CPUs and 1 (logical) GPU: 0.25 GPU + 0.5 CPU per trial runs 4 at once.
    path = studies.write("packed", multinode_study(name="packed", samples=4, cpus=0.5, gpus=0.25,
                                                storage=tmp_path / "results"))
    with LocalCluster(tmp_path / "cluster", workers=0, CPUS_PER_NODE="2",
                      GPUS_PER_NODE="1") as address:
        # Joined, the cluster's own resources count (2 CPUs here, whatever this machine has).
        big = studies.write("big", multinode_study(name="big", samples=1, cpus=3, gpus=0,
                                                  storage=tmp_path / "results"))
        refused = studies.cli("run", str(big), "--address", address, env={"RAY_AUTH_MODE": "token"})
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "a trial needs 3 CPUs but the Ray cluster has 2" in refused.stderr
        # Without the CPU fallback, a trial given a GPU that torch cannot use fails (a GPU
        # node whose driver is too old): a study whose every trial failed says the first
        # trial's error in one line.
        # max_failures = 0: the error repeats on every retry (4 attempts by default).
        unusable = studies.write("unusable", multinode_study(
            name="unusable", samples=1, cpus=0.5, gpus=0.25, storage=tmp_path / "results",
            max_failures=0))
        failed = studies.cli("run", str(unusable), "--address", address,
                             env={"RAY_AUTH_MODE": "token"})
        # The GPU is logical (this machine has none): its trials train on the CPU.
        result = studies.cli("run", str(path), "--address", address,
                             env={"RAY_AUTH_MODE": "token", "RESNET_SEARCH_GPU_FALLBACK": "cpu"})
    assert failed.returncode == 1, failed.stderr[-3000:]
    said = [line for line in failed.stderr.splitlines() if line.startswith("resnet-search")]
    assert len(said) == 1 and "unexpected error" not in said[0], failed.stderr[-3000:]
    assert said[0].startswith("resnet-search: study unusable failed: no trial finished (1 failed); "
                              "the first trial error: "), said[0]
    assert "this trial was given GPU(s) 0 but torch" in said[0]
    assert result.returncode == 0, result.stderr[-3000:]
    runs = studies.trial_runs("packed")
    assert len(runs) == 4
    assert {r.data.tags["ray.gpu_ids"] for r in runs} == {"0"}  # all on the one GPU
    intervals = [(r.info.start_time, r.info.end_time) for r in runs]
    overlap = max(sum(s <= t < e for s, e in intervals) for t, _ in intervals)
    assert overlap >= 3, intervals  # they ran side by side, not one after another


def test_a_study_spreads_over_the_nodes_with_checkpoints_in_shared_storage(studies, tmp_path):
    """A study on a head and 2 workers (one CPU each): its trials run on several nodes and every
    checkpoint lies in the shared storage. It is the multi-objective study of
    tests/search/study/test_constraints.py: latency measured on the nodes that train, and
    a Pareto front, on a cluster."""
    shared = tmp_path / "shared-results"
    pareto = studies.write("pareto", pareto_study("pareto", storage={"path": str(shared)}))
    with LocalCluster(tmp_path / "cluster", workers=2) as address:
        # As local.sh's printed command: the driver uses the token on this machine without
        # being told RAY_AUTH_MODE (Ray would join the token cluster unauthenticated).
        # (An in-process ray.init of an earlier test may have exported it in this process.)
        studies.env.pop("RAY_AUTH_MODE", None)
        result = studies.cli("run", str(pareto), "--address", address, "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_pareto_front_recorded_and_shown(studies, "pareto", tmp_path)
    runs = studies.trial_runs("pareto")
    nodes = {r.data.tags[tags.NODE_ID] for r in runs}
    assert len(nodes) > 1, "every trial ran on the same node"
    for run in runs:
        checkpoint = Path(run.data.tags[tags.CHECKPOINT])
        assert shared in checkpoint.parents and (checkpoint / "checkpoint.pt").is_file()
