"""cluster/README.md's path for each target (AWS and GCP with the launcher, KubeRay), from
nothing to `best` on the laptop, checked against the files it deploys: the storage
steps match the claim's binding mode, the launcher head serves MLflow with basic auth
(served here for real), the study and submit commands carry their own credentials,
and every name, port, Secret and file they use exists."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tomllib
from common import ROOT
from test_cluster_start import CLUSTER, KUBERAY, LAUNCHER_FILES, _docs, _launcher

HEAD_SERVER = CLUSTER / "mlflow" / "head-server.sh"


def _readme() -> str:
    return (CLUSTER / "README.md").read_text()


# ----------------------------------------------------------------- README's commands
def _readme_code_lines() -> list[str]:
    """README's code lines in order, continuation lines joined, comments kept."""
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", _readme(), re.S)
    return [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()
            if line.strip()]


def _readme_commands() -> list[str]:
    return [re.sub(r"\s+#\s.*$", "", line) for line in _readme_code_lines()
            if not line.startswith("#")]


def _command(pattern: str) -> str:
    found = [c for c in _readme_commands() if re.search(pattern, c)]
    assert found, f"cluster/README.md has no command matching {pattern!r}"
    return found[0]


def _assignments(words: list[str]) -> dict[str, str]:
    """The VAR=value words that start a simple command."""
    out = {}
    for word in words:
        if not re.match(r"^[A-Z_][A-Z0-9_]*=", word):
            break
        key, _, value = word.partition("=")
        out[key] = value
    return out


def _study_name(study: str) -> str:
    return tomllib.loads((ROOT / study).read_text())["study"]["name"]


# ----------------------------------------------------------------- storage binding
def _claim_consumers(claim: str) -> set[str]:
    """Files of cluster/kuberay whose pods mount `claim`."""
    files = set()
    for path in KUBERAY.glob("*.yaml"):
        if f"claimName: {claim}" in path.read_text():
            files.add(f"cluster/kuberay/{path.name}")
    return files


def _binding_modes() -> dict[str, str]:
    return {f"storageclass-{p.name.removeprefix('storageclass-')}": _docs(p)[0].get(
        "volumeBindingMode", "Immediate") for p in KUBERAY.glob("storageclass-*.yaml")}


def test_readme_waits_for_the_claim_where_it_can_bind():
    """A WaitForFirstConsumer claim stays Pending until a pod mounts it: waiting for Bound
    before any Ray pod exists never ends."""
    lines = _readme_code_lines()
    (claim,) = [d["metadata"]["name"] for d in _docs(KUBERAY / "storage.yaml")]
    consumers = _claim_consumers(claim)
    assert consumers >= {"cluster/kuberay/raycluster.yaml", "cluster/kuberay/rayjob.yaml"}
    modes = _binding_modes()
    assert "WaitForFirstConsumer" in modes.values(), "the Filestore class binds on first consumer"
    waits = [i for i, line in enumerate(lines) if "Bound" in line and claim in line]
    assert waits, "README never says when the shared claim is Bound"
    for i in waits:
        applied = " ".join(lines[:i])
        classes = {name for name in modes if name in applied}
        assert classes, f"README waits for {claim} before creating its storage class"
        if any(modes[name] == "WaitForFirstConsumer" for name in classes):
            pods = [c for c in consumers if re.search(rf"apply -f {re.escape(c)}\b", applied)]
            assert pods, (f"README waits for {claim} to be Bound before any pod mounts it: "
                          f"with WaitForFirstConsumer it stays Pending: {lines[i]}")


# ----------------------------------------------------------------- launcher: MLflow on the head
def _nodes_venv(config: dict) -> str:
    """The venv the setup commands create on every node."""
    m = re.search(r"uv venv [^&|;]*?(~/[\w.-]+)", " ".join(config["setup_commands"]))
    assert m, "the setup commands create no venv"
    return m.group(1)


def _head_server_default(variable: str) -> str:
    m = re.search(rf"\$\{{{variable}:-([^}}]+)\}}", HEAD_SERVER.read_text())
    assert m, f"head-server.sh has no default for {variable}"
    return m.group(1)


