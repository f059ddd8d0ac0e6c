"""Set-up shared by every test folder: the repository root, the CLI in a subprocess, a free port.

pytest puts tests/ on sys.path (tests/conftest.py has no package), so any test imports these
with `from common import ROOT, cli, free_port`.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path | None = None, env: dict | None = None,
        timeout: float = 600, full_env: dict | None = None) -> subprocess.CompletedProcess:
    """`resnet-search ARGS` as a user runs it (from the repository root unless `cwd`).

    `env` overrides variables of this process's environment (None removes one); `full_env`
    is the whole environment instead (a study's, tests/search/study_helpers.Studies).
    """
    return subprocess.run([sys.executable, "-m", "search.cli", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=timeout,
                          env=full_env if full_env is not None else _environment(env))


def start_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
              full_env: dict | None = None, **popen: object) -> subprocess.Popen:
    """`resnet-search ARGS` started in the background; `env` and `full_env` as for `cli`,
    Popen's own keywords (output, session) passed on."""
    return subprocess.Popen([sys.executable, "-m", "search.cli", *args], cwd=cwd or ROOT,
                            env=full_env if full_env is not None else _environment(env), **popen)


# The libraries' usage-report switches: the commands a test starts never get them from the
# test, so a test that finds them in a process proves the platform set them.
TELEMETRY_SWITCHES = {"MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0"}


def _environment(overrides: dict | None) -> dict:
    """This process's environment with `overrides` applied (a None value removes the variable)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **dict.fromkeys(TELEMETRY_SWITCHES),
           **(overrides or {})}
    return {key: value for key, value in env.items() if value is not None}


def process_environment(pid: int) -> dict[str, str]:
    """A running process's environment, from /proc (empty once it has ended)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def usage_reports_off(pid: int) -> bool:
    """Whether a process runs with MLflow's and Ray's usage reports switched off."""
    environment = process_environment(pid)
    return all(environment.get(name) == value for name, value in TELEMETRY_SWITCHES.items())


# ---------------------------------------------------------------- study files


def toml_value(value: object) -> str:
    """A Python value as TOML, for the study files tests write (any string, non-finite floats,
    nested tables inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else "inf" if value > 0 else "-inf") \
            if not math.isfinite(value) else repr(value)
    if isinstance(value, str):  # a JSON string is a TOML basic string, escapes included
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_key(key: str) -> str:
    """A bare (or dotted: `lr.sgd`) key as it is, any other key quoted."""
    bare = re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", key)
    return key if bare else json.dumps(key, ensure_ascii=False)


def toml_document(document: dict) -> str:
    """A study file: top-level keys first, then one [section] per table."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in document.items() if not isinstance(v, dict)]
    for section, body in document.items():
        if isinstance(body, dict):
            lines.append(f"[{toml_key(section)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def with_own_images(path: Path, folder_parent: Path) -> Path:
    """A shipped study file itself, or for one on a folder of images (configs/own-images.toml)
    a copy in `folder_parent` whose folder exists there: two classes of three PNGs."""
    import tomllib
    from PIL import Image

    data = tomllib.loads(path.read_text()).get("data", {})
    if data.get("dataset") != "folder":
        return path
    folder = folder_parent / "images"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.new("RGB", (40, 30), (90 * i, 40, 200)).save(folder / label / f"{i}.png")
    copy = folder_parent / path.name
    copy.write_text(path.read_text().replace(f'path = "{data["path"]}"', f'path = "{folder}"'))
    return copy


def shipped_study_paths_under(mount: str) -> set[str]:
    """The results and data paths of configs/*.toml that lie under `mount` (a cluster's
    shared volume, which the deployment files must create and hand to the studies)."""
    import tomllib

    paths = set()
    for config in (ROOT / "configs").glob("*.toml"):
        study = tomllib.loads(config.read_text())
        for value in (study.get("storage", {}).get("path"), study.get("data", {}).get("root")):
            if isinstance(value, str) and value.startswith(mount + "/"):
                paths.add(value)
    return paths
