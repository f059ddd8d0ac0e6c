"""The deployment files checked against what they run on: the KubeRay CRDs and the
Kubernetes API (schemas), Ray's launcher schema, the images and NVIDIA drivers the
pinned torch build needs, the operator's and workers' network paths, the node types'
allocatable resources, the shared volume, and the package pins the image installs.
Each check here stands for a way a first study on a real cluster failed."""

from __future__ import annotations

import functools
import importlib.metadata as md
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import tomllib
import yaml
from common import ROOT, shipped_study_paths_under
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from resnet_core.hardware import MIN_DRIVER_FOR_CUDA

CLUSTER = ROOT / "cluster"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
LAUNCHER_FILES = ["aws.yaml", "gcp.yaml"]
# Kubernetes minor versions the manifests must be valid for (EKS and GKE regular
# channels at the time of writing); kubernetes-validate ships a strict schema for each.
K8S_VERSIONS = ["1.32", "1.33", "1.34"]


# ----------------------------------------------------------------- loading
def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s_objects(kind: str | None = None) -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(CLUSTER.rglob("*.yaml")):
        if path.name in LAUNCHER_FILES:
            continue
        for doc in _docs(path):
            if kind is None or doc.get("kind") == kind:
                out.append((path, doc))
    return out


def launcher(name: str) -> dict:
    (doc,) = _docs(CLUSTER / name)
    return doc


def ray_cluster_specs() -> list[tuple[str, dict]]:
    specs = [(f"{p.name}", d["spec"]) for p, d in k8s_objects("RayCluster")]
    specs += [(f"{p.name}", d["spec"]["rayClusterSpec"]) for p, d in k8s_objects("RayJob")]
    return specs


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.strip()
    return pins


def torch_cuda() -> tuple[int, int]:
    """The CUDA release of the torch build that constraints.txt pins (its CUDA runtime wheel)."""
    version = constraints()["nvidia-cuda-runtime"]
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def min_driver() -> int:
    return MIN_DRIVER_FOR_CUDA[torch_cuda()[0]]


# ----------------------------------------------------------------- KubeRay CRDs + core kinds
@functools.cache
def _k8s_definitions(version: str) -> referencing.Resource:
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    (folder,) = [p for p in base.iterdir() if p.name == f"v{version}.0-local-strict"]
    return referencing.Resource.from_contents(json.loads((folder / "_definitions.json").read_text()))


def _kuberay_schema(kind: str) -> dict:
    return json.loads((SCHEMAS / "kuberay" / f"{kind.lower()}.schema.json").read_text())


def kuberay_validator(kind: str, version: str) -> jsonschema.Draft202012Validator:
    # A RayJob's rayClusterSpec is a $ref to the RayCluster schema's spec: one definition.
    resources = [_k8s_definitions(version), referencing.Resource.from_contents(_kuberay_schema("RayCluster"))]
    registry = resources @ referencing.Registry()
    return jsonschema.Draft202012Validator(_kuberay_schema(kind), registry=registry)


def _errors(validator: jsonschema.Draft202012Validator, doc: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_kuberay_manifests_match_the_crd_schema(kind, version):
    objects = k8s_objects(kind)
    assert objects, f"no {kind} in cluster/"
    validator = kuberay_validator(kind, version)
    for path, doc in objects:
        errors = _errors(validator, doc)
        assert not errors, f"{path.name} is not a valid {kind}:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    "where, bad",
    [
        ("a misspelt Ray field", lambda s: s["headGroupSpec"].update(rayStartParms={})),
        ("a misplaced field", lambda s: s.update(serviceType="ClusterIP")),
        ("a core field of the pod template",
         lambda s: s["headGroupSpec"]["template"]["spec"]["containers"][0].update(resource={})),
        ("an unknown auth mode", lambda s: s["authOptions"].update(mode="tokens")),
    ],
)
def test_kuberay_schema_rejects_what_the_operator_would_drop(where, bad):
    ((_, doc),) = k8s_objects("RayCluster")
    doc = json.loads(json.dumps(doc))
    bad(doc["spec"])
    assert _errors(kuberay_validator("RayCluster", K8S_VERSIONS[-1]), doc), where