def _client_env() -> str:
    """Where head-server.sh puts the driver's MLflow credentials."""
    assert '"$home/client.env"' in HEAD_SERVER.read_text()
    return _head_server_default("MLFLOW_HOME") + "/client.env"


def _steps(shell: str) -> list[list[str]]:
    return [shlex.split(step) for step in shell.split("&&")]


def _study_on_the_head() -> tuple[str, list[list[str]]]:
    """README's `ray exec` that starts the study: its config file and its shell steps."""
    words = shlex.split(_command(r"^ray exec \S+ .*resnet-search run"))
    return words[2], _steps(words[-1])


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_head_starts_the_mlflow_server_the_driver_reads(name):
    config = _launcher(name)
    upload = config["file_mounts"]["~/resnet-search"]
    assert upload == "."
    starts = [c for c in config["head_start_ray_commands"] if "head-server.sh" in c]
    assert len(starts) == 1, f"{name}: the head does not start MLflow"
    script = re.search(r"~/resnet-search/(\S+head-server\.sh)", starts[0]).group(1)
    assert (ROOT / script).resolve() == HEAD_SERVER
    venv_bin = _nodes_venv(config).replace("~", "$HOME") + "/bin"
    assert venv_bin in starts[0], "mlflow comes from the nodes' venv"
    assert any('"mlflow[auth]"' in c for c in config["head_setup_commands"]), "basic auth needs Flask-WTF"
    home = _head_server_default("MLFLOW_HOME")
    (mount,) = [c for c in config["setup_commands"] if re.search(r"\bmount\b", c)]
    assert re.search(rf"mkdir -p [^&]*{home}\b", mount) and re.search(rf"chown [^&]*{home}\b", mount), (
        f"{name}: {home} is not handed to the ssh user")


def test_study_command_on_the_launcher_head_carries_its_credentials():
    """The driver's MLflow user and Ray's token mode come from the command itself, not from
    whatever a login shell on the head exports."""
    config_file, steps = _study_on_the_head()
    assert (ROOT / config_file).is_file()
    firsts = [s[0] for s in steps]
    assert [".", _client_env()] in steps or ["source", _client_env()] in steps, (
        f"the study command does not read the driver's MLflow credentials ({_client_env()})")
    source = firsts.index(".") if "." in firsts else firsts.index("source")
    assert ["set", "-a"] in steps[:source] and ["set", "+a"] in steps[source:], "not exported"
    run = steps[-1]
    assert _assignments(run).get("RAY_AUTH_MODE") == "token"
    program, *args = run[len(_assignments(run)):]
    for name in LAUNCHER_FILES:  # README: "GCP: the same steps with cluster/gcp.yaml"
        assert program == f"{_nodes_venv(_launcher(name))}/bin/resnet-search", name
    assert args[0] == "run" and (ROOT / args[1]).is_file(), args
    assert args[2:] == ["--address", "auto"], "the driver joins the head's own cluster"
    assert ["cd", "~/resnet-search"] in steps


