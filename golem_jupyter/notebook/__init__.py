"""The %%golem magic: notebook cells into Dask graphs on the market."""

from __future__ import annotations


def load_ipython_extension(shell) -> None:
    """``%load_ext golem_jupyter``: register ``%%golem`` and ``%golem``, and label graphs with their cell."""
    from .magics import GolemMagics

    shell.register_magics(GolemMagics)
    if _mark_cell not in shell.events.callbacks["pre_run_cell"]:
        shell.events.register("pre_run_cell", _mark_cell)


def unload_ipython_extension(shell) -> None:
    """Close the sessions the magics opened."""
    if _mark_cell in shell.events.callbacks["pre_run_cell"]:
        shell.events.unregister("pre_run_cell", _mark_cell)
    magics = shell.magics_manager.registry.get("GolemMagics")
    if magics is not None:
        magics.close_all()


def _mark_cell(info) -> None:
    """Every graph submitted from now on (a ``%%golem`` cell, or any Dask call) belongs to this cell."""
    from IPython import get_ipython

    from ..requestor import labels

    shell = get_ipython()
    if shell is not None:
        labels.mark(f"In [{shell.execution_count}]")
