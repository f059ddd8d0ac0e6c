"""A study on a user's own folder of images: `check` lists it, `run` trains on it, and its
decoded cache is built once and reused by later studies.

The folder is laid out as users' folders are (tests/search/image_folders.py). A folder study
on a cluster, its cache under the shared [storage] path, is the Ray job of
test_autoscaling_cluster.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from common import cli
from image_folders import folder_study, write_digit_folder
from study_helpers import SHARED_RAY, study_toml

from search.results.retrieve import load_best


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("own-images") / "digits"
    write_digit_folder(root)
    return root


def cache_files(folder: Path) -> dict[str, int]:
    """The decoded cache's files and their modification times (ns)."""
    return {p.name: p.stat().st_mtime_ns for p in (folder / ".resnet-search-cache").iterdir()}


@pytest.mark.slow
def test_a_study_on_a_folder_of_images_and_its_cache_reused(studies, digit_folder):
    first = studies.write("folder-a", folder_study("folder-a", digit_folder))
    checked = cli("check", str(first), env={"RESNET_SEARCH_HOME": str(studies.home)})
    assert checked.returncode == 0, checked.stderr
    dataset = checked.stdout.split("\ndataset\n", 1)[1]
    assert "10 classes" in dataset and "d0" in dataset and "d9" in dataset, dataset

    result = studies.cli("run", str(first))
    assert result.returncode == 0, result.stderr[-3000:]
    status = json.loads(studies.cli("status", "folder-a", "--json").stdout)
    assert status["test_accuracy"] >= 0.95, status["test_accuracy"]
    built = cache_files(digit_folder)

    # The champion classifies the test folder's files as it scored them, by class name; a
    # file that is no image is said, and the others are classified all the same.
    broken = digit_folder.parent / "broken.png"
    broken.write_bytes(b"\x89PNG but cut short")
    predicted = studies.cli("predict", "folder-a", str(digit_folder / "test"), str(broken),
                            "--json")
    assert predicted.returncode == 1, predicted.stderr[-3000:]
    rows = {Path(row["file"]): row for row in json.loads(predicted.stdout)}
    assert rows.pop(broken)["error"].startswith("cannot read it as an image")
    assert f"{broken}: cannot read it as an image" in predicted.stderr
    tested = list((digit_folder / "test").rglob("img*"))
    assert set(rows) == set(tested)
    right = sum(row["predictions"][0]["class"] == path.relative_to(digit_folder / "test").parts[0]
                for path, row in rows.items())
    assert abs(right / len(rows) - status["test_accuracy"]) <= 0.01, (right, len(rows))
    # The report shows the champion's test split by class, named by the class folders.
    report = studies.home.parent / "report"
    reported = studies.cli("report", "folder-a", "--out", str(report))
    assert reported.returncode == 0, reported.stderr[-3000:]
    page = (report / "report.html").read_text()
    by_class = page.split("The champion on the test split, by class", 1)[1].split("</section>")[0]
    tested_per_class = {f"d{k}": len(list((digit_folder / "test" / f"d{k}").rglob("img*")))
                        for k in range(10)}
    for name, images in tested_per_class.items():
        assert f"<tr><td>{name}</td><td>{images}</td>" in by_class, (name, by_class[:2000])
    # So does the study run's description in the dashboard.
    from search.tracking import store

    client = studies.client()
    description = store.find_study_run(client, "folder-a").data.tags["mlflow.note.content"]
    assert "Test accuracy by class, lowest 5 of 10:" in description, description
    assert any(f"| d{k} | {tested_per_class[f'd{k}']} |" in description for k in range(10))
    # From Python and for a server, the classes come named by their folders too.
    classes = tuple(f"d{k}" for k in range(10))
    _, config = load_best("folder-a", studies.tracking_uri)
    assert config["class_names"] == classes
    import mlflow

    # load_best reads a local store without MLflow: MLflow is told the store here.
    mlflow.set_tracking_uri(studies.tracking_uri)
    mlflow.set_registry_uri(studies.tracking_uri)  # an earlier test in this process set its own
    served = mlflow.models.get_model_info(config["model_uri"])
    assert tuple(served.metadata["class_names"]) == classes

    # A second study on the same folder decodes nothing: the cache files stay as they were.
    time.sleep(0.01)
    second = studies.write("folder-b", folder_study("folder-b", digit_folder, 1, 1))
    again = studies.cli("run", str(second))
    assert again.returncode == 0, again.stderr[-3000:]
    assert cache_files(digit_folder) == built

    # A changed image makes the cache stale, and `check` says so before anything runs.
    image = next(digit_folder.glob("train/d3/*.png"))
    later = image.stat().st_mtime_ns + 10**9
    os.utime(image, ns=(later, later))
    stale = cli("check", str(second), env={"RESNET_SEARCH_HOME": str(studies.home)})
    assert stale.returncode == 0, stale.stderr
    assert "stale" in stale.stdout.split("\ndataset\n", 1)[1]


