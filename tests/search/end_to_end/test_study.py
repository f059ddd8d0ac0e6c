"""Real studies on digits: local Ray, a real MLflow SQLite store, real training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from common import usage_reports_off
from study_helpers import (
    KILL_TIMED_NET,
    Studies,
    free_port,
    kill_session,
    session_processes,
    study_toml,
    trained_checkpoint,
    wait_for,
)

from search.results.retrieve import study_status
from search.tracking import records, store, tags, trial_index

pytestmark = pytest.mark.slow


def small_study(name: str, samples: int, epochs: int) -> str:
    """Four kinds of network and two optimizers: enough variety for ranking and lineage."""
    return study_toml(name, study={"num_samples": samples}, train={"epochs": epochs}, space={
        "family": ["wrn", "resnet"], "depth": [8, 10], "optimizer": ["sgd", "nesterov"],
        "momentum": {"low": 0.5, "high": 0.7}})  # leaves out the default, 0.9


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e") / "home"
    home.mkdir()
    studies = Studies(home)
    path = studies.write("e2e", small_study("e2e", samples=4, epochs=3))
    result = studies.cli("run", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    return studies, result


def test_study_prints_the_champion_and_the_dashboard(finished_study):
    studies, result = finished_study
    assert "best trial" in result.stdout
    assert "registered model: models:/e2e-model@champion (version 1)" in result.stdout
    assert "resnet-search ui --tracking-uri sqlite:///" in result.stdout
    # The address opens the study's runs even in a browser that never chose MLflow's mode.
    experiment = store.find_study_run(studies.client(), "e2e").info.experiment_id
    assert (f"then open http://127.0.0.1:5000/#/experiments/{experiment}/runs"
            f"?workflowType=machine_learning)") in result.stdout


def test_the_run_says_where_its_time_went(finished_study):
    """The phase breakdown is printed and logged, and its parts are the trials' own timings."""
    studies, result = finished_study
    assert "where the time went: wall" in result.stdout
    trials_line = next(line for line in result.stdout.splitlines() if line.startswith("  trials: "))
    assert "training" in trials_line and "checkpointing" in trials_line
    client = studies.client()
    phases = store.find_study_run(client, "e2e").data.metrics
    for phase in ("driver.ray_startup", "driver.champion", "driver.tracking", "trials.startup",
                  "trials.training", "trials.validation", "trials.checkpointing"):
        assert phases[f"phase.{phase}_seconds"] > 0, phase
    trained = sum(sum(m.value for m in client.get_metric_history(r.info.run_id, "train_seconds"))
                  for r in store.trial_runs(client, store.find_study_run(client, "e2e")))
    assert phases["phase.trials.training_seconds"] == pytest.approx(trained, rel=1e-6)


def test_the_dashboard_opens_on_runs_and_the_study_run_explains_itself(finished_study):
    """MLflow's UI opens a model-training experiment on its runs; the study run's description
    names the winner and the champion; study-level metrics chart the search; trial runs carry
    their cost, so MLflow's own table and compare views work without set-up."""
    from search.tracking.summary import NOTE_TAG

    studies, _ = finished_study
    client = studies.client()
    parent = store.find_study_run(client, "e2e")
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    note = parent.data.tags[NOTE_TAG]
    champion = parent.data.tags[tags.BEST_TRIAL_ID]
    assert "## Study e2e: completed" in note and "4 of 4 trials: 4 completed" in note
    assert f"({champion})" in note.split("| 1 |", 1)[1].splitlines()[0]  # rank 1 is the champion
    assert "`models:/e2e-model/1`" in note and "test accuracy" in note
    assert "CPU-hours" in note
    best_so_far = client.get_metric_history(parent.info.run_id, "best_so_far_val_accuracy")
    assert [m.step for m in best_so_far][-1] == 4
    values = [m.value for m in sorted(best_so_far, key=lambda m: m.step)]
    assert values == sorted(values)  # best so far never goes down
    assert parent.data.metrics["trials_completed"] == 4
    for run in store.trial_runs(client, parent):
        assert int(run.data.params["model.parameters"]) > 0 and int(run.data.params["model.flops"]) > 0
    artifacts = [a.path for a in client.list_artifacts(parent.info.run_id, "report")]
    assert "report/report.html" in artifacts


