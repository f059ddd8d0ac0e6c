"""Real studies on digits: local Ray, a real MLflow SQLite store, real training."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from study_helpers import Studies, kill_session, session_processes, wait_for

from search import tracking

pytestmark = pytest.mark.slow

SMALL_STUDY = """
[study]
name = "{name}"
num_samples = {samples}
seed = 1

[data]
dataset = "digits"

[train]
epochs = {epochs}
batch_size = 64

[space]
family = ["wrn", "resnet"]
depth = [8, 10]
width = [1, 2]
lr = {{ low = 0.03, high = 0.2, log = true }}
optimizer = ["sgd", "nesterov"]
momentum = {{ low = 0.8, high = 0.95 }}

[scheduler]
kind = "none"

[resources]
cpus_per_trial = 1

[tracking]
registered_model = "{name}-model"
"""


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e") / "home"
    home.mkdir()
    studies = Studies(home)
    path = studies.write("e2e", SMALL_STUDY.format(name="e2e", samples=4, epochs=3))
    result = studies.cli("run", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    return studies, result


def test_study_prints_the_champion_and_the_dashboard(finished_study):
    _, result = finished_study
    assert "best trial" in result.stdout
    assert "registered model: models:/e2e-model@champion (version 1)" in result.stdout
    assert "resnet-search ui --tracking-uri sqlite:///" in result.stdout


def test_mlflow_holds_the_study_trials_metrics_and_lineage(finished_study):
    studies, _ = finished_study
    client = studies.client()
    parent = tracking.find_study_run(client, "e2e")
    assert parent is not None and parent.info.status == "FINISHED"
    assert parent.data.tags[tracking.STATUS] == "completed"
    assert parent.data.params["space.family"] == "['wrn', 'resnet']"
    assert "test_accuracy" in parent.data.metrics
    assert "study.toml" in [a.path for a in client.list_artifacts(parent.info.run_id)]

    runs = tracking.trial_runs(client, parent)
    assert len(runs) == 4
    assert len({r.data.tags[tracking.TRIAL_ID] for r in runs}) == 4
    assert sorted(int(r.data.tags[tracking.OPTUNA_NUMBER]) for r in runs) == [0, 1, 2, 3]
    for run in runs:
        tags = run.data.tags
        assert tags[tracking.STATUS] == "completed"
        assert tags[tracking.NODE_ID] and tags[tracking.CHECKPOINT].startswith(str(studies.home))
        assert run.data.params["model.family"] in ("wrn", "resnet")
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1, 2, 3]  # step = epoch
        if run.data.params["train.optimizer"] == "adam":
            assert "train.momentum" in run.data.params
        assert "checkpoint" in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_champion_is_registered_with_its_test_accuracy(finished_study):
    studies, _ = finished_study
    client = studies.client()
    version = client.get_model_version_by_alias("e2e-model", "champion")
    parent = tracking.find_study_run(client, "e2e")
    assert float(version.tags["test_accuracy"]) == pytest.approx(
        parent.data.metrics["test_accuracy"], abs=1e-6)
    assert version.tags["study"] == "e2e"


LOAD_BEST = """
import json, sys
from search.retrieve import load_best
from search.single_run import data_config_from_dict, evaluate_module
model, config = load_best("e2e")
scored = evaluate_module(model, data_config_from_dict(config["data"]), split="test", device="cpu")
print(json.dumps({"accuracy": scored["accuracy"], "logged": config["test_accuracy"],
                  "type": type(model).__name__, "family": config["model"]["family"]}))
"""


def test_load_best_in_a_new_process_reproduces_the_test_accuracy(finished_study, tmp_path):
    studies, _ = finished_study
    # From another working directory, with the tracking store alone.
    result = subprocess.run([sys.executable, "-c", LOAD_BEST], capture_output=True, text=True,
                            cwd=tmp_path, env=studies.env, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["type"] == "ResidualNetwork"
    assert report["accuracy"] == pytest.approx(report["logged"], abs=1e-9)


def test_status_best_and_evaluate_commands(finished_study, tmp_path):
    studies, _ = finished_study
    status = json.loads(studies.cli("status", "e2e", "--json").stdout)
    assert status["status"] == "completed" and status["counts"] == {"completed": 4}
    assert status["best"]["best_val_accuracy"] == max(
        t["best_val_accuracy"] for t in status["trials"])

    exported = tmp_path / "best.pt"
    best = studies.cli("best", "e2e", "--json", "--export", str(exported))
    assert best.returncode == 0, best.stderr
    report = json.loads(best.stdout)
    assert report["model_uri"] == "models:/e2e-model@champion"
    assert exported.is_file()

    evaluated = studies.cli("evaluate", "--model-uri", "models:/e2e-model@champion", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(report["test_accuracy"])
    from_file = studies.cli("evaluate", "--checkpoint", str(exported), "--json")
    assert json.loads(from_file.stdout)["accuracy"] == pytest.approx(report["test_accuracy"])

    text = studies.cli("status", "e2e").stdout
    assert "study e2e (completed): 4 of 4 trials: 4 completed" in text
    missing = studies.cli("status", "nope")
    assert missing.returncode == 2 and "no study named 'nope'" in missing.stderr

    done = studies.cli("resume", "e2e")
    assert done.returncode == 0 and "study e2e is already completed" in done.stdout
    assert len(studies.client().search_model_versions("name='e2e-model'")) == 1

    again = studies.cli("run", str(studies.home.parent / "e2e.toml"))
    assert again.returncode == 2
    assert "study 'e2e' already exists" in again.stderr and "resnet-search resume e2e" in again.stderr


ASHA_STUDY = """
[study]
name = "asha"
num_samples = 8
seed = 3
max_concurrent_trials = 2