def _rayjob_spec() -> dict:
    ((_, doc),) = k8s_objects("RayJob")
    return json.loads(json.dumps(doc))


@pytest.mark.parametrize(
    "where, bad",
    [
        ("a misspelt field of its cluster",
         lambda s: s["rayClusterSpec"]["headGroupSpec"].update(rayStartParms={})),
        ("an unknown deletion policy",
         lambda s: s.update(deletionStrategy={"onSuccess": {"policy": "DeleteAll"},
                                              "onFailure": {"policy": "DeleteNone"}})),
        ("deletion rules beside the legacy pair",
         lambda s: s.update(deletionStrategy={
             "onSuccess": {"policy": "DeleteCluster"}, "onFailure": {"policy": "DeleteNone"},
             "deletionRules": [{"policy": "DeleteCluster", "condition": {"jobStatus": "FAILED"}}]})),
        ("a deletion rule with two conditions",
         lambda s: s.update(deletionStrategy={"deletionRules": [{"policy": "DeleteCluster", "condition": {
             "jobStatus": "FAILED", "jobDeploymentStatus": "Failed"}}]})),
    ],
)
def test_rayjob_schema_rejects_what_the_operator_would_refuse_or_drop(where, bad):
    doc = _rayjob_spec()
    bad(doc["spec"])
    assert _errors(kuberay_validator("RayJob", K8S_VERSIONS[-1]), doc), where


def test_kuberay_schemas_accept_the_newer_fields_of_the_supported_releases():
    """A manifest that uses 1.7 fields is valid: the schema is not stuck on an older release."""
    doc = _rayjob_spec()
    spec = doc["spec"]
    spec["preRunningDeadlineSeconds"] = 600
    spec["deletionStrategy"] = {"deletionRules": [
        {"policy": "DeleteWorkers", "condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": 60}}]}
    cluster = spec["rayClusterSpec"]
    cluster["tlsOptions"] = {"enabled": False}
    cluster["networkPolicy"] = {"mode": "DenyAllIngress", "workerGroups": [{"groupName": "gpu"}]}
    cluster["gcsFaultToleranceOptions"] = {"storage": {"size": "10Gi", "deletionPolicy": "Retain"}}
    cluster["headGroupSpec"]["labels"] = {"tier": "head"}
    cluster["workerGroupSpecs"][0]["priority"] = 10
    errors = _errors(kuberay_validator("RayJob", K8S_VERSIONS[-1]), doc)
    assert not errors, errors


def core_objects() -> list[tuple[Path, dict]]:
    return [(p, d) for p, d in k8s_objects() if not d["apiVersion"].startswith("ray.io/")]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_kinds_match_the_kubernetes_schema(version):
    objects = core_objects()
    kinds = {d["kind"] for _, d in objects}
    assert {"PersistentVolumeClaim", "NetworkPolicy", "StorageClass", "Deployment",
            "StatefulSet", "Service"} <= kinds, kinds
    for path, doc in objects:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: {error}")


def test_launcher_configs_match_rays_schema():
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    for name in LAUNCHER_FILES:
        errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(launcher(name))]
        assert not errors, f"{name}: {errors}"


# ----------------------------------------------------------------- images, drivers, torch build
# What each machine image brings. glibc: the torch/ray wheels are manylinux_2_28, so
# an image needs glibc >= 2.28. driver: the NVIDIA driver branch on the image (None:
# none, it must be installed by the launcher's initialization_commands).
# Sources: AWS DLAMI release notes ("Deep Learning Base OSS Nvidia Driver GPU AMI
# (Ubuntu 22.04)": Ubuntu 22.04.5, driver 580.x from the 2025-10 releases, 595.x
# in 2026); Ubuntu 22.04 ships glibc 2.35; Ray's default AMI (ray/autoscaler/
# _private/aws/config.py DEFAULT_AMI_NAME) is "Deep Learning AMI (Ubuntu 18.04)
# V71.0": glibc 2.27, CUDA 11.2 driver (R460); the Deep Learning VM family
# common-cu124 ships the CUDA 12.4 driver (R550).
IMAGES = {
    "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id":
        {"glibc": (2, 35), "driver": 580},
    "projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts": {"glibc": (2, 35), "driver": None},
    "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts": {"glibc": (2, 39), "driver": None},
    "ray-default-aws-ami (Deep Learning AMI Ubuntu 18.04 V71.0)": {"glibc": (2, 27), "driver": 460},
    "projects/deeplearning-platform-release/global/images/family/common-cu124-ubuntu-2204-py310":
        {"glibc": (2, 35), "driver": 550},
}
RAY_DEFAULT_AMI = "ray-default-aws-ami (Deep Learning AMI Ubuntu 18.04 V71.0)"


