"""README promises of `resnet-search` that a user notices: command output, precedence rules,
and what a study's [study] / [tracking] keys do. The study tests share two small studies."""

from __future__ import annotations

import re

import pytest
from common import cli, free_port
from study_helpers import Studies, study_toml

from resnet_core import build_model, count_flops, count_parameters

# ---------------------------------------------------------------- no Ray, no study


@pytest.mark.slow
def test_models_lists_the_registry_as_a_table_with_flops_for_the_input_size():
    result = cli("models", "--input-size", "16", timeout=300)
    assert result.returncode == 0, result.stderr
    row = next(line.split() for line in result.stdout.splitlines() if line.startswith("resnet-20 "))
    assert row[:3] == ["resnet-20", "resnet", "20"]
    model = build_model("resnet-20")
    assert row[-2] == f"{count_parameters(model) / 1e6:.2f}M"
    assert row[-1] == f"{count_flops(model, (16, 16)) / 1e6:.1f}"
    # A 16x16 image costs a quarter of a 32x32 one (every layer's map is a quarter the size).
    assert float(row[-1]) == pytest.approx(count_flops(model, (32, 32)) / 4e6, rel=0.01)
    assert "multiply-adds per 16x16 image" in result.stdout


@pytest.mark.slow
def test_tracking_uri_flag_beats_the_environment_which_beats_the_study_file(tmp_path):
    """Three unreachable servers: the one-line error names the one that was used."""
    file_uri, env_uri, flag_uri = (f"http://127.0.0.1:{free_port()}" for _ in range(3))
    home = tmp_path / "home"
    home.mkdir()
    studies = Studies(home)
    path = studies.write("uris", study_toml("uris", tracking={"uri": file_uri}))

    def used(*args: str, env_uri: str | None) -> str:
        result = studies.cli("run", str(path), *args, timeout=120,
                             env={"MLFLOW_TRACKING_URI": env_uri} if env_uri else None)
        assert result.returncode == 2, result.stderr
        (line,) = [line for line in result.stderr.splitlines() if "unreachable" in line]
        return line

    assert file_uri in used(env_uri=None)
    from_env = used(env_uri=env_uri)
    assert env_uri in from_env and file_uri not in from_env
    from_flag = used("--tracking-uri", flag_uri, env_uri=env_uri)
    assert flag_uri in from_flag and env_uri not in from_flag


def test_the_random_sampler_is_optunas_random_sampler_with_the_study_seed():
    import optuna
    import tomllib

    from search.space.searcher import build_sampler
    from search.studyfile.config import parse_study

    toml = study_toml("rnd", study={"sampler": "random", "seed": 7})
    sampler = build_sampler(parse_study(tomllib.loads(toml)))
    assert isinstance(sampler, optuna.samplers.RandomSampler)
    default = build_sampler(parse_study(tomllib.loads(study_toml("tpe", study={"seed": 7}))))
    assert isinstance(default, optuna.samplers.TPESampler)


@pytest.mark.slow
def test_ray_address_is_joined_when_no_flag_is_given_and_the_flag_wins_over_it(tmp_path):
    """Nothing listens at either address: the one-line error names the address that was used."""
    env_address, flag_address = (f"127.0.0.1:{free_port()}" for _ in range(2))
    home = tmp_path / "home"
    home.mkdir()
    studies = Studies(home)
    path = studies.write("join", study_toml("join"))

    def error(*args: str) -> str:
        result = studies.cli("run", str(path), *args, timeout=90, env={"RAY_ADDRESS": env_address})
        assert result.returncode == 2, result.stderr
        return result.stderr.strip().splitlines()[-1]

    assert env_address in error()
    from_flag = error("--address", flag_address)
    assert flag_address in from_flag and env_address not in from_flag


# ---------------------------------------------------------------- two small studies

REGISTERED = "promises-model"
SEED = 5


