"""Cost-aware search: [constraints] limits and multi-objective studies with a Pareto front."""

from __future__ import annotations

import pytest
import tomllib
from cost_aware import (
    LIMIT,
    assert_champion_within_max_params,
    assert_pareto_front_recorded_and_shown,
    constrained_quickstart,
    pareto_study,
)
from study_helpers import Studies, study_toml

from search.results.pareto import dominates, non_dominated
from search.studyfile.config import parse_study


@pytest.mark.slow
def test_networks_over_the_limit_are_rejected_at_sampling_and_told_to_optuna():
    from optuna.trial import TrialState

    from search.space.searcher import build_searcher

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
    from search.space.sampler import SearchSpace
    from search.trial.trainable import latency_result

    def limits(max_latency_ms: float) -> dict[str, float]:  # as the study file gives them
        config = parse_study(tomllib.loads(study_toml("latency", constraints={
            "max_latency_ms": max_latency_ms})))
        assert SearchSpace(config).measure_latency
        return config.constraints.limits()

    run = TrainingRun.from_configs(ModelConfig("wrn", 10), TrainConfig(epochs=1, batch_size=32),
                                   DataConfig("digits"), "cpu")
    state = run.model.state_dict()
    result = latency_result(run, limits(1e6))
    assert result["feasible"] == 1 and result["latency_ms"] > 0 and result["latency_ms_batch"] > 0
    assert latency_result(run, limits(1e-6))["feasible"] == 0
    assert all((state[k] == v).all() for k, v in run.model.state_dict().items())  # untouched


def test_pareto_front_is_the_non_dominated_set():
    modes = ["max", "min"]
    points = [[0.9, 100], [0.95, 200], [0.9, 150], [0.99, 200], [0.5, 50]]
    assert non_dominated(points, modes) == [0, 3, 4]
    assert dominates([0.99, 200], [0.95, 200], modes) and not dominates([0.9, 100], [0.9, 100], modes)


@pytest.mark.slow
def test_constrained_quickstart_registers_a_champion_within_max_params(tmp_path):
    studies = Studies(tmp_path / "home")
    path = studies.write("constrained", constrained_quickstart("constrained", 3))
    result = studies.cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_champion_within_max_params(studies, "constrained", trials=3)


@pytest.mark.slow
def test_multi_objective_study_records_a_non_dominated_pareto_front(tmp_path):
    studies = Studies(tmp_path / "home")
    result = studies.cli("run", str(studies.write("pareto", pareto_study("pareto"))), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_pareto_front_recorded_and_shown(studies, "pareto", tmp_path)
