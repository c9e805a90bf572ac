"""The :class:`Ledger`: one SQLite file, one connection per thread, every write one transaction."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..home import golem_home
from ..market.agreements import AgreementStatus
from ._checks import _address, _agreement_status, _amount, _choice, _count, _exit_code, _id, _payout, _text
from ._records import (
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
from ._schema import _AMOUNTS, _SCHEMA, _UPGRADES, SCHEMA_VERSION, _BigSum, _enable_wal, _execute


class Ledger:
    """The ledger file at ``path`` (default ``$GOLEM_HOME/ledger.sqlite``), created on first use.

    Safe to share between threads: each thread gets its own connection. ``timeout`` is how long a
    write waits for another thread or process to finish its own before giving up.
    """

    def __init__(self, path: Path | str | None = None, *, timeout: float = 30.0) -> None:
        self.path = Path(path).expanduser() if path is not None else golem_home() / "ledger.sqlite"
        self.timeout = timeout
        self._local = threading.local()
        # Every connection opened, with its thread: close() closes them all, and those of threads that
        # have ended are closed when the next one opens, so a pool of short-lived threads leaks nothing.
        self._connections: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._inherited: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection this ledger opened. Call it once no thread is using the ledger."""
        with self._lock:
            self._closed = True
            for _, connection in self._connections:
                connection.close()
            self._connections.clear()

    # -- connections and transactions

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise LedgerError(f"The ledger {self.path} was closed; open a new Ledger to use it again.")
        if self._pid != os.getpid():
            self._after_fork()
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        # isolation_level=None: no implicit transactions; the methods below say BEGIN and COMMIT themselves.
        # check_same_thread=False only so that close() may close it; no other thread ever uses it.
        connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA foreign_keys = ON")
        # FULL: a commit survives a power cut, not only a crash; this is a record of money.
        connection.execute("PRAGMA synchronous = FULL")
        connection.create_aggregate("big_sum", 1, _BigSum)
        with self._lock:
            alive = []
            for thread, other in self._connections:
                if (owner := thread()) is not None and owner.is_alive():
                    alive.append((thread, other))
                else:
                    other.close()
            self._connections = [*alive, (weakref.ref(threading.current_thread()), connection)]
        self._local.connection = connection
        return connection

    def _after_fork(self) -> None:
        # SQLite connections must not cross fork(): a forked child leaves its parent's alone (neither using
        # nor closing them, which could disturb the parent's locks) and opens its own.
        self._inherited += self._connections
        self._connections = []
        self._local, self._lock, self._pid = threading.local(), threading.Lock(), os.getpid()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the block returns, rolled back if it raises."""
        connection = self._connection()
        # IMMEDIATE takes the write lock up front (waiting up to the timeout): a deferred transaction
        # that read first could fail with "database is locked" at its first write, with no waiting.
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise LedgerError(
                f"The ledger {self.path} stayed busy for {self.timeout} s ({error}); try again."
            ) from None
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:  # SQLite may have rolled back already (e.g. on a full disk)
                connection.execute("ROLLBACK")
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so that queries inside it all see one committed state."""
        connection = self._connection()
        connection.execute("BEGIN")
        try:
            yield connection
        finally:
            if connection.in_transaction:
                connection.execute("COMMIT")

    def _migrate(self) -> None:
        connection = self._connection()
        if connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        # WAL is a property of the file: set once, every later connection (any process) uses it.
        _enable_wal(connection, self.timeout)
        with self._write() as connection:
            # Checked again under the write lock: another process may have created the schema meanwhile.
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"The ledger {self.path} has schema version {version}, newer than this golem-jupyter "
                    f"understands ({SCHEMA_VERSION}); upgrade golem-jupyter."
                )
            if version == SCHEMA_VERSION:
                return
            if version == 0:
                _execute(connection, _SCHEMA)
            else:
                for old in range(version, SCHEMA_VERSION):
                    _execute(connection, _UPGRADES[old])
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- runs

    def record_run(
        self,
        *,
        run_id: str | bytes,
        notebook: str,
        output: str,
        kernel: str,
        parameters: dict[str, Any],
        network: str | None = None,
        budget: int | None = None,
    ) -> None:
        """Record a run of ``notebook`` that has started (status 'running').

        ``parameters`` is stored as JSON; values JSON cannot hold (dates, say) are stored as their str().
        Raises :class:`LedgerError` if the run is already recorded.
        """
        if not isinstance(parameters, dict) or not all(isinstance(key, str) for key in parameters):
            raise InvalidInput(f"parameters must be a dict with string keys, got {parameters!r}.")
        try:
            text = json.dumps(parameters, sort_keys=True, default=str)
        except (TypeError, ValueError) as error:
            raise InvalidInput(f"parameters cannot be stored as JSON ({error}); pass plain values.") from None
        row = {
            "run_id": _id(run_id, "run_id"),
            "notebook": _text(notebook, "notebook"),
            "output": _text(output, "output"),
            "kernel": _text(kernel, "kernel"),
            "parameters": text,
            "network": _text(network, "network", optional=True),
            "budget": None if budget is None else _amount(budget, "budget"),
            "status": "running",
        }
        with self._write() as connection:
            if not _insert(connection, "runs", row):
                raise LedgerError(f"Run {row['run_id']} is already in the ledger; give each run its own id.")

    def finish_run(self, run_id: str | bytes, *, status: str, exit_code: int, error: str | None = None) -> None:
        """Record how a run ended. A run is finished once: finishing it again raises :class:`LedgerError`."""
        changes = {
            "status": _choice(status, RUN_STATUSES[1:], "final run status"),
            "exit_code": _exit_code(exit_code),
            "error": _text(error, "error", optional=True, allow_empty=True),
        }
        key = _id(run_id, "run_id")
        with self._write() as connection:
            found = connection.execute("SELECT status FROM runs WHERE run_id = ?", (key,)).fetchone()
            if found is None:
                raise LedgerError(f"No run {key} in the ledger {self.path}; record_run first.")
            if found["status"] != "running":
                raise LedgerError(
                    f"Run {key} is already {found['status']}; a run is finished once, it was not changed."
                )
            _update(connection, "runs", "run_id = ?", (key,), changes | {"finished_at": time.time()})

    def run(self, run_id: str | bytes) -> RunRecord | None:
        found = self._runs("WHERE r.run_id = ?", (_id(run_id, "run_id"),))
        return found[0] if found else None

    def runs(self, limit: int = 50, offset: int = 0) -> list[RunRecord]:
        """Runs, newest first."""
        return self._runs("ORDER BY r.id DESC LIMIT ? OFFSET ?", (_count(limit, "limit"), _count(offset, "offset")))

    def _runs(self, tail: str, args: tuple[Any, ...]) -> list[RunRecord]:
        # spent and settled: exact sums of the totals of the graphs of this run's sessions, by status.
        total = (
            "SELECT COALESCE(big_sum(g.total), '0') FROM graphs g JOIN sessions s ON s.session_id = g.session_id"
            " WHERE s.run_id = r.run_id AND g.status"
        )
        count = "SELECT COUNT(*) FROM sessions s WHERE s.run_id = r.run_id"
        query = (
            f"SELECT r.*, ({total} != 'abandoned') AS spent, ({total} = 'confirmed') AS settled,"
            f" ({count}) AS sessions FROM runs r"
        )
        with self._read() as connection:
            rows = connection.execute(f"{query} {tail}", args).fetchall()
        return [_record(RunRecord, row, parameters=json.loads(row["parameters"])) for row in rows]

    # -- sessions

    def record_session(
        self,
        *,
        session_id: str | bytes,
        network: str,
        chain_id: int,
        escrow: str,
        requestor: str,
        token: str,
        budget: int,
        deadline: int,
        tx_hash: str | bytes | None = None,
        status: str = "opening",
        label: str | None = None,
        run_id: str | bytes | None = None,
    ) -> None:
        """Record a new escrow session, opened for the run ``run_id`` if given (recorded or not).

        Raises :class:`LedgerError` if the session is already recorded.
        """
        row = {
            "session_id": _id(session_id, "session_id"),
            "network": _text(network, "network"),
            "chain_id": _count(chain_id, "chain_id"),
            "escrow": _address(escrow, "escrow"),
            "requestor": _address(requestor, "requestor"),
            "token": _address(token, "token", allow_zero=True),
            "budget": _amount(budget, "budget"),
            "deadline": _count(deadline, "deadline"),
            "tx_hash": _id(tx_hash, "tx_hash", optional=True),
            "status": _choice(status, SESSION_STATUSES, "session status"),
            "label": _text(label, "label", optional=True),
            "run_id": _id(run_id, "run_id", optional=True),
        }
        with self._write() as connection:
            if not _insert(connection, "sessions", row):
                raise LedgerError(f"Session {row['session_id']} is already in the ledger; use update_session.")

    def update_session(
        self,
        session_id: str | bytes,
        *,
        status: str | None = None,
        tx_hash: str | bytes | None = None,
        close_tx: str | bytes | None = None,
        refund: int | None = None,
        budget: int | None = None,
    ) -> None:
        """Change the fields given; ``None`` leaves a field as it is."""
        changes = {
            "status": None if status is None else _choice(status, SESSION_STATUSES, "session status"),
            "budget": None if budget is None else _amount(budget, "budget"),
            "tx_hash": _id(tx_hash, "tx_hash", optional=True),
            "close_tx": _id(close_tx, "close_tx", optional=True),
            "refund": None if refund is None else _amount(refund, "refund"),
        }
        key = _id(session_id, "session_id")
        with self._write() as connection:
            if not _update(connection, "sessions", "session_id = ?", (key,), changes):
                raise LedgerError(f"No session {key} in the ledger {self.path}; record_session first.")

    def session(self, session_id: str | bytes) -> SessionRecord | None:
        rows = self._sessions("WHERE s.session_id = ?", (_id(session_id, "session_id"),))
        return rows[0] if rows else None

    def sessions(self, limit: int = 50, offset: int = 0, run_id: str | bytes | None = None) -> list[SessionRecord]:
        """Sessions, newest first; only those of the run ``run_id`` if given."""
        where, args = ("", ()) if run_id is None else ("WHERE s.run_id = ?", (_id(run_id, "run_id"),))
        page = (_count(limit, "limit"), _count(offset, "offset"))
        return self._sessions(f"{where} ORDER BY s.id DESC LIMIT ? OFFSET ?", (*args, *page))

    def sessions_of(
        self, requestor: str, *, chain_id: int, escrow: str, status: str | None = None
    ) -> list[SessionRecord]:
        """Every session ``requestor`` opened on the escrow contract ``escrow`` of chain ``chain_id``
        (only those whose status is ``status``, if given), newest first."""
        where, args = "WHERE s.requestor = ? AND s.chain_id = ? AND s.escrow = ?", (requestor, chain_id, escrow)
        if status is not None:
            where, args = f"{where} AND s.status = ?", (*args, status)
        return self._sessions(f"{where} ORDER BY s.id DESC", args)

    def _sessions(self, tail: str, args: tuple[Any, ...]) -> list[SessionRecord]:
        # spent and settled: exact sums of the totals of this session's graphs, by status.
        total = "SELECT COALESCE(big_sum(total), '0') FROM graphs g WHERE g.session_id = s.session_id AND g.status"
        query = f"SELECT s.*, ({total} != 'abandoned') AS spent, ({total} = 'confirmed') AS settled FROM sessions s"
        with self._read() as connection:
            return [_record(SessionRecord, row) for row in connection.execute(f"{query} {tail}", args)]

    # -- agreements

    def record_agreement(
        self,
        *,
        session_id: str | bytes,
        provider: str,
        endpoint: str,
        price_per_cpu_second: int,
        price_per_gpu_second: int,
        start_fee: int,
        gpus: int,
        worker_name: str,
        status: AgreementStatus | str = AgreementStatus.NEGOTIATING,
        agreement_id: str | bytes | None = None,
    ) -> None:
        """Record the agreement with ``provider`` in a session; there is at most one per (session, provider).

        ``agreement_id`` is the provider's id of it, needed to ask the provider for its release later.
        """
        row = {
            "session_id": _id(session_id, "session_id"),
            "provider": _address(provider, "provider"),
            "endpoint": _text(endpoint, "endpoint"),
            "price_per_cpu_second": _amount(price_per_cpu_second, "price_per_cpu_second"),
            "price_per_gpu_second": _amount(price_per_gpu_second, "price_per_gpu_second"),
            "start_fee": _amount(start_fee, "start_fee"),
            "gpus": _count(gpus, "gpus"),
            "worker_name": _text(worker_name, "worker_name"),
            "status": _agreement_status(status),
            "agreement_id": _id(agreement_id, "agreement_id", optional=True),
        }
        with self._write() as connection:
            self._require_session(connection, row["session_id"])
            if not _insert(connection, "agreements", row):
                raise LedgerError(
                    f"Session {row['session_id']} already has an agreement with {row['provider']};"
                    " use update_agreement to change it."
                )

    def update_agreement(
        self, session_id: str | bytes, provider: str, *, status: AgreementStatus | str, reason: str | None = None
    ) -> None:
        """Move an agreement to ``status`` (an :class:`AgreementStatus` or its value); ``reason`` says why
        (``None`` keeps the one recorded)."""
        changes = {
            "status": _agreement_status(status),
            "reason": _text(reason, "reason", optional=True, allow_empty=True),
        }
        key = (_id(session_id, "session_id"), _address(provider, "provider"))
        with self._write() as connection:
            if not _update(connection, "agreements", "session_id = ? AND provider = ?", key, changes):
                raise LedgerError(f"No agreement with {key[1]} in session {key[0]}; record_agreement first.")

    def agreements(self, session_id: str | bytes) -> list[AgreementRecord]:
        """The session's agreements, in the order they were recorded."""
        query = "SELECT * FROM agreements WHERE session_id = ? ORDER BY id"
        with self._read() as connection:
            rows = connection.execute(query, (_id(session_id, "session_id"),))
            return [_record(AgreementRecord, row) for row in rows]

    # -- faults

    def record_fault(
        self,
        *,
        session_id: str | bytes,
        graph_id: str | bytes | None,
        provider: str,
        key: str,
        evidence: bytes | str,
        tx_hash: str | bytes | None = None,
    ) -> None:
        """Record that ``provider`` was outvoted on task ``key`` of ``graph_id`` (reported in ``tx_hash``)."""
        row = {
            "session_id": _id(session_id, "session_id"),
            "graph_id": _id(_prefixed(graph_id), "graph_id", optional=True),
            "provider": _address(provider, "provider"),
            "task": _text(key, "key")[:200],
            "evidence": _id(evidence, "evidence"),
            "tx_hash": _id(tx_hash, "tx_hash", optional=True),
        }  # fmt: skip
        with self._write() as connection:
            self._require_session(connection, row["session_id"])
            _insert(connection, "faults", row)

    def faults(self, provider: str | None = None, session_id: str | bytes | None = None) -> list[FaultRecord]:
        """Recorded faults, oldest first; only ``provider``'s or only the session's if given."""
        where, args = [], []
        if provider is not None:
            where.append("provider = ?")
            args.append(_address(provider, "provider"))
        if session_id is not None:
            where.append("session_id = ?")
            args.append(_id(session_id, "session_id"))
        query = "SELECT * FROM faults" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        with self._read() as connection:
            return [_record(FaultRecord, row) for row in connection.execute(query, args)]

    def reported_providers(self) -> set[str]:
        """Every provider this ledger recorded a fault of."""
        with self._read() as connection:
            return {row[0] for row in connection.execute("SELECT DISTINCT provider FROM faults")}

    # -- graphs

    def record_graph(
        self,
        *,
        session_id: str | bytes,
        graph_id: str | bytes,
        n_tasks: int,
        result_root: str | bytes,
        payouts: Sequence[Payout],
        label: str | None = None,
        status: str = "pending",
        verification: dict[str, int] | None = None,
    ) -> None:
        """Record a graph execution and all its payouts in one transaction: all of it or nothing.

        ``verification``: what ``--verify`` did in the graph (counts and the re-runs' cost in wei)."""
        if isinstance(payouts, (str, bytes)) or not isinstance(payouts, Sequence):
            raise InvalidInput(f"payouts must be a sequence of Payout, got {payouts!r}.")
        checked = [_payout(payout) for payout in payouts]
        row = {
            "graph_id": _id(graph_id, "graph_id"),
            "session_id": _id(session_id, "session_id"),
            "label": _text(label, "label", optional=True),
            "n_tasks": _count(n_tasks, "n_tasks"),
            "result_root": _id(result_root, "result_root"),
            "total": sum(payout.amount for payout in checked),
            "status": _choice(status, GRAPH_STATUSES, "graph status"),
            "verification": _verification(verification),
        }
        providers = [payout.provider for payout in checked]
        if len(set(providers)) != len(providers):
            raise InvalidInput(f"Graph {row['graph_id']} has two payouts for one provider: {providers}.")
        with self._write() as connection:
            self._require_session(connection, row["session_id"])
            if not _insert(connection, "graphs", row):
                raise LedgerError(f"Graph {row['graph_id']} is already in the ledger; nothing was written.")
            for position, payout in enumerate(checked):
                values = {"graph_id": row["graph_id"], "position": position, **vars(payout)}
                # A refused payout raises out of the transaction, which rolls back the graph row too.
                if not _insert(connection, "payouts", values, stamp=False):
                    raise LedgerError(f"The payouts of graph {row['graph_id']} were refused; nothing was written.")

    def update_graph(
        self,
        graph_id: str | bytes,
        *,
        status: str,
        tx_hash: str | bytes | None = None,
        block_number: int | None = None,
        gas_used: int | None = None,
        error: str | None = None,
        attempts_increment: bool = False,
        seq: int | None = None,
    ) -> None:
        """Move a graph to ``status``; the other fields are kept as they are when ``None``.

        ``seq`` records the graph's settlement number in its escrow session (once set, it is not changed).

        'confirmed' and 'abandoned' are final: updating such a graph raises :class:`LedgerError`.
        """
        changes = {
            "status": _choice(status, GRAPH_STATUSES, "graph status"),
            "tx_hash": _id(tx_hash, "tx_hash", optional=True),
            "block_number": None if block_number is None else _count(block_number, "block_number"),
            "gas_used": None if gas_used is None else _count(gas_used, "gas_used"),
            "error": _text(error, "error", optional=True, allow_empty=True),
            "seq": None if seq is None else _count(seq, "seq"),
        }
        if not isinstance(attempts_increment, bool):
            raise InvalidInput(f"attempts_increment must be True or False, got {attempts_increment!r}.")
        key = _id(graph_id, "graph_id")
        with self._write() as connection:
            found = connection.execute("SELECT status, seq FROM graphs WHERE graph_id = ?", (key,)).fetchone()
            if found is None:
                raise LedgerError(f"No graph {key} in the ledger {self.path}; record_graph first.")
            if found["status"] in FINAL_GRAPH_STATUSES:
                raise LedgerError(f"Graph {key} is already {found['status']}, which is final; it was not changed.")
            if seq is not None and found["seq"] is not None and found["seq"] != seq:
                raise LedgerError(f"Graph {key} was prepared as settlement {found['seq']}; it cannot become {seq}.")
            _update(connection, "graphs", "graph_id = ?", (key,), changes, count_attempt=attempts_increment)

    def graph(self, graph_id: str | bytes) -> GraphRecord | None:
        found = self._graphs("WHERE graph_id = ?", (_id(graph_id, "graph_id"),))
        return found[0] if found else None

    def graphs(
        self, session_id: str | bytes | None = None, limit: int = 50, offset: int = 0, status: str | None = None
    ) -> list[GraphRecord]:
        """Graphs, newest first, optionally only those of one session and/or in one status."""
        where, args = _graph_filter(session_id, status)
        page = (_count(limit, "limit"), _count(offset, "offset"))
        return self._graphs(f"{where} ORDER BY id DESC LIMIT ? OFFSET ?", (*args, *page))

    def count_graphs(self, session_id: str | bytes | None = None, status: str | None = None) -> int:
        where, args = _graph_filter(session_id, status)
        with self._read() as connection:
            return connection.execute(f"SELECT COUNT(*) FROM graphs {where}", args).fetchone()[0]

    def unsettled_graphs(self, session_id: str | bytes | None = None) -> list[GraphRecord]:
        """Graphs still to settle (pending, submitted or failed), oldest first: the settlement retry queue."""
        where, args = _graph_filter(session_id, None)
        where = f"{where} AND" if where else "WHERE"
        marks = ", ".join("?" * len(UNSETTLED_GRAPH_STATUSES))
        return self._graphs(f"{where} status IN ({marks}) ORDER BY id", (*args, *UNSETTLED_GRAPH_STATUSES))

    def _graphs(self, tail: str, args: tuple[Any, ...]) -> list[GraphRecord]:
        # Graphs and their payouts are read in one transaction, so a graph never shows without its payouts.
        with self._read() as connection:
            rows = connection.execute(f"SELECT * FROM graphs {tail}", args).fetchall()
            payouts: dict[str, list[Payout]] = {row["graph_id"]: [] for row in rows}
            ids = list(payouts)
            for start in range(0, len(ids), 500):  # SQLite caps the number of parameters of one statement
                chunk = ids[start : start + 500]
                query = f"SELECT * FROM payouts WHERE graph_id IN ({', '.join('?' * len(chunk))}) ORDER BY position"
                for payout in connection.execute(query, chunk):
                    payouts[payout["graph_id"]].append(_record(Payout, payout))
        return [
            _record(
                GraphRecord,
                row,
                payouts=tuple(payouts[row["graph_id"]]),
                verification=_verification_of(row["verification"]),
            )
            for row in rows
        ]

    # -- per-provider sums

    def provider_totals(self, session_id: str | bytes) -> dict[str, int]:
        """Sum of payout amounts per provider over the session's graphs that are not abandoned."""
        query = (
            "SELECT p.provider, big_sum(p.amount) FROM payouts p JOIN graphs g ON g.graph_id = p.graph_id"
            " WHERE g.session_id = ? AND g.status != 'abandoned' GROUP BY p.provider ORDER BY p.provider"
        )
        with self._read() as connection:
            rows = connection.execute(query, (_id(session_id, "session_id"),)).fetchall()
        return {provider: int(total) for provider, total in rows}

    def last_cumulative(self, session_id: str | bytes, provider: str) -> int:
        """The highest cumulative voucher amount recorded for ``provider`` in the session, 0 if none.

        Abandoned graphs count too: a voucher once signed can be claimed, so the next one builds on it.
        """
        query = (
            "SELECT p.cumulative FROM payouts p JOIN graphs g ON g.graph_id = p.graph_id"
            " WHERE g.session_id = ? AND p.provider = ?"
        )
        key = (_id(session_id, "session_id"), _address(provider, "provider"))
        with self._read() as connection:
            # max() in Python: SQLite's MAX would compare the decimal strings as text.
            return max((int(value) for (value,) in connection.execute(query, key)), default=0)

    def _require_session(self, connection: sqlite3.Connection, session_id: str) -> None:
        # Foreign keys would refuse it too; this says which session is missing and what to do.
        if connection.execute("SELECT 1 FROM sessions WHERE session_id = ?", (session_id,)).fetchone() is None:
            raise LedgerError(f"No session {session_id} in the ledger {self.path}; record_session first.")


