"""The typed trial: what the searcher builds, what Tune carries, what a resumed study hands back."""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict

import optuna
import pytest
import tomllib
from study_helpers import study_toml

from resnet_core import DataConfig, ModelConfig, TrainConfig
from search.space.sampler import SearchSpace
from search.studyfile.config import parse_study
from search.trial.spec import TrialResources, TrialSpec

# A trial's config as a study saved it before the typed spec: Tune's dict, with the
# searcher's flat Optuna parameters beside the resolved sections.
SAVED_TRIAL = {
    "family": "wrn", "width": 2, "lr": 0.05,
    "model": {"family": "wrn", "depth": 10, "width": 2, "block": "basic", "shortcut": "B",
              "bn_position": "before_add", "dropout": 0.0},
    "network": "wrn-10-2",
    "train": json.loads(json.dumps(asdict(TrainConfig(epochs=2, lr=0.05, seed=4)))),
    "data": json.loads(json.dumps(asdict(DataConfig("digits")))),
    "cost": {"params": 1234, "flops": 5678}, "constraints": {}, "measure_latency": False,
    "optuna_trial_number": 3,
    "resources": {"workers": 2, "cpus_per_worker": 0.5, "gpus_per_worker": 0.0},
}


def _space(**resources) -> SearchSpace:
    raw = tomllib.loads(study_toml("spec", resources=resources))
    return SearchSpace(parse_study(raw))


def test_a_saved_trial_reads_back_as_the_trial_it_was():
    spec = TrialSpec.from_tune(SAVED_TRIAL)
    assert spec.model == ModelConfig(family="wrn", depth=10, width=2)
    assert (spec.network, spec.seed, spec.number) == ("wrn-10-2", 4, 3)
    assert spec.train.milestones == TrainConfig().milestones and spec.train.lr == 0.05
    assert spec.resources == TrialResources(workers=2, cpus_per_worker=0.5)
    assert not spec.measure_latency and spec.cost == {"params": 1234, "flops": 5678}
    carried = spec.to_tune()
    expected = {k: SAVED_TRIAL[k] for k in carried}
    expected["model"] = {**expected["model"], "stem": None}  # a field added since: its default
    assert {k: carried[k] for k in carried} == expected


def test_what_tune_carries_is_plain_data_and_the_same_trial():
    spec = _space(workers_per_trial=2).sample(optuna.trial.FixedTrial({"width": 2, "lr": 0.1}))
    carried = spec.to_tune()
    assert json.loads(json.dumps(carried)) == carried  # JSON (and so MLflow and Ray) friendly
    assert TrialSpec.from_tune(carried) == spec
    assert spec.resources.workers == 2 and spec.network == "wrn-10-2"


def test_a_searcher_saved_before_the_typed_spec_samples_on_after_a_resume():
    space = _space()
    state = {**space.__dict__, "train": asdict(space.train), "data": asdict(space.data),
             "resources": asdict(space.resources)}
    old = SearchSpace.__new__(SearchSpace)
    old.__setstate__(state)
    restored = pickle.loads(pickle.dumps(old))
    trial = optuna.trial.FixedTrial({"width": 1, "lr": 0.1})
    assert restored.sample(trial) == space.sample(trial)


def test_trial_resources_name_what_is_wrong():
    with pytest.raises(ValueError, match="workers >= 1"):
        TrialResources(workers=0)
