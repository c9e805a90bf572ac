"""The ledger: the requestor's SQLite record of notebook runs, sessions, agreements, graphs and payouts.

It is the requestor's truth about money, so it never holds half-written rows: every write is one
transaction (a graph and all its payouts commit together or not at all). One file is shared by
several threads (settlement runs beside the notebook thread) and several processes (the
JupyterLab server extension reads while a kernel writes): the database runs in WAL mode, so
readers never wait for a writer and always see whole transactions; writers queue on a busy
timeout; each thread uses its own connection.

Conventions: amounts are uint256 values in the token's smallest unit, stored as decimal TEXT
(SQLite integers stop at 2^63) and returned as Python ints; ids and transaction hashes are
0x-prefixed lowercase hex of 32 bytes (bytes are accepted too); addresses are checksummed;
times are Unix floats, except ``deadline``, which is the on-chain uint64 in whole seconds.

A run is one ``golem run NOTEBOOK``; the sessions its kernel opens carry its ``run_id``. Opening a
file of an older schema version upgrades it in place, in one transaction, keeping every row.

>>> with Ledger() as ledger:
...     ledger.sessions(limit=10)
"""

from __future__ import annotations

from ._ledger import Ledger
from ._records import (
    AGREEMENT_STATUSES,
    FINAL_GRAPH_STATUSES,
    GRAPH_STATUSES,
    RUN_STATUSES,
    SESSION_STATUSES,
    UNSETTLED_GRAPH_STATUSES,
    AgreementRecord,
    FaultRecord,
    GraphRecord,
    LedgerError,
    Payout,
    RunRecord,
    SessionRecord,
)
from ._schema import SCHEMA_VERSION

__all__ = [
    "AGREEMENT_STATUSES",
    "FINAL_GRAPH_STATUSES",
    "GRAPH_STATUSES",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "SESSION_STATUSES",
    "UNSETTLED_GRAPH_STATUSES",
    "AgreementRecord",
    "FaultRecord",
    "GraphRecord",
    "Ledger",
    "LedgerError",
    "Payout",
    "RunRecord",
    "SessionRecord",
]