@pytest.fixture(scope="module")
def two_studies(tmp_path_factory) -> tuple[Studies, dict[str, str]]:
    """Study "promises-a" (3 trials, --name, --quiet, random sampler, val_loss, one trial at a
    time, no checkpoint artifacts, Nesterov trials that diverge, gpus_per_trial "auto"), then
    "promises-b" (defaults, not quiet) registering the same model.
    Returns the Studies and each run's output."""
    home = tmp_path_factory.mktemp("promises") / "home"
    home.mkdir()
    studies = Studies(home)
    studies.env.pop("RESNET_SEARCH_QUIET")  # the --quiet flag alone must silence the table
    first = studies.write("promises-file", study_toml(
        "promises-file",
        study={"num_samples": 3, "seed": SEED, "sampler": "random", "metric": "val_loss",
               "max_concurrent_trials": 1},
        data={"dataset": "digits", "subset": 400, "val_size": 200},
        # Nesterov's lr makes its trials diverge: the study must go on and never crown one.
        space={"optimizer": ["sgd", "nesterov"], "lr": None,
               "lr.sgd": {"low": 0.03, "high": 0.2, "log": True}, "lr.nesterov": 1e12},
        resources={"gpus_per_trial": "auto"},
        tracking={"registered_model": REGISTERED, "log_checkpoints": False}))
    a = studies.cli("run", str(first), "--name", "promises-a", "--quiet")
    assert a.returncode == 0, a.stderr[-3000:]
    second = studies.write("promises-b", study_toml(
        "promises-b", study={"num_samples": 1}, data={"dataset": "digits", "subset": 400},
        tracking={"registered_model": REGISTERED}))
    b = studies.cli("run", str(second))
    assert b.returncode == 0, b.stderr[-3000:]
    return studies, {"a": a.stdout + a.stderr, "b": b.stdout + b.stderr}


def _study_run(studies: Studies, name: str):
    from search.tracking import store

    return store.find_study_run(studies.client(), name)


@pytest.mark.slow
def test_run_name_names_the_study(two_studies):
    studies, _ = two_studies
    assert _study_run(studies, "promises-a") is not None
    assert _study_run(studies, "promises-file") is None
    assert studies.cli("status", "promises-a").returncode == 0


@pytest.mark.slow
def test_quiet_leaves_out_the_live_trial_table(two_studies):
    _, output = two_studies
    assert "== Status ==" in output["b"]  # a run without --quiet shows it
    assert "== Status ==" not in output["a"]
    # Nor Ray's INFO lines, nor MLflow's own notes on the registration: the study's lines only.
    assert "INFO worker.py" in output["b"] and "Created version '2'" in output["b"]
    assert "INFO" not in output["a"] and "Created version" not in output["a"], output["a"]


@pytest.mark.slow
def test_a_val_loss_study_crowns_the_trial_with_the_lowest_val_loss(two_studies):
    from search.tracking import tags

    studies, _ = two_studies
    client, study_run = studies.client(), _study_run(studies, "promises-a")
    lowest = {run.data.tags[tags.TRIAL_ID]: min(m.value for m in client.get_metric_history(
        run.info.run_id, "val_loss")) for run in studies.trial_runs("promises-a")}
    assert len(lowest) == 3
    assert lowest[study_run.data.tags[tags.BEST_TRIAL_ID]] == min(lowest.values())


@pytest.mark.slow
def test_a_diverged_trial_ends_diverged_and_the_study_goes_on(two_studies):
    from search.tracking import tags

    studies, output = two_studies
    runs = sorted(studies.trial_runs("promises-a"), key=lambda r: r.info.start_time)
    statuses = [(r.data.params["train.optimizer"], r.data.tags[tags.STATUS]) for r in runs]
    diverged = [i for i, (optimizer, status) in enumerate(statuses) if status == tags.DIVERGED]
    assert diverged and all(statuses[i][0] == "nesterov" for i in diverged), statuses
    assert any(status == tags.COMPLETED for _, status in statuses[diverged[0] + 1:]), \
        f"nothing ran after the diverged trial: {statuses}"
    winner = _study_run(studies, "promises-a").data.tags[tags.BEST_TRIAL_RUN_ID]
    assert winner not in {runs[i].info.run_id for i in diverged}
    assert "1 diverged" in output["a"] or f"{len(diverged)} diverged" in output["a"]


@pytest.mark.slow
def test_gpus_per_trial_auto_trains_on_the_cpu_where_there_is_no_gpu(two_studies):
    import torch

    from search.tracking import tags

    studies, _ = two_studies
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: auto packs trials onto it "
                    "(tests/search/study/test_gpu_packing.py)")
    runs = studies.trial_runs("promises-a")
    assert len(runs) == 3 and {r.data.tags[tags.DEVICE] for r in runs} == {"cpu"}


@pytest.mark.slow
def test_trial_i_trains_with_seed_plus_i(two_studies):
    from search.tracking import tags

    studies, _ = two_studies
    runs = studies.trial_runs("promises-a")
    seeds = {int(r.data.tags[tags.OPTUNA_NUMBER]): int(r.data.params["train.seed"]) for r in runs}
    assert seeds == {i: SEED + i for i in range(3)}


@pytest.mark.slow
def test_max_concurrent_trials_1_runs_one_trial_at_a_time(two_studies):
    studies, _ = two_studies
    spans = sorted((r.info.start_time, r.info.end_time) for r in studies.trial_runs("promises-a"))
    assert len(spans) == 3 and all(end is not None for _, end in spans)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, spans


