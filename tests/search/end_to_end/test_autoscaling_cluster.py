"""Studies on a cluster that starts as the cloud ones do (cluster/aws.yaml, gcp.yaml, the
KubeRay files): a head that offers no CPUs, zero workers, and an autoscaler that adds worker
nodes when trials ask for them (`cluster/local.sh up --autoscale`, Ray's fake_multinode
provider: each node is a set of processes on this machine).

The three ways a study reaches such a cluster are the ones cluster/README.md gives: from
outside with `--address HOST:PORT`, on the head with `--address auto` (`ray exec`), and as a
Ray job (`ray job submit -- resnet-search run STUDY`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from image_folders import folder_study, write_digit_folder
from local_cluster import LocalCluster
from study_helpers import study_toml

from search.tracking import tags

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

# The id Ray's fake_multinode provider gives the head; the nodes it adds get ...00001 on.
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"
AUTOSCALED_NODES = 2  # the most worker nodes the autoscaler may add, one CPU each


# The monitor publishes its status every 5 s: removed, it is missing as before the first.
BEFORE_FIRST_REPORT = """
import sys, ray
from ray.experimental import internal_kv
from search.study import autoscaling
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
internal_kv._internal_kv_del(autoscaling.AUTOSCALING_STATUS_KEY)
found = autoscaling.find_autoscaler(wait_s=0)
status = "none" if internal_kv._internal_kv_get(autoscaling.AUTOSCALING_STATUS_KEY) is None else "back"
types = [(t.name, t.resources.get("CPU"), t.max_workers) for t in found.node_types]
print(f"status {status}; node types {types}")
"""


def test_a_study_on_a_cluster_that_starts_with_zero_workers(studies, tmp_path):
    shared = str(tmp_path / "shared-results")  # every node is on this machine: shared
    scaled = studies.write("scaled", study_toml(
        "scaled", study={"num_samples": 4}, storage={"path": shared}))
    # The job's study trains on a user's folder of images: its decoded cache goes under the
    # shared [storage] path, where every node the autoscaler adds reads it.
    write_digit_folder(tmp_path / "digits", every=3)
    as_job = studies.write("as-job", folder_study("as-job", tmp_path / "digits", epochs=2)
                           + f'[storage]\npath = "{shared}"\n')
    too_big = studies.write("too-big", study_toml(
        "too-big", resources={"cpus_per_trial": 2}, storage={"path": shared}))
    cluster = LocalCluster(tmp_path / "cluster", workers=AUTOSCALED_NODES, autoscale=True)
    with cluster as address:
        before_first_report = subprocess.run(
            [sys.executable, "-c", BEFORE_FIRST_REPORT, address], capture_output=True, text=True,
            timeout=120, env={**studies.env, "RAY_AUTH_MODE": "token"})
        # No node can ever give a trial 2 CPUs: refused at once, not a study that waits.
        refused = studies.cli("run", str(too_big), "--address", address)
        # On the head, as `ray exec` runs it: --address auto finds the cluster there.
        on_head = studies.cli("run", str(scaled), "--address", "auto",
                              env={"RAY_TMPDIR": str(cluster.ray_tmpdir)})
        job = submit_job(cluster, studies, f"{sys.executable} -m search.cli run {as_job}")
    # A study that joins before the monitor's first report (a busy head) still finds it.
    assert before_first_report.returncode == 0, before_first_report.stderr[-3000:]
    assert before_first_report.stdout.split("\n")[-2] == \
        f"status none; node types [('cpu_worker', 1.0, {AUTOSCALED_NODES})]"
    assert refused.returncode == 2, refused.stderr[-3000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("resnet-search")]
    assert errors == ["resnet-search: error: [resources] cpus_per_trial needs 2 CPUs on one "
                      "node but the largest node it can have has 1"], refused.stderr[-3000:]
    assert studies.trial_runs("too-big") == []  # nothing started

    assert on_head.returncode == 0, on_head.stderr[-3000:]
    # Tune keeps as many trials pending as the grown cluster runs, so the autoscaler sees
    # them all and adds every node at once, not one after another.
    assert f"trials wait for the nodes it adds (up to {AUTOSCALED_NODES} trial(s) at once)" \
        in on_head.stderr
    assert job.returncode == 0 and "succeeded" in job.stdout + job.stderr, \
        (job.stdout + job.stderr)[-3000:]
    for name, trials in (("scaled", 4), ("as-job", 2)):
        runs = studies.trial_runs(name)
        assert len(runs) == trials
        assert {r.data.tags[tags.STATUS] for r in runs} == {tags.COMPLETED}
        # The head offers no CPU: every trial ran on a node the autoscaler added.
        nodes = {r.data.tags[tags.NODE_ID] for r in runs}
        assert FAKE_HEAD_NODE_ID not in nodes and nodes
    assert len(list((tmp_path / "shared-results" / "data-cache").glob("digits-*/manifest.json"))) == 1
    # From outside the cluster (the laptop), the champion comes back by the study's name.
    best = studies.cli("best", "scaled")
    assert best.returncode == 0, best.stderr[-3000:]
    assert "models:/scaled-model/1" in best.stdout + best.stderr


def submit_job(cluster: LocalCluster, studies, entrypoint: str):
    """`ray job submit --address DASHBOARD -- ENTRYPOINT` with the study's home and tracking
    in the job's environment, as cluster/README.md submits a study."""
    import subprocess

    ray = Path(sys.executable).with_name("ray")
    env_vars = {key: studies.env[key] for key in ("RESNET_SEARCH_HOME", "PYTHONPATH",
                                                  "RESNET_SEARCH_QUIET")}
    return subprocess.run(
        [str(ray), "job", "submit", "--address", cluster.dashboard,
         "--runtime-env-json", json.dumps({"env_vars": env_vars}), "--", *entrypoint.split()],
        capture_output=True, text=True, timeout=600, cwd=studies.home.parent,
        env={**studies.env, "RAY_AUTH_MODE": "token"})
