"""A worker preload of a provider that lies in its task reports (``--preload hostile_reports``).

The worker computes every task honestly, but each ``task-finished`` report it sends the
scheduler over its batched stream is forged on the way out:

* its compute ``startstops`` are stretched by ``$HOSTILE_INFLATE_SECONDS`` (100,000 s unless
  set): the 0.05 s task is reported as having run for more than a day;
* it is sent ``$HOSTILE_REPEAT`` times (50 unless set): the same report again and again;
* with each one, ``$HOSTILE_UNSOLICITED`` (1 unless set) reports for keys the scheduler never
  sent to anyone (``hostile-unsolicited-N``);
* and, once each, a report for every key listed in the JSON file ``$HOSTILE_FOREIGN_KEYS`` (if
  set and present when a report goes out): keys the test knows to be processing on *another*
  worker. These carry the worker's own run id, not the other worker's, so that Dask itself
  takes nothing from them; only the requestor's bill could.

A worker's ``task-finished`` message is a
:class:`distributed.worker_state_machine.TaskFinishedMsg` turned into a dict and handed to
``Worker.batched_send``, which this wraps on the worker instance.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from typing import Any

INFLATE_ENV = "HOSTILE_INFLATE_SECONDS"
REPEAT_ENV = "HOSTILE_REPEAT"
UNSOLICITED_ENV = "HOSTILE_UNSOLICITED"
FOREIGN_KEYS_ENV = "HOSTILE_FOREIGN_KEYS"

_unsolicited = itertools.count()


def inflated(msg: dict[str, Any], seconds: float) -> dict[str, Any]:
    """A copy of the report ``msg`` whose compute spans are ``seconds`` longer each."""
    forged = dict(msg)
    forged["startstops"] = [
        {**span, "stop": span["stop"] + seconds} if span.get("action") == "compute" else dict(span)
        for span in msg.get("startstops") or ()
    ]
    forged["metadata"] = copy.copy(msg.get("metadata") or {})
    return forged


def _foreign_keys() -> list[Any]:
    path = os.environ.get(FOREIGN_KEYS_ENV)
    if not path:
        return []
    try:
        with open(path) as f:
            return [k if isinstance(k, str) else tuple(k) for k in json.load(f)]
    except (FileNotFoundError, ValueError):
        return []


class Forger:
    """Wraps one worker's ``batched_send``; counts what it sent (read it with ``client.run``)."""

    def __init__(self, worker: Any) -> None:
        self.send = worker.batched_send
        self.inflate = float(os.environ.get(INFLATE_ENV, "100000"))
        self.repeat = int(os.environ.get(REPEAT_ENV, "50"))
        self.unsolicited = int(os.environ.get(UNSOLICITED_ENV, "1"))
        self.foreign_done: set[Any] = set()
        self.counts = {"reports": 0, "forged": 0, "unsolicited": 0, "foreign": 0}

    def __call__(self, msg: dict[str, Any]) -> None:
        if not isinstance(msg, dict) or msg.get("op") != "task-finished":
            self.send(msg)
            return
        self.counts["reports"] += 1
        forged = inflated(msg, self.inflate)
        for _ in range(self.repeat):
            self.send(dict(forged))
            self.counts["forged"] += 1
        for _ in range(self.unsolicited):
            self.send({**forged, "key": f"hostile-unsolicited-{next(_unsolicited)}"})
            self.counts["unsolicited"] += 1
        for key in _foreign_keys():
            if key not in self.foreign_done:
                self.foreign_done.add(key)
                self.send({**forged, "key": key})
                self.counts["foreign"] += 1


def dask_setup(worker: Any) -> None:
    worker.batched_send = worker.hostile_forger = Forger(worker)
