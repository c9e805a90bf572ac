"""Which notebook cell a graph came from.

The notebook extension marks the start of each cell (``In [3]``) with :func:`mark`; a
:class:`GolemCluster` labels each graph it records in the ledger with the mark that was in force
when its scheduler received the graph (:func:`label_at`). Both times come from this machine's
clock: the scheduler always runs beside the process that opened the session. ``golem run``
reads these labels back to bill each cell of a notebook.
"""

from __future__ import annotations

import bisect
import threading
import time

MAX_MARKS = 4096
"""Marks kept; a graph older than the oldest mark gets the session's own label."""

_times: list[float] = []
_labels: list[str] = []
_lock = threading.Lock()


def mark(label: str, at: float | None = None) -> None:
    """From now (or ``at``) on, graphs belong to ``label``."""
    when = time.time() if at is None else at
    with _lock:
        index = bisect.bisect_right(_times, when)
        _times.insert(index, when)
        _labels.insert(index, label)
        if len(_times) > MAX_MARKS:
            del _times[0], _labels[0]


def label_at(when: float) -> str | None:
    """The label marked last at or before ``when``, or None if nothing was marked by then."""
    with _lock:
        index = bisect.bisect_right(_times, when)
        return _labels[index - 1] if index else None


def clear() -> None:
    with _lock:
        _times.clear()
        _labels.clear()
