"""Test hook: a SIGKILL at a named point of a study's life, for phases too short to hit
from outside (tests/search/end_to_end/test_chaos.py).

Off unless RESNET_SEARCH_FAULT_POINT is set (`PHASE` or `PHASE:N`, N-th time this process
reaches it, 1 by default). When the named point is reached, every process of this process's
session is SIGKILLed, itself last: a driver started in its own session takes its private Ray
with it, as a crash of the machine's study would. The product calls `reached` once per phase;
with the variable unset it is one dictionary lookup.

Phases: `checkpoint` (a trial's checkpoint written, not yet reported), `champion_export`
(the champion scored, its model about to be logged), `champion_register` (the model version
registered, the alias not yet moved), `summary` (the study run about to be described),
`report` (the study's report about to be logged).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

FAULT_ENV = "RESNET_SEARCH_FAULT_POINT"
PHASES = ("checkpoint", "champion_export", "champion_register", "summary", "report")

_counts: dict[str, int] = {}


def reached(phase: str) -> None:
    """Kill this process's session here if RESNET_SEARCH_FAULT_POINT names this phase (and count)."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name != phase:
        return
    _counts[phase] = _counts.get(phase, 0) + 1
    if _counts[phase] == int(nth or 1):
        kill_own_session()


def kill_own_session() -> None:
    """SIGKILL every process of this session (Ray's too, when the driver started it), then self."""
    session, me = os.getsid(0), os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if os.getsid(int(entry.name)) == session:
                os.kill(int(entry.name), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
    os.kill(me, signal.SIGKILL)
