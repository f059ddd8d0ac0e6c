"""The study run's summary is rewritten as trials end, but never so often that re-reading
every trial run (O(trials) each time) becomes the driver's work in a long study."""

from __future__ import annotations

import threading
import time

from search.tracking.callback import STUDY_UPDATE_COST_FACTOR, STUDY_UPDATE_INTERVAL_S, SummaryUpdate


def test_the_first_rewrite_is_immediate_and_the_next_waits_for_the_interval():
    update = SummaryUpdate()
    assert update.delay() <= 0
    with update.timed():
        pass
    assert STUDY_UPDATE_INTERVAL_S - 0.5 < update.delay() <= STUDY_UPDATE_INTERVAL_S


def test_a_costly_rewrite_waits_ten_times_its_cost():
    update = SummaryUpdate()
    with update.timed():
        time.sleep(0.6)  # a summary of many trials: 0.6 s to read them all
    assert update.delay() > 0.6 * STUDY_UPDATE_COST_FACTOR - 0.5 > STUDY_UPDATE_INTERVAL_S


def test_trials_ending_meanwhile_share_one_deferred_rewrite():
    update, calls = SummaryUpdate(), []
    done = threading.Event()

    def submit():
        calls.append(time.monotonic())
        done.set()

    for _ in range(5):  # five trials end within the interval
        update.defer(0.3, submit)
    assert done.wait(5)
    time.sleep(0.5)
    assert len(calls) == 1


def test_the_end_of_the_trials_cancels_the_deferred_rewrite_to_do_it_now():
    update, calls = SummaryUpdate(), []
    update.defer(30, lambda: calls.append("late"))
    assert update.cancel_deferred() is True  # the caller rewrites it now
    assert update.cancel_deferred() is False  # nothing left pending
    assert calls == []
