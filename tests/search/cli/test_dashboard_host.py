"""RESNET_SEARCH_DASHBOARD_HOST: a private Ray's dashboard answers on localhost only, unless
the variable opens it up (it has no login)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from common import ROOT

# A study's driver starting its private Ray, then what a browser on another machine would
# reach: the dashboard's port on this node's own address, and on loopback.
PROBE = """
import json, socket, ray
from search.study.ray_session import start_ray
start_ray(None)
url = ray._private.worker.get_dashboard_url()
port = int(url.rsplit(":", 1)[1])
node_ip = ray.util.get_node_ip_address()
def answers(host):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return True
    except OSError:
        return False
print(json.dumps({"node_ip": node_ip, "on_node_ip": answers(node_ip),
                  "on_loopback": answers("127.0.0.1")}))
ray.shutdown()
"""


@pytest.mark.slow
@pytest.mark.parametrize(("host", "exposed"), [(None, False), ("0.0.0.0", True)])
def test_the_dashboard_is_on_localhost_unless_the_variable_opens_it(host, exposed, tmp_path):
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_ADDRESS", "RESNET_SEARCH_DASHBOARD_HOST")}
    env["PYTHONPATH"] = str(ROOT)
    if host:
        env["RESNET_SEARCH_DASHBOARD_HOST"] = host
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["node_ip"] != "127.0.0.1", "this check needs a node address other than loopback"
    assert seen["on_loopback"]
    assert seen["on_node_ip"] is exposed, seen
