"""The requestor side: :class:`GolemCluster`, per-graph metering and on-chain settlement.

Imports are lazy: ``import golem_jupyter.requestor`` pulls in neither web3 nor distributed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GolemCluster"]


def __getattr__(name: str) -> Any:
    if name == "GolemCluster":
        from .cluster import GolemCluster

        return GolemCluster
    raise AttributeError(name)
