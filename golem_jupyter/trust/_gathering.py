"""Clients in the requestor's process gather results through the scheduler, never from workers.

The requestor's scheduler holds every copy of a verified result it hands on to the commitment in
the report of the worker that computed it (:mod:`golem_jupyter.scheduler.verify`). A client that
fetched from the workers themselves would skip that check, and a provider could hand the check
the truth and the notebook a lie. Distributed fetches from workers on ``gather(direct=True)``, for
a client made with ``direct_to_workers=True``, and for a client inside a worker of the same
scheduler. :func:`route_through_the_scheduler` makes every client of this process ask the
scheduler instead: the same results, one hop longer.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from distributed import Client

_lock = threading.Lock()
_undo: Callable[[], None] | None = None


def route_through_the_scheduler() -> None:
    """Make every client's gather ask the scheduler, whatever ``direct`` says. Idempotent."""
    global _undo
    with _lock:
        if _undo is not None:
            return
        original = Client._gather

        @functools.wraps(original)
        async def _gather(self: Client, futures: Any, errors: str = "raise", direct: Any = None, **kwargs: Any) -> Any:
            return await original(self, futures, errors=errors, direct=False, **kwargs)

        Client._gather = _gather

        def undo() -> None:
            Client._gather = original

        _undo = undo


def let_clients_gather_directly() -> None:
    """Give ``Client`` its own gather back. Idempotent."""
    global _undo
    with _lock:
        if _undo is not None:
            _undo()
            _undo = None


def is_routed() -> bool:
    return _undo is not None


@contextmanager
def gathers_through_the_scheduler() -> Iterator[None]:
    """Gathers routed through the scheduler for the block; left as found afterwards."""
    was_routed = is_routed()
    route_through_the_scheduler()
    try:
        yield
    finally:
        if not was_routed:
            let_clients_gather_directly()
