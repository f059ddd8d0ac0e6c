"""Every study in a tracking store: `resnet-search studies`.

A study is a run tagged `resnet_search.kind = study` in any experiment; its
trials, best value and champion are read the way `status` and `best` read them
(the one ranking in search.tracking.ranking), so the three commands never disagree.
"""

from __future__ import annotations

import time
from typing import Any

from search.tracking import tags
from search.tracking.store import (
    check_tracking_reachable,
    client_for,
    ranked_trial_runs,
    resolve_tracking_uri,
    sqlite_path,
    study_champion,
    study_objective,
)


def list_studies(tracking_uri: str | None = None) -> dict[str, Any]:
    """{"tracking_uri", "studies": [...]}: every study in the store, newest first."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not sqlite_path(uri).is_file():
        # No store holds no study; opening it would create one (and its folders) at a typo.
        return {"tracking_uri": uri, "studies": []}
    check_tracking_reachable(uri)
    client = client_for(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, filter_string=f"tags.`{tags.KIND}` = '{tags.KIND_STUDY}'",
        order_by=["attributes.start_time DESC"], max_results=10000,
    ) if experiments else []
    return {"tracking_uri": uri, "studies": [_study_row(client, run) for run in runs]}


def _study_row(client: Any, study_run: Any) -> dict[str, Any]:
    metric, mode = study_objective(study_run)
    ranked = ranked_trial_runs(client, study_run)
    counts: dict[str, int] = {}
    for score, _ in ranked:
        counts[score.status] = counts.get(score.status, 0) + 1
    best = ranked[0][0] if ranked and ranked[0][0].ranked else None
    name = study_run.data.tags.get(tags.STUDY, study_run.info.run_name)
    return {
        "study": name,
        "status": study_run.data.tags.get(tags.STATUS, "unknown"),
        "trials": len(ranked),
        "counts": counts,
        "metric": metric,
        "mode": mode,
        "best_value": best.best.value if best else None,
        "best_trial_id": best.trial_id if best else None,
        "champion": study_champion(client, study_run),
        "test_accuracy": study_run.data.metrics.get("test_accuracy"),
        "start_time": _iso(study_run.info.start_time),
        "study_run_id": study_run.info.run_id,
        "experiment_id": study_run.info.experiment_id,
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
