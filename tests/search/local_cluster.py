"""A real Ray cluster on this machine for tests (cluster/local.sh): a head plus N workers.

Each cluster gets its own state folder and its own block of ports, so that clusters of
tests running side by side (pytest-xdist workers) never meet.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from common import ROOT
from study_helpers import study_toml

LOCAL_SH = ROOT / "cluster" / "local.sh"
PORT_BLOCK = 400  # a GCS port, its dashboard port and local.sh's node ports from +10 on


def free_port_block(size: int = PORT_BLOCK) -> int:
    """A GCS port whose whole block of node ports (local.sh layout) is free.

    xdist workers search disjoint ranges: two workers probing the same block at the same
    moment would both find it free and start clusters on the same ports."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    span = (60000 - 21000) // workers // size * size
    first = 21000 + worker * span
    for start in range(first, first + span, size):
        try:
            for port in (start, start + 1, *range(start + 10, start + size)):
                with socket.socket() as s:
                    s.bind(("", port))
            return start
        except OSError:
            continue
    raise RuntimeError(f"no free block of {size} ports in {first}..{first + span}")


class LocalCluster:
    """`with LocalCluster(state, workers=2) as address:` a running cluster, stopped after.

    `autoscale=True`: a head with no CPUs whose autoscaler adds up to `workers` nodes on
    demand (`local.sh up --autoscale`), as a cloud cluster starts."""

    def __init__(self, state: Path, workers: int, *, autoscale: bool = False, **env: str) -> None:
        self.state = state
        self.env = {**os.environ, "RESNET_SEARCH_CLUSTER_DIR": str(state),
                    "RAY_PORT": str(free_port_block()), "CPUS_PER_NODE": "1",
                    "RAY_AUTH_MODE": "token", **env}
        self.env.pop("RAY_ADDRESS", None)
        self.workers = workers
        self.autoscale = autoscale

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.env['RAY_PORT']}"

    @property
    def dashboard(self) -> str:
        """The dashboard's URL, where the job API answers (`ray job submit --address`)."""
        return f"http://127.0.0.1:{int(self.env['RAY_PORT']) + 1}"

    @property
    def ray_tmpdir(self) -> Path:
        """RAY_TMPDIR under which Ray finds this cluster's address file (`--address auto`):
        local.sh's temp dir is STATE/ray, and Ray reads $RAY_TMPDIR/ray/ray_current_cluster."""
        return self.state

    def __enter__(self) -> str:
        shape = ["--autoscale"] if self.autoscale else []
        up = subprocess.run([str(LOCAL_SH), "up", *shape, str(self.workers)], env=self.env,
                            capture_output=True, text=True, timeout=240)
        if up.returncode != 0:
            self.__exit__()
            raise AssertionError(f"cluster did not start:\n{up.stdout}\n{up.stderr}")
        return self.address

    def __exit__(self, *exc) -> None:
        subprocess.run([str(LOCAL_SH), "down"], env=self.env, capture_output=True, timeout=120)


def multinode_study(name: str, samples: int, cpus: float, gpus: float, storage: str,
                    max_failures: int = 3) -> str:
    """A small study whose trials need `cpus` and `gpus` each, results in shared `storage`."""
    return study_toml(name, study={"num_samples": samples, "seed": 2},
                      space={"width": None, "lr": {"low": 0.05, "high": 0.2, "log": True}},
                      resources={"cpus_per_trial": cpus, "gpus_per_trial": gpus,
                                 "max_failures": max_failures},
                      storage={"path": str(storage)})
