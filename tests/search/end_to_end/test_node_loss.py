"""Node loss: a worker node of a real local cluster (cluster/local.sh) SIGKILLed mid-study,
at a seeded random moment (the chaos loop's seed, tests/search/chaos.py: `make chaos` runs
this test in every iteration with a fresh one)."""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import pytest
from chaos import assert_study_whole, chaos_seed
from local_cluster import LOCAL_SH, LocalCluster, multinode_study
from study_helpers import wait_for

from search.tracking import tags

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def node_ids(state: Path) -> dict[int, str]:
    """Node index -> Ray node id, as `up` recorded them."""
    return {int(i): node for i, node in
            (line.split() for line in (state / "nodes").read_text().splitlines())}


def trial_with_checkpoint_on(studies, study: str, node: str, epoch: int):
    """A running trial run on `node` that has reported (and checkpointed) `epoch` epochs."""
    for run in studies.trial_runs(study):
        if run.data.tags.get(tags.NODE_ID) == node and run.data.metrics.get("epoch", 0) >= epoch \
                and run.data.tags.get(tags.STATUS) not in tags.FINAL_STATUSES:
            return run
    return None


def epoch_seconds(studies, run) -> float:
    """The trial's seconds per epoch so far, from when it reported each epoch."""
    times = sorted(m.timestamp for m in studies.client().get_metric_history(run.info.run_id,
                                                                            "epoch"))
    return (times[-1] - times[0]) / 1000 / (len(times) - 1) if len(times) > 1 else 1.0


def test_a_killed_worker_node_costs_no_trial(studies, tmp_path):
    seed = chaos_seed()
    rng = random.Random(seed)
    # The kill's moment: a seeded part of an epoch after a trial on node 1 reported a seeded
    # epoch (a part of the trial's own epoch time: in seconds, a fast host's trial could
    # finish its 12 epochs before the kill and leave nothing to restart).
    epoch, part = rng.randint(1, 6), rng.uniform(0, 1)
    context = f"chaos seed {seed}: node 1 killed {part:.2f} of an epoch after a trial there " \
              f"reported epoch {epoch}"
    print(context, flush=True)
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
                                                               node_ids(state)[1], epoch),
                              300, "a trial with a checkpoint on node 1", interval=0.3)
            time.sleep(part * epoch_seconds(studies, victim))
            kill = subprocess.run([str(LOCAL_SH), "kill", "1"], env=cluster.env,
                                  capture_output=True, text=True, timeout=60)
            assert kill.returncode == 0, kill.stderr
            assert "node 1 killed" in kill.stdout
            killed_at = time.time()
            assert driver.wait(timeout=600) == 0, \
                context + (tmp_path / "driver.log").read_text()[-3000:]
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
    assert_study_whole(studies, "nodeloss", 4, tmp_path / "results", context)
    assert all(r.data.tags[tags.STATUS] == "completed" for r in runs.values()), context
    client = studies.client()
    reached = max(m.value for m in client.get_metric_history(victim.info.run_id, "epoch")
                  if m.timestamp <= killed_at * 1000)  # the last epoch before the kill
    restarted = max(m.value for m in client.get_metric_history(victim.info.run_id,
                                                               "resumed_from_epoch"))
    # went on from its last checkpoint, not from scratch
    assert 0 < restarted <= reached, f"{context}: at {reached}, went on from {restarted}"
    print(f"RELIABILITY node loss: seed {seed}; trial runs expected 4, found {len(runs)}; killed "
          f"at epoch {reached:.0f}, went on from epoch {restarted:.0f} (lost "
          f"{reached - restarted:.0f}); kill to study end {recovered:.0f} s")
