"""A study as MLflow holds it, read once into typed records: the study run and its trials.

`collect_study(client, study_run)` reads the study run, every trial run (params, tags, summary
metrics, per-epoch histories) and ranks the trials with the one ranking (search.tracking.ranking).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from search.tracking import ranking, tags

HISTORY_KEYS = ("val_accuracy", "val_loss", "train_loss")


def parse_param(text: str) -> Any:
    """An MLflow param (always a string) back as the int, float, None or string it was."""
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclass
class TrialRecord:
    """One trial run as the report sees it."""

    number: int
    run_id: str
    status: str
    params: dict[str, str]
    value: float | None  # best value of the study metric over its epochs; None: unranked
    rank: int | None  # 0 = the study's best trial (search.tracking.ranking's order)
    best_epoch: int | None
    start_ms: int
    end_ms: int | None
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    parameters: int | None = None
    flops: int | None = None

    @property
    def label(self) -> str:
        from search.tracking.summary import model_label

        return model_label(self.params)


@dataclass
class StudyRecord:
    """The study run and its trials."""

    name: str
    run_id: str
    status: str
    metric: str
    mode: str
    dataset: str
    start_ms: int
    searched: dict[str, str]
    trials: list[TrialRecord]
    champion: dict[str, Any] | None = None  # tracking.study_champion: the study's own version
    test_accuracy: float | None = None
    # The champion's test split by class (tags.CLASS_SCORES_ARTIFACT), where it was logged.
    classes: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def value_name(self) -> str:
        return ranking.best_metric_name(self.metric)

    def scored(self) -> list[TrialRecord]:
        """Ranked trials (a finite score, not diverged), in trial order."""
        return [t for t in self.trials if t.rank is not None]

    def ranked(self) -> list[TrialRecord]:
        """Ranked trials, best first."""
        return sorted(self.scored(), key=lambda t: t.rank)

    def best(self) -> TrialRecord | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None


# ---------------------------------------------------------------- reading MLflow


def collect_study(client: Any, study_run: Any) -> StudyRecord:
    """Read the study run, its trial runs and their metric histories from the store."""
    from search.tracking import store as tracking

    params = study_run.data.params
    metric = params.get("study.metric", "val_accuracy")
    record = StudyRecord(
        name=study_run.data.tags.get(tags.STUDY, study_run.info.run_name or "?"),
        run_id=study_run.info.run_id, status=study_run.data.tags.get(tags.STATUS, "unknown"),
        metric=metric, mode=params.get("study.mode", "min" if metric.endswith("loss") else "max"),
        dataset=params.get("data.dataset", "digits"), start_ms=study_run.info.start_time or 0,
        searched={k.removeprefix(tags.SPACE_PARAM): v for k, v in params.items()
                  if k.startswith(tags.SPACE_PARAM)},
        trials=[], champion=tracking.study_champion(client, study_run),
        test_accuracy=study_run.data.metrics.get("test_accuracy"),
    )
    # The one ranking (search.tracking.ranking through tracking): the report's best is the champion's.
    for place, (score, run) in enumerate(tracking.ranked_trial_runs(client, study_run)):
        record.trials.append(_trial_record(client, run, score, place if score.ranked else None))
    record.trials.sort(key=lambda t: (t.number, t.start_ms))
    _fill_costs(record)
    record.classes = tracking.champion_class_scores(client, study_run.info.run_id)
    return record


def _trial_record(client: Any, run: Any, score: Any, rank: int | None) -> TrialRecord:
    metrics = run.data.metrics
    history = {}
    for key in HISTORY_KEYS:
        points = client.get_metric_history(run.info.run_id, key)
        history[key] = sorted({m.step: m.value for m in points if math.isfinite(m.value)}.items())
    end = run.info.end_time or max((m.timestamp for m in
                                    client.get_metric_history(run.info.run_id, "epoch")), default=None)
    return TrialRecord(
        number=score.number, run_id=run.info.run_id, status=score.status,
        params=dict(run.data.params), value=score.best.value if rank is not None else None,
        rank=rank, best_epoch=score.best.epoch if rank is not None else None,
        start_ms=run.info.start_time or 0, end_ms=end, history=history,
        parameters=_int(metrics.get("parameters", run.data.params.get("model.parameters"))),
        flops=_int(metrics.get("flops", run.data.params.get("model.flops"))),
    )


def _fill_costs(record: StudyRecord) -> None:
    """Parameters and FLOPs from the model params where the trial run does not carry them."""
    from dataclasses import fields

    from resnet_core import DataConfig, ModelConfig, architecture_cost

    known = {f.name for f in fields(ModelConfig)}

    try:
        channels, height, width = DataConfig(dataset=record.dataset).image_shape
    except (ValueError, KeyError):
        channels, height, width = 3, 32, 32
    classes = {"cifar100": 100}.get(record.dataset, 10)
    for trial in record.trials:
        if trial.parameters is not None and trial.flops is not None:
            continue
        model = {k.removeprefix(tags.MODEL_PARAM): parse_param(v) for k, v in trial.params.items()
                 if k.startswith(tags.MODEL_PARAM)}
        model = {k: v for k, v in model.items() if k in known}  # other params: not the network
        try:
            trial.parameters, trial.flops = architecture_cost(
                {**model, "num_classes": classes, "in_channels": channels}, (height, width))
        except (TypeError, ValueError) as error:
            record.notes.append(f"trial {trial.number}: no cost ({error})")


def _int(value: Any) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None