def test_mlflow_holds_the_study_trials_metrics_and_lineage(finished_study):
    studies, _ = finished_study
    client = studies.client()
    parent = store.find_study_run(client, "e2e")
    assert parent is not None and parent.info.status == "FINISHED"
    assert parent.data.tags[tags.STATUS] == "completed"
    assert parent.data.params["space.family"] == "['wrn', 'resnet']"
    assert "test_accuracy" in parent.data.metrics
    assert "study.toml" in [a.path for a in client.list_artifacts(parent.info.run_id)]

    runs = store.trial_runs(client, parent)
    assert len(runs) == 4
    assert len({r.data.tags[tags.TRIAL_ID] for r in runs}) == 4
    assert sorted(int(r.data.tags[tags.OPTUNA_NUMBER]) for r in runs) == [0, 1, 2, 3]
    for run in runs:
        run_tags = run.data.tags
        assert run_tags[tags.STATUS] == "completed"
        assert run_tags[tags.NODE_ID] and run_tags[tags.CHECKPOINT].startswith(str(studies.home))
        assert run.data.params["model.family"] in ("wrn", "resnet")
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1, 2, 3]  # step = epoch
        # Every trial here uses momentum (sgd, nesterov): the sampled value, never the
        # default 0.9, is the one the run records and the one its optimizer stepped with.
        momentum = float(run.data.params["train.momentum"])
        assert 0.5 <= momentum <= 0.7
        optimizer = trained_checkpoint(run)["optimizer"]
        assert {g["momentum"] for g in optimizer["param_groups"]} == {momentum}
        assert "checkpoint" in [a.path for a in client.list_artifacts(run.info.run_id)]
    # Ray's record of each trial is its result.json and progress.csv, without TensorBoard files.
    trial_dirs = list((studies.home / "ray_results" / "e2e").glob("trial_*"))
    assert len(trial_dirs) == 4
    assert all((d / "result.json").is_file() and (d / "progress.csv").is_file() for d in trial_dirs)
    assert not list(studies.home.rglob("events.out.tfevents*"))


def test_champion_is_registered_with_its_test_accuracy(finished_study):
    studies, _ = finished_study
    client = studies.client()
    version = client.get_model_version_by_alias("e2e-model", "champion")
    parent = store.find_study_run(client, "e2e")
    assert float(version.tags["test_accuracy"]) == pytest.approx(
        parent.data.metrics["test_accuracy"], abs=1e-6)
    assert version.tags["study"] == "e2e"


LOAD_BEST = """
import json, os, sys
from search.results.retrieve import load_best
from search.trial.single_run import data_config_from_dict, evaluate_module
model, config = load_best("e2e")
scored = evaluate_module(model, data_config_from_dict(config["data"]), split="test", device="cpu")
print(json.dumps({"accuracy": scored["accuracy"], "logged": config["test_accuracy"],
                  "type": type(model).__name__, "family": config["model"]["family"],
                  "bar_setting": os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")}))
"""


