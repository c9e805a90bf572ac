"""What the ledger says: jobs (graph executions) page by page, one job in full, a wallet's open sessions.

Blocking SQLite reads: the handlers run these in a thread. Each call opens the ledger at
``$GOLEM_HOME/ledger.sqlite`` and closes it again; kernels write it meanwhile, and WAL mode lets
this reader see whole transactions without waiting for them. A read never creates the file:
with no ledger there is simply nothing recorded yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..home import golem_home
from ..ledger import Ledger, SessionRecord
from . import views


def ledger_path() -> Path:
    return golem_home() / "ledger.sqlite"


@contextmanager
def open_ledger() -> Iterator[Ledger | None]:
    """The ledger, closed again after the block; None when no ledger file exists yet."""
    path = ledger_path()
    if not path.exists():
        yield None
        return
    ledger = Ledger(path)
    try:
        yield ledger
    finally:
        ledger.close()


def jobs(limit: int, offset: int, session_id: str | None = None) -> dict[str, Any]:
    """A page of jobs, newest first, of one session if ``session_id`` is given."""
    with open_ledger() as ledger:
        if ledger is None:
            return views.jobs_page_view([], 0, limit, offset)
        # Counted first: a graph recorded in between shows in the total before it shows in a page.
        total = ledger.count_graphs(session_id=session_id)
        graphs = ledger.graphs(session_id=session_id, limit=limit, offset=offset)
        sessions: dict[str, SessionRecord | None] = {}
        for graph in graphs:
            if graph.session_id not in sessions:
                sessions[graph.session_id] = ledger.session(graph.session_id)
        page = [views.job_view(graph, sessions[graph.session_id]) for graph in graphs]
        return views.jobs_page_view(page, total, limit, offset)


def job(graph_id: str) -> dict[str, Any] | None:
    """One job in full, or None if the ledger has no such graph."""
    with open_ledger() as ledger:
        graph = ledger.graph(graph_id) if ledger is not None else None
        if graph is None:
            return None
        faults = [f for f in ledger.faults(session_id=graph.session_id) if f.graph_id == graph.graph_id]
        return views.job_detail_view(graph, ledger.session(graph.session_id), faults)


def open_sessions(requestor: str, chain_id: int, escrow: str) -> list[SessionRecord]:
    """Sessions of ``requestor`` on this escrow that the ledger has as open."""
    with open_ledger() as ledger:
        if ledger is None:
            return []
        return ledger.sessions_of(requestor, chain_id=chain_id, escrow=escrow, status="open")
