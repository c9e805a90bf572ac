"""Where golem-jupyter keeps its state: ``$GOLEM_HOME``, by default ``~/.golem-jupyter``.

It holds the SQLite ledger, keystore files, the deployments recorded per chain id, and the
connection file of a running devnet.
"""

from __future__ import annotations

import os
from pathlib import Path


def golem_home() -> Path:
    """The state directory, created on first use."""
    home = Path(os.environ.get("GOLEM_HOME") or Path.home() / ".golem-jupyter").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def devnet_file() -> Path:
    """Connection file written by a running ``golem devnet``."""
    return golem_home() / "devnet.json"
