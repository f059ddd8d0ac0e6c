"""Tracking writes off the Tune loop, in order, through a tracking outage.

Every MLflow write of the trial callback is a job on one background thread per study,
run in the order Tune produced them. The Tune loop never waits for MLflow, so trials
keep training while the tracking server is slow or away (a trial's `tune.report`
blocks until the driver takes its result: a driver stuck in MLflow's retries would
stop every trial at its next epoch).

A job that fails because the store cannot be reached is retried, the same job, so the
order holds, until it goes through; the driver says that tracking is behind (then once
a minute) and when it has caught up. Before the study scores and registers its
champion, it waits for the queue to drain (`writer_for(study_run_id).drain()`).

Durable where the study has a journal (`search.tracking.journal`): a write given as a
record is appended to it, fsync'd, before it is queued, and the journal is emptied once the
queue has caught up (see COMPACT_AT_BYTES) and when it is drained. A driver that dies
during an outage loses nothing: `resume` replays the journal first. Writes given only as
a callable (the study run's summary, rebuilt from the trial runs) are not journaled.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search.tracking.journal import Journal

NOTICE_EVERY_S = 60.0
STALLED_AFTER_S = 30.0  # a write blocked this long (inside MLflow's own retries) is an outage
MAX_RETRY_DELAY_S = 10.0  # how late, at most, a retry notices that the store is back
COMPACT_AT_BYTES = 256 * 1024  # ~300 epoch records: what replay re-checks at most after a kill

# Words of the errors a store that cannot be reached gives (MLflow wraps requests' and
# urllib3's errors in MlflowException with their text; SQLite says it is locked).
_UNREACHABLE = ("max retries exceeded", "connection refused", "connectionerror", "connection aborted",
                "connection reset", "timed out", "timeout", "temporarily unavailable",
                "service unavailable", "bad gateway", "gateway timeout", "database is locked",
                "name or service not known", "remote end closed")


def is_unreachable(error: BaseException) -> bool:
    """Is this the store being away (retry), rather than a bad write (report and skip)?"""
    import requests

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
            return True
        text = f"{type(seen).__name__}: {seen}".lower()
        if any(word in text for word in _UNREACHABLE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class TrackingWriter:
    """One study's queue of MLflow writes and the thread that writes them in order."""

    def __init__(self, where: str, out=None, journal: Journal | None = None) -> None:
        self.where = where  # what to name in notices: the tracking URI
        self.journal = journal
        self._out = out or sys.stderr
        self._jobs: queue.Queue[tuple[Callable[[], None], str, bool]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._job_started: float | None = None  # when the job in flight started
        self._behind_since: float | None = None
        self._last_notice = 0.0
        self.skipped = 0  # writes that failed for another reason than an outage
        self._journal_failed = False

    def submit(self, job: Callable[[], None], what: str, record: dict[str, Any] | None = None) -> None:
        """Queue `job` (a write); returns at once. `record`, the write as data, goes to the
        journal first, so that the write survives this process."""
        journaled = record is not None and self.journal is not None and self._journal(record)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="resnet-search-tracking",
                                                daemon=True)
                self._thread.start()
        self._jobs.put((job, what, journaled))
        self._check_stalled()

    def _journal(self, record: dict[str, Any]) -> bool:
        """Append to the journal; once it cannot be written, writes are queued in memory
        only, as without one. Said nowhere: storage was writable at the start, so this is
        a full disk, which the study reports itself in its one line when it stops."""
        if self._journal_failed:
            return False
        try:
            self.journal.append(record)
        except OSError:
            self._journal_failed = True  # a half-written line may end it: append no more
            return False
        return True

    @property
    def queued(self) -> int:
        return self._jobs.unfinished_tasks

    @property
    def behind(self) -> bool:
        return self._behind_since is not None

    def drain(self, timeout: float | None = None) -> int:
        """Wait until every queued write is done (saying so while tracking is behind).
        Returns how many are left: 0, unless `timeout` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.queued:
            self._check_stalled()
            if self.behind:
                self._notice("the study waits for it before it ends")
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if not self.queued and self.journal is not None:
            with contextlib.suppress(OSError):  # a journal left as it is is replayed, harmlessly
                self.journal.compact()
        return self.queued

    # ------------------------------------------------------------ the writer thread

    def _work(self) -> None:
        while True:
            job, what, journaled = self._jobs.get()
            try:
                self._write(job, what)
            finally:
                self._job_started = None
                if journaled:
                    self.journal.written()
                self._jobs.task_done()
                if self.journal is not None and self._jobs.unfinished_tasks == 0:
                    self._compact_now()

    def _write(self, job: Callable[[], None], what: str) -> None:
        delay = 1.0
        while True:
            self._job_started = time.monotonic()
            try:
                job()
            except Exception as error:  # noqa: BLE001 - sorted into outage or bad write below
                if not is_unreachable(error):
                    self.skipped += 1
                    first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
                    print(f"resnet-search: tracking update ({what}) failed and was skipped: "
                          f"{type(error).__name__}: {first}", file=self._out, flush=True)
                    return
                self._fell_behind()
                self._notice(f"retrying in {delay:.0f} s")
                self._job_started = None
                time.sleep(delay)
                delay = min(2 * delay, MAX_RETRY_DELAY_S)
                continue
            if self.behind and self._jobs.unfinished_tasks <= 1:
                seconds = time.monotonic() - (self._behind_since or time.monotonic())
                self._behind_since = None
                print(f"resnet-search: tracking caught up with {self.where} after {seconds:.0f} s",
                      file=self._out, flush=True)
            return

    def _compact_now(self) -> None:
        """Caught up: empty the journal, unless it is still small (a truncate and an fsync
        per epoch would double its cost; replay skips what the store already holds)."""
        with contextlib.suppress(OSError):  # a journal left as it is is replayed, harmlessly
            if self.journal.size() >= COMPACT_AT_BYTES:
                self.journal.compact()

    # ------------------------------------------------------------ notices

    def _check_stalled(self) -> None:
        started = self._job_started
        if started is not None and not self.behind and time.monotonic() - started > STALLED_AFTER_S:
            self._fell_behind()
            self._notice("a write has waited for it")

    def _fell_behind(self) -> None:
        with self._lock:
            if self._behind_since is None:
                self._behind_since = time.monotonic()
                self._last_notice = 0.0

    def _notice(self, detail: str) -> None:
        """Say that tracking is behind: at once when it falls behind, then once a minute."""
        now = time.monotonic()
        with self._lock:
            if self._last_notice and now - self._last_notice < NOTICE_EVERY_S:
                return
            self._last_notice = now
        since = now - (self._behind_since or now)
        print(f"resnet-search: tracking is behind: {self.where} unreachable for {since:.0f} s, "
              f"{self.queued} update{'s' if self.queued != 1 else ''} queued ({detail}); "
              f"trials keep training",
              file=self._out, flush=True)


_WRITERS: dict[str, TrackingWriter] = {}
_WRITERS_LOCK = threading.Lock()


def writer_for(study_run_id: str, where: str = "the tracking store",
               journal_path: str | None = None) -> TrackingWriter:
    """The study's writer in this process (one per study run, whichever callback asks);
    journaled in `journal_path` once a caller names it."""
    with _WRITERS_LOCK:
        if study_run_id not in _WRITERS:
            _WRITERS[study_run_id] = TrackingWriter(where)
        writer = _WRITERS[study_run_id]
        if journal_path is not None and writer.journal is None:
            from search.tracking.journal import Journal  # here: it loads MLflow and Ray

            writer.journal = Journal(journal_path)
        return writer
