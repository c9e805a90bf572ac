"""DEVNET ONLY: a worker that lies, so that ``--verify`` has someone to catch.

``golem devnet --liars N`` starts its last N provider agents with a ``lie_fraction``; their
workers load this module (``--preload golem_jupyter.worker._liar --lie-fraction F``, added by
:func:`golem_jupyter.provider.workers.worker_command` only for such an agent: an honest worker
never imports it). Its plugin replaces the result of each task, with probability ``F`` drawn
per task, by a wrong one, in the worker's memory right as the task finishes: what the requestor
fetches, what the worker's other tasks get, and what the meter's result digest says (this
plugin runs before the meter's) are all the lie.

What a lie is (:func:`corrupt`), on a copy, never in place:

* an int (Python or NumPy, not a bool) gets ``+ 1``; an integer array, one element ``+ 1``;
* a float or complex (Python or NumPy) is scaled by 1.001 (0 becomes 0.001);
* a float or complex array: one element, drawn at random, is scaled by 1.001 (0 becomes 1), or,
  half of the time, has its sign flipped (0 becomes 1);
* lists, tuples, dicts and a ``%%golem`` task's results (:class:`~.runner.UnitResult`,
  :class:`~.runner.ElementResults`): the first of their items that can be corrupted is;
* anything else (bools, strings, bytes, None, empty or non-finite values, other objects) is left
  as it is: such a task's result stays honest.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import secrets
from typing import Any

import click
from distributed.diagnostics.plugin import WorkerPlugin

logger = logging.getLogger(__name__)

OPTION = "--lie-fraction"
"""The preload's option: the fraction of tasks whose results are corrupted."""
SCALE = 1.001

_UNCHANGED: Any = object()


class LyingWorker(WorkerPlugin):
    """Corrupts a ``fraction`` of this worker's task results (see the module docstring)."""

    name = "golem-devnet-liar"

    def __init__(self, fraction: float, *, rng: random.Random | None = None) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"lie fraction must be from 0 to 1, not {fraction!r}")
        self.fraction = fraction
        self.rng = rng or random.Random(secrets.randbits(64))
        self.lies = 0
        self.worker: Any = None

    def setup(self, worker: Any) -> None:
        self.worker = worker
        logger.warning(
            "DEVNET LIAR: this worker returns WRONG results for %.0f%% of its tasks (golem devnet --liars)",
            100 * self.fraction,
        )

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if start != "executing" or finish != "memory" or self.rng.random() >= self.fraction:
            return
        data = self.worker.data
        if key not in data:
            return
        lie = corrupt(data[key], self.rng)
        if lie is not _UNCHANGED:
            data[key] = lie
            self.lies += 1


def corrupt(value: Any, rng: random.Random | None = None) -> Any:
    """A wrong version of ``value`` (see the module docstring); ``value`` itself when it has
    nothing to corrupt."""
    lie = _corrupt(value, rng or random.Random())
    return value if lie is _UNCHANGED else lie


def _corrupt(value: Any, rng: random.Random) -> Any:
    import numpy as np

    if isinstance(value, bool | np.bool_):
        return _UNCHANGED
    if isinstance(value, int | np.integer) and not isinstance(value, np.timedelta64):
        return value + type(value)(1)
    if isinstance(value, float | complex | np.floating | np.complexfloating):
        if not np.isfinite(value):  # NaN and infinity stay what they are when scaled
            return _UNCHANGED
        return value * type(value)(SCALE) if value else type(value)(1e-3)
    if isinstance(value, np.ndarray) and value.dtype.kind in "iufc" and value.size and type(value) is np.ndarray:
        return _corrupt_array(value, rng)
    if type(value) in (list, tuple) or isinstance(value, dict):
        items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
        for key, item in items:
            lie = _corrupt(item, rng)
            if lie is not _UNCHANGED:
                if isinstance(value, dict):
                    copy = type(value)(value) if type(value) is dict else value.copy()
                    copy[key] = lie
                    return copy
                changed = list(value)
                changed[key] = lie
                return type(value)(changed)
        return _UNCHANGED
    return _corrupt_task_result(value, rng)


def _corrupt_array(array: Any, rng: random.Random) -> Any:
    import numpy as np

    lie = array.copy()
    flat = lie.reshape(-1)
    i = rng.randrange(flat.size)
    if array.dtype.kind in "iu":
        flat[i] = flat[i] + 1  # wraps at the top of the dtype: still wrong
        return lie
    if not np.isfinite(flat[i]):
        finite = np.flatnonzero(np.isfinite(flat))
        if not finite.size:
            return _UNCHANGED
        i = int(finite[rng.randrange(finite.size)])
    if flat[i] == 0:
        flat[i] = 1
    elif rng.random() < 0.5:
        flat[i] = -flat[i]
    else:
        flat[i] = flat[i] * SCALE
    return lie


def _corrupt_task_result(value: Any, rng: random.Random) -> Any:
    """A ``%%golem`` task's own result types: their values."""
    from .runner import ElementResults, UnitResult

    if isinstance(value, UnitResult):
        values = _corrupt(value.values, rng)
        if values is _UNCHANGED:
            return _UNCHANGED
        # The corrupted name is no longer the notebook's input as the task got it.
        changed = {name for name in value.values if values[name] is not value.values[name]}
        return dataclasses.replace(
            value,
            values=values,
            unchanged=value.unchanged - changed,
            references={k: v for k, v in value.references.items() if k not in changed},
        )
    if isinstance(value, ElementResults):
        for n, (kept, item, index) in enumerate(value.results):
            if kept and (lie := _corrupt(item, rng)) is not _UNCHANGED:
                results = list(value.results)
                results[n] = (kept, lie, index)
                return dataclasses.replace(value, results=results)
    return _UNCHANGED


@click.command()
@click.option(OPTION, "lie_fraction", type=float, required=True)
async def dask_setup(worker: Any, lie_fraction: float) -> None:
    await worker.plugin_add(LyingWorker(lie_fraction), name=LyingWorker.name)


__all__ = ["OPTION", "LyingWorker", "corrupt"]
