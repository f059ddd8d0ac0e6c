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

import ast
import json
from collections.abc import Sequence
from typing import Any

from search.tracking import ranking, tags

# Where each cost objective lives on a trial run: ("param" | "metric", key).
COST_SOURCES = {"params": ("param", "model.parameters"), "flops": ("param", "model.flops"),
                "latency_ms": ("metric", "latency_ms")}


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """a is at least as good as b on every objective and strictly better on one."""
    better = [x > y if m == "max" else x < y for x, y, m in zip(a, b, modes, strict=True)]
    worse = [x < y if m == "max" else x > y for x, y, m in zip(a, b, modes, strict=True)]
    return any(better) and not any(worse)


def non_dominated(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[int]:
    """Indices of the points that no other point dominates."""
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p, modes) for j, q in enumerate(points) if j != i)]


def study_objectives(study_run) -> list[str]:
    """The study's objectives as recorded; a single-objective study: its metric and params."""
    metric, _ = _objective(study_run)
    recorded = study_run.data.params.get("study.objectives", "()")
    objectives = list(ast.literal_eval(recorded)) if recorded.startswith(("(", "[")) else []
    return objectives or [metric, "params"]


def _objective(study_run) -> tuple[str, str]:
    from search.tracking.store import study_objective

    return study_objective(study_run)


def front_rows(client, study_run) -> dict[str, Any]:
    """{"objectives", "modes", "front": rows best-first by the metric, "candidates": n}."""
    from search.tracking.store import ranked_trial_runs

    metric, mode = _objective(study_run)
    objectives = study_objectives(study_run)
    modes = [mode] + ["min"] * (len(objectives) - 1)
    rows = []
    for score, run in ranked_trial_runs(client, study_run):
        row = _row(score, run, objectives)
        if score.ranked and score.feasible and row is not None:
            rows.append(row)
    points = [[row[name] for name in objectives] for row in rows]
    front = [rows[i] for i in non_dominated(points, modes)]
    return {"objectives": objectives, "modes": modes, "front": front, "candidates": len(rows)}


def _row(score: ranking.TrialScore, run, objectives: list[str]) -> dict[str, Any] | None:
    params = run.data.params
    row: dict[str, Any] = {
        "trial_id": score.trial_id, "optuna_trial_number": score.number,
        "mlflow_run_id": run.info.run_id, "status": score.status,
        "model": _model_name(params), objectives[0]: score.best.value if score.best else None,
    }
    for name in objectives[1:]:
        where, key = COST_SOURCES[name]
        value = params.get(key) if where == "param" else run.data.metrics.get(key)
        if value is None:
            return None
        row[name] = float(value) if name == "latency_ms" else int(float(value))
    return row


def _model_name(params: dict[str, str]) -> str:
    family, depth = params.get("model.family", "?"), params.get("model.depth", "?")
    width = params.get("model.width")
    return f"{family}-{depth}" + (f"-{width}" if family == "wrn" and width else "")


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
    from search.tracking.store import trial_runs

    study_run = client.get_run(study_run_id)
    front = front_rows(client, study_run)
    on_front = {row["mlflow_run_id"] for row in front["front"]}
    for run in trial_runs(client, study_run):
        if run.info.run_id in on_front:
            client.set_tag(run.info.run_id, tags.PARETO, "true")
    client.log_text(study_run_id, json.dumps(front, indent=2), "pareto_front.json")
    client.log_text(study_run_id, markdown_table(front), "pareto_front.md")
    return front
