"""Cost-aware search: [constraints] limits and multi-objective studies with a Pareto front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib
from study_helpers import ROOT, Studies, study_toml

from search import tags
from search.config import parse_study
from search.pareto import dominates, non_dominated

QUICKSTART = tomllib.loads((ROOT / "configs" / "quickstart.toml").read_text())
LIMIT = 100_000  # the quickstart's best, ResNet-14, has 172,218 parameters


def constrained_quickstart(name: str, num_samples: int, **study: object) -> str:
    """The quickstart's space and data under max_params, shortened to 2 epochs."""
    return study_toml(name, replace_space=True, space=QUICKSTART["space"], data=QUICKSTART["data"],
                      study={"num_samples": num_samples, **study},
                      constraints={"max_params": LIMIT})


@pytest.mark.slow
def test_networks_over_the_limit_are_rejected_at_sampling_and_told_to_optuna():
    from optuna.trial import TrialState

    from search.searcher import build_searcher

    config = parse_study(tomllib.loads(constrained_quickstart("sampling", 12)))
    searcher = build_searcher(config)
    configs = [searcher.suggest(f"t{i}") for i in range(12)]
    assert all(c["cost"]["params"] <= LIMIT for c in configs)
    trials = searcher._ot_study.get_trials(deepcopy=False)
    rejected = [t for t in trials if t.state == TrialState.PRUNED]
    assert rejected, "the quickstart space has networks over 100k parameters: some must be rejected"
    assert all(t.constraints["params"] > 0 for t in rejected)
    assert len(trials) == len(rejected) + len(configs)  # every suggestion is a feasible network


def test_latency_is_measured_and_judged_against_max_latency_ms():
    from resnet_core.config import ModelConfig
    from resnet_core.data import DataConfig
    from resnet_core.train import TrainConfig, TrainingRun
    from search.trainable import latency_result

    run = TrainingRun.from_configs(ModelConfig("wrn", 10), TrainConfig(epochs=1, batch_size=32),
                                   DataConfig("digits"), "cpu")
    state = run.model.state_dict()
    result = latency_result(run, {"max_latency_ms": 1e6})
    assert result["feasible"] == 1 and result["latency_ms"] > 0 and result["latency_ms_batch"] > 0
    assert latency_result(run, {"max_latency_ms": 1e-6})["feasible"] == 0
    assert all((state[k] == v).all() for k, v in run.model.state_dict().items())  # untouched


def test_pareto_front_is_the_non_dominated_set():
    modes = ["max", "min"]
    points = [[0.9, 100], [0.95, 200], [0.9, 150], [0.99, 200], [0.5, 50]]
    assert non_dominated(points, modes) == [0, 3, 4]
    assert dominates([0.99, 200], [0.95, 200], modes) and not dominates([0.9, 100], [0.9, 100], modes)


@pytest.mark.slow
def test_constrained_quickstart_registers_a_champion_within_max_params(tmp_path):
    from resnet_core.models import count_parameters
    from search.retrieve import load_best

    studies = Studies(tmp_path / "home")
    path = studies.write("constrained", constrained_quickstart("constrained", 3))
    result = studies.cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = studies.trial_runs("constrained")
    assert len(runs) == 3
    assert all(int(r.data.params["model.parameters"]) <= LIMIT for r in runs)
    assert all(r.data.tags.get(tags.FEASIBLE, "true") == "true" for r in runs)
    # No latency limit or objective here: latency is not measured (it costs forward passes).
    assert not any("latency_ms" in r.data.metrics for r in runs)
    model, _ = load_best("constrained", studies.tracking_uri)
    assert count_parameters(model) <= LIMIT
    study_run = studies.client().get_run(runs[0].data.tags[tags.PARENT])
    champion = next(r for r in runs if r.info.run_id == study_run.data.tags[tags.BEST_TRIAL_RUN_ID])
    assert int(champion.data.params["model.parameters"]) == count_parameters(model)


@pytest.mark.slow
def test_multi_objective_study_records_a_non_dominated_pareto_front(tmp_path):
    studies = Studies(tmp_path / "home")
    text = study_toml("pareto", study={"num_samples": 4, "objectives": ["val_accuracy", "params"]},
                      space={"depth": [10, 16], "width": [1, 2]},
                      scheduler={"kind": "asha", "grace_period": 1},
                      constraints={"max_latency_ms": 1000.0})
    result = studies.cli("run", str(studies.write("pareto", text)), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    shown = studies.cli("best", "pareto", "--pareto", "--json", "--tracking-uri",
                        studies.tracking_uri)
    assert shown.returncode == 0, shown.stderr
    front = json.loads(shown.stdout)
    assert front["objectives"] == ["val_accuracy", "params"] and front["front"]
    runs = studies.trial_runs("pareto")
    points = {r.data.tags[tags.TRIAL_ID]: (r.data.metrics["best_val_accuracy"],
                                           int(r.data.params["model.parameters"])) for r in runs}
    on_front = {row["trial_id"] for row in front["front"]}
    for trial_id in on_front:  # nothing beats a front trial on both objectives
        assert not any(dominates(p, points[trial_id], ["max", "min"]) for p in points.values())
    for trial_id in set(points) - on_front:  # and every other trial is beaten by one
        assert any(dominates(points[f], points[trial_id], ["max", "min"]) for f in on_front)
    assert {r.data.tags[tags.TRIAL_ID] for r in runs if r.data.tags.get(tags.PARETO) == "true"
            } == on_front
    study_run_id = runs[0].data.tags[tags.PARENT]
    recorded = json.loads(Path(studies.client().download_artifacts(
        study_run_id, "pareto_front.json", str(tmp_path))).read_text())
    assert recorded["front"] == front["front"]
    table = studies.cli("best", "pareto", "--pareto", "--tracking-uri", studies.tracking_uri)
    assert "Pareto front of pareto" in table.stdout and "| trial | model |" in table.stdout
