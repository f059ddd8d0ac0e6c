"""What a study run says about itself in the MLflow dashboard.

The study run's description (`mlflow.note.content`, Markdown) answers "how is it
going and what won": status, trials by outcome, the best trials, the champion,
wall time and CPU/GPU-hours. Study-level metrics give the search's progress as
charts: the best value so far after each finished trial (step = number of
trials finished) and the trial counts by outcome. Both are rewritten as trials
finish (at most every few seconds: `search.tracking.callback.STUDY_UPDATE_INTERVAL_S`) and when
the trials are done, so the dashboard is current while the study runs.
"""

from __future__ import annotations

import time
from typing import Any

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from search.tracking import ranking, tags
from search.tracking.store import (
    champion_class_scores,
    ranked_trial_runs,
    study_champion,
    study_objective,
)

NOTE_TAG = "mlflow.note.content"
OUTCOMES = (tags.COMPLETED, tags.PRUNED, tags.DIVERGED, tags.FAILED, tags.RUNNING)
TOP_TRIALS = 5


def model_label(params: dict[str, str]) -> str:
    """A trial's network as a user names it (wrn-16-2, resnet-20, resnet-164 (bottleneck))."""
    family, depth = params.get("model.family", "?"), params.get("model.depth", "?")
    if family == "wrn":
        return f"wrn-{depth}-{params.get('model.width', '1')}"
    block = params.get("model.block")
    label = f"{family}-{depth}" + (f" ({block})" if block and block != "basic" else "")
    return label + (" BN after add" if params.get("model.bn_position") == "after_add" else "")


def outcome_counts(ranked: list[tuple[ranking.TrialScore, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for score, _ in ranked:
        counts[score.status] = counts.get(score.status, 0) + 1
    return counts


def update_study_run(client: MlflowClient, study_run_id: str) -> None:
    """Rewrite the study run's description and log its study-level metrics."""
    study_run = client.get_run(study_run_id)
    ranked = ranked_trial_runs(client, study_run)
    metric, mode = study_objective(study_run)
    finished = [(s, r) for s, r in ranked if s.status != tags.RUNNING and r.info.end_time]
    now = int(time.time() * 1000)
    step = len(finished)
    metrics = [Metric(f"trials_{outcome}", float(n), now, step)
               for outcome, n in outcome_counts(ranked).items()]
    best = ranking.best_trial([s for s, _ in finished], mode)
    if best is not None:
        metrics.append(Metric(f"best_so_far_{metric}", best.best.value, now, step))
    # The registry is asked only once the champion is scored: this runs after every trial.
    champion = (study_champion(client, study_run)
                if "test_accuracy" in study_run.data.metrics else None)
    classes = champion_class_scores(client, study_run_id) if champion else None
    client.log_batch(study_run_id, metrics=metrics, tags=[
        RunTag(NOTE_TAG, describe(study_run, ranked, metric, champion, classes))])


def describe(study_run, ranked: list[tuple[ranking.TrialScore, Any]], metric: str,
             champion: dict[str, Any] | None = None, classes: dict[str, Any] | None = None
             ) -> str:
    """The study run's Markdown description (`champion`: tracking.study_champion's answer;
    `classes`: the champion's test split by class, tracking.champion_class_scores)."""
    run_tags, params = study_run.data.tags, study_run.data.params
    name = run_tags.get(tags.STUDY, study_run.info.run_name)
    counts = outcome_counts(ranked)
    planned = params.get("study.num_samples", "?")
    lines = [f"## Study {name}: {run_tags.get(tags.STATUS, 'unknown')}", "",
             f"{len(ranked)} of {planned} trials: " + (", ".join(
                 f"{counts[o]} {o}" for o in OUTCOMES if counts.get(o)) or "none yet") + ".",
             f"Ranked by {metric} ({params.get('study.mode', 'max')}), ties by validation loss, "
             f"then the earlier trial.", ""]
    lines += _best_table(ranked, metric)
    lines += _champion_lines(study_run, champion)
    lines += _class_lines(classes)
    lines += _cost_lines(study_run, ranked)
    lines += ["", "Trials are the nested runs below; `resnet-search report "
              f"{name}` draws the whole study."]
    return "\n".join(lines)


def _best_table(ranked: list[tuple[ranking.TrialScore, Any]], metric: str) -> list[str]:
    rows = [(s, r) for s, r in ranked if s.ranked][:TOP_TRIALS]
    if not rows:
        return ["No trial has a score yet.", ""]
    out = [f"| rank | trial | model | optimizer | lr | dropout | {metric} | epoch | status |",
           "|---|---|---|---|---|---|---|---|---|"]
    for place, (score, run) in enumerate(rows, 1):
        p = run.data.params
        out.append(f"| {place} | {score.number} ({score.trial_id}) | {model_label(p)} | "
                   f"{p.get('train.optimizer', '?')} | {_short(p.get('train.lr'))} | "
                   f"{_short(p.get('model.dropout'))} | {score.best.value:.4f} | "
                   f"{score.best.epoch} | {score.status} |")
    return out + [""]


def _champion_lines(study_run, champion: dict[str, Any] | None) -> list[str]:
    test_accuracy = study_run.data.metrics.get("test_accuracy")
    if test_accuracy is None or champion is None:
        return ["Champion: not chosen yet (the best trial is scored once on the test split "
                "when the study ends).", ""]
    return [f"**Champion**: trial {study_run.data.tags.get(tags.BEST_TRIAL_ID, '?')}, "
            f"`{champion['uri']}`, test accuracy **{test_accuracy:.4f}**.", ""]


def _class_lines(classes: dict[str, Any] | None, shown: int = 5) -> list[str]:
    """The classes the champion gets wrong most on the test split, and what it takes them for."""
    if not classes:
        return []
    names, matrix = classes["class_names"], classes["confusion"]
    rows = []
    for i, name in enumerate(names):
        total = sum(matrix[i])
        if total:
            mistaken = max((c, j) for j, c in enumerate(matrix[i]) if j != i) if len(names) > 1 \
                else (0, i)
            rows.append((matrix[i][i] / total, name, total, mistaken))
    out = [f"Test accuracy by class, lowest {min(shown, len(rows))} of {len(rows)}:", "",
           "| class | test images | accuracy | most often taken for |", "|---|---|---|---|"]
    for accuracy, name, total, (count, j) in sorted(rows)[:shown]:
        out.append(f"| {name} | {total} | {accuracy:.4f} | "
                   f"{f'{names[j]} ({count})' if count else '-'} |")
    return out + [""]


def _cost_lines(study_run, ranked: list[tuple[ranking.TrialScore, Any]]) -> list[str]:
    params = study_run.data.params
    now = int(time.time() * 1000)
    end = study_run.info.end_time or now
    wall_h = (end - study_run.info.start_time) / 3.6e6
    trial_h = sum(((r.info.end_time or now) - r.info.start_time) / 3.6e6 for _, r in ranked)
    workers = float(params.get("resources.workers_per_trial", 1) or 1)
    cpus = float(params.get("resources.cpus_per_trial", 1) or 1) * workers
    gpus = params.get("resources.gpus_per_trial", "0")
    gpus = float(gpus) * workers if gpus.replace(".", "", 1).isdigit() else 0.0
    line = f"Wall time {wall_h * 60:.1f} min; {trial_h * cpus:.2f} CPU-hours"
    return [line + (f", {trial_h * gpus:.2f} GPU-hours." if gpus else ".")]


def _short(value: str | None) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(value):.3g}"
    except ValueError:
        return value