_VERIFICATION_FIELDS = ("checked", "reruns", "mismatches", "cost")


def _verification(counts: dict[str, int] | None) -> str | None:
    """What verification did in a graph, as the ledger stores it: JSON of whole numbers (the cost as text)."""
    if counts is None:
        return None
    if not isinstance(counts, dict) or set(counts) - set(_VERIFICATION_FIELDS):
        raise InvalidInput(f"verification must name only {', '.join(_VERIFICATION_FIELDS)}, got {counts!r}.")
    if not any(counts.values()):
        return None
    return json.dumps({name: str(_amount(counts.get(name, 0), name)) for name in _VERIFICATION_FIELDS})


def _verification_of(text: str | None) -> dict[str, int] | None:
    return None if text is None else {name: int(value) for name, value in json.loads(text).items()}


def _prefixed(value: str | bytes | None) -> str | bytes | None:
    """A hex id as the ledger writes it: 0x in front (the meter names graphs without it)."""
    if isinstance(value, str) and not value.startswith(("0x", "0X")):
        return "0x" + value
    return value


def _record(cls: type, row: sqlite3.Row, **extra: Any) -> Any:
    """An instance of the dataclass ``cls`` from a row: its fields by name, amounts back to int."""
    fields = {name: row[name] for name in cls.__dataclass_fields__ if name not in extra}
    return cls(**{k: int(v) if k in _AMOUNTS and v is not None else v for k, v in fields.items()}, **extra)


