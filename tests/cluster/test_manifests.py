"""Static checks of the deployment files in cluster/: they parse, and they are
hardened by default (token auth, no public dashboards, no literal credentials,
secrets by reference, autoscaling GPU workers, non-root image)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from common import ROOT

CLUSTER = ROOT / "cluster"

EXPECTED_FILES = [
    "README.md",
    "local.sh",
    "aws.yaml",
    "gcp.yaml",
    "Dockerfile",
    "Dockerfile.dockerignore",
    "kuberay/raycluster.yaml",
    "kuberay/rayjob.yaml",
    "kuberay/storage.yaml",
    "kuberay/networkpolicy.yaml",
    "mlflow/mlflow.yaml",
    "mlflow/postgres.yaml",
    "mlflow/head-server.sh",
]
LAUNCHER_FILES = ["aws.yaml", "gcp.yaml"]
SHARED_MOUNT = "/mnt/shared"
RAY_SECRET = "resnet-search-ray-auth"
PUBLIC_CIDRS = {"0.0.0.0/0", "::/0"}


# ----------------------------------------------------------------- loading
def yaml_files() -> list[Path]:
    return sorted(p for p in CLUSTER.rglob("*") if p.suffix in {".yaml", ".yml"})


def all_files() -> list[Path]:
    return sorted(p for p in CLUSTER.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


@functools.cache
def docs_of(path: Path) -> tuple[Any, ...]:
    return tuple(d for d in yaml.safe_load_all(path.read_text()) if d is not None)


def k8s_objects(kind: str | None = None) -> list[tuple[Path, dict]]:
    out = []
    for path in yaml_files():
        if path.name in LAUNCHER_FILES:
            continue
        for doc in docs_of(path):
            if isinstance(doc, dict) and "kind" in doc and (kind is None or doc["kind"] == kind):
                out.append((path, doc))
    return out


def launcher(name: str) -> dict:
    (doc,) = docs_of(CLUSTER / name)
    return doc


def ray_cluster_specs() -> list[tuple[str, dict]]:
    """Every RayCluster spec: the RayCluster objects and each RayJob's rayClusterSpec."""
    specs = [(f"{p.name}:{d['metadata']['name']}", d["spec"]) for p, d in k8s_objects("RayCluster")]
    specs += [
        (f"{p.name}:{d['metadata']['name']}", d["spec"]["rayClusterSpec"])
        for p, d in k8s_objects("RayJob")
    ]
    return specs