def test_load_best_in_a_new_process_reproduces_the_test_accuracy(finished_study, tmp_path):
    studies, _ = finished_study
    # From another working directory, with the tracking store alone.
    env = {k: v for k, v in studies.env.items() if k != "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"}
    result = subprocess.run([sys.executable, "-c", LOAD_BEST], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["type"] == "ResidualNetwork"
    assert report["accuracy"] == pytest.approx(report["logged"], abs=1e-9)
    # A library call draws nothing on stderr (no MLflow download bar) and leaves the caller's
    # environment as it was.
    assert "Downloading artifacts" not in result.stderr, result.stderr[-1000:]
    assert report["bar_setting"] is None


def test_status_best_and_evaluate_commands(finished_study, tmp_path):
    studies, _ = finished_study
    status = json.loads(studies.cli("status", "e2e", "--json").stdout)
    assert status["status"] == "completed" and status["counts"] == {"completed": 4}
    # Each trial's best as status lists it is the best of its raw metric history in MLflow.
    client = studies.client()
    raw = {r.data.tags[tags.TRIAL_ID]: _independent_best(client, r)[0]
           for r in studies.trial_runs("e2e")}
    assert {t["trial_id"]: t["best_val_accuracy"] for t in status["trials"]} == pytest.approx(raw)
    assert status["best"]["best_val_accuracy"] == max(raw.values())

    # A path ending in '/' is a folder, made if missing; the checkpoint goes in it.
    best = studies.cli("best", "e2e", "--json", "--export", f"{tmp_path / 'exported'}/")
    assert best.returncode == 0, best.stderr
    assert "Downloading artifacts" not in best.stderr  # MLflow's progress bar: noise here
    report = json.loads(best.stdout)
    assert report["model_uri"] == "models:/e2e-model/1"  # the study's own version
    exported = tmp_path / "exported" / "checkpoint.pt"
    assert report["exported"] == str(exported) and exported.is_file()
    # A file path is the checkpoint's own name; an existing folder (no '/') gets checkpoint.pt.
    folder = tmp_path / "existing"
    folder.mkdir()
    for target, written in ((tmp_path / "champion.pt", tmp_path / "champion.pt"),
                            (folder, folder / "checkpoint.pt")):
        again = studies.cli("best", "e2e", "--json", "--export", str(target))
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["exported"] == str(written)
        assert written.read_bytes() == exported.read_bytes()

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
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("study e2e is already completed; its champion is "
                                   "models:/e2e-model/1 (see `resnet-search best e2e`)")
    assert len(studies.client().search_model_versions("name='e2e-model'")) == 1

    # The same file again: a new study needs a new name; resume would have nothing to do.
    again = studies.cli("run", str(studies.home.parent / "e2e.toml"))
    assert again.returncode == 2
    assert "study 'e2e' already exists" in again.stderr, again.stderr
    assert "is completed; its champion is models:/e2e-model/1" in again.stderr, again.stderr
    assert "resume" not in again.stderr, again.stderr


def _independent_best(client, run) -> tuple[float, float, int]:
    """(best val accuracy, val loss then, epoch) from the raw metric history of one trial run."""
    accuracy = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")}
    loss = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_loss")}
    epoch = min(accuracy, key=lambda e: (-accuracy[e], loss[e], e))
    return accuracy[epoch], loss[epoch], epoch


def test_every_command_names_the_same_winner_and_it_is_the_best_trial(finished_study):
    """run's summary, status, best, the study run and the registered champion agree, and the
    winner is the trial with the best validation accuracy (ties: lower val loss) by raw history."""
    studies, result = finished_study
    client = studies.client()
    parent = store.find_study_run(client, "e2e")
    by_trial = {r.data.tags[tags.TRIAL_ID]: (_independent_best(client, r),
                                            int(r.data.tags[tags.OPTUNA_NUMBER]))
                for r in store.trial_runs(client, parent)}
    expected = min(by_trial, key=lambda t: (-by_trial[t][0][0], by_trial[t][0][1], by_trial[t][1]))

    printed = next(line for line in result.stdout.splitlines() if line.startswith("best trial "))
    status = json.loads(studies.cli("status", "e2e", "--json").stdout)
    best = json.loads(studies.cli("best", "e2e", "--json").stdout)
    version = client.get_model_version_by_alias("e2e-model", "champion")
    named = {
        "run": printed.split()[2].rstrip(":"),
        "status": status["best"]["trial_id"],
        "best": best["best"]["trial_id"],
        "study run": parent.data.tags[tags.BEST_TRIAL_ID],
        "registry": version.tags["trial_id"],
    }
    assert set(named.values()) == {expected}, named
    # The champion's weights are its best epoch's, not its last's.
    assert int(version.tags["best_epoch"]) == by_trial[expected][0][2]
    assert status["best"]["value"] == pytest.approx(by_trial[expected][0][0])


def test_the_champion_answers_batched_http_requests_like_load_best(finished_study):
    """`resnet-search serve` (mlflow models serve) takes raw pixels 0..255 and returns the
    probabilities load_best's network gives on the normalised images, for batches of 1 and 16."""
    import urllib.request

    import numpy as np
    import torch

    from resnet_core import PixelClassifier
    from resnet_core.data import DataConfig, load_data
    from search.results.retrieve import load_best

    studies, _ = finished_study
    port = free_port()
    server = studies.start("serve", "e2e", "--port", str(port))
    try:
        def answers() -> bool:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).status == 200
            except OSError:
                assert server.poll() is None, "the server exited"
                return False

        wait_for(answers, 180, "the model server to answer /ping")
        data = load_data(DataConfig(dataset="digits"))
        model, config = load_best("e2e", studies.tracking_uri)
        # load_best says how its network's input was standardised: the loader's statistics.
        assert (config["mean"], config["std"]) == (data.mean, data.std)
        pixel_model = PixelClassifier(model, config["mean"], config["std"]).eval()
        for batch in (1, 16):
            pixels = data.test.images[:batch].float()
            body = json.dumps({"inputs": pixels.numpy().tolist()}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
            served = np.asarray(json.loads(urllib.request.urlopen(request, timeout=60).read())
                                ["predictions"], dtype=np.float32)
            with torch.no_grad():
                expected = pixel_model(pixels).numpy()
            assert served.shape == (batch, 10)
            np.testing.assert_allclose(served, expected, atol=1e-4)
            assert (served.argmax(1) == expected.argmax(1)).all()
        _fuzzed_bodies_are_refused_with_a_message(port, data.test.images[0].float().numpy())
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    wait_for(lambda: not session_processes(server.pid), 30, "the server's processes to stop")


def _fuzzed_bodies_are_refused_with_a_message(port: int, image) -> None:
    """Malformed JSON bodies get a 4xx with a message, never a 500 or a dead server: wrong
    shapes and types, NaN, strings, huge and empty batches, broken JSON."""
    import random
    import urllib.error
    import urllib.request

    rng = random.Random(0)
    good = image.tolist()
    shapes = [[], [[]], [good[0]], [[good]], good, [good, good[0]], [[[[1.0]]]], [[[["x"]]]]]
    bodies = [b"", b"{", b"null", b"[]", b'{"inputs": "pixels"}', b'{"inputs": null}',
              b'{"wrong": [1]}', b'{"inputs": [[[[NaN]]]]}', b"\xff\xfe", b'{"inputs": {}}']
    bodies += [json.dumps({"inputs": shape}).encode() for shape in shapes]
    for _ in range(60):  # random edits of a valid body: a byte changed, cut or repeated
        valid = bytearray(json.dumps({"inputs": [good]}).encode())
        at = rng.randrange(len(valid))
        edit = rng.choice(["flip", "cut", "repeat"])
        if edit == "flip":
            valid[at] = rng.randrange(256)
        bodies.append(bytes(valid[:at]) if edit == "cut" else bytes(valid[:at] + valid[at:] * 2)
                      if edit == "repeat" else bytes(valid))
    refused = 0
    for body in bodies:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=60).read()
        except urllib.error.HTTPError as error:
            message = error.read().decode(errors="replace")
            assert 400 <= error.code < 500 and message.strip(), (body[:200], error.code, message)
            refused += 1
    assert refused >= len(bodies) // 2, f"only {refused} of {len(bodies)} bodies were refused"
    ping = urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=10)
    assert ping.status == 200, "the server died on a fuzzed body"