def test_laptop_gets_the_champion_through_the_tunnel():
    config_file, steps = _study_on_the_head()
    study = _study_name(steps[-1][steps[-1].index("run") + 1])
    port = _head_server_default("MLFLOW_PORT")
    tunnel = shlex.split(_command(rf"^ray dashboard {config_file} .*--remote-port"))
    assert tunnel[tunnel.index("--remote-port") + 1] == port
    assert tunnel[tunnel.index("--port") + 1] == port, "client.env names the head's port"
    copy = shlex.split(_command(rf"^ray rsync-down {config_file} "))
    assert copy[3] == _client_env(), "the laptop copies what the head wrote"
    best = _command(rf"resnet-search best {study}\b")
    assert f". {copy[4]}" in best and "set -a" in best, "best runs without the MLflow credentials"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_head_server_serves_the_study_command_with_basic_auth(tmp_path):
    """head-server.sh as `ray up` runs it (a temporary shared folder, a free port), then
    README's study command with `resnet-search studies` as the driver: with the
    credentials the command reads it lists the store, without them it is refused. A
    second start (a second `ray up`) replaces the server and keeps the credentials."""
    from common import free_port

    home, state, port = tmp_path / "shared" / "mlflow", tmp_path / "state", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_"))}
    env.update(PATH=f"{Path(sys.executable).parent}:{env['PATH']}", MLFLOW_HOME=str(home),
               MLFLOW_STATE=str(state), MLFLOW_PORT=str(port))
    _, steps = _study_on_the_head()
    driver = " && ".join(shlex.join(s) for s in steps[:-1]).replace(_head_server_default("MLFLOW_HOME"),
                                                                    str(home))
    driver = driver.replace("'~/resnet-search'", shlex.quote(str(ROOT)))
    studies = f"{Path(sys.executable).parent}/resnet-search studies"
    passwords = []
    try:
        for start in (1, 2):
            up = subprocess.run(["bash", str(HEAD_SERVER)], env=env, capture_output=True, text=True,
                                timeout=300)
            assert up.returncode == 0, f"start {start}: {up.stderr[-3000:]}"
            for name in ("server.env", "client.env"):
                assert (home / name).stat().st_mode & 0o077 == 0, f"{name} is readable by others"
            client = dict(line.split("=", 1) for line in (home / "client.env").read_text().split())
            admin = dict(line.split("=", 1) for line in (home / "server.env").read_text().split())
            processes = subprocess.run(["ps", "-ww", "-eo", "args="], capture_output=True, text=True)
            for secret in (client["MLFLOW_TRACKING_PASSWORD"], admin["MLFLOW_AUTH_ADMIN_PASSWORD"]):
                assert secret not in processes.stdout, "a password on a command line"
            password = client["MLFLOW_TRACKING_PASSWORD"]
            passwords.append(password)
            assert len(set(passwords)) == 1, "a restart changed the credentials"
            ok = subprocess.run(["bash", "-c", f"{driver} && {studies}"], env=env, capture_output=True,
                                text=True, timeout=120)
            assert ok.returncode == 0, ok.stderr[-3000:]
            assert f"http://127.0.0.1:{port}" in ok.stdout, f"the driver used another store: {ok.stdout}"
            assert _create_user(port, client["MLFLOW_TRACKING_USERNAME"], password) == 403, (
                "the driver's user may administer the server")
            assert _create_user(port, admin["MLFLOW_AUTH_ADMIN_USERNAME"],
                                admin["MLFLOW_AUTH_ADMIN_PASSWORD"]) == 200
            refused = subprocess.run(["bash", "-c", studies], capture_output=True, text=True,
                                     env={**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"},
                                     timeout=120)
            assert refused.returncode != 0, "the server answered without credentials"
    finally:
        pid_file = state / "server.pid"
        if pid_file.is_file():
            _stop_session(int(pid_file.read_text()))


def _create_user(port: int, user: str, password: str) -> int:
    """The HTTP status of creating a user on the server, signed in as `user`."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    body = json.dumps({"username": f"u{secrets.token_hex(4)}", "password": secrets.token_hex(12)})
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/users/create",
                                     data=body.encode(), method="POST",
                                     headers={"Authorization": f"Basic {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _stop_session(leader: int) -> None:
    """Stop the server the script started (its own session), and wait until it is gone."""
    try:
        os.killpg(leader, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            os.killpg(leader, 0)
            time.sleep(0.5)
        os.killpg(leader, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ----------------------------------------------------------------- KubeRay: the README's path
def _secret_refs() -> set[tuple[str, str]]:
    refs = set()
    for path in [*KUBERAY.glob("*.yaml"), *(CLUSTER / "mlflow").glob("*.yaml")]:
        text = path.read_text()
        for name, key in re.findall(r"secretKeyRef:\s+name: (\S+)\s+key: (\S+)", text):
            refs.add((name, key))
        refs.update((name, "auth_token") for name in re.findall(r"secretName: (\S+)", text))
    return refs


def test_readme_creates_every_secret_the_manifests_read():
    created: dict[str, set[str]] = {}
    for command in _readme_commands():
        m = re.search(r"kubectl -n resnet-search create secret generic (\S+)", command)
        if m:
            created[m.group(1)] = set(re.findall(r"--from-literal=([\w-]+)=", command))
    for name, key in sorted(_secret_refs()):
        assert key in created.get(name, set()), f"README never creates Secret {name} with key {key}"


def test_job_submit_carries_the_token_and_reaches_the_head():
    """`ray job submit` from a laptop: the command's own env holds the token mode and the
    token from the Secret the cluster uses; the address is the port-forwarded job API."""
    (cluster,) = [d for d in _docs(KUBERAY / "raycluster.yaml") if d["kind"] == "RayCluster"]
    secret = cluster["spec"]["authOptions"]["secretName"]
    words = shlex.split(_command(r"(^|\s)ray job submit --address http://localhost:"))
    env = _assignments(words)
    assert env.get("RAY_AUTH_MODE") == "token", "ray job submit without RAY_AUTH_MODE=token"
    assert re.fullmatch(rf"\$\(kubectl -n resnet-search get secret {secret} -o "
                        r"jsonpath='\{\.data\.auth_token\}' \| base64 -d\)", env.get("RAY_AUTH_TOKEN", "")), (
        "ray job submit without the cluster's token")
    submit = words[len(env):]
    address = submit[submit.index("--address") + 1]
    local_port = re.fullmatch(r"http://localhost:(\d+)", address).group(1)
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    dashboard = {p["name"]: p["containerPort"] for p in head["ports"]}["dashboard"]
    _command(rf"port-forward svc/{cluster['metadata']['name']}-head-svc {local_port}:{dashboard}\b")
    entrypoint = submit[submit.index("--") + 1:]
    assert entrypoint[:2] == ["resnet-search", "run"] and (ROOT / entrypoint[2]).is_file()
    _assert_reaches_mlflow(entrypoint[entrypoint.index("--tracking-uri") + 1])
    # The driver runs on the head: its MLflow user comes from there, out of a Secret.
    env_refs = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in head["env"]}
    for variable in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert env_refs.get(variable), f"the head's driver has no {variable}"


def _assert_reaches_mlflow(uri: str) -> None:
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", uri).groups()
    services = {d["metadata"]["name"]: d for d in _docs(CLUSTER / "mlflow" / "mlflow.yaml")
                if d["kind"] == "Service"}
    assert host in services and int(port) in [p["port"] for p in services[host]["spec"]["ports"]], uri


def test_kuberay_readme_names_what_the_manifests_create():
    (job,) = [d for d in _docs(KUBERAY / "rayjob.yaml") if d["kind"] == "RayJob"]
    name = job["metadata"]["name"]
    _command(rf"get rayjob {name}\b")
    _command(rf"logs -f job/{name}\b")
    entrypoint = job["spec"]["entrypoint"].split()
    assert entrypoint[:2] == ["resnet-search", "run"] and (ROOT / entrypoint[2]).is_file()
    _assert_reaches_mlflow(entrypoint[entrypoint.index("--tracking-uri") + 1])
    (cluster,) = [d for d in _docs(KUBERAY / "raycluster.yaml") if d["kind"] == "RayCluster"]
    _command(rf"-l ray\.io/cluster={cluster['metadata']['name']},ray\.io/node-type=head\b")


def test_kuberay_laptop_gets_the_champion_as_the_studies_user():
    (cluster,) = [d for d in _docs(KUBERAY / "raycluster.yaml") if d["kind"] == "RayCluster"]
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}) for e in head["env"]}
    study = _study_name("configs/cifar10-wrn.toml")
    words = shlex.split(_command(rf"resnet-search best {study} --tracking-uri "))
    creds = _assignments(words)
    for variable in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        ref = refs[variable]  # the same user as the driver that logged the study
        assert (f"get secret {ref['name']} -o jsonpath='{{.data.{ref['key']}}}'"
                in creds.get(variable, "")), f"best runs without {variable}"
    local = re.fullmatch(r"http://localhost:(\d+)", words[words.index("--tracking-uri") + 1]).group(1)
    services = {d["metadata"]["name"]: d for d in _docs(CLUSTER / "mlflow" / "mlflow.yaml")
                if d["kind"] == "Service"}
    (port,) = [p["port"] for p in services["mlflow"]["spec"]["ports"]]
    _command(rf"port-forward svc/mlflow {local}:{port}\b")
