"""The private Ray a study starts: only the processes a study uses."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from common import ROOT

# Starts the study's private Ray, waits for whatever Ray starts on its own when a driver
# connects, then counts the Python worker processes of this Ray (they inherit its
# RAY_TMPDIR, a folder of this test's own).
COUNT_WORKERS = """
import os, time
from pathlib import Path
import ray
from search.study.ray_session import start_ray

start_ray(None)
time.sleep(5)
workers = 0
for entry in Path("/proc").iterdir():
    try:
        args = (entry / "cmdline").read_bytes().split(b"\\0")
        environ = (entry / "environ").read_bytes().split(b"\\0")
    except OSError:
        continue
    ours = f"RAY_TMPDIR={os.environ['RAY_TMPDIR']}".encode() in environ
    # A worker is titled ray::IDLE once up; before, it runs Ray's worker scripts.
    worker = args[0] == b"ray::IDLE" or (
        len(args) > 1 and args[1].endswith((b"setup_worker.py", b"default_worker.py")))
    workers += ours and worker
print(workers)
ray.shutdown()
"""

@pytest.mark.slow
def test_a_private_ray_starts_no_worker_process_before_a_trial_needs_one():
    """Tune gives every trial actor a runtime environment of its own, so a worker that Ray
    prestarts for the first driver is never used by a study: it only takes the CPU the
    trials' start-up needs. None is started until a trial asks for one."""
    temp = tempfile.mkdtemp(prefix="rs-ray-")  # short: Ray's socket paths must fit 107 bytes
    try:
        done = subprocess.run([sys.executable, "-c", COUNT_WORKERS], cwd=ROOT,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                   "RAY_TMPDIR": temp, "HOME": str(Path.home())},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.split()[-1] == "0", f"Ray started {done.stdout.split()[-1]} workers"
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_a_study_without_address_never_joins_a_cluster_an_old_address_file_names(tmp_path):
    """Ray records the last cluster `ray start` made in RAY_TMPDIR/ray_current_cluster, and
    the file outlives a cluster that was killed. A study without --address starts a Ray of
    its own all the same: joining a cluster is done on purpose (--address, $RAY_ADDRESS)."""
    from study_helpers import Studies, study_toml

    studies = Studies(tmp_path / "home", private_ray=True)
    studies.home.mkdir()
    temp = tempfile.mkdtemp(prefix="rs-ray-")  # short: Ray's socket paths must fit 107 bytes
    try:
        # Where Ray looks for it: $RAY_TMPDIR/ray/ray_current_cluster (/tmp/ray/... by default).
        Path(temp, "ray").mkdir()
        Path(temp, "ray", "ray_current_cluster").write_text("127.0.0.1:1\n")  # a cluster long gone
        study = studies.write("alone", study_toml("alone", study={"num_samples": 1},
                                                  train={"epochs": 1}))
        result = studies.cli("run", str(study), env={"RAY_TMPDIR": temp})
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(studies.trial_runs("alone")) == 1
