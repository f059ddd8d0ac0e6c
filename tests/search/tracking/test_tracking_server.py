"""Tracking on a real MLflow server backed by PostgreSQL, and Optuna's RDB storage on PostgreSQL.

The tracking tests share one body over two backends: the embedded SQLite store
and an `mlflow server` (PostgreSQL backend store, proxied artifacts) started
for this module. Each backend runs one small study, shared by its tests.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time

import pytest
from postgres import database_uri, fresh_database, require_postgres
from study_helpers import KILL_TIMED_NET, kill_session, study_toml, trained_checkpoint, wait_for
from tracking_server import TrackedStudies, tracking_server

from search.tracking import store, tags

pytestmark = pytest.mark.postgres
slow = pytest.mark.slow


def study_text(name: str, samples: int = 2, epochs: int = 2, seed: int = 1,
               study: dict | None = None) -> str:
    return study_toml(name, study={"num_samples": samples, "seed": seed, **(study or {})},
                      train={"epochs": epochs})


@pytest.fixture(scope="module")
def postgres() -> None:
    require_postgres()


# ---------------------------------------------------------------- one study per backend


def _run_tracked(studies: TrackedStudies, study: dict | None = None):
    path = studies.write("tracked", study_text("tracked", study=study))
    result = studies.cli("run", str(path), *studies.uri_args)
    assert result.returncode == 0, result.stdout + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def sqlite_study(tmp_path_factory):
    home = tmp_path_factory.mktemp("tracked-sqlite") / "home"
    home.mkdir()
    studies = TrackedStudies(home)
    return studies, _run_tracked(studies), None


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """An MLflow server on its own PostgreSQL database, and a database for Optuna."""
    root = tmp_path_factory.mktemp("server")
    with tracking_server(root) as running, fresh_database("rs_test_optuna") as optuna_storage:
        running.optuna_storage = optuna_storage
        yield running


@pytest.fixture(scope="module")
def server_study(server, tmp_path_factory):
    """The study on the server, its Optuna study in PostgreSQL (warm-started from below)."""
    home = tmp_path_factory.mktemp("tracked-server") / "home"
    home.mkdir()
    studies = TrackedStudies(home, server.uri)
    result = _run_tracked(studies, {"optuna_storage": server.optuna_storage})
    assert "optuna: new study 'tracked'" in result.stderr
    return studies, result, server


@pytest.fixture(scope="module", params=["sqlite", "server"])
def tracked_study(request):
    """(studies, the `run` result, the server or None): a finished 2-trial study."""
    return request.getfixturevalue(f"{request.param}_study")


@slow
def test_run_prints_the_champion_and_the_dashboard(tracked_study):
    studies, result, server = tracked_study
    assert "registered model: models:/tracked-model@champion (version 1)" in result.stdout
    if server:
        assert f"dashboard: open {server.uri}" in result.stdout
        # Everything went to the server: no local store was created.
        assert not (studies.home / "mlflow.db").exists()
    else:
        assert "resnet-search ui --tracking-uri sqlite:///" in result.stdout


@slow
def test_the_store_holds_the_study_its_trials_metrics_and_lineage(tracked_study):
    studies, _, server = tracked_study
    client = studies.client()
    parent = store.find_study_run(client, "tracked")
    assert parent is not None and parent.info.status == "FINISHED"
    assert parent.data.tags[tags.STATUS] == "completed"
    assert parent.data.params["space.width"] == "[1, 2]"
    assert "test_accuracy" in parent.data.metrics
    assert not any("optuna_storage" in key for key in parent.data.params)
    assert {"study.toml", "space.json"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}

    runs = store.trial_runs(client, parent)
    assert len(runs) == 2
    assert len({r.data.tags[tags.TRIAL_ID] for r in runs}) == 2
    assert sorted(int(r.data.tags[tags.OPTUNA_NUMBER]) for r in runs) == [0, 1]
    for run in runs:
        run_tags = run.data.tags
        assert run.info.status == "FINISHED"
        assert run_tags[tags.STATUS] == "completed"
        assert run_tags[tags.NODE_ID]
        assert run_tags[tags.CHECKPOINT].startswith(str(studies.home))
        assert run.data.params["model.family"] == "wrn"
        # The width the run records is the network its checkpoint's weights fit.
        assert int(run.data.params["model.width"]) == trained_checkpoint(run)["model_config"]["width"]
        for metric in ("val_accuracy", "train_loss", "best_val_accuracy"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert [m.step for m in history] == [1, 2], metric  # step = epoch
        assert "checkpoint" in [a.path for a in client.list_artifacts(run.info.run_id)]
    if server:  # artifacts went through the server's proxy into its destination
        stored = {p.name for p in server.artifacts.rglob("*") if p.is_file()}
        assert {"study.toml", "checkpoint.pt", "MLmodel"} <= stored


@slow
def test_the_champion_is_registered_with_its_test_accuracy(tracked_study):
    studies, _, _ = tracked_study
    client = studies.client()
    version = client.get_model_version_by_alias("tracked-model", "champion")
    assert str(version.version) == "1"
    parent = store.find_study_run(client, "tracked")
    assert float(version.tags["test_accuracy"]) == pytest.approx(
        parent.data.metrics["test_accuracy"], abs=1e-6)
    assert version.tags["study"] == "tracked"
    # The registered model is the one logged on the study run (an MLflow 3 logged model).
    assert version.run_id == parent.info.run_id and version.source.startswith("models:/m-")
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.source_run_id == parent.info.run_id


LOAD_BEST = """
import json, sys
from search.results.retrieve import load_best
from search.trial.single_run import data_config_from_dict, evaluate_module
model, config = load_best("tracked", tracking_uri=sys.argv[1])
scored = evaluate_module(model, data_config_from_dict(config["data"]), split="test", device="cpu")
print(json.dumps({"accuracy": scored["accuracy"], "logged": config["test_accuracy"],
                  "type": type(model).__name__, "family": config["model"]["family"]}))
