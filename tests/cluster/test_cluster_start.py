"""What a study needs to start on each cluster target: the image finds GKE's GPU
driver, the shared volume is writable by the study, every suggested Ray address is
one the head serves, and a study waits for the workers of a cluster that starts with
none. The README's commands are checked in test_readme_paths.py."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import tomllib
import yaml
from common import ROOT, shipped_study_paths_under

CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
SHARED_MOUNT = "/mnt/shared"
STUDY_UID = 1000
# What python:3.11-slim-bookworm (the Dockerfile's base) sets; its PATH is the one
# `docker buildx imagetools inspect --format '{{json .Image.Config.Env}}'` shows.
BASE_IMAGE_ENV = {
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
# Where GKE's device plugin mounts the node's NVIDIA driver into GPU containers.
GKE_DRIVER = "/usr/local/nvidia"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _ray_cluster_specs() -> list[tuple[str, dict]]:
    specs = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in _docs(path):
            if doc.get("kind") == "RayCluster":
                specs.append((path.name, doc["spec"]))
            elif doc.get("kind") == "RayJob":
                specs.append((path.name, doc["spec"]["rayClusterSpec"]))
    return specs


LAUNCHER_FILES = ["aws.yaml", "gcp.yaml"]


def _launcher(name: str) -> dict:
    (doc,) = _docs(CLUSTER / name)
    return doc


# ----------------------------------------------------------------- GKE: the driver's paths
def container_env() -> dict[str, str]:
    """The environment a container of cluster/Dockerfile starts with: the base image's,
    then every ENV instruction in order."""
    env = dict(BASE_IMAGE_ENV)
    text = (CLUSTER / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word.upper() != "ENV":
            continue
        before = dict(env)  # one ENV line expands every $VAR from what was set before it
        for pair in shlex.split(rest, comments=True):
            key, _, value = pair.partition("=")
            env[key] = re.sub(r"\$\{?(\w+)\}?", lambda m, known=before: known.get(m.group(1), ""),
                              value)
    return env


def test_image_finds_the_driver_gke_mounts(tmp_path):
    """GKE mounts libcuda and nvidia-smi under /usr/local/nvidia and sets no search path."""
    env = container_env()
    assert f"{GKE_DRIVER}/lib64" in env.get("LD_LIBRARY_PATH", "").split(":"), (
        "torch cannot load libcuda on GKE: /usr/local/nvidia/lib64 is not on LD_LIBRARY_PATH")
    assert f"{GKE_DRIVER}/bin" in env["PATH"].split(":"), "nvidia-smi is not on PATH on GKE"
    assert "/usr/local/bin" in env["PATH"].split(":"), "the image's Python fell off PATH"

    # The mount as GKE lays it out (at a folder of ours), and a process started with the
    # image's environment: the dynamic loader and PATH find what is there.
    mount = tmp_path / "nvidia"
    (mount / "lib64").mkdir(parents=True)
    (mount / "bin").mkdir()
    library = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    real_lib = re.search(r"libz\.so\.1 \(libc6,x86-64\) => (\S+)", library)
    assert real_lib, "no libz.so.1 to stand in for libcuda"
    shutil.copy(real_lib.group(1), mount / "lib64" / "libcuda.so.1")
    smi = mount / "bin" / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 580.95.05\n")
    smi.chmod(0o755)
    moved = {k: v.replace(GKE_DRIVER, str(mount)) for k, v in env.items()}
    moved["PATH"] += ":" + os.path.dirname(sys.executable)
    probe = ("import ctypes, shutil; ctypes.CDLL('libcuda.so.1'); "
             "print(shutil.which('nvidia-smi'))")
    run = subprocess.run([sys.executable, "-c", probe], env=moved, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-500:]
    assert run.stdout.strip() == str(smi)


# ----------------------------------------------------------------- GKE: a writable share
def _runs_as_root(container: dict, pod: dict) -> bool:
    uid = container.get("securityContext", {}).get("runAsUser",
                                                   pod.get("securityContext", {}).get("runAsUser"))
    return uid == 0


def _share_step(spec: dict) -> dict | None:
    """The head's init container that runs as root with the shared volume mounted."""
    pod = spec["headGroupSpec"]["template"]["spec"]
    for container in pod.get("initContainers", []):
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        if SHARED_MOUNT in mounts and _runs_as_root(container, pod):
            return container
    return None


@pytest.mark.parametrize("which", range(2), ids=["raycluster", "rayjob"])
def test_head_hands_the_shared_volume_to_the_study_user(which):
    """Filestore ignores fsGroup: without a root step the share stays root-owned."""
    name, spec = _ray_cluster_specs()[which]
    step = _share_step(spec)
    assert step, f"{name}: no root init step on the head: the study cannot write {SHARED_MOUNT}"
    security = step["securityContext"]
    assert security.get("allowPrivilegeEscalation") is False
    assert security["capabilities"].get("drop") == ["ALL"]
    assert set(security["capabilities"].get("add", [])) <= {"CHOWN", "FOWNER"}, security
    script = " ".join(step.get("command", []) + step.get("args", []))
    assert not re.search(r"-R\b|--recursive", script), "a recursive chown walks the whole share"


