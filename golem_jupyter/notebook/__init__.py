"""The %%golem magic: notebook cells into Dask graphs on the market."""

from __future__ import annotations


def load_ipython_extension(shell) -> None:
    """``%load_ext golem_jupyter``: register ``%%golem`` and ``%golem``."""
    from .magics import GolemMagics

    shell.register_magics(GolemMagics)


def unload_ipython_extension(shell) -> None:
    """Close the sessions the magics opened."""
    magics = shell.magics_manager.registry.get("GolemMagics")
    if magics is not None:
        magics.close_all()
