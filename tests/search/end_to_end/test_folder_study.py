"""A study on a user's own folder of images: `check` lists it, `run` trains on it, and its
decoded cache is built once and reused by later studies.

The folder is laid out as users' folders are (tests/search/image_folders.py). A folder study
on a cluster, its cache under the shared [storage] path, is the Ray job of
test_autoscaling_cluster.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from common import cli
from image_folders import folder_study, write_digit_folder

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

