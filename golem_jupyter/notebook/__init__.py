"""The %%golem magic: notebook cells into Dask graphs on the market."""

from __future__ import annotations

from ._cells import CELL_ANNOTATION, cell_of_graph, tag_graphs_with_cells, untag_graphs

__all__ = ["CELL_ANNOTATION", "cell_of_graph", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(shell) -> None:
    """``%load_ext golem_jupyter``: register ``%%golem`` and ``%golem``, and tag graphs with their cell."""
    from .magics import GolemMagics

    shell.register_magics(GolemMagics)
    tag_graphs_with_cells(shell)


def unload_ipython_extension(shell) -> None:
    """Close the sessions the magics opened."""
    untag_graphs(shell)
    magics = shell.magics_manager.registry.get("GolemMagics")
    if magics is not None:
        magics.close_all()