@pytest.mark.slow
def test_a_node_that_cannot_see_the_cache_fails_naming_it(studies, tmp_path):
    """The driver builds the cache under the study's [storage] path; a node that does not see
    that folder fails its trials with one line naming it. Shown for real on one machine: the
    driver runs in a mount namespace where STORAGE/data-cache is its own tmpfs, so the cache
    it builds is invisible to the trial processes (started by the shared Ray's raylet)."""
    folder = tmp_path / "digits"
    write_digit_folder(folder, every=9)
    storage = tmp_path / "storage"
    (storage / "data-cache").mkdir(parents=True)
    study = studies.write("unseen-cache", study_toml(
        "unseen-cache", study={"num_samples": 1, "seed": 0},
        data={"dataset": "folder", "path": str(folder), "image_size": 16},
        train={"epochs": 1, "batch_size": 64}, storage={"path": str(storage)},
        resources={"max_failures": 0},  # a retry on the same node would fail alike
        space={"family": "wrn", "depth": 10, "width": 1}, replace_space=True))
    env = {**studies.env, "RAY_ADDRESS": SHARED_RAY.address(), "RAY_AUTH_MODE": "token"}
    driver = subprocess.run(
        ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"',
         str(storage / "data-cache"), sys.executable, "-m", "search.cli", "run", str(study)],
        capture_output=True, text=True, cwd=studies.home.parent, env=env, timeout=600)
    assert driver.returncode == 1, driver.stdout + driver.stderr[-3000:]
    assert list((storage / "data-cache").iterdir()) == []  # built where only the driver saw it
    # The driver's last line: the study failed, and why, naming the folder the node lacks.
    said = driver.stderr.strip().splitlines()[-1]
    assert said.startswith("resnet-search: study unseen-cache failed: no trial finished"), said
    assert "cannot read the image cache " in said and "(No such file or directory)" in said, said
    cache = said.split("cannot read the image cache ", 1)[1].split()[0]
    assert Path(cache).parent == storage / "data-cache", said
    # The trial's own error says it too: one line, naming the folder.
    from search.tracking import store, tags

    client = studies.client()
    study_run = store.find_study_run(client, "unseen-cache")
    trials = client.search_runs([study_run.info.experiment_id],
                                f"tags.mlflow.parentRunId = '{study_run.info.run_id}'")
    assert [run.data.tags[tags.STATUS] for run in trials] == [tags.FAILED]
    error = Path(trials[0].data.tags[tags.ERROR_FILE]).read_text()
    assert f"cannot read the image cache {cache} on this node (" in error, error[-2000:]


PROBE = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
from search.study.resources import nodes_missing
print(json.dumps([nodes_missing(sys.argv[2]), nodes_missing(sys.argv[3])]))
"""


@pytest.mark.slow
def test_run_asks_every_node_whether_it_sees_the_cache(studies, tmp_path):
    """What `run` checks on a multi-node cluster before any trial starts: a task on each
    node looks for the cache folder. Asked from a driver whose folder the node cannot see
    (the driver's own tmpfs, in a mount namespace), that node is named; a folder it sees is
    not."""
    hidden, seen = tmp_path / "private", tmp_path / "seen"
    hidden.mkdir()
    seen.mkdir()
    env = {**studies.env, "RAY_AUTH_MODE": "token"}
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs tmpfs "$0" && mkdir "$0/cache" '
         '&& exec "$@"', str(hidden), sys.executable, "-c", PROBE, SHARED_RAY.address(),
         str(hidden / "cache"), str(seen)],
        capture_output=True, text=True, env=env, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    missing, missing_seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert len(missing) == 1, missing  # the one node, by its id and address
    assert missing_seen == []


@pytest.mark.parametrize("damage, said", [
    (lambda root: None, "not found"),
    (lambda root: (root / "only").mkdir(parents=True), "class"),
])
def test_check_refuses_a_folder_it_cannot_use_in_one_line(tmp_path, damage, said):
    root = tmp_path / "images"
    damage(root)
    study = tmp_path / "bad.toml"
    study.write_text(folder_study("bad", root))
    result = cli("check", str(study), env={"RESNET_SEARCH_HOME": str(tmp_path)})
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnet-search: error: "), lines
    assert str(root) in lines[0] and said in lines[0].lower(), lines[0]

