"""Task functions from tests/ travel to the workers by value, as a notebook's own functions do.

A provider's sandboxed worker sees nothing of this directory (and no ``PYTHONPATH``), so it could
not import them by name. ``cloudpickle.register_pickle_by_value`` says so, but distributed's
``dumps`` asks cloudpickle only when the plain pickle names ``__main__`` or the *outermost*
object's module is registered, and a graph is a dict of tasks that wrap the functions. Importing
this module (conftest.py does; so can a script a test runs) registers the task modules and makes
distributed use cloudpickle whenever the plain pickle names one of them anywhere inside.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType

import cloudpickle
import distributed.protocol.pickle
import hostile_results
import hostile_tasks
import market_tasks

BY_VALUE: tuple[ModuleType, ...] = (market_tasks, hostile_tasks, hostile_results)


def _by_value_inside(dumps: Callable[..., bytes]) -> Callable[..., bytes]:
    names = [module.__name__.encode() for module in BY_VALUE]

    @functools.wraps(dumps)
    def by_value_inside(x: object, *, buffer_callback: Callable | None = None, **options: object) -> bytes:
        buffers: list = []
        collect = {} if buffer_callback is None else {"buffer_callback": buffers.append}
        result = dumps(x, **collect, **options)
        if any(name in result for name in names):
            buffers.clear()
            result = cloudpickle.dumps(x, **collect, **options)
        for buffer in buffers:
            buffer_callback(buffer)
        return result

    by_value_inside.golem_by_value = True
    return by_value_inside


for _module in BY_VALUE:
    cloudpickle.register_pickle_by_value(_module)
if not getattr(distributed.protocol.pickle.dumps, "golem_by_value", False):
    distributed.protocol.pickle.dumps = _by_value_inside(distributed.protocol.pickle.dumps)
