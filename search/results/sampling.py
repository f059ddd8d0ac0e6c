"""Which trials a big study's report charts: every one up to a bound, then the best and a sample.

    comparable_trials(study)   the trials whose scores compare (importance, groups)
    marker_trials(study)       the dots of the history and cost charts
    optuna_trials(study)       the trials of Optuna's importance, parallel coordinates, slices

Each returns the trials and a note the page shows under the chart (None where every trial is
drawn). The best trials are always drawn; the others are drawn with a fixed seed, so an
unchanged study gives the same page every time. The learning curves' choice is the read
model's (search.tracking.records.curve_trials): it decides whose histories are read at all.

Why bound them: at 10,000 trials the history and cost charts held 20,000 SVG markers each (a
PNG took ~15 s to draw in Chromium, the page seconds to lay out), and Optuna's charts over
1,000 finished trials took ~16 s, their parallel coordinates a solid block of colour.
"""

from __future__ import annotations

import random

from search.tracking import tags
from search.tracking.records import StudyRecord, TrialRecord, count_outcomes

# The history and cost charts: every scored trial up to MARKERS_MAX; past that, the best
# MARKERS_BEST, every other trial that was not stopped early while there is room, and a seeded
# sample of the early-stopped (pruned) ones to fill MARKERS_MAX. Lines over every trial.
MARKERS_MAX = 2_000
MARKERS_BEST = 200
# Optuna's charts: the comparable trials up to OPTUNA_BEST + OPTUNA_SAMPLED; past that, the
# best OPTUNA_BEST and a seeded sample of OPTUNA_SAMPLED others.
OPTUNA_BEST = 100
OPTUNA_SAMPLED = 200
SEED = 0


def comparable_trials(study: StudyRecord) -> list[TrialRecord]:
    """The trials whose scores compare: those that ran to the end (early-stopped scores are
    biased low), or every scored trial when fewer than two did (the page says so)."""
    finished = [t for t in study.scored() if t.status == tags.COMPLETED]
    return finished if len(finished) >= 2 else study.scored()


def marker_trials(study: StudyRecord, most: int = MARKERS_MAX, best: int = MARKERS_BEST,
                  seed: int = SEED) -> tuple[list[TrialRecord], str | None]:
    """(the trials the history and cost charts draw a dot for, in trial order, a note)."""
    ranked = study.ranked()
    if len(ranked) <= most:
        return study.scored(), None
    top, rest = ranked[:best], ranked[best:]
    room = most - len(top)
    kept = [t for t in rest if t.status != tags.PRUNED]
    pruned = [t for t in rest if t.status == tags.PRUNED]
    rng = random.Random(seed)
    if len(kept) >= room:  # more finished trials than room: a sample of them, no pruned one
        chosen = top + rng.sample(kept, room)
        how = f"the best {best} and {room:,} of the others not stopped early"
    else:
        chosen = top + kept + rng.sample(pruned, room - len(kept))
        how = (f"the best {best}, every other trial not stopped early, and {room - len(kept):,} "
               f"of the {len(pruned):,} others stopped early (pruned)")
    chosen.sort(key=lambda t: (t.number, t.trial_id))
    drawn = count_outcomes(t.status for t in chosen)
    every = count_outcomes(t.status for t in ranked)
    kinds = ", ".join(f"{drawn.get(o, 0):,} of {n:,} {o}" for o, n in every.items())
    return chosen, (f"Dots for {len(chosen):,} of the {len(ranked):,} scored trials ({kinds}): "
                    f"{how}, drawn at random with seed {seed}. The lines (best so far, Pareto "
                    f"front) are over every trial.")


def optuna_trials(study: StudyRecord, best: int = OPTUNA_BEST, sampled: int = OPTUNA_SAMPLED,
                  seed: int = SEED) -> tuple[list[TrialRecord], str | None]:
    """(the trials Optuna's charts are drawn over, in trial order, a note): the comparable
    trials, or the best `best` of them and `sampled` of the others drawn with `seed`."""
    trials = comparable_trials(study)
    if len(trials) <= best + sampled:
        return trials, None
    ranked = sorted(trials, key=lambda t: (t.rank is None, t.rank or 0, t.number))
    drawn = random.Random(seed).sample(ranked[best:], sampled)
    chosen = sorted(ranked[:best] + drawn, key=lambda t: (t.number, t.trial_id))
    which = "that ran to the end" if all(t.status == tags.COMPLETED for t in trials) \
        else "with a score"
    return chosen, (f"Over {best + sampled:,} of the {len(trials):,} trials {which}: the best "
                    f"{best} and {sampled} of the other {len(trials) - best:,}, drawn at random "
                    f"with seed {seed}.")