def pod_specs(obj: Any) -> Iterator[dict]:
    """Every pod spec (a mapping with a `containers` list) anywhere inside obj."""
    if isinstance(obj, dict):
        if isinstance(obj.get("containers"), list):
            yield obj
        for value in obj.values():
            yield from pod_specs(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from pod_specs(value)


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def secret_ref(entry: dict | None) -> dict | None:
    if not entry:
        return None
    return (entry.get("valueFrom") or {}).get("secretKeyRef")


def ray_start_commands(commands: list[str]) -> list[str]:
    return [c for c in commands if re.search(r"\bray start\b", c)]


# ----------------------------------------------------------------- credential scanner
_REFERENCE = re.compile(r"""^["']?(\$|<|REPLACE_WITH|\{\{|%\(|~|/|\.\.\.)""")
# Keys that name a secret without holding one.
_REFERENCE_KEYS = re.compile(
    r"(?i)^(secretName|secretKeyRef|secretRef|secret_key_ref|tokenPath|token_path|"
    r"[A-Z_]*TOKEN_PATH|[A-Z_]*SECRET_NAME|serviceAccountToken|automountServiceAccountToken|"
    r"HttpTokens)$"
)
_CRED_ASSIGN = re.compile(
    r"""(?ix)
    (?P<key>[A-Za-z0-9_.-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key)[A-Za-z0-9_.-]*)
    ["']?\s*(?::|=)\s*
    (?P<value>"[^"\n]*"|'[^'\n]*'|[^\s,;#)}\]]+)
    """
)
_URI_WITH_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:(?P<pw>[^@\s/'\"]+)@")
_WEAK_DEFAULTS = re.compile(
    r"(?i)\b(changeme|change_me|hunter2|letmein|password123|admin123|p@ssw0rd|5241590000000000)\b"
)
_KEY_MATERIAL = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\bAKIA[0-9A-Z]{16}\b|\"private_key\"\s*:"
)


def _is_literal(value: str) -> bool:
    value = value.strip()
    bare = value.strip("\"'")
    if not bare or _REFERENCE.match(value) or _REFERENCE.match(bare):
        return False
    if len(bare) < 4 or not re.search(r"[A-Za-z0-9]", bare):
        return False
    # an expression that reads it from elsewhere: os.environ["X"], getenv("X"), secrets.get(...)
    if re.match(r"^[A-Za-z_][\w.]*[\[(]", bare):
        return False
    return True


def _markdown_code(text: str) -> list[str]:
    """The lines of fenced code blocks and the inline code spans of a Markdown text,
    in place (other lines blank) so that line numbers stay right."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
        elif fenced:
            out.append(line)
        else:
            out.append("  ".join(re.findall(r"`([^`]+)`", line)))
    return out


def find_literal_credentials(text: str, markdown: bool = False) -> list[str]:
    """Lines of `text` that carry a credential value instead of a reference to one.
    In Markdown, key/value pairs are looked for in code only (prose says "password:")."""
    hits = []
    code_lines = _markdown_code(text) if markdown else text.splitlines()
    for lineno, (line, code) in enumerate(zip(text.splitlines(), code_lines, strict=True), 1):
        for m in _CRED_ASSIGN.finditer(code):
            key = m.group("key").strip("\"'")
            if _REFERENCE_KEYS.match(key) or key.lower() in {"key", "name"}:
                continue
            if m.group("value").startswith(("[", "{")):
                continue
            if _is_literal(m.group("value")):
                hits.append(f"{lineno}: {line.strip()}")
        for m in _URI_WITH_PASSWORD.finditer(line):
            if _is_literal(m.group("pw")):
                hits.append(f"{lineno}: {line.strip()}")
        if _WEAK_DEFAULTS.search(line) or _KEY_MATERIAL.search(line):
            hits.append(f"{lineno}: {line.strip()}")
    return sorted(set(hits))


# ----------------------------------------------------------------- inventory
@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_deployment_file_exists(name):
    assert (CLUSTER / name).is_file(), f"cluster/{name} is missing"


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(CLUSTER)))
def test_yaml_parses_into_mappings(path):
    docs = docs_of(path)
    assert docs, f"{path} holds no YAML document"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
        if path.name not in LAUNCHER_FILES:
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
            assert doc["metadata"].get("name"), f"{path}: {doc['kind']} without a name"


# ----------------------------------------------------------------- credentials
@pytest.mark.parametrize("path", all_files(), ids=lambda p: str(p.relative_to(CLUSTER)))
def test_no_literal_credentials(path):
    hits = find_literal_credentials(path.read_text(), markdown=path.suffix == ".md")
    assert not hits, f"{path.relative_to(ROOT)} carries credential values:\n" + "\n".join(hits)


@pytest.mark.parametrize(
    "text",
    [
        "password: hunter22x",
        "  POSTGRES_PASSWORD=supersecret",
        "uri: postgresql+psycopg2://mlflow:s3cretpw@db:5432/mlflow",
        "--from-literal=password=s3cretvalue",
        "admin_password = mlflow123",
        '"auth_token": "abcd1234efgh"',
        "- name: X\n  value: changeme",
        "aws_access_key_id: AKIAABCDEFGHIJKLMNOP",
        "MLFLOW_FLASK_SERVER_SECRET_KEY: 'f00dcafe'",
    ],
)
def test_credential_scanner_flags_literals(text):
    assert find_literal_credentials(text), f"the scanner missed: {text!r}"
    fenced = f"Prose: no secrets here.\n```bash\n{text}\n```\n"
    assert find_literal_credentials(fenced, markdown=True), f"missed in Markdown: {text!r}"


@pytest.mark.parametrize(
    "text",
    [
        "secretKeyRef:\n  name: mlflow-db\n  key: password",
        "secretName: resnet-search-ray-auth",
        'backend-uri="postgresql+psycopg2://mlflow:$PGPASS@mlflow-postgres:5432/mlflow"',
        '--from-literal=password="$(openssl rand -hex 24)"',
        '"~/.ray/auth_token": "~/.ray/auth_token"',
        "[[ -z ${RAY_AUTH_TOKEN:-} ]]",
        'export MLFLOW_AUTH_ADMIN_PASSWORD="<admin password>"',
        "- name: RAY_AUTH_TOKEN",
        'create_user(username="rs", password=os.environ["MLFLOW_CLIENT_PASSWORD"])',
    ],
)
def test_credential_scanner_accepts_references(text):
    assert not find_literal_credentials(text), f"false alarm on: {text!r}"


def test_no_secret_objects_committed():
    """Secrets are created at deploy time (kubectl create secret ...), never shipped."""
    for path, doc in k8s_objects("Secret"):
        assert not (doc.get("data") or doc.get("stringData")), f"{path}: Secret with data"


def test_sensitive_env_vars_come_from_secrets():
    sensitive = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$|DATABASE_URI|BACKEND_STORE_URI")
    seen = 0
    for path, doc in k8s_objects():
        for spec in pod_specs(doc):
            for container in spec["containers"] + spec.get("initContainers", []):
                for name, entry in env_of(container).items():
                    if not sensitive.search(name) or name.endswith("_PATH"):
                        continue
                    seen += 1
                    ref = secret_ref(entry)
                    assert "value" not in entry and ref, f"{path}: env {name} is not a secretKeyRef"
                    assert ref.get("name") and ref.get("key"), f"{path}: env {name}: incomplete ref"
    for path, doc in k8s_objects("RayCluster") + k8s_objects("RayJob"):
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        for name, entry in env_of(spec.get("autoscalerOptions", {})).items():
            if sensitive.search(name):
                seen += 1
                assert secret_ref(entry), f"{path}: autoscaler env {name} is not a secretKeyRef"
    assert seen >= 10, "expected the Ray tokens and MLflow/PostgreSQL credentials in env"


# ----------------------------------------------------------------- Ray cluster launcher
@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_ray_start_uses_token_auth(name):
    config = launcher(name)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = ray_start_commands(config[key])
        assert starts, f"{name}: no `ray start` in {key}"
        for command in starts:
            assert re.search(r"\bRAY_AUTH_MODE=token\b.*\bray start\b", command), (
                f"{name}: {key} starts Ray without RAY_AUTH_MODE=token: {command}"
            )
    # the token itself goes to every node from the user's machine, not from the file
    assert "~/.ray/auth_token" in config["file_mounts"], f"{name}: auth token not distributed"
    assert any("RAY_AUTH_MODE=token" in c for c in config["setup_commands"]), (
        f"{name}: shells on the nodes (ray exec / job submit) do not export RAY_AUTH_MODE=token"
    )


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_dashboard_only_on_loopback(name):
    config = launcher(name)
    (head_start,) = ray_start_commands(config["head_start_ray_commands"])
    hosts = re.findall(r"--dashboard-host[= ](\S+)", head_start)
    assert hosts and all(h in {"127.0.0.1", "localhost"} for h in hosts), head_start
    for command in config["worker_start_ray_commands"]:
        assert "0.0.0.0" not in command, command


def public_rules(obj: Any, rule: dict | None = None) -> Iterator[dict | None]:
    """For every public CIDR anywhere in obj, the nearest enclosing firewall rule."""
    if isinstance(obj, dict):
        if {"FromPort", "ToPort", "IpProtocol", "allowed", "ports"} & obj.keys():
            rule = obj
        for value in obj.values():
            yield from public_rules(value, rule)
    elif isinstance(obj, list):
        for value in obj:
            yield from public_rules(value, rule)
    elif isinstance(obj, str) and obj.strip() in PUBLIC_CIDRS:
        yield rule


def is_ssh_only(rule: dict | None) -> bool:
    if rule is None:
        return False
    if "FromPort" in rule or "ToPort" in rule:
        return rule.get("FromPort") == 22 and rule.get("ToPort") == 22
    allowed = rule.get("allowed", [])
    return bool(allowed) and all([str(p) for p in a.get("ports", [])] == ["22"] for a in allowed)


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_opens_nothing_public_but_ssh(name):
    config = launcher(name)
    for rule in public_rules(config):
        assert is_ssh_only(rule), f"{name}: a rule opens more than SSH to the internet: {rule}"


def test_public_rule_check_catches_open_dashboard():
    bad = {"security_group": {"IpPermissions": [
        {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp",
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}}
    good = {"security_group": {"IpPermissions": [
        {"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp",
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}}
    assert not all(is_ssh_only(r) for r in public_rules(bad))
    assert all(is_ssh_only(r) for r in public_rules(good))
    assert not all(is_ssh_only(r) for r in public_rules({"sourceRanges": ["0.0.0.0/0"]}))


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_cpu_head_and_autoscaling_gpu_workers(name):
    config = launcher(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head.get("resources", {}).get("GPU", 0) == 0, "the head is a CPU node"
    assert head.get("resources", {}).get("CPU") == 0, "the head must not run trials"
    gpu_types = {
        n: t for n, t in types.items()
        if n != config["head_node_type"] and t.get("resources", {}).get("GPU", 0) >= 1
    }
    assert gpu_types, f"{name}: no GPU worker node type"
    for type_name, node_type in gpu_types.items():
        assert node_type.get("min_workers", 0) == 0, f"{type_name}: GPU nodes should scale to 0"
        assert node_type["max_workers"] > node_type.get("min_workers", 0), type_name
    assert config["max_workers"] >= max(t["max_workers"] for t in gpu_types.values())
    assert config["idle_timeout_minutes"] > 0


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_installs_project_with_constraints_and_mounts_shared_storage(name):
    config = launcher(name)
    assert config["file_mounts"].get("~/resnet-search") == ".", "the repository is uploaded"
    setup = config["setup_commands"]
    assert any(
        re.search(r"pip install .*-c \S*constraints\.txt .*~/resnet-search(\s|$)", c) for c in setup
    ), f"{name}: the project is not pip-installed with constraints.txt"
    assert any(re.search(rf"\bmount\b.*\s{SHARED_MOUNT}\b", c) for c in setup), (
        f"{name}: no shared storage mounted at {SHARED_MOUNT}"
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_commands_are_single_line_valid_bash(name):
    """Folded YAML with deeper indentation silently keeps newlines (a command cut in two)."""
    config = launcher(name)
    keys = ["initialization_commands", "setup_commands", "head_setup_commands",
            "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"]
    for key in keys:
        for command in config.get(key) or []:
            assert "\n" not in command.strip(), f"{name}: {key} command spans lines: {command!r}"
            check = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
            assert check.returncode == 0, f"{name}: {key}: {check.stderr}"


# ----------------------------------------------------------------- KubeRay
def test_kuberay_has_a_raycluster_and_a_rayjob():
    assert len(k8s_objects("RayCluster")) == 1
    assert len(k8s_objects("RayJob")) == 1


def _ray_containers(spec: dict) -> list[tuple[str, dict]]:
    out = [("head", spec["headGroupSpec"]["template"]["spec"]["containers"][0])]
    for group in spec["workerGroupSpecs"]:
        out.append((f"worker {group['groupName']}", group["template"]["spec"]["containers"][0]))
    return out


def _assert_token_env(where: str, env: dict[str, dict]) -> None:
    assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{where}: RAY_AUTH_MODE"
    ref = secret_ref(env.get("RAY_AUTH_TOKEN"))
    assert ref and ref["name"] == RAY_SECRET and ref["key"] == "auth_token", (
        f"{where}: RAY_AUTH_TOKEN must come from Secret {RAY_SECRET}/auth_token"
    )


@pytest.mark.parametrize("which", range(2), ids=["raycluster", "rayjob"])
def test_kuberay_token_auth_on_every_ray_container(which):
    name, spec = ray_cluster_specs()[which]
    assert spec.get("authOptions", {}).get("mode") == "token", f"{name}: authOptions.mode"
    assert spec["authOptions"].get("secretName") == RAY_SECRET
    for role, container in _ray_containers(spec):
        _assert_token_env(f"{name} {role}", env_of(container))
    _assert_token_env(f"{name} autoscaler", env_of(spec["autoscalerOptions"]))


def test_rayjob_submitter_authenticates():
    ((_, job),) = k8s_objects("RayJob")
    submitter = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    _assert_token_env("RayJob submitter", env_of(submitter))
    assert not submitter.get("command"), "KubeRay fills in the submit command"


@pytest.mark.parametrize("which", range(2), ids=["raycluster", "rayjob"])
def test_kuberay_dashboard_stays_in_cluster(which):
    name, spec = ray_cluster_specs()[which]
    head = spec["headGroupSpec"]
    service_type = head.get("serviceType", "ClusterIP")
    assert service_type == "ClusterIP", f"{name}: head service is {service_type}"
    assert "headService" not in spec["headGroupSpec"], "a custom head service could expose it"


def test_no_service_is_exposed_outside_the_cluster():
    for path, doc in k8s_objects("Service"):
        kind = doc["spec"].get("type", "ClusterIP")
        assert kind == "ClusterIP", f"{path}: Service {doc['metadata']['name']} is {kind}"
        for port in doc["spec"].get("ports", []):
            assert "nodePort" not in port, path
    for kind in ("Ingress", "Route", "Gateway", "HTTPRoute"):
        assert not k8s_objects(kind), f"{kind} objects would expose a dashboard"


@pytest.mark.parametrize("which", range(2), ids=["raycluster", "rayjob"])
def test_kuberay_gpu_worker_group_autoscales(which):
    name, spec = ray_cluster_specs()[which]
    assert spec.get("enableInTreeAutoscaling") is True, f"{name}: autoscaling off"
    gpu_groups = []
    for group in spec["workerGroupSpecs"]:
        container = group["template"]["spec"]["containers"][0]
        limits = container.get("resources", {}).get("limits", {})
        if int(limits.get("nvidia.com/gpu", 0)) >= 1:
            gpu_groups.append(group)
    assert gpu_groups, f"{name}: no worker group requests nvidia.com/gpu"
    for group in gpu_groups:
        assert group["minReplicas"] == 0 < group["maxReplicas"], group["groupName"]
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
    head_container = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head_container.get("resources", {}).get("limits", {})
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", "no trials on the head"


@pytest.mark.parametrize("which", range(2), ids=["raycluster", "rayjob"])
def test_kuberay_shared_results_volume_on_every_node(which):
    name, spec = ray_cluster_specs()[which]
    claims = {d["metadata"]["name"]: d for _, d in k8s_objects("PersistentVolumeClaim")}
    pods = [("head", spec["headGroupSpec"]["template"]["spec"])] + [
        (g["groupName"], g["template"]["spec"]) for g in spec["workerGroupSpecs"]
    ]
    for role, pod in pods:
        volumes = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod.get("volumes", []) if "persistentVolumeClaim" in v
        }
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0].get("volumeMounts", [])}
        assert SHARED_MOUNT in mounts, f"{name} {role}: nothing mounted at {SHARED_MOUNT}"
        claim = volumes.get(mounts[SHARED_MOUNT])
        assert claim in claims, f"{name} {role}: {SHARED_MOUNT} is not a PVC of cluster/"
        assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"], f"{claim} is not RWX"


def test_rayjob_runs_the_study_and_cleans_up():
    ((_, job),) = k8s_objects("RayJob")
    spec = job["spec"]
    entrypoint = spec["entrypoint"]
    assert re.match(r"^resnet-search run configs/cifar10-wrn\.toml\b", entrypoint), entrypoint
    assert "--tracking-uri http://mlflow:5000" in entrypoint
    # KubeRay pastes the entrypoint into `bash -c "... ray job submit -- <entrypoint>"`:
    # shell operators would run in the submitter pod instead of the job.
    assert not re.search(r"&&|\|\||[;|<>`]|\$\(", entrypoint), entrypoint
    assert spec["shutdownAfterJobFinishes"] is True
    # The cluster outlives the job long enough to read its logs (the default, 0, deletes it at once).
    assert spec.get("ttlSecondsAfterFinished", 0) >= 300, "the job's logs vanish with the cluster"
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head.get("workingDir") == "/app", "the relative study path resolves in the image's /app"


def test_kuberay_and_mlflow_use_the_project_image_pinned():
    images = set()
    for path, doc in k8s_objects():
        for spec in pod_specs(doc):
            for container in spec["containers"] + spec.get("initContainers", []):
                image = container["image"]
                images.add(image)
                tag = image.rsplit("/", 1)[-1]
                assert ":" in tag and not tag.endswith(":latest"), f"{path}: unpinned {image}"
    assert any(i.endswith("/resnet-search:0.1.0") for i in images), images


def test_pods_run_unprivileged():
    checked = 0
    for path, doc in k8s_objects():
        for spec in pod_specs(doc):
            security = spec.get("securityContext", {})
            assert security.get("runAsNonRoot") is True, f"{path}: pod may run as root"
            assert security.get("runAsUser", 0) != 0, path
            for container in spec["containers"]:
                sc = container.get("securityContext", {})
                assert sc.get("allowPrivilegeEscalation") is False, f"{path}: {container['name']}"
                assert sc.get("privileged", False) is False, f"{path}: {container['name']}"
                assert "ALL" in sc.get("capabilities", {}).get("drop", []), container["name"]
                checked += 1
    assert checked >= 7


def test_network_policies_restrict_ray_and_postgres():
    policies = {d["metadata"]["name"]: d for _, d in k8s_objects("NetworkPolicy")}
    ray_policy = next(
        p for p in policies.values()
        if p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name") == "resnet-search-ray"
    )
    # Same namespace on any port; from elsewhere only peers bound to a namespace
    # selector and a port list (the operator on 8265: test_deployment_targets.py).
    (same_namespace, *others) = ray_policy["spec"]["ingress"]
    assert same_namespace == {"from": [{"podSelector": {}}]}, "same namespace first"
    for rule in others:
        assert rule.get("ports") and all(
            peer.get("namespaceSelector", {}).get("matchLabels") and peer.get("podSelector")
            for peer in rule["from"]
        ), f"an ingress rule open beyond a named pod and port: {rule}"
    for _, spec in ray_cluster_specs():
        for pod in [spec["headGroupSpec"]] + spec["workerGroupSpecs"]:
            labels = pod["template"]["metadata"]["labels"]
            assert labels.get("app.kubernetes.io/name") == "resnet-search-ray"
    pg_policy = next(
        p for p in policies.values()
        if p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name") == "mlflow-postgres"
    )
    (rule,) = pg_policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}]


# ----------------------------------------------------------------- MLflow
def _mlflow_container() -> tuple[dict, dict]:
    ((_, deployment),) = k8s_objects("Deployment")
    spec = deployment["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


def test_mlflow_server_postgres_artifacts_basic_auth():
    _, container = _mlflow_container()
    command = " ".join(container.get("command", []) + container.get("args", []))
    assert "mlflow server" in command
    assert "--app-name basic-auth" in command
    assert re.search(r"--artifacts-destination \S+", command)
    assert "--serve-artifacts" in command
    assert "--backend-store-uri" not in command, "the store URI (with its password) via env only"
    assert "--disable-security-middleware" not in command
    env = env_of(container)
    for name in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_DATABASE_URI", "MLFLOW_AUTH_ADMIN_USERNAME",
                 "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert secret_ref(env.get(name)), f"{name} must come from a Secret"
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"].startswith("/run/")
    assert env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"] != "*"
    assert "default_permission" in command and "database_uri = ${MLFLOW_AUTH_DATABASE_URI}" in command


def test_mlflow_auth_config_lives_in_memory_only():
    spec, container = _mlflow_container()
    config_dir = os.path.dirname(env_of(container)["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == config_dir)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume.get("emptyDir", {}).get("medium") == "Memory"


def test_mlflow_service_named_like_the_rayjob_tracking_uri():
    services = {d["metadata"]["name"]: d for _, d in k8s_objects("Service")}
    assert [p["port"] for p in services["mlflow"]["spec"]["ports"]] == [5000]


def test_postgres_password_from_secret_and_no_trust_auth():
    ((_, sts),) = k8s_objects("StatefulSet")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    env = env_of(container)
    assert secret_ref(env.get("POSTGRES_PASSWORD")), "POSTGRES_PASSWORD must come from a Secret"
    assert "POSTGRES_HOST_AUTH_METHOD" not in env
    assert sts["spec"]["volumeClaimTemplates"], "the database needs a persistent volume"


def test_documented_database_uris_name_the_psycopg2_driver():
    """SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed."""
    for path in all_files():
        # connection URIs (user, host or a variable after the scheme), not the bare scheme
        for uri in re.findall(r"postgresql(?:\+\w+)?://[\w$<]\S*", path.read_text()):
            assert uri.startswith("postgresql+psycopg2://"), f"{path.name}: {uri}"


# ----------------------------------------------------------------- Dockerfile
def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (CLUSTER / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runs_as_non_root():
    users = [rest for word, rest in _dockerfile_instructions() if word == "USER"]
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, users[-1]
    assert user.isdigit(), "numeric uid, so Kubernetes runAsNonRoot can verify it"


def test_dockerfile_installs_project_with_constraints():
    instructions = _dockerfile_instructions()
    froms = [rest for word, rest in instructions if word == "FROM"]
    args = dict(
        rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest
    )
    assert froms and "python:" in froms[0]
    assert args.get("PYTHON_VERSION") == "3.11" or "python:3.11" in froms[0]
    runs = [rest for word, rest in instructions if word == "RUN" and "pip install" in rest]
    assert runs, "nothing is pip-installed"
    for run in runs:
        assert re.search(r"(-c|--constraint) constraints\.txt", run), f"unconstrained: {run}"
    assert any(re.search(r"pip install -c constraints\.txt \.(\s|$)", r) for r in runs), (
        "the project itself (.) is not installed"
    )
    assert any(word == "COPY" and "constraints.txt" in rest for word, rest in instructions)
    # a Ray head on KubeRay needs the dashboard/job server; MLflow basic-auth needs Flask-WTF
    assert any("ray[default" in r for r in runs) and any("mlflow[auth]" in r for r in runs)
    user_at = max(i for i, (w, _) in enumerate(instructions) if w == "USER")
    assert all(w != "RUN" for w, _ in instructions[user_at + 1:]), "RUN after USER drops to root?"


def test_dockerignore_keeps_local_state_and_secrets_out():
    ignored = {
        line.strip() for line in (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "data", "mlruns", ".resnet-search", "**/auth_token"} <= ignored


# ----------------------------------------------------------------- local.sh (static)
def _code_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]


def test_local_sh_is_executable_bash():
    script = CLUSTER / "local.sh"
    assert os.access(script, os.X_OK), "cluster/local.sh is not executable"
    assert script.read_text().startswith("#!/usr/bin/env bash")
    if shutil.which("bash"):
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_local_sh_never_stops_other_rays():
    for line in _code_lines(CLUSTER / "local.sh"):
        assert not re.search(r"""\bray["']?\s+stop\b|\bpkill\b|\bkillall\b|kill\s+-9\s+-1""", line), (
            f"local.sh must stop only its own processes: {line.strip()}"
        )


def test_local_sh_hardening_flags():
    text = "\n".join(_code_lines(CLUSTER / "local.sh"))
    for needle in ("--dashboard-host 127.0.0.1", "RAY_AUTH_MODE=token", "--disable-usage-stats",
                   "--node-ip-address 127.0.0.1", "--temp-dir", "setsid", "--min-worker-port",
                   "--max-worker-port", "--node-manager-port", "--object-manager-port"):
        assert needle in text, f"local.sh lacks {needle}"
    assert "0.0.0.0" not in text


# ----------------------------------------------------------------- README
def test_readme_walks_through_every_deployment():
    text = (CLUSTER / "README.md").read_text()
    for needle in (
        "cluster/local.sh up", "cluster/local.sh down", "ray up cluster/aws.yaml",
        "cluster/gcp.yaml", "ray dashboard", "kubectl -n resnet-search apply -f cluster/kuberay/",
        "port-forward", "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN", "--address", "RAY_ADDRESS",
        "--tracking-uri", "MLFLOW_TRACKING_URI", "[storage] path", SHARED_MOUNT,
        "secretKeyRef", "create secret generic", "--app-name basic-auth",
    ):
        assert needle in text, f"cluster/README.md does not mention {needle}"


def test_readme_refers_only_to_existing_cluster_files():
    text = (CLUSTER / "README.md").read_text()
    for ref in set(re.findall(r"cluster/[\w./-]+\.(?:yaml|sh|md)|cluster/Dockerfile", text)):
        assert (ROOT / ref).is_file(), f"README mentions {ref}, which does not exist"
