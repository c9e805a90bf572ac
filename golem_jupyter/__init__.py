"""golem-jupyter: notebook cells as work for a decentralized market of Dask workers.

Public API: :class:`GolemCluster` (a Dask cluster rented on the market), the ``%%golem``
magic (``%load_ext golem_jupyter``) and the ``golem`` command.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GolemCluster", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(shell: Any) -> None:
    from .notebook import load_ipython_extension as load

    load(shell)


def unload_ipython_extension(shell: Any) -> None:
    from .notebook import unload_ipython_extension as unload

    unload(shell)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the built side panel lies, for ``jupyter labextension develop``."""
    return [{"src": "labextension", "dest": "golem-jupyter-labextension"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """``jupyter server extension enable golem_jupyter`` enables the side panel's REST API."""
    return [{"module": "golem_jupyter.server"}]


def __getattr__(name: str) -> Any:
    if name == "GolemCluster":  # imported lazily: it pulls in web3 and distributed
        from .requestor.cluster import GolemCluster

        return GolemCluster
    raise AttributeError(f"module 'golem_jupyter' has no attribute {name!r}")
