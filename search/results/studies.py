"""Every study in a tracking store: `resnet-search studies`.

A study is a run tagged `resnet_search.kind = study` in any experiment; its
trials, best value and champion are read the way `status` and `best` read them
(the one ranking in search.tracking.ranking), so the three commands never disagree.
"""

from __future__ import annotations

import time
from typing import Any

from search.tracking import tags
from search.tracking.local_store import LocalClient, first_of
from search.tracking.records import read_study
from search.tracking.store import (
    all_experiment_ids,
    all_runs,
    check_tracking_reachable,
    client_for,
    resolve_tracking_uri,
    sqlite_path,
)


def list_studies(tracking_uri: str | None = None) -> dict[str, Any]:
    """{"tracking_uri", "studies": [...]}: every study in the store, newest first. A local store
    is read without MLflow (search.tracking.local_store), any other through it."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not sqlite_path(uri).is_file():
        # No store holds no study; opening it would create one (and its folders) at a typo.
        return {"tracking_uri": uri, "studies": []}
    return first_of(lambda: _listing(uri, LocalClient.open(uri)), lambda: _through_mlflow(uri))


def _through_mlflow(uri: str) -> dict[str, Any]:
    check_tracking_reachable(uri)
    return _listing(uri, client_for(uri))


def _listing(uri: str, client: Any) -> dict[str, Any]:
    experiments = all_experiment_ids(client)
    runs = all_runs(client, experiments, f"tags.`{tags.KIND}` = '{tags.KIND_STUDY}'",
                    ["attributes.start_time DESC"]) if experiments else []
    return {"tracking_uri": uri, "studies": [_study_row(client, run) for run in runs]}


def _study_row(client: Any, study_run: Any) -> dict[str, Any]:
    study = read_study(client, study_run)
    best = study.best()
    return {
        "study": study.name,
        "status": study.status,
        "trials": len(study.trials),
        "counts": study.outcome_counts(),
        "metric": study.metric,
        "mode": study.mode,
        "best_value": best.value if best else None,
        "best_trial_id": best.trial_id if best else None,
        "champion": study.champion,
        "test_accuracy": study.test_accuracy,
        "start_time": _iso(study.start_ms),
        "study_run_id": study.run_id,
        "experiment_id": study.experiment_id,
    }


def _iso(ms: int | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ms / 1000)) if ms else None


def format_studies(listing: dict[str, Any]) -> str:
    """The human table of `resnet-search studies`."""
    studies = listing["studies"]
    if not studies:
        return f"no studies in {listing['tracking_uri']}"
    lines = [f"{'study':<28} {'status':<11} {'trials':>6} {'best':>8} {'champion':<34} started",
             ]
    for s in studies:
        best = "-" if s["best_value"] is None else f"{s['best_value']:.4f}"
        champion = s["champion"]
        label = "-" if champion is None else (
            f"{champion['model']} v{champion['version']}" + (" @champion" if champion["is_alias"] else ""))
        lines.append(f"{s['study']:<28} {s['status']:<11} {s['trials']:>6} {best:>8} {label:<34} "
                     f"{(s['start_time'] or '-').replace('T', ' ')}")
    lines.append(f"\n{len(studies)} studies in {listing['tracking_uri']}; best = best "
                 f"{studies[0]['metric']} of the study's ranked trials")
    return "\n".join(lines)
