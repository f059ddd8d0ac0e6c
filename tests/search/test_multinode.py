"""A study on a real multi-node Ray cluster on this machine (cluster/local.sh)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from search import tracking

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]
LOCAL_SH = ROOT / "cluster" / "local.sh"

STUDY = """
[study]
name = "{name}"
num_samples = {samples}
seed = 2

[data]
dataset = "digits"

[train]
epochs = 2
batch_size = 64

[space]
family = "wrn"
depth = 10
lr = {{ low = 0.05, high = 0.2, log = true }}

[scheduler]
kind = "none"

[resources]
cpus_per_trial = {cpus}
gpus_per_trial = {gpus}

[storage]
path = "{storage}"
"""


def free_port_block(size: int = 400) -> int:
    """A GCS port whose whole block of node ports (local.sh layout) is free."""
    for start in range(21000, 60000, size):
        try:
            for port in (start, start + 1, *range(start + 10, start + size)):
                with socket.socket() as s:
                    s.bind(("", port))
            return start
        except OSError:
            continue
    raise RuntimeError("no free port block")


class LocalCluster:
    def __init__(self, state: Path, workers: int, **env: str) -> None:
        self.state = state
        self.env = {**os.environ, "RESNET_SEARCH_CLUSTER_DIR": str(state),
                    "RAY_PORT": str(free_port_block()), "CPUS_PER_NODE": "1",
                    "RAY_AUTH_MODE": "token", **env}
        self.workers = workers

    def __enter__(self) -> str:
        up = subprocess.run([str(LOCAL_SH), "up", str(self.workers)], env=self.env,
                            capture_output=True, text=True, timeout=240)
        if up.returncode != 0:
            self.__exit__()
            raise AssertionError(f"cluster did not start:\n{up.stdout}\n{up.stderr}")
        return f"127.0.0.1:{self.env['RAY_PORT']}"

    def __exit__(self, *exc) -> None:
        subprocess.run([str(LOCAL_SH), "down"], env=self.env, capture_output=True, timeout=120)


def test_a_study_spreads_over_the_nodes_with_checkpoints_in_shared_storage(studies, tmp_path):
    storage = tmp_path / "shared-results"
    path = studies.write("spread", STUDY.format(name="spread", samples=4, cpus=1, gpus=0,
                                                storage=storage))
    with LocalCluster(tmp_path / "cluster", workers=2) as address:
        result = studies.cli("run", str(path), "--address", address,
                             env={"RAY_AUTH_MODE": "token"})
    assert result.returncode == 0, result.stderr[-3000:]
    runs = studies.trial_runs("spread")
    assert len(runs) == 4
    nodes = {r.data.tags[tracking.NODE_ID] for r in runs}
    assert len(nodes) > 1, "every trial ran on the same node"
    for run in runs:
        checkpoint = Path(run.data.tags[tracking.CHECKPOINT])
        assert storage in checkpoint.parents and (checkpoint / "checkpoint.pt").is_file()


def test_storage_that_the_nodes_do_not_share_is_a_clear_error(studies, tmp_path):
    storage = tmp_path / "not-shared"
    storage.mkdir()
    path = studies.write("unshared", STUDY.format(name="unshared", samples=2, cpus=1, gpus=0,
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
    path = studies.write("packed", STUDY.format(name="packed", samples=4, cpus=0.5, gpus=0.25,
                                                storage=tmp_path / "results"))
    with LocalCluster(tmp_path / "cluster", workers=0, CPUS_PER_NODE="2",
                      GPUS_PER_NODE="1") as address:
        result = studies.cli("run", str(path), "--address", address,
                             env={"RAY_AUTH_MODE": "token"})
    assert result.returncode == 0, result.stderr[-3000:]
    runs = studies.trial_runs("packed")
    assert len(runs) == 4
    assert {r.data.tags["ray.gpu_ids"] for r in runs} == {"0"}  # all on the one GPU
    intervals = [(r.info.start_time, r.info.end_time) for r in runs]
    overlap = max(sum(s <= t < e for s, e in intervals) for t, _ in intervals)
    assert overlap >= 3, intervals  # they ran side by side, not one after another
