"""The ledger's SQLite schema, its upgrades, and what each connection needs (WAL, big sums)."""

from __future__ import annotations

import sqlite3
import time

SCHEMA_VERSION = 5

# Each table has an explicit INTEGER PRIMARY KEY: it orders rows by insertion ("newest first") and,
# unlike an implicit rowid, VACUUM never renumbers it. Amounts are decimal TEXT (see the module doc).
# sessions.run_id has no REFERENCES: a kernel may carry a run id this ledger never saw, and that must
# not stop its session from opening. runs.parameters is a JSON object.
_RUNS = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, notebook TEXT NOT NULL, output TEXT NOT NULL,
    kernel TEXT NOT NULL, parameters TEXT NOT NULL, network TEXT, budget TEXT, status TEXT NOT NULL,
    exit_code INTEGER, error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL);
CREATE INDEX sessions_by_run ON sessions (run_id);
"""
# The whole schema, for a new file. sessions.run_id, agreements.agreement_id and graphs.seq are their tables'
# last columns, where upgrading puts them. agreements.agreement_id is the provider's id of the agreement
# (0x-hex): what `golem sessions close` names when it asks a provider for its release after the kernel is
# gone. graphs.seq is the graph's settlement number in its escrow session (escrow version 2
# settles a session's graphs in order): written before the settlement is sent, so a retry sends the same one.
_SCHEMA = """
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL UNIQUE, network TEXT NOT NULL, chain_id INTEGER NOT NULL,
    escrow TEXT NOT NULL, requestor TEXT NOT NULL, token TEXT NOT NULL, budget TEXT NOT NULL,
    deadline INTEGER NOT NULL, tx_hash TEXT, status TEXT NOT NULL, label TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, close_tx TEXT, refund TEXT, run_id TEXT);
CREATE TABLE agreements (
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL REFERENCES sessions (session_id), provider TEXT NOT NULL,
    endpoint TEXT NOT NULL, price_per_cpu_second TEXT NOT NULL, price_per_gpu_second TEXT NOT NULL,
    start_fee TEXT NOT NULL, gpus INTEGER NOT NULL, worker_name TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, agreement_id TEXT, UNIQUE (session_id, provider));
CREATE TABLE graphs (
    id INTEGER PRIMARY KEY, graph_id TEXT NOT NULL UNIQUE, session_id TEXT NOT NULL REFERENCES sessions (session_id),
    label TEXT, n_tasks INTEGER NOT NULL, result_root TEXT NOT NULL, total TEXT NOT NULL, status TEXT NOT NULL,
    tx_hash TEXT, block_number INTEGER, gas_used INTEGER, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, seq INTEGER, verification TEXT);
CREATE INDEX graphs_by_session ON graphs (session_id, status);
CREATE INDEX graphs_by_status ON graphs (status);
CREATE TABLE payouts (
    graph_id TEXT NOT NULL REFERENCES graphs (graph_id), position INTEGER NOT NULL, provider TEXT NOT NULL,
    cpu_seconds REAL NOT NULL, gpu_seconds REAL NOT NULL, amount TEXT NOT NULL, cumulative TEXT NOT NULL,
    PRIMARY KEY (graph_id, position), UNIQUE (graph_id, provider));
"""
_SCHEMA += _RUNS
# graphs.verification (JSON, NULL when nothing was checked): what verification did in the graph (tasks
# checked, re-runs, mismatches, and what the re-runs cost in wei, as a decimal string).
# A provider outvoted by verification (DESIGN.md section 6): one row per fault, with the reportFault
# transaction (None when it could not be sent). A provider with a row here is not rented again
# unless the user asks (GolemCluster(allow_reported=True)).
_FAULTS = """
CREATE TABLE faults (
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL REFERENCES sessions (session_id), graph_id TEXT,
    provider TEXT NOT NULL, task TEXT NOT NULL, evidence TEXT NOT NULL, tx_hash TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX faults_by_provider ON faults (provider);
"""
_SCHEMA += _FAULTS
# From each older version to the next; a file is brought up one version at a time.
_UPGRADES = {
    1: "ALTER TABLE sessions ADD COLUMN run_id TEXT;" + _RUNS,
    2: "ALTER TABLE graphs ADD COLUMN seq INTEGER;",
    3: "ALTER TABLE agreements ADD COLUMN agreement_id TEXT;",
    4: _FAULTS + "ALTER TABLE graphs ADD COLUMN verification TEXT;",
}
# Columns that hold amounts as decimal TEXT, returned as int.
_AMOUNTS = {"budget", "refund", "spent", "settled", "price_per_cpu_second", "price_per_gpu_second", "start_fee"}
_AMOUNTS |= {"total", "amount", "cumulative"}


class _BigSum:
    """SQL aggregate ``big_sum(text)``: an exact sum of decimal strings (SQLite's SUM goes through int64/float)."""

    def __init__(self) -> None:
        self.total = 0

    def step(self, value: str | None) -> None:
        if value is not None:
            self.total += int(value)

    def finalize(self) -> str:
        return str(self.total)


def _enable_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Switch the file to WAL, waiting for other processes: the switch needs the file to itself,
    and SQLite refuses it at once ("database is locked") instead of using the busy timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _execute(connection: sqlite3.Connection, script: str) -> None:
    """Run each statement of ``script`` in the current transaction (executescript would commit it)."""
    for statement in script.split(";"):
        if statement.strip():
            connection.execute(statement)
