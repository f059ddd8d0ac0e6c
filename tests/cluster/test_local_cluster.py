"""cluster/local.sh for real: a head plus two worker nodes on this machine, a
driver that runs one task on each node, then `down`, which must stop exactly the
cluster's processes and leave every other Ray on the machine alone."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from common import ROOT

SCRIPT = ROOT / "cluster" / "local.sh"
PORTS_PER_NODE = 110  # local.sh: WORKER_PORTS_PER_NODE (100) + 10

DRIVER = r"""
import json, sys
import ray

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
alive = [n for n in ray.nodes() if n["Alive"]]

@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()

# One task pinned to each node through its custom resource local-node-<i>.
refs = [where.options(resources={f"local-node-{i}": 0.01}).remote() for i in range(len(alive))]
print(json.dumps({
    "alive": len(alive),
    "node_ids": [n["NodeID"] for n in alive],
    "cpus": [n["Resources"].get("CPU") for n in alive],
    "task_nodes": ray.get(refs, timeout=60),
}))
"""


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def _free_port_range(span: int) -> int:
    """A base port with `span` free ports above it, below the ephemeral range."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - span)
        if all(_port_free(p) for p in range(base, base + span)):
            return base
    pytest.skip("no free port range for the test cluster")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie has exited; only its parent has not reaped it yet
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _local_sh(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _cluster_env(state: Path, port: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {"RAY_ADDRESS", "RAY_AUTH_MODE"}}
    env.update({
        "RESNET_SEARCH_CLUSTER_DIR": str(state),
        "RAY_PORT": str(port),
        "CPUS_PER_NODE": "1",
        "UP_TIMEOUT": "45",
        "GRACE_PERIOD": "6",
        "OBJECT_STORE_MEMORY": "100000000",
        # A narrow terminal exported (xdist workers export COLUMNS=80): `ps` must not cut
        # the command lines that tell the script which processes are its cluster's.
        "COLUMNS": "80",
    })
    if (ROOT / ".venv" / "bin" / "ray").exists():
        env["RAY"] = str(ROOT / ".venv" / "bin" / "ray")
    return env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="local.sh needs Linux (setsid, /proc)")
def test_local_sh_without_a_cluster(tmp_path):
    """The cheap paths: usage errors and a state directory with nothing up."""
    env = _cluster_env(tmp_path / "state", 6390)
    usage = _local_sh(env, "up")
    assert usage.returncode == 2 and "usage" in usage.stderr
    assert _local_sh(env, "bogus").returncode == 2
    status = _local_sh(env, "status")
    assert status.returncode == 3 and status.stdout.startswith("down")
    down = _local_sh(env, "down")
    assert down.returncode == 0 and "nothing to stop" in down.stdout
    assert _local_sh(env, "address").returncode == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="local.sh needs Linux (setsid, /proc)")
