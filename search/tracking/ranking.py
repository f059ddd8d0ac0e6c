"""The one ranking of trials: which trial is best, and which epoch of a trial is its best.

`run`'s summary, `status`, `best`, `load_best` and the champion registration all
rank with this module, from the same numbers (the summary metrics each trial
run carries in MLflow), so they can never name different winners.

Order, best first:
1. feasible trials (meeting every [constraints] limit) before infeasible ones;
2. the study metric's best value over the trial's epochs (max or min by mode);
3. ties: the lower validation loss at that best epoch (on a small validation
   split many trials reach the same accuracy; the loss still separates them);
4. then the earlier trial (Optuna number), then the trial id: deterministic.
Trials without a score (failed before an epoch) and diverged trials come last,
in trial order.

Pure Python: no MLflow, Ray or torch import.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from search.tracking import tags

BEST_EPOCH = "best_epoch"
VAL_LOSS_AT_BEST = "val_loss_at_best"
UNRANKED_STATUSES = (tags.DIVERGED,)


def direction(metric: str, mode: str | None = None) -> str:
    """Which way the study metric improves: the mode the study recorded, else the metric's
    own ("min" for a loss, "max" for anything else). Every reader ranks by this answer."""
    if mode:
        return mode
    return "min" if metric.endswith("loss") else "max"


def best_metric_name(metric: str) -> str:
    """The trial-run metric holding the best value of `metric` so far (e.g. best_val_accuracy)."""
    return metric if metric.startswith("best_") else f"best_{metric}"


@dataclass(frozen=True)
class EpochScore:
    """One epoch of one trial as the ranking sees it."""

    value: float
    val_loss: float
    epoch: int

    def beats(self, other: EpochScore | None, mode: str) -> bool:
        """True when this epoch ranks strictly above `other` (the earlier epoch wins ties)."""
        if other is None:
            return True
        return _key(self.value, self.val_loss, mode) < _key(other.value, other.val_loss, mode)


def epoch_score(result: Mapping[str, Any], metric: str) -> EpochScore | None:
    """The score of one reported epoch; None if it carries no finite value of the metric."""
    value = _finite(result.get(metric))
    if value is None:
        return None
    loss = _finite(result.get("val_loss"))
    return EpochScore(value, math.inf if loss is None else loss, int(result.get("epoch", 0)))


def best_epoch(results: Iterable[Mapping[str, Any]], metric: str, mode: str) -> EpochScore | None:
    """The best epoch among reported results (per-epoch metric dicts)."""
    best: EpochScore | None = None
    for result in results:
        score = epoch_score(result, metric)
        if score is not None and score.beats(best, mode):
            best = score
    return best


def summary_metrics(best: EpochScore, metric: str) -> dict[str, float]:
    """What a trial run carries so that ranking needs no metric history."""
    return {best_metric_name(metric): best.value, BEST_EPOCH: float(best.epoch),
            VAL_LOSS_AT_BEST: best.val_loss}


def epoch_from_summary(metrics: Mapping[str, float], metric: str) -> EpochScore | None:
    """The best epoch recorded on a trial run, as `summary_metrics` wrote it."""
    value = _finite(metrics.get(best_metric_name(metric)))
    if value is None:
        return None
    loss = _finite(metrics.get(VAL_LOSS_AT_BEST))
    return EpochScore(value, math.inf if loss is None else loss, int(metrics.get(BEST_EPOCH, 0)))


@dataclass(frozen=True)
class TrialScore:
    """A trial as the ranking sees it."""

    trial_id: str
    number: int  # Optuna trial number: earlier trials win exact ties
    status: str
    best: EpochScore | None
    feasible: bool = True

    @property
    def ranked(self) -> bool:
        return self.best is not None and self.status not in UNRANKED_STATUSES


def rank(trials: Iterable[TrialScore], mode: str) -> list[TrialScore]:
    """All trials, best first; unranked ones (no score, diverged) last in trial order."""
    trials = list(trials)
    ranked = [t for t in trials if t.ranked]
    ranked.sort(key=lambda t: (not t.feasible, *_key(t.best.value, t.best.val_loss, mode),
                               t.number, t.trial_id))
    rest = sorted((t for t in trials if not t.ranked), key=lambda t: (t.number, t.trial_id))
    return ranked + rest


def best_trial(trials: Iterable[TrialScore], mode: str) -> TrialScore | None:
    """The winner: the first ranked trial, or None when no trial has a score."""
    ordered = rank(trials, mode)
    return ordered[0] if ordered and ordered[0].ranked else None


def _key(value: float, val_loss: float, mode: str) -> tuple[float, float]:
    if mode not in ("max", "min"):
        raise ValueError(f"mode={mode!r} is not one of max, min")
    return (-value if mode == "max" else value, val_loss)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