@pytest.mark.slow
def test_log_checkpoints_false_logs_no_checkpoint_artifact(two_studies):
    studies, _ = two_studies
    client = studies.client()

    def artifacts(study: str) -> list[list[str]]:
        return [[a.path for a in client.list_artifacts(r.info.run_id)]
                for r in studies.trial_runs(study)]

    assert all("checkpoint" in paths for paths in artifacts("promises-b"))  # the default logs it
    assert all("checkpoint" not in paths for paths in artifacts("promises-a"))


@pytest.mark.slow
def test_the_champion_alias_moves_to_the_newest_studys_version(two_studies):
    from search.tracking import tags

    studies, _ = two_studies
    version = studies.client().get_model_version_by_alias(REGISTERED, tags.CHAMPION_ALIAS)
    assert str(version.version) == "2"
    assert version.run_id in {_study_run(studies, "promises-b").info.run_id} | {
        r.info.run_id for r in studies.trial_runs("promises-b")}


@pytest.mark.slow
def test_best_prints_the_best_trial_and_its_champion(two_studies):
    from search.tracking import tags

    studies, _ = two_studies
    study_run = _study_run(studies, "promises-a")
    result = studies.cli("best", "promises-a")
    assert result.returncode == 0, result.stderr
    champion = study_run.data.tags[tags.BEST_TRIAL_ID]
    assert result.stdout.startswith(f"best trial of promises-a: {champion} ")
    assert re.search(r"best val_loss [0-9.]+ at epoch [12]", result.stdout)
    # Its own version: the @champion alias has moved on to promises-b's.
    assert (f"champion models:/{REGISTERED}/1, test accuracy "
            f"{study_run.data.metrics['test_accuracy']:.4f}") in result.stdout


@pytest.mark.slow
def test_evaluate_a_model_uri_prints_the_champions_test_accuracy(two_studies):
    studies, _ = two_studies
    result = studies.cli("evaluate", "--model-uri", f"models:/{REGISTERED}@champion")
    assert result.returncode == 0, result.stderr
    accuracy = _study_run(studies, "promises-b").data.metrics["test_accuracy"]
    assert re.search(rf"digits test accuracy {accuracy:.4f}, loss [0-9.]+ \(\d+ images\)",
                     result.stdout), result.stdout


@pytest.mark.slow
def test_load_model_uri_returns_the_champion_network(two_studies):
    import torch

    from resnet_core import DataConfig, load_data
    from resnet_core.loader import make_loaders
    from resnet_core.train import evaluate_model
    from search.results.retrieve import load_model_uri

    studies, _ = two_studies
    model, state = load_model_uri(f"models:/{REGISTERED}@champion", studies.tracking_uri)
    data = load_data(DataConfig("digits"))
    *_, test_loader = make_loaders(data, 256, torch.device("cpu"))
    _, accuracy = evaluate_model(model, test_loader)
    expected = _study_run(studies, "promises-b").data.metrics["test_accuracy"]
    assert accuracy == pytest.approx(expected, abs=0.01)
    assert state["model_config"]["family"] == "wrn"


@pytest.mark.slow
def test_an_older_studys_champion_is_its_own_version_not_the_moved_alias(two_studies):
    """promises-a and promises-b register the same model: the alias follows promises-b, and
    everything that fetches promises-a's champion must still get promises-a's network."""
    import json

    from search.results.retrieve import load_best
    from search.tracking import tags

    studies, _ = two_studies
    study_run = _study_run(studies, "promises-a")
    _, config = load_best("promises-a", studies.tracking_uri)
    assert config["model_uri"] == f"models:/{REGISTERED}/1"
    best_run = studies.client().get_run(study_run.data.tags[tags.BEST_TRIAL_RUN_ID])
    assert config["train"]["lr"] == pytest.approx(float(best_run.data.params["train.lr"]))
    status = json.loads(studies.cli("status", "promises-a", "--json").stdout)
    assert status["champion"] == {"model": REGISTERED, "version": 1,
                                  "uri": f"models:/{REGISTERED}/1", "is_alias": False}



def test_a_reader_that_stops_early_is_no_error():
    """`resnet-search models | head -1`: the reader leaves before the table is written (here
    at once, `true`), so the writes fail: no traceback, and SIGPIPE's exit code."""
    import subprocess
    import sys

    from common import ROOT

    pipeline = subprocess.run(
        f"set -o pipefail; {sys.executable} -m search.cli models | true", shell=True,
        executable="/bin/bash", capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert pipeline.stderr == ""
    assert pipeline.returncode == 141