def test_clusters_started_at_once_on_a_fresh_machine_share_one_token(tmp_path):
    """Ray checks for ~/.ray/auth_token and then writes a new one: two `up`s at once on a fresh
    machine each wrote theirs, and the first cluster then refused every driver. Four token
    steps (what `up` does first) started while the lock is held all wait for it, none makes
    a token meanwhile; released, exactly one makes it, and all four name that one, readable
    by its owner only."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    env = {**_cluster_env(tmp_path / "state", 6390), "HOME": str(home)}
    for variable in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(variable, None)
    token = home / ".ray" / "auth_token"
    with open(f"{token}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        steps = [subprocess.Popen(["bash", str(SCRIPT), "token"], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(4)]
        inode = os.fstat(lock.fileno()).st_ino
        deadline = time.time() + 60
        while _lock_waiters(inode) < 4 and time.time() < deadline and not token.exists():
            time.sleep(0.05)
        assert _lock_waiters(inode) == 4 and not token.exists(), "the token steps did not wait"
    results = [(step.communicate(timeout=120), step.returncode) for step in steps]
    assert all(code == 0 for _, code in results), results
    generated = [err for (_, err), _ in results if "no Ray auth token yet" in err]
    assert len(generated) == 1, results
    assert {out for (out, _), _ in results} == {f"{token} sha256:{_fingerprint(token)}\n"}
    assert token.stat().st_mode & 0o777 == 0o600


def _lock_waiters(inode: int) -> int:
    """Processes blocked on a lock of the file with this inode (/proc/locks marks them ->)."""
    lines = Path("/proc/locks").read_text().splitlines()
    return sum(" -> " in line and line.split()[6].endswith(f":{inode}") for line in lines)


def _fingerprint(token: Path) -> str:
    return hashlib.sha256(token.read_text().strip().encode()).hexdigest()[:12]


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(240)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="local.sh needs Linux (setsid, /proc)")
@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid (util-linux)")
def test_local_cluster_up_run_down():
    pytest.importorskip("ray")
    # Short paths: Ray's unix sockets live under the temp dir and must stay < 108 bytes.
    state_a = Path(tempfile.mkdtemp(prefix="rsc-a-", dir="/tmp"))
    state_b = Path(tempfile.mkdtemp(prefix="rsc-b-", dir="/tmp"))
    base = _free_port_range(10 + 3 * PORTS_PER_NODE + 10 + PORTS_PER_NODE)
    env_a = _cluster_env(state_a, base)                                  # head + 2 workers
    env_b = _cluster_env(state_b, base + 10 + 3 * PORTS_PER_NODE)       # a bystander: head only
    up_a = up_b = refused = None
    try:
        up_a = _local_sh(env_a, "up", "2")
        assert up_a.returncode == 0, up_a.stdout + up_a.stderr
        address = f"127.0.0.1:{base}"

        # Token auth is on: a driver without RAY_AUTH_MODE=token is turned away (Ray
        # retries for ~20 s before it gives up, so this runs while the rest goes on).
        driver_env = {k: v for k, v in env_a.items() if not k.startswith("RAY_AUTH")}
        refused = subprocess.Popen(
            [sys.executable, "-c", "import ray, sys; ray.init(address=sys.argv[1])", address],
            env={**driver_env, "RAY_AUTH_MODE": "disabled"},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )

        up_b = _local_sh(env_b, "up", "0")
        assert up_b.returncode == 0, up_b.stdout + up_b.stderr

        assert re.search(rf"address:\s+{re.escape(address)}\b", up_a.stdout), up_a.stdout
        assert "export RAY_AUTH_MODE=token" in up_a.stdout
        assert _local_sh(env_a, "address").stdout.strip() == address
        status = _local_sh(env_a, "status")
        assert status.returncode == 0 and status.stdout.startswith("up"), status.stdout

        pids_a = [int(p) for p in (state_a / "pids").read_text().split()]
        pids_b = [int(p) for p in (state_b / "pids").read_text().split()]
        assert len(pids_a) >= 6 and pids_b, (pids_a, pids_b)  # 3 raylets, gcs, dashboard, ...
        assert not set(pids_a) & set(pids_b)

        # A driver with the token mode sees three nodes and runs a task on each.
        driver = subprocess.run(
            [sys.executable, "-c", DRIVER, address], env={**driver_env, "RAY_AUTH_MODE": "token"},
            capture_output=True, text=True, timeout=90,
        )
        assert driver.returncode == 0, driver.stderr[-3000:]
        info = json.loads(driver.stdout.strip().splitlines()[-1])
        assert info["alive"] == 3
        assert len(set(info["node_ids"])) == 3
        assert info["cpus"] == [1.0, 1.0, 1.0]
        assert sorted(info["task_nodes"]) == sorted(info["node_ids"]), "one task per node"
        _, refusal = refused.communicate(timeout=90)
        assert refused.returncode != 0, "a driver without RAY_AUTH_MODE=token got in"
        assert "Failed to connect" in refusal or "uthentication" in refusal, refusal[-2000:]

        down_a = _local_sh(env_a, "down")
        assert down_a.returncode == 0, down_a.stdout + down_a.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids_a):
            time.sleep(0.2)
        assert not [p for p in pids_a if _alive(p)], "processes of the cluster survived `down`"
        leftovers = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True)
        assert str(state_a) not in leftovers.stdout and _temp_dir_of(state_a) not in leftovers.stdout
        assert _local_sh(env_a, "status").returncode == 3

        # The other cluster on this machine is untouched and still answers.
        assert all(_alive(p) for p in pids_b), "`down` of one cluster hurt another Ray"
        assert _local_sh(env_b, "status").returncode == 0
    finally:
        if refused is not None and refused.poll() is None:
            refused.kill()
            refused.wait()
        for env, up in ((env_a, up_a), (env_b, up_b)):
            if up is not None:
                _local_sh(env, "down")
                _local_sh(env, "clean")
        for state in (state_a, state_b):
            shutil.rmtree(state, ignore_errors=True)


def _temp_dir_of(state: Path) -> str:
    """The Ray --temp-dir local.sh used for this state dir (it is the state's ray/ folder
    unless that path was too long, then a symlink to a short /tmp folder)."""
    ray_dir = state / "ray"
    return str(ray_dir.resolve()) if ray_dir.exists() else str(ray_dir)
