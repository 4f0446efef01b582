"""Named points where a test can kill the process, as a crash or an OOM kill would.

A training stage calls ``fault_point("step")`` after each optimiser step, and the checkpoint code
calls ``fault_point("checkpoint")`` between the files it writes and between its renames. Nothing
happens unless a kill is armed, by a test (:func:`arm`) or for a whole process through the
environment::

    ALIGNLAB_KILL_AT=checkpoint:3 alignlab sft ...   # SIGKILL at the 3rd checkpoint point reached

SIGKILL, not an exception: no ``finally`` block, no atexit handler and no buffered write runs,
which is what a crash or the kernel's OOM killer leaves behind. ``ALIGNLAB_FAULT_COUNTS=FILE``
writes how often each point was reached (at exit), so a harness can draw kill points from a run's
real range.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
from collections import Counter

_hits: Counter[str] = Counter()
_armed: tuple[str, int] | None = None
timeline: list[str] = []  # the points reached, in order, since the last arm() or disarm()


def arm(point: str, at: int) -> None:
    """Kill this process when ``point`` is reached for the ``at``-th time from now (counting from 1)."""
    global _armed
    if at < 1:
        raise ValueError(f"kill point {point}:{at}: the count starts at 1")
    disarm()
    _armed = (point, at)


def disarm() -> None:
    global _armed
    _armed = None
    _hits.clear()
    timeline.clear()


def hits() -> dict[str, int]:
    """How often each point was reached since the last :func:`arm` or :func:`disarm`."""
    return dict(_hits)


def fault_point(name: str) -> None:
    _hits[name] += 1
    timeline.append(name)
    if _armed is not None and _armed == (name, _hits[name]):
        os.kill(os.getpid(), signal.SIGKILL)


def _from_environment() -> None:
    spec = os.environ.get("ALIGNLAB_KILL_AT", "")
    if spec:
        point, _, at = spec.rpartition(":")
        if not point or not at.isdigit():
            raise ValueError(f"ALIGNLAB_KILL_AT={spec!r}: expected POINT:COUNT, e.g. checkpoint:3")
        arm(point, int(at))
    counts = os.environ.get("ALIGNLAB_FAULT_COUNTS", "")
    if counts:
        atexit.register(lambda: open(counts, "w").write(json.dumps(hits())))


_from_environment()
