"""The one ranking: order, tie-breaks and the best epoch (pure Python, no Ray or MLflow)."""

from __future__ import annotations

import math

import pytest

from search.tracking.ranking import EpochScore, TrialScore, best_epoch, best_trial, rank


def trial(trial_id: str, number: int, value: float | None, loss: float = 0.1, epoch: int = 3,
          status: str = "completed", feasible: bool = True) -> TrialScore:
    best = None if value is None else EpochScore(value, loss, epoch)
    return TrialScore(trial_id, number, status, best, feasible)


def ids(trials) -> list[str]:
    return [t.trial_id for t in trials]


def test_higher_accuracy_wins_then_lower_loss_then_earlier_trial():
    trials = [trial("late-tie", 5, 0.98, loss=0.05), trial("low", 0, 0.90),
              trial("lossy-tie", 1, 0.98, loss=0.20), trial("early-tie", 2, 0.98, loss=0.05)]
    assert ids(rank(trials, "max")) == ["early-tie", "late-tie", "lossy-tie", "low"]


def test_min_mode_prefers_the_smaller_value():
    trials = [trial("a", 0, 0.30, loss=0.30), trial("b", 1, 0.20, loss=0.20)]
    assert best_trial(trials, "min").trial_id == "b"
    assert best_trial(trials, "max").trial_id == "a"


def test_diverged_and_unscored_trials_rank_last_and_never_win():
    trials = [trial("diverged", 0, 0.99, status="diverged"), trial("failed", 1, None, status="failed"),
              trial("ok", 2, 0.5)]
    assert ids(rank(trials, "max")) == ["ok", "diverged", "failed"]
    assert best_trial([trials[0], trials[1]], "max") is None


def test_a_trial_over_a_constraint_ranks_after_every_feasible_trial():
    trials = [trial("too-big", 0, 0.99, feasible=False), trial("fits", 1, 0.95)]
    assert ids(rank(trials, "max")) == ["fits", "too-big"]


def test_the_best_epoch_is_the_first_to_reach_the_best_value_at_the_lowest_loss():
    history = [{"epoch": 1, "val_accuracy": 0.9, "val_loss": 0.3},
               {"epoch": 2, "val_accuracy": 0.97, "val_loss": 0.2},
               {"epoch": 3, "val_accuracy": 0.97, "val_loss": 0.1},
               {"epoch": 4, "val_accuracy": 0.97, "val_loss": 0.1},
               {"epoch": 5, "val_accuracy": float("nan"), "val_loss": 0.05}]
    assert best_epoch(history, "val_accuracy", "max") == EpochScore(0.97, 0.1, 3)
    assert best_epoch(history, "val_loss", "min").epoch == 5  # a NaN accuracy does not hide it
    assert best_epoch([{"epoch": 1, "val_accuracy": math.inf}], "val_accuracy", "max") is None


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode='maximum' is not one of max, min"):
        rank([trial("a", 0, 0.5)], "maximum")
