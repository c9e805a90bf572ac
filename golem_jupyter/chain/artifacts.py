"""Compiled contracts shipped with the package (written by ``contracts/build.mjs``)."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

ARTIFACTS_DIR = Path(__file__).parent / "artifacts"


@cache
def load_artifact(name: str, directory: Path = ARTIFACTS_DIR) -> dict[str, Any]:
    """The artifact of contract ``name``: ``abi``, ``bytecode``, ``compiler``, ``sources_sha256``."""
    path = directory / f"{name}.json"
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def stale_sources(artifact: dict[str, Any], repo_root: Path) -> list[str]:
    """Source files under ``repo_root`` whose content no longer matches the artifact's hash.

    Only the project's own sources are checked (library sources live in node_modules).
    """
    stale = []
    for path, digest in artifact["sources_sha256"].items():
        file = repo_root / path
        if file.exists() and hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            stale.append(path)
    return stale
