"""Where a study's time goes: the phase breakdown printed at the end of `run` and logged.

Driver phases are wall time in the driver (Ray start-up, tracking writes, the
champion, the report). Tracking writes happen on a background thread
(`search.tracking.writer`) while trials train: that time is shown, but it is not on
the study's critical path. Trial phases are summed over trials, from what each trial
reports: start-up (process, imports, data, model: first result minus its epoch),
training, validation, checkpointing and reporting. Trials run side by side, so
trial time can exceed wall time; the shares say what a faster platform could save.

Times are kept per study run in this process, so the callback Tune restores on
`resume` (a different object) adds to the same record.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

DRIVER_PHASES = ("ray_startup", "tracking", "champion", "report")
DRIVER_LABELS = {"ray_startup": "ray startup", "tracking": "tracking (in the background)"}
TRIAL_PHASES = ("startup", "training", "validation", "checkpointing", "reporting")
# What each trial phase is summed from in a trial's results.
RESULT_KEYS = {"training": "train_seconds", "validation": "val_seconds",
               "checkpointing": "checkpoint_seconds", "reporting": "report_seconds"}


@dataclass
class PhaseTimes:
    driver: dict[str, float] = field(default_factory=lambda: dict.fromkeys(DRIVER_PHASES, 0.0))
    trials: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TRIAL_PHASES, 0.0))
    started: dict[str, float] = field(default_factory=dict)  # trial id -> wall time of its start
    trial_count: int = 0
    created: float = field(default_factory=time.time)

    def wall_seconds(self) -> float:
        """Since this record began, plus the Ray start-up that came before it."""
        return time.time() - self.created + self.driver["ray_startup"]

    def trial_started(self, trial_id: str) -> None:
        self.started[trial_id] = time.time()

    def trial_result(self, trial_id: str, result: dict) -> None:
        started = self.started.pop(trial_id, None)
        if started is not None:  # the first result since the trial (re)started
            self.trial_count += 1
            self.trials["startup"] += max(0.0, time.time() - started
                                          - float(result.get("epoch_seconds", 0.0)))
        for phase, key in RESULT_KEYS.items():
            value = result.get(key)
            if isinstance(value, (int, float)):
                self.trials[phase] += float(value)

    def metrics(self) -> dict[str, float]:
        """Study-run metrics: phase.<name>_seconds (driver and trial phases)."""
        return {**{f"phase.driver.{k}_seconds": v for k, v in self.driver.items()},
                **{f"phase.trials.{k}_seconds": v for k, v in self.trials.items()}}

    def summary(self) -> list[str]:
        """Lines for the end of `run`."""
        wall_seconds = self.wall_seconds()
        trial_total = sum(self.trials.values())
        driver = ", ".join(f"{DRIVER_LABELS.get(k, k.replace('_', ' '))} {v:.1f} s"
                           for k, v in self.driver.items())
        trials = ", ".join(f"{k} {v:.1f} s ({v / trial_total:.0%})" if trial_total else f"{k} 0 s"
                           for k, v in self.trials.items())
        return [f"where the time went: wall {wall_seconds:.1f} s; trial time summed over "
                f"{self.trial_count} trial starts {trial_total:.1f} s",
                f"  driver: {driver}", f"  trials: {trials}"]


_BY_STUDY: dict[str, PhaseTimes] = {}


def phases_for(study_run_id: str) -> PhaseTimes:
    return _BY_STUDY.setdefault(study_run_id, PhaseTimes())


@contextlib.contextmanager
def timed(times: PhaseTimes, phase: str) -> Iterator[None]:
    """Add the wall time of the block to a driver phase."""
    start = time.perf_counter()
    try:
        yield
    finally:
        times.driver[phase] = times.driver.get(phase, 0.0) + time.perf_counter() - start
