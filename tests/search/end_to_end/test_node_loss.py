"""Node loss: a worker node of a real local cluster (cluster/local.sh) SIGKILLed mid-study."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from local_cluster import LOCAL_SH, LocalCluster, multinode_study
from study_helpers import wait_for

from search.tracking import tags

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def node_ids(state: Path) -> dict[int, str]:
    """Node index -> Ray node id, as `up` recorded them."""
    return {int(i): node for i, node in
            (line.split() for line in (state / "nodes").read_text().splitlines())}


def trial_with_checkpoint_on(studies, study: str, node: str):
    """A running trial run on `node` that has reported (and checkpointed) 2 epochs."""
    for run in studies.trial_runs(study):
        if run.data.tags.get(tags.NODE_ID) == node and run.data.metrics.get("epoch", 0) >= 2 \
                and run.data.tags.get(tags.STATUS) not in tags.FINAL_STATUSES:
            return run
    return None


def test_a_killed_worker_node_costs_no_trial(studies, tmp_path):
    state = tmp_path / "cluster"
    path = studies.write("nodeloss", multinode_study(name="nodeloss", samples=4, cpus=1, gpus=0,
                                                  storage=tmp_path / "results"))
    path.write_text(path.read_text().replace("epochs = 2", "epochs = 12"))
    cluster = LocalCluster(state, workers=2)
    with cluster as address:
        studies.env["RAY_AUTH_MODE"] = "token"
        driver = studies.start("run", str(path), "--address", address)
        try:
            victim = wait_for(lambda: trial_with_checkpoint_on(studies, "nodeloss",
                                                               node_ids(state)[1]),
                              300, "a trial with a checkpoint on node 1", interval=0.5)
            kill = subprocess.run([str(LOCAL_SH), "kill", "1"], env=cluster.env,
                                  capture_output=True, text=True, timeout=60)
            assert kill.returncode == 0, kill.stderr
            assert "node 1 killed" in kill.stdout
            killed_at = time.time()
            assert driver.wait(timeout=600) == 0, (tmp_path / "driver.log").read_text()[-3000:]
        finally:
            if driver.poll() is None:
                driver.kill()
        again = subprocess.run([str(LOCAL_SH), "kill", "1"], env=cluster.env, capture_output=True,
                               text=True, timeout=60)
        head = subprocess.run([str(LOCAL_SH), "kill", "0"], env=cluster.env, capture_output=True,
                              text=True, timeout=60)
        assert again.returncode == 0 and "node 1 is already down" in again.stdout
        assert head.returncode == 2 and "node 0 is the head" in head.stderr
        recovered = time.time() - killed_at
    runs = {r.data.tags[tags.TRIAL_ID]: r for r in studies.trial_runs("nodeloss")}
    assert len(runs) == 4  # exactly num_samples trial runs, no duplicates
    assert all(r.data.tags[tags.STATUS] == "completed" for r in runs.values())
    client = studies.client()
    reached = max(m.value for m in client.get_metric_history(victim.info.run_id, "epoch")
                  if m.timestamp <= killed_at * 1000)  # the last epoch before the kill
    restarted = max(m.value for m in client.get_metric_history(victim.info.run_id,
                                                               "resumed_from_epoch"))
    assert 0 < restarted <= reached  # went on from its last checkpoint, not from scratch
    print(f"RELIABILITY node loss: trial runs expected 4, found {len(runs)}; killed at epoch "
          f"{reached:.0f}, went on from epoch {restarted:.0f} (lost {reached - restarted:.0f}); "
          f"kill to study end {recovered:.0f} s")

