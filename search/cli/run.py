"""`resnet-search run` and `resume`: a study file run to its end, and what came of it (the best
trial, the registered champion, where the dashboard shows it)."""

from __future__ import annotations

import argparse

from search.cli.logging_setup import before_ray
from search.cli.ui import DASHBOARD, experiment_runs_url
from search.studyfile.config import config_params, load_study
from search.tracking.tags import champion_uri

# Ray's, torch's and MLflow's imports cost seconds: the study and tracking modules are imported
# inside the functions, after `before_ray` has set Ray up, and never by the other commands.


def cmd_run(args: argparse.Namespace) -> int:
    config = load_study(args.study, name=args.name)
    before_ray(args.quiet)
    from search.study.run import run_study  # Ray and torch: see above

    outcome = run_study(config, address=args.address, tracking_uri=args.tracking_uri)
    _print_outcome(outcome)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    before_ray(args.quiet)
    from search.study.run import StudyAlreadyCompleted, resume_study  # Ray and torch

    try:
        outcome = resume_study(args.name, address=args.address, tracking_uri=args.tracking_uri)
    except StudyAlreadyCompleted as done:
        print(done)
        return 0
    _print_outcome(outcome)
    return 0


def _print_outcome(outcome) -> None:
    from search.tracking.summary import model_label  # MLflow

    best = outcome.best
    model, train = best["config"]["model"], best["config"]["train"]
    # Named as `best`, `status` and the report name it: from the trial run's params.
    name = model_label(config_params(model=model))
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.outcomes.items()))
    print(f"\nstudy {outcome.name}: {outcome.trials} trials" + (f" ({counts})" if counts else ""))
    print(f"best trial {best['trial_id']}: {name}, "
          f"{train['optimizer']} lr={train['lr']:.4g}, dropout={model.get('dropout', 0):.3g}")
    print(f"  {best['metric']} {best['value']:.4f} (epoch {best['epoch']}), "
          f"test accuracy {outcome.test_accuracy:.4f}")
    print(f"registered model: {champion_uri(outcome.registered_model)} "
          f"(version {outcome.model_version})")
    print(f"dashboard: {_dashboard_command(outcome.tracking_uri, _experiment_of(outcome))}")
    for line in outcome.phases:
        print(line)


def _dashboard_command(uri: str, experiment_id: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {experiment_runs_url(uri, experiment_id)}"
    return (f"resnet-search ui --tracking-uri {uri}   (then open "
            f"{experiment_runs_url(DASHBOARD, experiment_id)})")


def _experiment_of(outcome) -> str:
    from search.tracking.store import client_for  # MLflow

    return client_for(outcome.tracking_uri).get_run(outcome.study_run_id).info.experiment_id