[data]
dataset = "digits"

[train]
epochs = 6
batch_size = 64

[space]
family = "wrn"
depth = 10
# From hopeless (1e-5) to good (0.1): the weak half is stopped at the first rungs.
lr = { low = 1e-5, high = 0.1, log = true }

[scheduler]
kind = "asha"
grace_period = 1
reduction_factor = 2
"""


def test_asha_stops_weak_trials_early(studies):
    path = studies.write("asha", ASHA_STUDY)
    result = studies.cli("run", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    runs = studies.trial_runs("asha")
    assert len(runs) == 8
    epochs = {r.data.tags[tracking.TRIAL_ID]: int(r.data.metrics["epoch"]) for r in runs}
    statuses = [r.data.tags[tracking.STATUS] for r in runs]
    assert "pruned" in statuses and "completed" in statuses
    assert min(epochs.values()) < 6 and max(epochs.values()) == 6
    pruned = [r for r in runs if r.data.tags[tracking.STATUS] == "pruned"]
    kept = [r for r in runs if r.data.tags[tracking.STATUS] == "completed"]
    # Stopped trials were the weak ones.
    assert max(float(r.data.params["train.lr"]) for r in pruned) < 0.1
    assert max(r.data.metrics["best_val_accuracy"] for r in kept) > max(
        r.data.metrics["best_val_accuracy"] for r in pruned)


def test_killed_driver_resumes_without_repeating_trials(studies):
    path = studies.write("crash", SMALL_STUDY.format(name="crash", samples=6, epochs=4))
    driver = studies.start("run", str(path))
    try:
        wait_for(lambda: sum(r.data.tags.get(tracking.STATUS) == "completed"
                             for r in studies.trial_runs("crash")) >= 2,
                 timeout=300, what="two finished trials")
    finally:
        kill_session(driver)
    assert not session_processes(driver.pid)
    before = studies.trial_runs("crash")
    assert 2 <= len(before) < 6 or any(r.data.tags[tracking.STATUS] == "running" for r in before)

    resumed = studies.cli("resume", "crash")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = studies.trial_runs("crash")
    trial_ids = [r.data.tags[tracking.TRIAL_ID] for r in runs]
    assert len(runs) == 6 and len(set(trial_ids)) == 6  # num_samples, no duplicates
    assert {r.data.tags[tracking.STATUS] for r in runs} == {"completed"}
    assert {r.info.run_id for r in before} <= {r.info.run_id for r in runs}  # same runs go on
    client = studies.client()
    assert str(client.get_model_version_by_alias("crash-model", "champion").version) == "1"
    optuna_numbers = sorted(int(r.data.tags[tracking.OPTUNA_NUMBER]) for r in runs)
    assert optuna_numbers == list(range(6))


def _trial_pids(session: int) -> list[int]:
    from pathlib import Path

    pids = []
    for pid in session_processes(session):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith("ray::ImplicitFunc"):
            pids.append(pid)
    return pids


KILL_STUDY = """
[study]
name = "killed-trial"
num_samples = 1

[data]
dataset = "digits"

[train]
epochs = 8
batch_size = 32

[space]
family = "wrn"
depth = 16
width = 4

[scheduler]
kind = "none"
"""


def test_a_killed_trial_restarts_from_its_checkpoint_and_finishes(studies):
    import os
    import signal

    path = studies.write("killed", KILL_STUDY)
    driver = studies.start("run", str(path))
    try:
        def trial_at_epoch_2():
            runs = studies.trial_runs("killed-trial")
            return runs and runs[0].data.metrics.get("epoch", 0) >= 2
        wait_for(trial_at_epoch_2, timeout=300, what="the trial's second epoch", interval=0.3)
        pids = _trial_pids(driver.pid)
        assert pids, "no trial process found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        assert driver.wait(timeout=600) == 0, (studies.home.parent / "driver.log").read_text()
    finally:
        kill_session(driver)
    runs = studies.trial_runs("killed-trial")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags[tracking.STATUS] == "completed" and run.data.metrics["epoch"] == 8
    client = studies.client()
    resumed = client.get_metric_history(run.info.run_id, "resumed_from_epoch")
    assert max(m.value for m in resumed) >= 2  # it went on from a checkpoint, not from scratch
