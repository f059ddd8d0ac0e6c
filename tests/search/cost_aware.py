"""The constrained and multi-objective studies and what a user checks of them, shared by the
single-machine tests (test_constraints.py) and the local-cluster ones (test_multinode.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tomllib
from study_helpers import ROOT, Studies, study_toml

from search.results.pareto import dominates
from search.tracking import tags

QUICKSTART = tomllib.loads((ROOT / "configs" / "quickstart.toml").read_text())
LIMIT = 100_000  # the quickstart's best, ResNet-14, has 172,218 parameters


def constrained_quickstart(name: str, num_samples: int, **sections: Any) -> str:
    """The quickstart's space and data under max_params, shortened to 2 epochs."""
    study = {"num_samples": num_samples, **sections.pop("study", {})}
    return study_toml(name, replace_space=True, space=QUICKSTART["space"], data=QUICKSTART["data"],
                      study=study, constraints={"max_params": LIMIT}, **sections)


def pareto_study(name: str, **sections: Any) -> str:
    """4 trials, accuracy against parameters, under a latency limit that every network meets."""
    return study_toml(name, study={"num_samples": 4, "objectives": ["val_accuracy", "params"]},
                      space={"depth": [10, 16], "width": [1, 2]},
                      scheduler={"kind": "asha", "grace_period": 1},
                      constraints={"max_latency_ms": 1000.0}, **sections)


def assert_champion_within_max_params(studies: Studies, name: str, trials: int) -> None:
    from resnet_core.models import count_parameters
    from search.results.retrieve import load_best

    runs = studies.trial_runs(name)
    assert len(runs) == trials
    assert all(int(r.data.params["model.parameters"]) <= LIMIT for r in runs)
    assert all(r.data.tags.get(tags.FEASIBLE, "true") == "true" for r in runs)
    # No latency limit or objective here: latency is not measured (it costs forward passes).
    assert not any("latency_ms" in r.data.metrics for r in runs)
    model, _ = load_best(name, studies.tracking_uri)
    assert count_parameters(model) <= LIMIT
    study_run = studies.client().get_run(runs[0].data.tags[tags.PARENT])
    champion = next(r for r in runs if r.info.run_id == study_run.data.tags[tags.BEST_TRIAL_RUN_ID])
    assert int(champion.data.params["model.parameters"]) == count_parameters(model)


def assert_pareto_front_recorded_and_shown(studies: Studies, name: str, scratch: Path) -> None:
    shown = studies.cli("best", name, "--pareto", "--json", "--tracking-uri", studies.tracking_uri)
    assert shown.returncode == 0, shown.stderr
    front = json.loads(shown.stdout)
    assert front["objectives"] == ["val_accuracy", "params"] and front["front"]
    runs = studies.trial_runs(name)
    assert all(r.data.tags.get(tags.FEASIBLE) == "true" and r.data.metrics["latency_ms"] > 0
               for r in runs), "latency is measured against max_latency_ms on every trial"
    points = {r.data.tags[tags.TRIAL_ID]: (r.data.metrics["best_val_accuracy"],
                                           int(r.data.params["model.parameters"])) for r in runs}
    on_front = {row["trial_id"] for row in front["front"]}
    # The front is exactly the trials no other trial beats on both objectives, computed here
    # from the runs (a loop over the trials off the front could run zero times).
    unbeaten = {trial_id for trial_id, point in points.items()
                if not any(dominates(other, point, ["max", "min"]) for other in points.values())}
    assert on_front == unbeaten, points
    assert {r.data.tags[tags.TRIAL_ID] for r in runs if r.data.tags.get(tags.PARETO) == "true"
            } == on_front
    study_run_id = runs[0].data.tags[tags.PARENT]
    recorded = json.loads(Path(studies.client().download_artifacts(
        study_run_id, "pareto_front.json", str(scratch))).read_text())
    assert recorded["front"] == front["front"]
    table = studies.cli("best", name, "--pareto", "--tracking-uri", studies.tracking_uri)
    assert f"Pareto front of {name}" in table.stdout and "| trial | model |" in table.stdout
