"""Every graph a cell submits carries the cell's label (``In [3]``), whatever the load.

While a cell runs, the Dask annotation :data:`CELL_ANNOTATION` is set globally; the client merges
global annotations into every graph it sends (``Client.submit``, ``compute``, ``persist``, the
``%%golem`` magic's own graphs), so the scheduler's meter reads the cell off the graph itself
(:func:`cell_of_graph`) and the receipt, the ledger, the bill, ``golem run``'s
``metadata.golem`` and the side panel name it. Nothing compares two clocks: a graph that reaches
a busy scheduler late still names the cell that sent it.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import dask

CELL_ANNOTATION = "golem_cell"
"""The annotation that names the cell a graph came from (the value is its label, ``In [N]``)."""

_open: dict[int, AbstractContextManager] = {}
"""The annotation context of the cell running in each shell (by id), entered before it runs."""


def tag_graphs_with_cells(shell: Any) -> None:
    """From now on, each cell ``shell`` runs tags the graphs submitted while it runs."""
    events = shell.events.callbacks
    if _enter not in events["pre_run_cell"]:
        shell.events.register("pre_run_cell", _enter)
    if _leave not in events["post_run_cell"]:
        shell.events.register("post_run_cell", _leave)


def untag_graphs(shell: Any) -> None:
    for event, callback in (("pre_run_cell", _enter), ("post_run_cell", _leave)):
        if callback in shell.events.callbacks[event]:
            shell.events.unregister(event, callback)
    _close(shell)


def cell_of_graph(annotations: Mapping[str, Mapping[Any, Any]], keys: Any) -> str | None:
    """The cell label the graph's tasks ``keys`` carry (what a scheduler plugin's ``update_graph``
    receives as ``annotations``), or None for a graph sent outside a tagged cell."""
    cells = annotations.get(CELL_ANNOTATION) or {}
    for key in keys:
        label = cells.get(key)
        if isinstance(label, str):
            return label[:64]
    return None


def _enter(info: Any) -> None:
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return
    _close(shell)  # a cell that never reached post_run_cell (an error in a hook) ends here
    context = dask.annotate(**{CELL_ANNOTATION: f"In [{shell.execution_count}]"})
    context.__enter__()
    _open[id(shell)] = context


def _leave(result: Any) -> None:
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None:
        _close(shell)


def _close(shell: Any) -> None:
    context = _open.pop(id(shell), None)
    if context is not None:
        context.__exit__(None, None, None)