def node_image(node_type: dict) -> str:
    config = node_type["node_config"]
    if "disks" in config:  # GCP
        (boot,) = [d for d in config["disks"] if d.get("boot")]
        return boot["initializeParams"]["sourceImage"]
    # AWS: without an ImageId, Ray's _check_ami fills in its default AMI.
    image = config.get("ImageId", "")
    return RAY_DEFAULT_AMI if image.lower() in {"", "latest_dlami"} else image


def wheel_glibc(dist: str) -> tuple[int, int]:
    """The glibc the installed wheel of `dist` was built for (its manylinux tag)."""
    wheel = md.distribution(dist).read_text("WHEEL") or ""
    tags = re.findall(r"manylinux_(\d+)_(\d+)", wheel)
    tags += [legacy for name, legacy in (("manylinux2014", ("2", "17")), ("manylinux2010", ("2", "12")))
             if name in wheel]
    assert tags, f"{dist}: no manylinux tag in its WHEEL file"
    return max((int(a), int(b)) for a, b in tags)


def driver_installed_by(commands: list[str]) -> int | None:
    found = [int(m) for c in commands for m in re.findall(r"nvidia[:-](\d{3})(?:-server)?", c)]
    return max(found) if found else None


def driver_check_threshold(commands: list[str]) -> int | None:
    for command in commands:
        if "nvidia-smi" in command and "driver_version" in command:
            m = re.search(r"-ge (\d{3})\b", command)
            if m:
                return int(m.group(1))
    return None


def test_torch_cuda_build_matches_the_installed_torch():
    torch = pytest.importorskip("torch")
    assert torch.version.cuda, "constraints.txt pins a CUDA build of torch"
    assert tuple(int(x) for x in torch.version.cuda.split(".")[:2]) == torch_cuda()


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_images_run_the_pinned_torch_build(name):
    config = launcher(name)
    need_glibc = wheel_glibc("torch")
    for type_name, node_type in config["available_node_types"].items():
        image = node_image(node_type)
        assert image in IMAGES, f"{name}: {type_name}: image {image!r} is not in the table"
        facts = IMAGES[image]
        assert facts["glibc"] >= need_glibc, (
            f"{name}: {type_name}: {image} has glibc {facts['glibc']}, the wheels need {need_glibc}"
        )
        if node_type.get("resources", {}).get("GPU", 0) < 1:
            continue
        init = node_type.get("initialization_commands", config.get("initialization_commands", []))
        driver = facts["driver"] or driver_installed_by(init)
        assert driver and driver >= min_driver(), (
            f"{name}: {type_name}: driver R{driver} on {image}; CUDA {torch_cuda()} needs R{min_driver()}"
        )
        threshold = driver_check_threshold(init)
        assert threshold is not None and threshold >= min_driver(), (
            f"{name}: {type_name}: no start-up check that the driver is R{min_driver()} or newer"
        )


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a driver")
@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_driver_check_refuses_a_node_without_a_usable_driver(name):
    config = launcher(name)
    for type_name, node_type in config["available_node_types"].items():
        for command in node_type.get("initialization_commands", []):
            if "driver_version" not in command:
                continue
            run = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
            assert run.returncode != 0, f"{name}: {type_name}: the check passed without a driver"
            lines = run.stderr.strip().splitlines()
            assert len(lines) == 1 and f"R{min_driver()}" in lines[0], run.stderr


def test_image_states_the_driver_the_torch_build_needs():
    text = (CLUSTER / "Dockerfile").read_text()
    major, minor = torch_cuda()
    assert f'NVIDIA_REQUIRE_CUDA="cuda>={major}.{minor}"' in text
    assert f"R{min_driver()}" in text
    readme = (CLUSTER / "README.md").read_text()
    section = readme[readme.index("GPU driver"):]
    assert f"R{min_driver()}" in section and f"CUDA {major}" in section


