"""Stopping a study on SIGINT or SIGTERM at a safe point, so that `resume` can finish it.

Ray Tune stops gracefully on SIGINT: running trials are paused with their
checkpoints, the experiment state is saved, and `Tuner.fit()` returns. SIGTERM (what a
batch scheduler, `kill` or Kubernetes sends) would kill the driver outright, so it is
turned into the same graceful stop. A fit that returns with trials unfinished was
interrupted: the study is marked so, nothing is registered, and the command exits
with 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator


class _WithoutTunesResumeHint(logging.Filter):
    """Tune's own hint on an interrupted fit ("Resume experiment with: Tuner.restore(...)")
    names an API the user never called; StudyInterrupted's line names `resnet-search resume`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Resume experiment with" not in record.getMessage()


def hide_tunes_resume_hint() -> None:
    logger = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _WithoutTunesResumeHint) for f in logger.filters):
        logger.addFilter(_WithoutTunesResumeHint())


class StudyInterrupted(Exception):
    """A study stopped by a signal before all of its trials finished."""

    def __init__(self, name: str, signum: int, finished: int, planned: int) -> None:
        self.name, self.signum = name, signum
        super().__init__(
            f"study {name} interrupted by {signal.Signals(signum).name}: {finished} of {planned} "
            f"trials finished, checkpoints kept; continue it with `resnet-search resume {name}`")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StudyFailed(Exception):
    """A study none of whose trials finished: the first trial error in one line."""

    def __init__(self, name: str, failed: int, first_error: str, where: str) -> None:
        super().__init__(f"study {name} failed: no trial finished ({failed} failed); the first "
                         f"trial error: {first_error} (trial logs and errors under {where})")


def error_in_one_line(error: BaseException | str, limit: int = 300) -> str:
    """A trial error's last telling line: Ray wraps the trial's exception in its own text
    and traceback, and the exception itself ("ValueError: ...") comes last."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = lines[-1] if lines else type(error).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."


class StorageFull(StudyInterrupted):
    """A study whose trials stopped because the storage disk is full (ENOSPC)."""

    def __init__(self, name: str, path: str, finished: int, planned: int) -> None:
        self.name, self.signum = name, 0
        Exception.__init__(
            self, f"study {name} interrupted: storage path {path} is full (No space left on "
            f"device): {max(finished, 0)} of {planned} trials finished, checkpoints kept; free "
            f"space there and continue it with `resnet-search resume {name}`")

    @property
    def exit_code(self) -> int:
        return 1


class SignalLog:
    """The first stop signal a study received (None if none)."""

    def __init__(self) -> None:
        self.signum: int | None = None


@contextlib.contextmanager
def graceful_stop() -> Iterator[SignalLog]:
    """Record SIGINT/SIGTERM; SIGTERM is forwarded as SIGINT so Tune stops gracefully.

    Tune installs its own SIGINT handler during `fit()` and restores the previous one
    (this one) after the first signal, so a second signal lands here and is forwarded
    again: Tune then stops at once, as it does on a second Ctrl-C.
    """
    log = SignalLog()

    def on_signal(signum: int, _frame) -> None:
        log.signum = log.signum or signum
        if signum == signal.SIGTERM:
            os.kill(os.getpid(), signal.SIGINT)  # to Tune's handler while fit() runs
        else:
            raise KeyboardInterrupt  # this handler has SIGINT: Tune is not running, stop here

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield log
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def check_finished(name: str, finished: int, planned: int, log: SignalLog) -> None:
    """Raise StudyInterrupted when fit() returned before every planned trial ended.

    `finished` counts the trial runs that reached an end (completed, pruned, diverged,
    failed) as the tracking callback recorded them: after a graceful stop Tune reports
    its unfinished trials as terminated, so its own counts cannot tell.
    """
    if finished < planned:
        raise StudyInterrupted(name, log.signum or signal.SIGINT, finished, planned)