# From hopeless (1e-5) to good (0.1): the weak half is stopped at the first rungs.
ASHA_STUDY = study_toml(
    "asha", study={"num_samples": 8, "seed": 3, "max_concurrent_trials": 2}, train={"epochs": 6},
    space={"width": None, "lr": {"low": 1e-5, "high": 0.1, "log": True}},
    scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 2})


def test_asha_stops_weak_trials_early(studies):
    path = studies.write("asha", ASHA_STUDY)
    result = studies.cli("run", str(path), env={"RESNET_SEARCH_QUIET": ""})  # with its table
    assert result.returncode == 0, result.stderr[-3000:]
    # The live table names each trial's network as `resnet-search models` does (a "k" column
    # read k=1 for every non-WRN network).
    assert "| network " in result.stdout and "| wrn-10-1 " in result.stdout, result.stdout[-3000:]
    runs = studies.trial_runs("asha")
    assert len(runs) == 8
    epochs = {r.data.tags[tags.TRIAL_ID]: int(r.data.metrics["epoch"]) for r in runs}
    statuses = [r.data.tags[tags.STATUS] for r in runs]
    assert "pruned" in statuses and "completed" in statuses
    assert min(epochs.values()) < 6 and max(epochs.values()) == 6
    pruned = [r for r in runs if r.data.tags[tags.STATUS] == "pruned"]
    kept = [r for r in runs if r.data.tags[tags.STATUS] == "completed"]
    # Stopped trials were the weak ones.
    lr = {status: sorted(float(r.data.params["train.lr"]) for r in group)
          for status, group in (("pruned", pruned), ("kept", kept))}
    assert lr["pruned"][len(lr["pruned"]) // 2] < lr["kept"][len(lr["kept"]) // 2], lr  # medians
    assert max(r.data.metrics["best_val_accuracy"] for r in kept) > max(
        r.data.metrics["best_val_accuracy"] for r in pruned)

    # The driver dies once Tune has seen every trial end but before the champion is
    # registered, the ends of a pruned and of a completed trial not yet written to MLflow.
    # `resume` then has no trial to run: it must write both ends from Tune's record and
    # register the champion at once (while its own warm-up may still be exporting:
    # torch.export is not thread-safe). A pruned trial is told from one stopped by a signal
    # (which the next resume must run on) by the scheduler's decision in Tune's record.
    client = studies.client()
    study_run = store.find_study_run(client, "asha")
    lost = {tags.PRUNED: pruned[0].info.run_id, tags.COMPLETED: kept[0].info.run_id}
    for run_id, status in ((study_run.info.run_id, tags.INTERRUPTED),
                           *((run_id, tags.RUNNING) for run_id in lost.values())):
        client.set_tag(run_id, tags.STATUS, status)
        client.update_run(run_id, status="RUNNING")
    # The trial index, written when the run ended, still has both trials ended: the readers
    # see them as their runs now say (stopped with the interrupted study).
    shown = {t["mlflow_run_id"]: t["status"] for t in study_status("asha", studies.tracking_uri)["trials"]}
    assert {shown[run_id] for run_id in lost.values()} == {tags.INTERRUPTED}
    resumed = studies.cli("resume", "asha", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "| network " not in resumed.stdout  # --quiet, although the run showed its table
    # The champion the study registered before (version 1) is the same winner: no second
    # version of it (a driver killed after the registration left one, test_chaos.py).
    assert "registered model: models:/asha-model@champion (version 1)" in resumed.stdout
    assert {status: client.get_run(run_id).data.tags[tags.STATUS]
            for status, run_id in lost.items()} == {tags.PRUNED: tags.PRUNED,
                                                    tags.COMPLETED: tags.COMPLETED}
    study_run = store.find_study_run(client, "asha")
    assert study_run.data.tags[tags.STATUS] == tags.COMPLETED
    # The resumed study's index, alone, says what every trial run read whole says.
    rows, _ = trial_index.read_index(client, study_run)
    assert _status_rows(client, study_run, rows) == _status_rows(
        client, study_run, store.trial_runs(client, study_run))


def _status_rows(client, study_run, runs) -> list[dict]:
    """`status --json`'s trial rows of these trial runs (the index's or MLflow's)."""
    from search.results.retrieve import _trial_row

    return [_trial_row(t) for t in records.read_study(client, study_run, runs=runs).by_rank()]


def test_killed_driver_resumes_without_repeating_trials(studies):
    path = studies.write("crash", small_study("crash", samples=6, epochs=4))
    driver = studies.start("run", str(path))
    try:
        wait_for(lambda: sum(r.data.tags.get(tags.STATUS) == "completed"
                             for r in studies.trial_runs("crash")) >= 2,
                 timeout=300, what="two finished trials")
    finally:
        kill_session(driver)
    assert not session_processes(driver.pid)
    before = studies.trial_runs("crash")
    assert 2 <= len(before) < 6 or any(r.data.tags[tags.STATUS] == "running" for r in before)

    resumed = studies.cli("resume", "crash")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = studies.trial_runs("crash")
    trial_ids = [r.data.tags[tags.TRIAL_ID] for r in runs]
    assert len(runs) == 6 and len(set(trial_ids)) == 6  # num_samples, no duplicates
    assert {r.data.tags[tags.STATUS] for r in runs} == {"completed"}
    assert {r.info.run_id for r in before} <= {r.info.run_id for r in runs}  # same runs go on
    client = studies.client()
    assert str(client.get_model_version_by_alias("crash-model", "champion").version) == "1"
    optuna_numbers = sorted(int(r.data.tags[tags.OPTUNA_NUMBER]) for r in runs)
    assert optuna_numbers == list(range(6))


def test_a_stop_signal_interrupts_the_study_and_resume_completes_it(studies):
    """What a batch scheduler (SIGTERM) or Ctrl-C (SIGINT) does: the study stops at a safe
    point as `interrupted` (exit 128 + signal, one line), no process of it is left, nothing
    is registered, and `resume` goes on. One study takes both signals in turn: the run is
    stopped by SIGTERM once a trial has finished, its first resume by SIGINT once it has
    trained on, and a second resume finishes the trials."""
    name = "stopped"
    client = studies.client()

    def finished() -> int:
        return sum(r.data.tags.get(tags.STATUS) == "completed" for r in studies.trial_runs(name))

    def epochs() -> float:
        return sum(r.data.metrics.get("epoch", 0) for r in studies.trial_runs(name))

    # Five epochs: after SIGTERM at the first finished trial, at least two trials have yet to
    # start, so the SIGINT after the resume's first epoch always leaves work to finish.
    run = ("run", str(studies.write(name, small_study(name, samples=4, epochs=5))))
    for signum, command in ((signal.SIGTERM, run), (signal.SIGINT, ("resume", name))):
        before = epochs()
        if signum == signal.SIGTERM:
            ready, what = (lambda: finished() >= 1), "a finished trial"
        else:
            ready, what = (lambda b=before: epochs() > b), "an epoch after resuming"
        driver = studies.start(*command)
        try:
            wait_for(ready, timeout=300, what=what, interval=0.5)
            os.kill(driver.pid, signum)
            driver.wait(timeout=180)
        finally:
            if driver.poll() is None:
                kill_session(driver)
        log = (studies.home.parent / "driver.log").read_text()
        assert driver.returncode == 128 + signum, log[-3000:]
        assert f"study {name} interrupted by {signum.name}" in log.splitlines()[-1]
        assert "Tuner.restore" not in log  # Tune's own hint: our line names `resume`
        assert "Stop signal received" not in log  # quiet: Tune's warnings on the stop neither
        wait_for(lambda pid=driver.pid: not session_processes(pid), 60,
                 "the study's processes to stop")
        study_run = store.find_study_run(client, name)
        assert study_run.data.tags[tags.STATUS] == "interrupted", signum.name
        assert not client.search_model_versions(f"name='{name}-model'")  # nothing registered
        # Nothing runs now: the trials stopped with the study are said interrupted, not running.
        counts = json.loads(studies.cli("status", name, "--json").stdout)["counts"]
        assert "running" not in counts and counts.get("interrupted", 0) >= 1, counts
    assert finished() < 4  # the resume was stopped with trials left to do

    resumed = studies.cli("resume", name)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The resumed trials' first reports come in a burst: no warning per experiment save.
    assert "Experiment state snapshotting" not in resumed.stderr, resumed.stderr[-3000:]
    runs = studies.trial_runs(name)
    assert len(runs) == 4 and len({r.data.tags[tags.TRIAL_ID] for r in runs}) == 4
    assert {r.data.tags[tags.STATUS] for r in runs} == {"completed"}


def test_the_tracking_uri_of_the_study_file_is_where_the_study_is_tracked(studies, tmp_path):
    """[tracking] uri is used when neither --tracking-uri nor $MLFLOW_TRACKING_URI is given."""
    from search.tracking.store import client_for

    other = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    text = study_toml("placed", study={"num_samples": 1}, train={"epochs": 1},
                      space={"width": 1, "lr": 0.1}, tracking={"uri": other})
    result = studies.cli("run", str(studies.write("placed", text)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert store.find_study_run(client_for(other), "placed") is not None
    assert not studies.trial_runs("placed")  # nothing in the default store


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


# Killed once its second epoch is tracked, it has epochs 3-8 left to prove it went on
# (KILL_TIMED_NET: ~1 s an epoch, time enough to be killed first).
KILL_STUDY = study_toml("killed-trial", study={"num_samples": 1}, train={"epochs": 8, "batch_size": 32},
                        space=KILL_TIMED_NET, replace_space=True)


def test_a_killed_trial_restarts_from_its_checkpoint_and_finishes(studies):

    path = studies.write("killed", KILL_STUDY)
    driver = studies.start("run", str(path))
    try:
        def trial_at_epoch_2():
            runs = studies.trial_runs("killed-trial")
            return runs and runs[0].data.metrics.get("epoch", 0) >= 2
        wait_for(trial_at_epoch_2, timeout=300, what="the trial's second epoch", interval=0.3)
        pids = _trial_pids(driver.pid)
        assert pids, "no trial process found"
        # README: no usage data leaves the machine: the trials (and the private Ray they run
        # on) have MLflow's and Ray's usage reports off, though the test's environment did not
        # ask. (/proc shows what a process was started with: the driver's own switch, set in
        # its environment after it started, shows in what it starts.)
        assert [usage_reports_off(pid) for pid in pids] == [True] * len(pids)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        assert driver.wait(timeout=600) == 0, (studies.home.parent / "driver.log").read_text()
    finally:
        kill_session(driver)
    runs = studies.trial_runs("killed-trial")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags[tags.STATUS] == "completed" and run.data.metrics["epoch"] == 8
    client = studies.client()
    resumed = client.get_metric_history(run.info.run_id, "resumed_from_epoch")
    assert max(m.value for m in resumed) >= 2  # it went on from a checkpoint, not from scratch


# Each kill comes within an epoch or two of the one it waits for: 4 kills end it by about
# epoch 8 of 12, so it never finishes first.
RETRY_STUDY = study_toml("retried-trial", study={"num_samples": 1},
                         train={"epochs": 12, "batch_size": 32},
                         space=KILL_TIMED_NET, replace_space=True)


def test_a_trial_is_retried_from_its_checkpoint_three_times_then_given_up(studies):
    # README: "A trial whose process dies is retried from its last checkpoint automatically
    # (up to 3 times)". Kill the trial's process four times, each time after it has
    # reported two new epochs: three restarts go on from a checkpoint, the fourth death ends
    # it. Two, not one: Tune may not have registered the checkpoint of the epoch it has just
    # reported when the kill lands (it then restores the one before), but it has registered
    # it once the next result arrives, so each restart starts past the last one.
    path = studies.write("retried", RETRY_STUDY)
    driver = studies.start("run", str(path))
    killed: set[int] = set()
    epoch_at_kill = 0
    try:
        for _ in range(4):
            def a_fresh_process_past_the_last_kill(after: float = epoch_at_kill):
                runs = studies.trial_runs("retried-trial")
                if not runs or runs[0].data.metrics.get("epoch", 0) < after + 2:
                    return None
                return [pid for pid in _trial_pids(driver.pid) if pid not in killed] or None
            pids = wait_for(a_fresh_process_past_the_last_kill, timeout=300, interval=0.3,
                            what=f"the trial to report two epochs after {epoch_at_kill}")
            epoch_at_kill = studies.trial_runs("retried-trial")[0].data.metrics["epoch"]
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed.update(pids)
        code = driver.wait(timeout=600)
    finally:
        kill_session(driver)
    log = (studies.home.parent / "driver.log").read_text()
    # The epochs it finished are real results: its best epoch's checkpoint is still the champion.
    assert code == 0, log[-3000:]
    assert "study retried-trial: 1 trials (1 failed)" in log, log[-3000:]
    (run,) = studies.trial_runs("retried-trial")
    assert run.data.tags[tags.STATUS] == tags.FAILED
    assert run.data.metrics["epoch"] < 12
    history = studies.client().get_metric_history(run.info.run_id, "resumed_from_epoch")
    restarts = sorted({m.value for m in history} - {0})
    assert len(restarts) == 3, f"resumed from epochs {restarts}: not three retries"