def test_base_image_pinned_by_digest():
    froms = re.findall(r"^FROM\s+(\S+)", (CLUSTER / "Dockerfile").read_text(), re.M)
    assert froms
    for image in froms:
        assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"base image not pinned by digest: {image}"


# ----------------------------------------------------------------- network paths
def _selects(selector: dict, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and expr["key"] not in labels:
            return False
        if op == "DoesNotExist" and expr["key"] in labels:
            return False
    return True


def admits(policies: list[dict], src: dict, dst_labels: dict, port: int, namespace: str) -> bool:
    """Whether a TCP connection from `src` ({namespace, labels, ns_labels}) to a pod of
    `namespace` with `dst_labels` on `port` is allowed by the Ingress policies (the
    NetworkPolicy spec's rules: no policy selecting the pod = allowed; else any rule)."""
    selecting = [p for p in policies if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                 and _selects(p["spec"]["podSelector"], dst_labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(p.get("port") in (port, None) and p.get("protocol", "TCP") == "TCP"
                                 for p in ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    continue
                if "namespaceSelector" in peer:
                    ns_ok = _selects(peer["namespaceSelector"], src["ns_labels"])
                else:
                    ns_ok = src["namespace"] == namespace
                pod_ok = _selects(peer.get("podSelector", {}), src["labels"])
                if ns_ok and pod_ok:
                    return True
    return False


def _pod(namespace: str, labels: dict) -> dict:
    return {"namespace": namespace, "labels": labels,
            "ns_labels": {"kubernetes.io/metadata.name": namespace}}


NAMESPACE = "resnet-search"
RAY_LABELS = {"app.kubernetes.io/name": "resnet-search-ray", "app.kubernetes.io/part-of": "resnet-search"}


def _operator_pod() -> dict:
    """The KubeRay operator as cluster/README.md installs it (namespace and Helm labels)."""
    readme = (CLUSTER / "README.md").read_text()
    m = re.search(r"helm install kuberay-operator \S+ .*?--namespace (\S+)", readme)
    assert m, "cluster/README.md does not install the operator into a namespace of its own"
    labels = {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/instance": "kuberay-operator"}
    return _pod(m.group(1), labels)


def _ray_policies() -> list[dict]:
    return [d for p, d in k8s_objects("NetworkPolicy") if p.parent.name == "kuberay"]


def test_network_policy_admits_the_operator_on_the_job_api():
    policies = _ray_policies()
    assert policies
    operator = _operator_pod()
    assert operator["namespace"] != NAMESPACE
    assert admits(policies, operator, RAY_LABELS, 8265, NAMESPACE), (
        "the KubeRay operator cannot reach the head's job API (8265): RayJobs never complete"
    )
    assert not admits(policies, operator, RAY_LABELS, 6379, NAMESPACE), "operator needs 8265 only"


def test_network_policy_admits_workers_and_submitter_but_no_other_namespace():
    policies = _ray_policies()
    worker = _pod(NAMESPACE, RAY_LABELS)
    for port in (6379, 8265, 10001, 20000):  # GCS, job API, client, a Ray worker port
        assert admits(policies, worker, RAY_LABELS, port, NAMESPACE), port
    stranger = _pod("default", {"app": "anything"})
    for port in (6379, 8265, 10001):
        assert not admits(policies, stranger, RAY_LABELS, port, NAMESPACE), port


def test_policy_evaluator_can_refuse():
    deny_all = [{"spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}]
    assert not admits(deny_all, _pod(NAMESPACE, RAY_LABELS), RAY_LABELS, 6379, NAMESPACE)
    assert admits([], _pod("x", {}), RAY_LABELS, 6379, NAMESPACE)


# ----------------------------------------------------------------- pods fit the node types
def _quantity(value: Any) -> float:
    """A Kubernetes quantity as a number (CPU in cores, memory in bytes)."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


GI = 2**30
# Allocatable resources of the node types cluster/README.md names for KubeRay, less
# what the system DaemonSets request there (kube-proxy, logging and metrics agents,
# CSI node plugins, the NVIDIA device plugin: about 0.5 CPU and 1.5 GiB together).
# Sources: GKE "Plan node sizes" (cloud.google.com/kubernetes-engine/docs/concepts/
# plan-node-sizes): CPU reserve 6% of the 1st core, 1% of the 2nd, 0.5% of the
# next 2, 0.25% of the rest; memory reserve 25% of the first 4 GiB, 20% of the next
# 4, 10% of the next 8, 6% of the next 112, plus a 100 MiB eviction threshold.
# EKS AMI bootstrap: the same CPU formula, memory 255 MiB + 11 MiB per pod (58 pods
# on g5.2xlarge / m6i.2xlarge) plus 100 MiB eviction threshold. Both computed from
# the nominal 8 vCPU / 32 GiB; a VM's usable memory is a few hundred MiB less.
NODE_TYPES = {
    # name: (cpu cores, memory bytes, GPUs)
    "GKE g2-standard-8 (1 x L4)": (7.91 - 0.5, (32 - 3.56) * GI - 100 * 2**20 - 1.5 * GI, 1),
    "EKS g5.2xlarge (1 x A10G)": (7.91 - 0.5, 32 * GI - (255 + 11 * 58 + 100) * 2**20 - 1.5 * GI, 1),
    "GKE n2-standard-8": (7.91 - 0.5, (32 - 3.56) * GI - 100 * 2**20 - 1.5 * GI, 0),
    "EKS m6i.2xlarge": (7.91 - 0.5, 32 * GI - (255 + 11 * 58 + 100) * 2**20 - 1.5 * GI, 0),
}
# KubeRay's autoscaler sidecar in the head pod: its default request (autoscalerOptions).
AUTOSCALER_DEFAULT = {"cpu": 0.5, "memory": 512 * 2**20}


def _pod_requests(pod: dict) -> dict[str, float]:
    total = {"cpu": 0.0, "memory": 0.0, "nvidia.com/gpu": 0.0}
    for container in pod["containers"]:
        resources = container.get("resources", {})
        requests = {**resources.get("limits", {}), **resources.get("requests", {})}
        for key in total:
            if key in requests:
                total[key] += _quantity(requests[key])
    return total


@pytest.mark.parametrize("which", range(2), ids=["raycluster", "rayjob"])
def test_ray_pods_fit_the_documented_node_types(which):
    name, spec = ray_cluster_specs()[which]
    readme = (CLUSTER / "README.md").read_text()
    head = _pod_requests(spec["headGroupSpec"]["template"]["spec"])
    if spec.get("enableInTreeAutoscaling"):
        override = spec.get("autoscalerOptions", {}).get("resources", {}).get("requests", {})
        head["cpu"] += _quantity(override.get("cpu", AUTOSCALER_DEFAULT["cpu"]))
        head["memory"] += _quantity(override.get("memory", AUTOSCALER_DEFAULT["memory"]))
    groups = [("head", head)] + [(g["groupName"], _pod_requests(g["template"]["spec"]))
                                 for g in spec["workerGroupSpecs"]]
    for group, request in groups:
        gpus = request["nvidia.com/gpu"]
        candidates = {n: t for n, t in NODE_TYPES.items() if (t[2] > 0) == (gpus > 0)}
        for node, (cpu, memory, node_gpus) in candidates.items():
            assert node.split(" (")[0].split(" ", 1)[1] in readme, f"README does not name {node}"
            assert request["cpu"] <= cpu and request["memory"] <= memory and gpus <= node_gpus, (
                f"{name} {group}: requests {request['cpu']} CPU / {request['memory'] / GI:.1f} GiB "
                f"do not fit {node} ({cpu:.2f} CPU / {memory / GI:.1f} GiB after system pods)"
            )


# ----------------------------------------------------------------- shared storage
RWX_PROVISIONERS = {"efs.csi.aws.com", "filestore.csi.storage.gke.io", "file.csi.azure.com",
                    "nfs.csi.k8s.io"}


def test_shared_claim_names_a_file_storage_class_shipped_here():
    classes = {d["metadata"]["name"]: d for _, d in k8s_objects("StorageClass")}
    claims = [d for _, d in k8s_objects("PersistentVolumeClaim")
              if "ReadWriteMany" in d["spec"]["accessModes"]]
    assert claims
    for claim in claims:
        name = claim["spec"].get("storageClassName")
        assert name, f"{claim['metadata']['name']}: no storageClassName: the default class is block storage"
        assert name in classes, f"{claim['metadata']['name']}: class {name} is not defined in cluster/"
    for cls in classes.values():
        assert cls["provisioner"] in RWX_PROVISIONERS, cls["provisioner"]


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_creates_and_hands_over_every_shared_study_path(name):
    paths = shipped_study_paths_under("/mnt/shared")
    assert "/mnt/shared/data" in paths, "configs/cifar10-wrn.toml downloads its data below /mnt/shared"
    (mount,) = [c for c in launcher(name)["setup_commands"] if re.search(r"\bmount\b", c)]
    made = set(re.findall(r"mkdir -p ((?:/\S+\s*)+)", mount)[-1].split())
    owned = set(re.findall(r"chown \"\$\(id -u\):\$\(id -g\)\" ((?:/\S+\s*)+)", mount)[-1].split())
    for path in paths:
        assert path in made, f"{name}: {path} is never created"
        assert path in owned, f"{name}: {path} stays root-owned: PermissionError in the study"


# ----------------------------------------------------------------- every installed package pinned
def _image_requirements() -> list[Requirement]:
    """What the Dockerfile and the launcher nodes pip-install (besides the project)."""
    texts = [(CLUSTER / "Dockerfile").read_text().replace("\\\n", " ")]
    for name in LAUNCHER_FILES:
        config = launcher(name)
        for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
            texts += config.get(key) or []
    reqs = []
    for text in texts:
        for command in re.findall(r"pip install ([^&;\n]+)", text):
            for word in command.split():
                word = word.strip("\"'")
                if word.startswith("-") or word in {"constraints.txt", ".", "~/resnet-search"} \
                        or word.endswith("constraints.txt"):
                    continue
                reqs.append(Requirement(word))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs += [Requirement(r) for r in project["dependencies"]]
    return reqs


def test_every_package_the_image_installs_is_pinned():
    """Walk the requirement graph from what the image and the nodes install, through the
    installed distributions' metadata: every node must be pinned in constraints.txt."""
    pins = constraints()
    missing: set[str] = set()
    seen: set[tuple[str, frozenset]] = set()
    todo = [(r, frozenset(r.extras)) for r in _image_requirements()]
    assert any(canonicalize_name(r.name) == "mlflow" and "auth" in r.extras for r, _ in todo)
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        if name not in pins:
            missing.add(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # pinned (or reported) above; its own requirements are pinned by the same rule
        for text in dist.requires or []:
            sub = Requirement(text)
            env = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux",
                   "platform_machine": "x86_64", "implementation_name": "cpython",
                   "platform_python_implementation": "CPython", "os_name": "posix"}
            if sub.marker and not any(sub.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
                continue
            todo.append((sub, frozenset(sub.extras)))
    assert not missing, f"installed by cluster/ but not pinned in constraints.txt: {sorted(missing)}"


# ----------------------------------------------------------------- README order
def _code(readme: str) -> str:
    return "\n".join(re.findall(r"```(?:bash)?\n(.*?)```", readme, re.S))


def test_readme_creates_the_node_security_group_before_the_efs_mount_targets():
    code = _code((CLUSTER / "README.md").read_text())
    sg = code.find("aws ec2 create-security-group")
    rule = code.find("aws ec2 authorize-security-group-ingress")
    mount = code.find("aws efs create-mount-target")
    assert -1 < sg < rule < mount, "create the nodes' group, then the EFS group that refers to it"
    assert re.search(r"create-mount-target[^\n]*(\\\n[^\n]*)*--security-groups \"?\$EFS_SG", code[mount:])
    assert "ray up cluster/aws.yaml" in code[mount:], "ray up comes after the storage it mounts"


def test_readme_installs_storage_class_before_the_claim():
    code = _code((CLUSTER / "README.md").read_text())
    assert -1 < code.find("storageclass-") < code.find("cluster/kuberay/storage.yaml")
