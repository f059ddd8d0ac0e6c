"""The start-up script of the MLflow Deployment (cluster/mlflow/mlflow.yaml), run
here as the container would run it: credentials only in env (as the Secrets would
inject them), the auth config written at start, basic auth enforced, foreign
Host headers refused. On SQLite, and on the PostgreSQL server at 127.0.0.1:5432
(tests/postgres.py: a failure when it does not answer, not a skip)."""

from __future__ import annotations

import base64
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from common import ROOT, free_port
from postgres import SKIP_VARIABLE, fresh_database, require_postgres

MANIFEST = ROOT / "cluster" / "mlflow" / "mlflow.yaml"
SEARCH_URL = "/api/2.0/mlflow/experiments/search?max_results=5"


def _container() -> dict:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _get(url: str, user: str | None = None, password: str | None = None,
         host: str | None = None) -> int:
    headers = {}
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    if host is not None:
        headers["Host"] = host
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:  # not listening yet
        return 0


@pytest.fixture
def store_uris(tmp_path):
    """PostgreSQL, as deployed; SQLite only where PostgreSQL tests are opted out (a laptop),
    so the script is still served once there. (Both in CI cost 22 s for the same checks.)"""
    if os.environ.get(SKIP_VARIABLE) == "skip":
        yield f"sqlite:///{tmp_path}/mlflow.db", f"sqlite:///{tmp_path}/auth.db"
        return
    require_postgres()
    with fresh_database("rs_cluster_test", driver="psycopg2") as backend, \
            fresh_database("rs_cluster_test", driver="psycopg2") as auth:
        yield backend, auth


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_mlflow_deployment_script_serves_with_basic_auth(store_uris, tmp_path):
    # No skip: the dev extra brings mlflow[auth] (Flask-WTF), which the server's
    # basic-auth app and the README's user-creation step need.
    import flask_wtf  # noqa: F401
    container = _container()
    script = container["args"][0]
    port = free_port()
    # Same script; loopback and a free port instead of the pod's 0.0.0.0:5000, and a
    # temporary folder instead of the artifact volume.
    assert "--host 0.0.0.0 --port 5000" in script and "/mlflow-artifacts" in script
    script = script.replace("--host 0.0.0.0 --port 5000", f"--host 127.0.0.1 --port {port}")
    script = script.replace("/mlflow-artifacts", str(tmp_path / "artifacts"))

    backend_uri, auth_uri = store_uris
    admin_password = secrets.token_hex(12)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for entry in container["env"]:  # the literal settings of the manifest
        if "value" in entry:
            env[entry["name"]] = entry["value"]
    env.update({  # what the Secrets would inject
        "MLFLOW_BACKEND_STORE_URI": backend_uri,
        "MLFLOW_AUTH_DATABASE_URI": auth_uri,
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "basic_auth.ini"),
    })
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(["/bin/sh", "-c", script], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        # Generous: two gunicorn/uvicorn workers importing MLflow on a busy 2-core CI machine.
        deadline = time.monotonic() + 300
        while _get(base + "/health") != 200:
            assert server.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)

        ini = tmp_path / "basic_auth.ini"
        assert ini.stat().st_mode & 0o077 == 0, "the auth config must be private (umask 077)"
        assert auth_uri in ini.read_text()
        assert admin_password not in ini.read_text(), "the admin password stays in env"
        processes = _cmdlines(server.pid)
        assert admin_password not in " ".join(processes), "password on a command line"
        # The server only: MLflow's job runner and huey consumers (its GenAI features) would be
        # seven more processes importing MLflow in the pod, with no job to run for the studies.
        assert not [c for c in processes if "huey" in c or "job_runner" in c], processes

        assert _get(base + SEARCH_URL) == 401, "no credentials must be refused"
        assert _get(base + SEARCH_URL, "admin", "wrong-password") == 401
        assert _get(base + SEARCH_URL, "admin", admin_password, host="mlflow:5000") == 200
        assert _get(base + SEARCH_URL, "admin", admin_password, host="evil.example.com") == 403
        _create_study_user_as_the_readme_does(base, admin_password)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _cmdlines(session_leader: int) -> list[str]:
    """Command lines of the server's process group (mlflow server and its workers)."""
    out = subprocess.run(["ps", "-ww", "-o", "args=", "--sid", str(session_leader)],
                         capture_output=True, text=True)
    return out.stdout.splitlines()


def _readme_user_snippet() -> str:
    """The Python that cluster/README.md runs (with the project venv) to create the studies' user."""
    readme = (ROOT / "cluster" / "README.md").read_text()
    m = re.search(r"MLFLOW_CLIENT_PASSWORD=\S+ (\S+) - <<'EOF'\n(.*?)\nEOF\n", readme, re.S)
    assert m, "cluster/README.md has no user-creation step"
    interpreter, code = m.groups()
    assert interpreter == ".venv/bin/python", f"the step runs {interpreter}, not the project venv"
    return code


def _create_study_user_as_the_readme_does(base: str, admin_password: str) -> None:
    code = _readme_user_snippet().replace("http://localhost:5000", base)
    client_password = secrets.token_hex(12)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": admin_password,
                "MLFLOW_CLIENT_PASSWORD": client_password})
    # The project venv's interpreter: the one running these tests.
    run = subprocess.run([sys.executable, "-"], input=code, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _get(base + SEARCH_URL, "resnet-search", client_password, host="mlflow:5000") == 200
    assert _get(base + SEARCH_URL, "resnet-search", "wrong", host="mlflow:5000") == 401

