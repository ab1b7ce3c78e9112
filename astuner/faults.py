"""Crash points: named places where a kill -9 is most likely to leave damage (between a
temp write and its rename, inside a transaction, after a stage's work but before its record).

The reliability tests (tests/reliability/test_crash.py) start a stage as its own process
group with `ASTUNER_CRASH_AT=NAME@N`; the N-th time the process passes `crash_point(NAME)`
the whole group gets SIGKILL, as a scheduler or the OOM killer would do, and the test then
checks that re-running the same command loses and duplicates nothing. Unset (always, outside
those tests), a crash point is one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "ASTUNER_CRASH_AT"
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition("@")
    if target != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(nth or 1):
        # the group: a loop dies with the stage it is running, as under `kill -9 -PGID`
        os.killpg(os.getpgrp(), signal.SIGKILL)