def _containers_that_may_run_as_root() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(CLUSTER.rglob("*.yaml")):
        if path.name in {"aws.yaml", "gcp.yaml"}:
            continue
        stack: list = _docs(path)
        while stack:
            node = stack.pop()
            if isinstance(node, dict) and isinstance(node.get("containers"), list):
                pod_security = node.get("securityContext", {})
                for c in node["containers"] + node.get("initContainers", []):
                    non_root = c.get("securityContext", {}).get("runAsNonRoot",
                                                                pod_security.get("runAsNonRoot"))
                    if _runs_as_root(c, node) or non_root is not True:
                        found.add((path.name, c["name"]))
            if isinstance(node, dict):
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return found


def test_only_the_share_step_runs_as_root():
    assert _containers_that_may_run_as_root() == {("raycluster.yaml", "shared-volume-owner"),
                                                  ("rayjob.yaml", "shared-volume-owner")}


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="runs the step as root with its capabilities only")
@pytest.mark.parametrize("which", range(2), ids=["raycluster", "rayjob"])
def test_share_step_makes_a_root_owned_share_writable_for_the_study(which, request):
    """The step as the container runs it, on a folder laid out like a new Filestore share
    (root-owned, 0755), with only the capabilities it is given; then the study's uid writes."""
    name, spec = _ray_cluster_specs()[which]
    step = _share_step(spec)
    assert step, f"{name}: no root init step on the head"
    # Under /tmp itself: pytest's tmp_path sits in a folder only root may enter.
    share = Path(tempfile.mkdtemp(prefix="filestore-share-"))
    request.addfinalizer(lambda: shutil.rmtree(share))
    share.chmod(0o755)
    script = step["args"][0].replace(SHARED_MOUNT, str(share))
    caps = ",".join(["-all"] + [f"+{c.lower()}" for c in step["securityContext"]["capabilities"]["add"]])
    root = subprocess.run(["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--no-new-privs",
                           *step["command"], script], capture_output=True, text=True)
    assert root.returncode == 0, f"{name}: the step failed: {root.stderr}"
    for path in sorted(shipped_study_paths_under(SHARED_MOUNT)) + [SHARED_MOUNT]:
        folder = Path(path.replace(SHARED_MOUNT, str(share)))
        write = subprocess.run(["setpriv", f"--reuid={STUDY_UID}", f"--regid={STUDY_UID}",
                                "--clear-groups", "touch", str(folder / "written-by-the-study")],
                               capture_output=True, text=True)
        assert write.returncode == 0, f"{name}: uid {STUDY_UID} cannot write {path}: {write.stderr}"


# ----------------------------------------------------------------- Ray addresses
def test_every_suggested_ray_client_address_is_one_the_head_serves():
    """`ray://HOST:PORT` works only on a port the head declares, through its service."""
    services = {f"{d['metadata']['name']}-head-svc" for d in _docs(KUBERAY / "raycluster.yaml")}
    texts = [*(ROOT / "configs").glob("*.toml"), ROOT / "README.md", *CLUSTER.rglob("*.md"),
             *CLUSTER.rglob("*.yaml")]
    for path in texts:
        for host, port in re.findall(r"ray://([\w.-]+):(\d+)", path.read_text()):
            assert host.split(".")[0] in services, f"{path.name}: ray://{host}: no such head service"
            for name, spec in _ray_cluster_specs():
                ports = [p["containerPort"] for c in spec["headGroupSpec"]["template"]["spec"]
                         ["containers"] for p in c.get("ports", [])]
                assert int(port) in ports, f"{path.name}: ray://{host}:{port}, {name} serves {ports}"


# ----------------------------------------------------------------- zero workers at the start
def test_cluster_studies_wait_for_the_workers_the_autoscaler_adds():
    """Every deployment here starts with a CPU-less head and no workers: a study that does
    not wait for the autoscaler finds no GPU anywhere and is refused."""
    for name in LAUNCHER_FILES:
        config = _launcher(name)
        types = config["available_node_types"]
        assert types[config["head_node_type"]]["resources"].get("CPU") == 0
        assert all(t.get("min_workers", 0) == 0 for t in types.values())
    for name, spec in _ray_cluster_specs():
        assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", name
        assert all(g.get("minReplicas", 0) == 0 for g in spec["workerGroupSpecs"]), name
    studies = [c for c in (ROOT / "configs").glob("*.toml")
               if tomllib.loads(c.read_text()).get("storage", {}).get("path", "").startswith(SHARED_MOUNT)]
    assert studies, f"no study in configs/ keeps its results under {SHARED_MOUNT}"
    for path in studies:
        resources = tomllib.loads(path.read_text()).get("resources", {})
        assert resources.get("wait_for_autoscaler") is True, f"{path.name}: set wait_for_autoscaler = true"
