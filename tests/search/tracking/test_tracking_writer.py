"""The tracking writer through an outage: every queued update written, in order, and the
notices README promises ("at once when it falls behind, then once a minute")."""

from __future__ import annotations

import io
import re
import time

from search.tracking import writer as tracking_writer
from search.tracking.writer import TrackingWriter


class Store:
    """Refuses every write (connection refused) until `away_s` seconds after it was made."""

    def __init__(self, away_s: float) -> None:
        self.back_at = time.monotonic() + away_s
        self.written: list[int] = []

    def write(self, update: int):
        def job() -> None:
            if time.monotonic() < self.back_at:
                raise ConnectionRefusedError("[Errno 111] Connection refused")
            self.written.append(update)
        return job


def outage(away_s: float, updates: int = 5) -> tuple[Store, TrackingWriter, list[str]]:
    store, out = Store(away_s), io.StringIO()
    writer = TrackingWriter("http://tracking:5000", out=out)
    for update in range(updates):
        writer.submit(store.write(update), f"update {update}")
    assert writer.drain(timeout=60) == 0
    return store, writer, out.getvalue().splitlines()


def test_an_outage_loses_no_update_and_keeps_their_order():
    store, writer, lines = outage(away_s=2.5)
    assert store.written == [0, 1, 2, 3, 4]
    assert writer.skipped == 0 and not writer.behind
    behind = [line for line in lines if "tracking is behind" in line]
    # Said at once; a 3 s outage is well inside the minute before the next notice.
    assert len(behind) == 1, lines
    # (How many updates were queued then depends on how far submit() had got.)
    assert re.search(r"http://tracking:5000 unreachable for 0 s, \d updates? queued", behind[0])
    caught_up = [line for line in lines if "caught up" in line]
    assert len(caught_up) == 1, lines
    assert re.fullmatch(r"resnet-search: tracking caught up with http://tracking:5000 after [34] s",
                        caught_up[0])


def test_the_notice_repeats_once_per_interval_while_the_store_is_away(monkeypatch):
    # The interval is a minute; at half a second a 3 s outage shows the repetition without
    # waiting minutes. drain() checks every 0.1 s: only the interval keeps it to ~6 notices.
    monkeypatch.setattr(tracking_writer, "NOTICE_EVERY_S", 0.5)
    _, _, lines = outage(away_s=2.5)
    assert 3 <= sum("tracking is behind" in line for line in lines) <= 7, lines
