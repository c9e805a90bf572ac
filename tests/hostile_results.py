"""What a hostile provider's worker returns instead of results (tests/test_verify_refused.py).

Travels to the workers by value (tests/by_value.py), like the tests' task functions.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class Undecodable:
    """An object of a class the requestor's restricted decoder does not rebuild (nothing registers it)."""

    def __init__(self, value: Any) -> None:
        self.value = value


class UndecodableResults(WorkerPlugin):
    """On the worker named ``target``: every task's result becomes an :class:`Undecodable`."""

    name = "hostile-undecodable-results"

    def __init__(self, target: str) -> None:
        self.target = target

    def setup(self, worker: Any) -> None:
        self.worker = worker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if start == "executing" and finish == "memory" and str(self.worker.name) == self.target:
            if key in self.worker.data:
                self.worker.data[key] = Undecodable(self.worker.data[key])