"""


@slow
def test_load_best_in_a_new_process_reproduces_the_test_accuracy(tracked_study, tmp_path):
    studies, _, _ = tracked_study
    # Another directory and an empty home: the tracking URI alone leads to the model.
    env = {**studies.env, "RESNET_SEARCH_HOME": str(tmp_path / "empty-home")}
    result = subprocess.run([sys.executable, "-c", LOAD_BEST, studies.tracking_uri],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["type"] == "ResidualNetwork" and report["family"] == "wrn"
    assert report["accuracy"] == pytest.approx(report["logged"], abs=1e-9)


@slow
def test_status_with_the_flag_and_with_the_environment(tracked_study, tmp_path):
    studies, _, _ = tracked_study
    empty = {"RESNET_SEARCH_HOME": str(tmp_path / "empty-home")}
    by_flag = studies.cli("status", "tracked", *studies.uri_args, "--json", env=empty)
    assert by_flag.returncode == 0, by_flag.stderr
    by_env = studies.cli("status", "tracked", "--json",
                         env={**empty, "MLFLOW_TRACKING_URI": studies.tracking_uri})
    assert by_env.returncode == 0, by_env.stderr
    flag, environ = json.loads(by_flag.stdout), json.loads(by_env.stdout)
    assert flag == environ
    assert flag["tracking_uri"] == studies.tracking_uri
    assert flag["status"] == "completed" and flag["counts"] == {"completed": 2}
    assert flag["best"]["best_val_accuracy"] == max(t["best_val_accuracy"] for t in flag["trials"])
    assert flag["registered_model"] == "tracked-model" and flag["test_accuracy"] is not None
    # Without the URI the (empty) local store is asked, and says so in one line.
    missing = studies.cli("status", "tracked", env=empty)
    assert missing.returncode == 2 and "no study named 'tracked'" in missing.stderr


# ---------------------------------------------------------------- unreachable stores


@pytest.mark.slow
def test_a_database_uri_without_its_database_is_one_line_and_exit_2(postgres, tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(study_text("nodb"))
    home = tmp_path / "home"
    studies = TrackedStudies(home)
    uri = database_uri("does_not_exist_db")
    started = time.monotonic()
    result = studies.cli("run", str(path), "--tracking-uri", uri, timeout=120)
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 60
    lines = [line for line in result.stderr.splitlines() if line.startswith("resnet-search")]
    assert len(lines) == 1, result.stderr
    assert f"tracking database {uri} is unreachable" in lines[0]
    assert 'database "does_not_exist_db" does not exist' in lines[0]
    assert not (home / "ray_results").exists()


# ---------------------------------------------------------------- Optuna RDB storage


@pytest.fixture
def optuna_database(postgres):
    with fresh_database("rs_test_optuna") as uri:
        yield uri


def _config(name: str, storage: str, **study):
    import tomllib

    from search.studyfile.config import parse_study

    text = study_text(name, study={"optuna_storage": storage, **study})
    return parse_study(tomllib.loads(text), label=f"{name}.toml")


def test_the_searcher_with_rdb_storage_survives_rays_save_and_restore(
        optuna_database, tmp_path, monkeypatch):
    import optuna

    from search.space.searcher import build_searcher

    # The URL names its user through the environment; the pickled state keeps it unexpanded.
    monkeypatch.setenv("RS_TEST_PG_USER", "postgres")
    storage = optuna_database.replace("postgres@", "${RS_TEST_PG_USER}@", 1)
    config = _config("saved", storage)
    searcher = build_searcher(config)
    first = searcher.suggest("t1")
    assert first["model"]["family"] == "wrn"
    searcher.on_trial_complete("t1", {"val_accuracy": 0.5})
    searcher.suggest("t2")
    state = tmp_path / "searcher.pkl"
    searcher.save(str(state))  # what Ray does with the experiment: pickle __dict__
    assert b"${RS_TEST_PG_USER}@" in state.read_bytes()

    restored = build_searcher(config)
    restored.restore(str(state))
    restored.on_trial_complete("t2", {"val_accuracy": 0.75})
    pickle.loads(pickle.dumps(restored))  # the whole searcher pickles too (Tuner state)
    study = optuna.load_study(study_name="saved", storage=optuna_database)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert [t.value for t in study.trials] == [0.5, 0.75]


def test_a_storage_study_of_another_direction_or_metric_is_refused(optuna_database):
    from search.space.searcher import build_searcher
    from search.studyfile.config import ConfigError

    build_searcher(_config("first", optuna_database))
    with pytest.raises(ConfigError, match="is a maximize study; this study wants to minimize"):
        build_searcher(_config("other", optuna_database, optuna_study="first",
                               metric="val_loss", mode="min"))
    with pytest.raises(ConfigError, match="optimized val_accuracy, not best_val_accuracy"):
        build_searcher(_config("third", optuna_database, optuna_study="first",
                               metric="best_val_accuracy"))


def test_an_unreachable_optuna_storage_is_one_line(postgres):
    from search.space.searcher import build_searcher
    from search.studyfile.config import ConfigError

    config = _config("x", "postgresql://postgres:secret@127.0.0.1:5432/does_not_exist_db")
    with pytest.raises(ConfigError) as error:
        build_searcher(config)
    message = str(error.value)
    assert "\n" not in message and "secret" not in message
    assert message.startswith("[study] optuna_storage postgresql://postgres:***@127.0.0.1:5432/"
                              "does_not_exist_db is unreachable")
    unset = _config("y", "postgresql://${RS_TEST_UNSET_VARIABLE}@127.0.0.1/x")
    with pytest.raises(ConfigError, match="environment variable RS_TEST_UNSET_VARIABLE is not set"):
        build_searcher(unset)


@slow
def test_a_later_study_warm_starts_from_an_earlier_one(server_study, monkeypatch):
    import optuna

    from search.space.searcher import build_searcher
    from search.studyfile.config import load_study

    studies, _, server = server_study
    # The URL names its user through the environment: neither the study file, nor MLflow,
    # nor Ray's saved experiment holds the expanded URL.
    template = server.optuna_storage.replace("postgres@", "${RS_TEST_PG_USER}@", 1)
    later = studies.write("warm", study_text("warm", epochs=1, seed=2, study={
        "optuna_storage": template, "optuna_study": "tracked"}))
    result = studies.cli("run", str(later), *studies.uri_args, env={"RS_TEST_PG_USER": "postgres"})
    assert result.returncode == 0, result.stderr[-5000:]
    assert "optuna: warm-starting from 2 trials of study 'tracked'" in result.stderr

    study = optuna.load_study(study_name="tracked", storage=server.optuna_storage)
    assert len(study.trials) == 4
    assert {t.state.name for t in study.trials} == {"COMPLETE"}
    assert study.user_attrs["resnet_search.metric"] == "val_accuracy"
    # The later study's trials continue the earlier numbering: its sampler saw them.
    numbers = {name: sorted(int(r.data.tags[tags.OPTUNA_NUMBER])
                            for r in studies.trial_runs(name)) for name in ("tracked", "warm")}
    assert numbers == {"tracked": [0, 1], "warm": [2, 3]}
    # `studies` lists the later study first: newest first, by start time.
    listing = json.loads(studies.cli("studies", "--json", *studies.uri_args).stdout)["studies"]
    names = [row["study"] for row in listing]
    assert names.index("warm") < names.index("tracked"), names
    starts = [row["start_time"] for row in listing]
    assert starts == sorted(starts, reverse=True), listing
    values = {t.number: t.value for t in study.trials}
    for name in ("tracked", "warm"):
        for run in studies.trial_runs(name):
            number = int(run.data.tags[tags.OPTUNA_NUMBER])
            assert values[number] == pytest.approx(run.data.metrics["val_accuracy"])
    client = studies.client()
    warm = store.find_study_run(client, "warm")
    assert not any("optuna_storage" in key for key in warm.data.params)
    logged = client.download_artifacts(warm.info.run_id, "study.toml")
    assert "${RS_TEST_PG_USER}@" in open(logged).read()
    saved = list((studies.home / "ray_results" / "warm").rglob("*.pkl"))
    assert not any(server.optuna_storage.encode() in p.read_bytes() for p in saved)
    # Ray saved the searcher; restored (as `resume` does) it reconnects to the storage.
    state = next(p for p in saved if p.name.startswith("searcher-state"))
    monkeypatch.setenv("RS_TEST_PG_USER", "postgres")
    restored = build_searcher(load_study(later))
    restored.restore(str(state))
    assert len(restored._ot_study.trials) == 4


OUTAGE_S = 12


@slow
def test_a_tracking_outage_past_the_clients_retries_loses_nothing(postgres, tmp_path):
    """The server goes away for longer than the client retries; the study keeps
    training, says that tracking is behind, and every epoch of every trial lands in MLflow.

    MLflow's client retries for minutes by default; with no retries and a 2 s timeout the
    window is seconds, so a 12 s outage here is what a 10-minute one is with the defaults.
    """
    with tracking_server(tmp_path / "server") as server:
        home = tmp_path / "home"
        home.mkdir()
        studies = TrackedStudies(home, server.uri)
        studies.env.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="2")
        epochs = 12  # 2 trials of 12 ~1 s epochs one after the other: the outage falls mid-study
        path = studies.write("outage", study_toml(
            "outage", study={"num_samples": 2, "max_concurrent_trials": 1},
            train={"epochs": epochs, "batch_size": 32},
            space=KILL_TIMED_NET, replace_space=True))
        driver = studies.start("run", str(path), *studies.uri_args)
        try:
            wait_for(lambda: any(r.data.metrics.get("epoch", 0) >= 1
                                 for r in studies.trial_runs("outage")),
                     timeout=300, what="the first epoch in MLflow", interval=0.5)
            down, up = server.outage(OUTAGE_S)
            code = driver.wait(timeout=600)
        finally:
            kill_session(driver)
        log = (studies.home.parent / "driver.log").read_text()
        assert code == 0, log[-5000:]
        assert "tracking is behind: " + server.uri in log, log[-5000:]
        assert "tracking caught up with " + server.uri in log, log[-5000:]

        client = studies.client()
        runs = studies.trial_runs("outage")
        assert len(runs) == 2
        reported_while_down = 0
        for run in runs:
            history = client.get_metric_history(run.info.run_id, "val_accuracy")
            assert sorted(m.step for m in history) == list(range(1, epochs + 1)), run.info.run_name
            reported_while_down += sum(down * 1000 < m.timestamp < up * 1000 for m in history)
            assert run.data.tags[tags.STATUS] == tags.COMPLETED
        # Two epochs, not one: the epoch in flight when the server left lands whatever the
        # driver does; a Tune loop stuck on a tracking call lets no later one through. (The
        # outage holds about 10 epochs, fewer when other tests share the two cores.)
        assert reported_while_down >= 2, "training stopped while the server was away"
        study_run = store.find_study_run(client, "outage")
        assert study_run.data.tags[tags.STATUS] == tags.COMPLETED
        assert client.get_model_version_by_alias("outage-model", tags.CHAMPION_ALIAS).version == "1"
