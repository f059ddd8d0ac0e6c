"""The Pareto front of a study: the trials no other trial beats on every objective.

A multi-objective study (`[study] objectives = ["val_accuracy", "params"]`)
has no single winner: its answer is the accuracy/cost trade-off. The front is
computed from the same MLflow numbers as the ranking (`search.tracking.ranking`): each
ranked, feasible trial's best value of the study metric, and its costs
(parameters and multiply-adds logged before training, batch-1 latency
measured in the trial). At the end of a study it is recorded in MLflow: the
tag `tags.PARETO` = "true" on each front trial run, and `pareto_front.json`
plus `pareto_front.md` on the study run. `resnet-search best NAME --pareto`
shows it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from search.tracking import tags
from search.tracking.records import StudyRecord, TrialRecord, read_study

# Each cost objective as a trial record holds it (parameters and multiply-adds are counted
# before training, the latency is measured by the trial).
COSTS: dict[str, Callable[[TrialRecord], float | int | None]] = {
    "params": lambda t: t.parameters, "flops": lambda t: t.flops,
    "latency_ms": lambda t: t.latency_ms}


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """a is at least as good as b on every objective and strictly better on one."""
    better = [x > y if m == "max" else x < y for x, y, m in zip(a, b, modes, strict=True)]
    worse = [x < y if m == "max" else x > y for x, y, m in zip(a, b, modes, strict=True)]
    return any(better) and not any(worse)


def non_dominated(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[int]:
    """Indices of the points that no other point dominates."""
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p, modes) for j, q in enumerate(points) if j != i)]


def study_objectives(study: StudyRecord) -> list[str]:
    """The study's objectives as recorded; a single-objective study: its metric and params."""
    return list(study.objectives) or [study.metric, "params"]


def front_rows(client, study_run) -> dict[str, Any]:
    """{"objectives", "modes", "front": rows best-first by the metric, "candidates": n}."""
    study = read_study(client, study_run)
    objectives = study_objectives(study)
    modes = [study.mode] + ["min"] * (len(objectives) - 1)
    rows = []
    for trial in study.ranked():
        row = _row(trial, objectives)
        if trial.feasible and row is not None:
            rows.append(row)
    points = [[row[name] for name in objectives] for row in rows]
    front = [rows[i] for i in non_dominated(points, modes)]
    return {"objectives": objectives, "modes": modes, "front": front, "candidates": len(rows)}


def _row(trial: TrialRecord, objectives: list[str]) -> dict[str, Any] | None:
    row: dict[str, Any] = {
        "trial_id": trial.trial_id, "optuna_trial_number": trial.number,
        "mlflow_run_id": trial.run_id, "status": trial.status,
        "model": trial.model_name, objectives[0]: trial.value,
    }
    for name in objectives[1:]:
        value = COSTS[name](trial)
        if value is None:
            return None
        row[name] = float(value) if name == "latency_ms" else int(value)
    return row


def markdown_table(front: dict[str, Any]) -> str:
    names = front["objectives"]
    head = ["trial", "model", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in front["front"]:
        values = [_cell(row[name]) for name in names]
        lines.append(f"| {row['trial_id']} | {row['model']} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def record_pareto_front(client, study_run_id: str) -> dict[str, Any]:
    """Tag the front's trial runs and log the front (JSON and Markdown) on the study run."""
    front = front_rows(client, client.get_run(study_run_id))
    for row in front["front"]:
        client.set_tag(row["mlflow_run_id"], tags.PARETO, "true")
    client.log_text(study_run_id, json.dumps(front, indent=2), "pareto_front.json")
    client.log_text(study_run_id, markdown_table(front), "pareto_front.md")
    return front
