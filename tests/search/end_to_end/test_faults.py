"""Injected faults: a store opened by many processes at once, torn checkpoints, no network,
a crash nobody foresaw. Real processes, a real SQLite MLflow store, real Ray, real training."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from common import start_cli
from study_helpers import KILL_TIMED_NET, ROOT, Studies, free_port, kill_session, study_toml, wait_for

from search.tracking import tags

# ---------------------------------------------------------------- torn checkpoints (no Ray)


def _trial(epochs: int = 6):
    from resnet_core.config import TrainConfig
    from resnet_core.data import DataConfig
    from resnet_core.models import parse_model_name
    from search.trial.spec import TrialSpec

    return TrialSpec(parse_model_name("resnet-8"), TrainConfig(epochs=epochs),
                     DataConfig("digits", subset=200))


@pytest.fixture
def trial_checkpoints(tmp_path: Path) -> list[Path]:
    """A trial folder as Ray leaves it: checkpoint_000000..2, one per epoch, on local storage."""
    from resnet_core.checkpoint import CHECKPOINT_FILE, save_checkpoint
    from resnet_core.train import fit
    from search.trial.trainable import build_run

    run = build_run(_trial(), "cpu", None)
    folders: list[Path] = []

    def on_epoch(run, metrics) -> bool:
        folders.append(tmp_path / f"checkpoint_{len(folders):06d}")
        save_checkpoint(run.state_dict(), folders[-1] / CHECKPOINT_FILE)
        return len(folders) == 3

    fit(run, on_epoch=on_epoch)
    return folders


def _tear(folder: Path, zeros: bool = False) -> None:
    """Cut checkpoint.pt in half (a writer killed half-way), or zero 4 KiB of its weights
    (a lost write: torch alone loads that silently)."""
    checkpoint = folder / "checkpoint.pt"
    data, middle = checkpoint.read_bytes(), checkpoint.stat().st_size // 2
    checkpoint.write_bytes(data[:middle] + bytes(4096) + data[middle + 4096:] if zeros
                           else data[:middle])


def test_a_torn_newest_checkpoint_restores_the_newest_readable_one(trial_checkpoints):
    from ray.tune import Checkpoint

    from search.trial.trainable import build_run

    _tear(trial_checkpoints[2])
    notes: list[str] = []
    run = build_run(_trial(), "cpu", Checkpoint.from_directory(trial_checkpoints[2]), notes)
    assert run.epoch == 2 and len(run.history) == 2
    assert len(notes) == 1 and "\n" not in notes[0]
    assert f"{trial_checkpoints[2] / 'checkpoint.pt'} is not a readable checkpoint" in notes[0]
    assert f"restarted from the older checkpoint {trial_checkpoints[1]} (epoch 2)" in notes[0]


def test_no_readable_checkpoint_left_restarts_from_scratch(trial_checkpoints):
    from ray.tune import Checkpoint

    from search.trial.trainable import build_run

    for folder in trial_checkpoints[1:]:
        _tear(folder)
    (trial_checkpoints[0] / "checkpoint.pt").write_bytes(b"")
    notes: list[str] = []
    run = build_run(_trial(), "cpu", Checkpoint.from_directory(trial_checkpoints[2]), notes)
    assert run.epoch == 0 and not run.history
    assert notes[0].endswith("no readable checkpoint left, restarted from scratch")
    assert notes[0].count("is not a readable checkpoint") == 3


def test_a_whole_checkpoint_restores_without_a_note(trial_checkpoints):
    from ray.tune import Checkpoint

    from search.trial.trainable import build_run

    _tear(trial_checkpoints[0])  # an older torn one is never read
    notes: list[str] = []
    run = build_run(_trial(), "cpu", Checkpoint.from_directory(trial_checkpoints[2]), notes)
    assert run.epoch == 3 and notes == []


# ---------------------------------------------------------------- a new store, many processes

# Imports first, then says it is ready and waits for the go file: every process opens the
# store in the same instant.
FIRST_CLIENT = """
import sys, time
from pathlib import Path
from search.tracking.store import client_for
Path(sys.argv[2] + sys.argv[3]).touch()
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
client_for(sys.argv[1]).search_experiments()
"""


@pytest.mark.slow
def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path):
    """Without the lock, most of these die in MLflow's schema migration (alembic)."""
    uri, go = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}", tmp_path / "go"
    # An empty cache: the store is built by MLflow's migrations, not copied from a template.
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    started = [subprocess.Popen([sys.executable, "-c", FIRST_CLIENT, uri, str(go), f".{i}"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
               for i in range(4)]
    wait_for(lambda: len(list(tmp_path.glob("go.*"))) == 4, 300, "the processes to import",
             interval=0.1)
    go.touch()
    errors = [p.communicate(timeout=300)[1] for p in started]
    assert [p.returncode for p in started] == [0] * 4, [e[-1500:] for e in errors]


def test_a_new_store_copied_from_the_template_is_empty_and_its_own(tmp_path, monkeypatch):
    """The first new store leaves an empty copy in the cache; later new stores start from it
    (no migrations), yet each is empty and its Default experiment is its own."""
    from search.tracking.store import client_for

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    first = client_for(f"sqlite:///{tmp_path / 'first' / 'mlflow.db'}")
    assert list((tmp_path / "cache" / "resnet-search").glob("mlflow-*-empty.db"))
    experiment = first.create_experiment("used")
    first.create_run(experiment)

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # MLflow puts Default's artifacts under the cwd
    second = client_for(f"sqlite:///{tmp_path / 'second' / 'mlflow.db'}")
    (default,) = second.search_experiments()
    assert default.name == "Default"
    assert default.artifact_location.startswith(str(tmp_path / "elsewhere")), default.artifact_location
    assert not second.search_runs([default.experiment_id])
    assert second.create_run(second.create_experiment("new")).info.run_id  # a working store


@pytest.mark.slow
def test_status_calls_and_a_run_on_a_fresh_home_give_no_traceback(studies: Studies):
    path = studies.write("fresh", study_toml("fresh", study={"num_samples": 1},
                                             train={"epochs": 1}, space={"width": 1}))
    commands = [("status", "x")] * 5 + [("studies",)] * 2 + [("run", str(path))]
    started = [start_cli(*c, cwd=studies.home.parent, full_env=studies.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for c in commands]
    outcomes = [(c, p.communicate(timeout=600)[1], p.returncode)
                for c, p in zip(commands, started, strict=True)]
    for command, stderr, rc in outcomes:
        assert "Traceback" not in stderr, (command, stderr[-3000:])
        if command[0] == "status":
            assert rc == 2 and stderr.strip().splitlines() == [
                f"resnet-search: error: no study named 'x' in {studies.tracking_uri}; pass "
                f"--tracking-uri or set MLFLOW_TRACKING_URI to the store the study used"]
        else:
            assert rc == 0, (command, stderr[-3000:])
    assert len(studies.trial_runs("fresh")) == 1


@pytest.mark.slow
def test_status_of_an_unknown_study_leaves_no_store_behind(studies: Studies):
    for command in ("status", "best"):
        result = studies.cli(command, "nope")
        assert result.returncode == 2 and "no study named 'nope'" in result.stderr
    assert not (studies.home / "mlflow.db").exists()


# ---------------------------------------------------------------- network, unexpected errors


@pytest.mark.slow
def test_a_download_that_cannot_reach_its_host_is_one_line(studies: Studies, tmp_path):
    """A proxy that refuses connections stands in for no network: deterministic, offline."""
    proxy = f"http://127.0.0.1:{free_port()}"
    offline = {"https_proxy": proxy, "http_proxy": proxy, "HTTPS_PROXY": proxy,
               "HTTP_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""}
    root = tmp_path / "data"
    train = studies.cli("train", "--dataset", "svhn", "--download", "--root", str(root),
                        "--epochs", "1", env=offline, timeout=300)
    path = studies.write("cifar", study_toml("cifar", data={
        "dataset": "cifar10", "download": True, "root": str(root)}))
    run = studies.cli("run", str(path), env=offline, timeout=300)
    for result, dataset, url, folder in (
            (train, "svhn", "http://ufldl.stanford.edu/housenumbers/train_32x32.mat", root / "svhn"),
            (run, "cifar10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", root)):
        assert result.returncode == 2, result.stderr[-3000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr[-3000:]
        assert lines[0].startswith(f"resnet-search: error: dataset '{dataset}' could not be "
                                   f"downloaded from {url}: connection refused")
        assert f"by hand into {folder} " in lines[0]
    assert not (studies.home / "mlflow.db").exists()  # nothing started


@pytest.mark.slow
def test_an_unexpected_error_is_one_line_naming_the_traceback_file(studies: Studies):
    (studies.home / "mlflow.db").write_bytes(b"\x00garbage, not a database" * 400)
    result = studies.cli("studies")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith("resnet-search: unexpected error: DatabaseError: ")
    logged = Path(lines[0].split("full traceback in ")[1].split(" (or rerun")[0])
    assert logged.parent == studies.home / "logs"
    assert "Traceback (most recent call last)" in logged.read_text()
    assert "file is not a database" in logged.read_text()

    debug = studies.cli("studies", "--debug")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "file is not a database" in debug.stderr


# ---------------------------------------------------------------- torn checkpoints in a study

# Killed once both trials have tracked epoch 3: 5 epochs (~1 s each on one core of the CI
# machine kind) are left for the slower trial to get there before the faster one ends.
TORN_STUDY = study_toml(
    "torn", study={"num_samples": 2}, train={"epochs": 8, "batch_size": 32},
    space={**KILL_TIMED_NET, "lr": {"low": 0.05, "high": 0.1}},
    replace_space=True)


def _ray_trials(studies: Studies, study: str) -> dict[str, Path]:
    """Ray's trial folders of a study on storage, by trial id."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(studies.home / "ray_results" / study))
    return {t.trial_id: t for t in analysis.trials}


@pytest.mark.slow
def test_torn_checkpoints_on_storage_never_crash_the_study(studies: Studies):
    """The driver is killed mid-study, then the checkpoint each trial resumes from is torn:
    trial A's alone, by zeroing some of its weights (older ones stay whole); every one of
    trial B's, cut in half. `resume` finishes both."""
    # Tune saves its state (which checkpoint each trial resumes from) at most every 10 s by
    # default, longer than these trials' epochs: every second here, so that the state the
    # kill leaves names checkpoints of both trials.
    studies.env["TUNE_GLOBAL_CHECKPOINT_S"] = "1"
    driver = studies.start("run", str(studies.write("torn", TORN_STUDY)))
    try:
        def both_at_epoch_3_and_saved() -> bool:
            runs = studies.trial_runs("torn")
            if len(runs) < 2 or any(r.data.metrics.get("epoch", 0) < 3 for r in runs):
                return False
            try:
                saved = _ray_trials(studies, "torn")
            except (OSError, ValueError):  # the state file between its writes
                return False
            # ...and names checkpoints that are still there (Tune keeps the newest 2 only).
            return len(saved) == 2 and all(t.checkpoint is not None and Path(
                t.checkpoint.path, "checkpoint.pt").is_file() for t in saved.values())
        wait_for(both_at_epoch_3_and_saved, timeout=400, interval=0.3,
                 what="both trials at epoch 3 with their checkpoints in Tune's saved state")
    finally:
        kill_session(driver)
    reached = {r.data.tags[tags.TRIAL_ID]: int(r.data.metrics["epoch"])
               for r in studies.trial_runs("torn")}
    trials = _ray_trials(studies, "torn")
    assert len(trials) == 2 and all(t.checkpoint is not None for t in trials.values())
    (a_id, a), (b_id, b) = sorted(trials.items())
    a_resume = Path(a.checkpoint.path)
    a_older = sorted(p for p in a_resume.parent.glob("checkpoint_*") if p.name < a_resume.name)
    _tear(a_resume, zeros=True)
    for folder in Path(b.checkpoint.path).parent.glob("checkpoint_*"):
        _tear(folder)

    started = time.time()
    resumed = studies.cli("resume", "torn")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    runs = {r.data.tags[tags.TRIAL_ID]: r for r in studies.trial_runs("torn")}
    assert sorted(runs) == sorted(trials)  # num_samples runs, no duplicates
    for run in runs.values():
        assert run.data.tags[tags.STATUS] == "completed" and run.data.metrics["epoch"] == 8
    notes = {t: runs[t].data.tags.get(tags.CHECKPOINT_RESTORE, "") for t in runs}
    client = studies.client()
    restarts = {t: min(m.value for m in client.get_metric_history(
        runs[t].info.run_id, "resumed_from_epoch") if m.timestamp >= started * 1000) for t in runs}
    assert f"{a_resume / 'checkpoint.pt'} is not a readable checkpoint" in notes[a_id]
    if a_older:  # the newest whole one: epoch = its index + 1
        assert f"restarted from the older checkpoint {a_older[-1]}" in notes[a_id]
        assert restarts[a_id] == int(a_older[-1].name.split("_")[1]) + 1
    else:
        assert notes[a_id].endswith("restarted from scratch") and restarts[a_id] == 0
    assert notes[b_id].endswith("no readable checkpoint left, restarted from scratch")
    assert restarts[b_id] == 0
    assert "restarted from scratch" in log  # said in the output, not only in MLflow
    version = client.get_model_version_by_alias("torn-model", "champion")
    assert version.tags["trial_id"] in trials
    print(f"RELIABILITY torn checkpoints: trial runs expected 2, found {len(runs)}; epochs lost "
          f"A {reached[a_id] - restarts[a_id]:.0f} (restarted at {restarts[a_id]:.0f}), "
          f"B {reached[b_id] - restarts[b_id]:.0f}; resume to completed {time.time() - started:.0f} s")


# ---------------------------------------------------------------- full or unwritable storage


@contextlib.contextmanager
def _tmpfs(folder: Path, *options: str):
    """A small private file system at `folder` (root only: skipped where mount is refused)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def _fill(path: Path) -> int:
    """Write `path` until its file system is full (ENOSPC); the bytes written."""
    written = 0
    with open(path, "wb") as f:
        try:
            while True:
                written += f.write(bytes(1 << 20))
                f.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
    return written


@pytest.mark.slow
def test_storage_that_is_not_writable_is_refused_at_start(studies, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file, not a folder")
    with _tmpfs(tmp_path / "read-only", "ro", "size=1m") as read_only:
        for storage in (blocker / "results", read_only):
            path = studies.write("nowrite", study_toml("nowrite", storage={"path": str(storage)}))
            result = studies.cli("run", str(path))
            assert result.returncode == 2, result.stderr[-3000:]
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(
                f"resnet-search: error: [storage] path {storage} is not writable ("), lines
            assert not studies.trial_runs("nowrite")  # nothing started


@pytest.mark.slow
def test_a_full_storage_disk_interrupts_the_study_and_resume_completes_it(studies, tmp_path):
    with _tmpfs(tmp_path / "small-disk", "size=40m") as storage:
        path = studies.write("full", study_toml("full", train={"epochs": 6},
                                                storage={"path": str(storage)}))
        driver = studies.start("run", str(path))
        try:
            wait_for(lambda: any(r.data.metrics.get("epoch", 0) >= 2
                                 for r in studies.trial_runs("full")), 300, "epoch 2", 0.5)
            _fill(storage / "filler")
            code = driver.wait(timeout=600)
        finally:
            if driver.poll() is None:
                kill_session(driver)
        log = (tmp_path / "driver.log").read_text()
        lines = [x for x in log.splitlines() if x.startswith("resnet-search")]
        assert code == 1, log[-3000:]
        assert len(lines) == 1 and f"storage path {storage} is full" in lines[0], log[-3000:]
        client = studies.client()
        from search.tracking import store

        assert store.find_study_run(client, "full").data.tags[tags.STATUS] == "interrupted"
        (storage / "filler").unlink()
        started = time.time()
        resumed = studies.cli("resume", "full")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = studies.trial_runs("full")
    assert len(runs) == 2, resumed.stderr[-4000:]  # num_samples trial runs, no duplicates
    assert all(r.data.tags[tags.STATUS] == "completed" and r.data.metrics["epoch"] == 6
               for r in runs)
    restarts = [min((m.value for m in client.get_metric_history(r.info.run_id, "resumed_from_epoch")
                     if m.timestamp >= started * 1000), default=None) for r in runs]
    print(f"RELIABILITY full storage: trial runs expected 2, found {len(runs)}; resumed from "
          f"epochs {restarts}; resume to completed {time.time() - started:.0f} s; torn Tune state "
          f"repaired: {'was torn (storage full)' in resumed.stderr}")