def _insert(connection: sqlite3.Connection, table: str, row: dict[str, Any], *, stamp: bool = True) -> bool:
    """INSERT ``row`` (amounts as decimal text; created_at and updated_at added if ``stamp``); False if a
    constraint refused it."""
    values = {k: str(v) if k in _AMOUNTS and v is not None else v for k, v in row.items()}
    if stamp:
        values["created_at"] = values["updated_at"] = time.time()
    marks = ", ".join("?" * len(values))
    try:
        connection.execute(f"INSERT INTO {table} ({', '.join(values)}) VALUES ({marks})", tuple(values.values()))
    except sqlite3.IntegrityError:
        return False
    return True


def _update(
    connection: sqlite3.Connection,
    table: str,
    where: str,
    key: tuple[Any, ...],
    changes: dict[str, Any],
    count_attempt: bool = False,
) -> bool:
    """UPDATE the non-None ``changes`` (and ``updated_at``) of the row at ``key``; False if there is none."""
    values = {k: str(v) if k in _AMOUNTS else v for k, v in changes.items() if v is not None}
    values["updated_at"] = time.time()
    sets = [f"{name} = ?" for name in values] + (["attempts = attempts + 1"] if count_attempt else [])
    cursor = connection.execute(f"UPDATE {table} SET {', '.join(sets)} WHERE {where}", (*values.values(), *key))
    return cursor.rowcount == 1


def _graph_filter(session_id: str | bytes | None, status: str | None) -> tuple[str, tuple[Any, ...]]:
    clauses, args = [], []
    if session_id is not None:
        clauses.append("session_id = ?")
        args.append(_id(session_id, "session_id"))
    if status is not None:
        clauses.append("status = ?")
        args.append(_choice(status, GRAPH_STATUSES, "graph status"))
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)
