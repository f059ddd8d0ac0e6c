"""What a study run says about itself in the MLflow dashboard.

The study run's description (`mlflow.note.content`, Markdown) answers "how is it
going and what won": status, trials by outcome, the best trials, the champion,
wall time and CPU/GPU-hours. Study-level metrics give the search's progress as
charts: the best value so far after each finished trial (step = number of
trials finished) and the trial counts by outcome. Both are rewritten as trials
finish (at most every few seconds: `search.tracking.callback.STUDY_UPDATE_INTERVAL_S`) and when
the trials are done, so the dashboard is current while the study runs. Each rewrite also
rewrites the study's trial index (search.tracking.trial_index), from the last index and the
trial runs changed since it.
"""

from __future__ import annotations

import time
from typing import Any

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from search.tracking.records import StudyRecord, count_outcomes, model_label, read_study
from search.tracking.trial_index import IndexKeeper, refresh_index

# model_label: the name the CLI knows a network label by.
__all__ = ["NOTE_TAG", "TOP_TRIALS", "describe", "model_label", "outcome_counts", "update_study_run"]

NOTE_TAG = "mlflow.note.content"
TOP_TRIALS = 5


def outcome_counts(ranked: list[tuple[Any, Any]]) -> dict[str, int]:
    """Trials by outcome from tracking.ranked_trial_runs' (score, run) pairs."""
    return count_outcomes(score.status for score, _ in ranked)


def update_study_run(client: MlflowClient, study_run_id: str,
                     keeper: IndexKeeper | None = None) -> None:
    """Rewrite the study run's trial index and description, and log its study-level metrics.

    `keeper`: the trial index as this process last wrote it (the trial callback's, while the
    study runs): only the trial runs changed since are read (search.tracking.trial_index)."""
    study_run = client.get_run(study_run_id)
    runs = refresh_index(client, study_run, keeper)
    study = read_study(client, study_run, classes=True, runs=runs)
    finished = [t for t in study.trials if t.finished]
    now = int(time.time() * 1000)
    step = len(finished)
    metrics = [Metric(f"trials_{outcome}", float(n), now, step)
               for outcome, n in study.outcome_counts().items()]
    scored = [t for t in finished if t.ranked]
    if scored:
        best = min(scored, key=lambda t: t.rank)
        metrics.append(Metric(f"best_so_far_{study.metric}", best.value, now, step))
    client.log_batch(study_run_id, metrics=metrics, tags=[RunTag(NOTE_TAG, describe(study))])


def describe(study: StudyRecord) -> str:
    """The study run's Markdown description."""
    counts = study.outcome_counts()
    planned = study.num_samples or "?"
    lines = [f"## Study {study.name}: {study.status}", "",
             f"{len(study.trials)} of {planned} trials: " + (", ".join(
                 f"{n} {o}" for o, n in counts.items()) or "none yet") + ".",
             f"Ranked by {study.metric} ({study.mode}), ties by validation loss, "
             f"then the earlier trial.", ""]
    lines += _best_table(study)
    lines += _champion_lines(study)
    lines += _class_lines(study.classes)
    lines += _cost_lines(study)
    lines += ["", "Trials are the nested runs below; `resnet-search report "
              f"{study.name}` draws the whole study."]
    return "\n".join(lines)


def _best_table(study: StudyRecord) -> list[str]:
    rows = study.ranked()[:TOP_TRIALS]
    if not rows:
        return ["No trial has a score yet.", ""]
    out = [f"| rank | trial | model | optimizer | lr | dropout | {study.metric} | epoch | status |",
           "|---|---|---|---|---|---|---|---|---|"]
    for place, t in enumerate(rows, 1):
        out.append(f"| {place} | {t.number} ({t.trial_id}) | {t.label} | "
                   f"{t.optimizer or '?'} | {_short(t.lr)} | {_short(t.dropout)} | "
                   f"{t.value:.4f} | {t.best_epoch} | {t.status} |")
    return out + [""]


def _champion_lines(study: StudyRecord) -> list[str]:
    if study.test_accuracy is None or study.champion is None:
        return ["Champion: not chosen yet (the best trial is scored once on the test split "
                "when the study ends).", ""]
    return [f"**Champion**: trial {study.champion_trial_id or '?'}, "
            f"`{study.champion['uri']}`, test accuracy **{study.test_accuracy:.4f}**.", ""]


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


def _cost_lines(study: StudyRecord) -> list[str]:
    now = int(time.time() * 1000)
    wall_h = ((study.end_ms or now) - study.start_ms) / 3.6e6
    trial_h = sum(((t.end_ms or now) - t.start_ms) / 3.6e6 for t in study.trials)
    workers = float(study.setting("resources.workers_per_trial", "1") or 1)
    cpus = float(study.setting("resources.cpus_per_trial", "1") or 1) * workers
    gpus = study.setting("resources.gpus_per_trial", "0")
    gpus = float(gpus) * workers if gpus.replace(".", "", 1).isdigit() else 0.0
    line = f"Wall time {wall_h * 60:.1f} min; {trial_h * cpus:.2f} CPU-hours"
    return [line + (f", {trial_h * gpus:.2f} GPU-hours." if gpus else ".")]


def _short(value: float | str | None) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(value):.3g}"
    except ValueError:
        return value
