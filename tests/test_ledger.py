"""The ledger: every method, exact uint256 amounts, all-or-nothing writes, final statuses, and
concurrent use from threads and processes on one file."""

from __future__ import annotations

import datetime
import json
import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from golem_jupyter.errors import GolemError, InvalidInput
from golem_jupyter.ledger import AGREEMENT_STATUSES, RUN_STATUSES, Ledger, LedgerError, Payout
from golem_jupyter.ledger._schema import SCHEMA_VERSION
from golem_jupyter.market import AgreementStatus

BIG = 2**200 + 12345  # far beyond SQLite's 64-bit integers
ESCROW = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
REQUESTOR = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
TOKEN = "0x0000000000000000000000000000000000000000"
ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BOB = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
CAROL = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"


def hex32(n: int) -> str:
    return "0x" + n.to_bytes(32, "big").hex()


SESSION = hex32(1)


def add_session(ledger: Ledger, session_id: str = SESSION, **overrides) -> str:
    fields = dict(
        session_id=session_id,
        network="devnet",
        chain_id=1337,
        escrow=ESCROW,
        requestor=REQUESTOR,
        token=TOKEN,
        budget=BIG,
        deadline=1_900_000_000,
    )
    ledger.record_session(**(fields | overrides))
    return session_id


def add_graph(ledger: Ledger, graph: int, session_id: str = SESSION, payouts=None, **overrides) -> str:
    if payouts is None:
        payouts = [Payout(ALICE, 1.5, 0.0, 10 * graph, 10 * graph), Payout(BOB, 0.0, 2.0, BIG, BIG * graph)]
    fields = dict(session_id=session_id, graph_id=hex32(graph), n_tasks=3, result_root=hex32(10**6 + graph))
    ledger.record_graph(**(fields | {"payouts": payouts} | overrides))
    return hex32(graph)


def add_agreement(ledger: Ledger, provider: str, session_id: str = SESSION, **overrides) -> None:
    fields = dict(endpoint="127.0.0.1:7001", worker_name=provider, price_per_cpu_second=1, price_per_gpu_second=2)
    ledger.record_agreement(
        session_id=session_id, provider=provider, **(fields | {"start_fee": 3, "gpus": 1} | overrides)
    )


def raw(path: Path, query: str) -> list[tuple]:
    """Ask the file directly, through a connection the ledger knows nothing about."""
    with sqlite3.connect(path) as connection:
        return connection.execute(query).fetchall()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite"


@pytest.fixture
def ledger(path: Path):
    with Ledger(path) as ledger:
        yield ledger


@pytest.fixture
def session(ledger: Ledger) -> str:
    return add_session(ledger)


# -- the file


def test_default_path_is_in_golem_home(golem_home: Path) -> None:
    with Ledger() as ledger:
        assert ledger.path == golem_home / "ledger.sqlite"
        assert ledger.path.exists()


def test_schema_is_created_once_and_reopened(path: Path) -> None:
    with Ledger(path) as ledger:
        add_session(ledger)
        add_graph(ledger, 1)
    schema = raw(path, "SELECT name, sql FROM sqlite_master ORDER BY name")
    assert raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]
    with Ledger(str(path)) as again:
        assert again.session(SESSION).budget == BIG
        assert again.graph(hex32(1)).total == 10 + BIG
    assert raw(path, "SELECT name, sql FROM sqlite_master ORDER BY name") == schema


def test_a_newer_schema_is_refused(path: Path) -> None:
    Ledger(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(LedgerError, match="upgrade golem-jupyter"):
        Ledger(path)


def test_closed_ledger_says_so(path: Path) -> None:
    with Ledger(path) as ledger:
        add_session(ledger)
    with pytest.raises(LedgerError, match="closed"):
        ledger.sessions()
    assert issubclass(LedgerError, GolemError)


# -- sessions


def test_session_round_trip_and_updates(ledger: Ledger) -> None:
    before = time.time()
    add_session(ledger, tx_hash=hex32(7), label="my run", token=ESCROW.lower())
    record = ledger.session(SESSION)
    assert (record.session_id, record.network, record.chain_id) == (SESSION, "devnet", 1337)
    assert (record.escrow, record.requestor, record.token) == (ESCROW, REQUESTOR, ESCROW)  # checksummed
    assert (record.budget, record.deadline, record.tx_hash, record.label) == (BIG, 1_900_000_000, hex32(7), "my run")
    assert (record.status, record.close_tx, record.refund) == ("opening", None, None)
    assert (record.spent, record.settled) == (0, 0)
    assert before <= record.created_at == record.updated_at <= time.time()

    ledger.update_session(SESSION, status="open")
    ledger.update_session(bytes.fromhex(SESSION[2:]), status="closed", close_tx=hex32(8).upper(), refund=BIG - 1)
    record = ledger.session(SESSION.upper().replace("0X", "0x"))
    assert (record.status, record.tx_hash, record.close_tx, record.refund) == ("closed", hex32(7), hex32(8), BIG - 1)
    assert record.updated_at >= record.created_at

    assert ledger.session(hex32(99)) is None
    with pytest.raises(LedgerError, match="already in the ledger"):
        add_session(ledger)
    with pytest.raises(LedgerError, match="record_session first"):
        ledger.update_session(hex32(99), status="open")


def test_sessions_newest_first_with_paging(ledger: Ledger) -> None:
    for n in range(1, 6):
        add_session(ledger, hex32(n))
    assert [s.session_id for s in ledger.sessions()] == [hex32(n) for n in (5, 4, 3, 2, 1)]
    assert [s.session_id for s in ledger.sessions(limit=2, offset=1)] == [hex32(4), hex32(3)]
    assert ledger.sessions(offset=5) == []


def test_sessions_of_one_requestor_on_one_escrow(ledger: Ledger) -> None:
    add_session(ledger, hex32(1))
    add_session(ledger, hex32(2), requestor=ALICE)  # someone else's wallet
    add_session(ledger, hex32(3), chain_id=1)  # another chain
    add_session(ledger, hex32(4), escrow=ALICE)  # another escrow contract
    add_session(ledger, hex32(5))
    ledger.update_session(hex32(5), status="open")
    mine = dict(chain_id=1337, escrow=ESCROW)
    assert [s.session_id for s in ledger.sessions_of(REQUESTOR, **mine)] == [hex32(5), hex32(1)]
    assert [s.session_id for s in ledger.sessions_of(REQUESTOR, **mine, status="open")] == [hex32(5)]
    assert ledger.sessions_of(BOB, **mine) == []


def test_spent_and_settled(ledger: Ledger, session: str) -> None:
    for graph, status in enumerate(["pending", "submitted", "confirmed", "failed", "abandoned", "confirmed"], 1):
        add_graph(ledger, graph, payouts=[Payout(ALICE, 1.0, 0.0, BIG * graph, BIG * graph)], status=status)
    record = ledger.session(session)
    assert record.spent == BIG * (1 + 2 + 3 + 4 + 6)
    assert record.settled == BIG * (3 + 6)
    assert ledger.sessions()[0] == record


# -- agreements


def test_agreements(ledger: Ledger, session: str) -> None:
    prices = dict(price_per_cpu_second=BIG, price_per_gpu_second=2 * BIG, start_fee=0, gpus=1)
    ledger.record_agreement(session_id=session, provider=BOB, endpoint="127.0.0.1:7001", worker_name=BOB, **prices)
    ledger.record_agreement(
        session_id=session,
        provider=ALICE.lower(),
        endpoint="h:2",
        worker_name="a",
        status="active",
        agreement_id=bytes.fromhex(hex32(77)[2:]),
        **prices,
    )
    bob, alice = ledger.agreements(session)
    assert (bob.agreement_id, alice.agreement_id) == (None, hex32(77))  # what a release request names
    assert (bob.session_id, bob.provider, bob.endpoint, bob.worker_name) == (session, BOB, "127.0.0.1:7001", BOB)
    assert (bob.price_per_cpu_second, bob.price_per_gpu_second, bob.start_fee, bob.gpus) == (BIG, 2 * BIG, 0, 1)
    assert (bob.status, bob.reason, alice.provider, alice.status) == ("negotiating", None, ALICE, "active")

    ledger.update_agreement(session, BOB, status="rejected", reason="price below my offer")
    ledger.update_agreement(session, BOB, status="terminated")  # the reason given earlier stays
    bob = ledger.agreements(session)[0]
    assert (bob.status, bob.reason) == ("terminated", "price below my offer")
    assert bob.updated_at >= bob.created_at

    with pytest.raises(LedgerError, match="already has an agreement"):
        ledger.record_agreement(session_id=session, provider=BOB, endpoint="x", worker_name="y", **prices)
    with pytest.raises(LedgerError, match="record_session first"):
        ledger.record_agreement(session_id=hex32(99), provider=BOB, endpoint="x", worker_name="y", **prices)
    with pytest.raises(LedgerError, match="record_agreement first"):
        ledger.update_agreement(session, CAROL, status="active")
    assert ledger.agreements(hex32(99)) == []
    assert len(ledger.agreements(session)) == 2


def test_agreement_statuses_are_the_one_enum_given_as_member_or_value(ledger: Ledger, session: str) -> None:
    assert AGREEMENT_STATUSES == ("negotiating", "active", "rejected", "terminated", "failed")  # stored: never change
    assert AGREEMENT_STATUSES == tuple(AgreementStatus)
    add_agreement(ledger, BOB, session, status=AgreementStatus.ACTIVE)
    bob = ledger.agreements(session)[0]
    assert bob.status is AgreementStatus.ACTIVE and bob.status == "active"
    ledger.update_agreement(session, BOB, status=AgreementStatus.FAILED, reason="worker never joined")
    ledger.update_agreement(session, BOB, status="terminated")
    assert ledger.agreements(session)[0].status is AgreementStatus.TERMINATED
    assert raw(ledger.path, "SELECT status FROM agreements") == [("terminated",)]
    for bad in ("ended", "ACTIVE", 1, None):
        with pytest.raises(InvalidInput, match="agreement status"):
            ledger.update_agreement(session, BOB, status=bad)


# -- graphs


def test_graph_round_trip(ledger: Ledger, session: str) -> None:
    payouts = [Payout(BOB, 0.0, 2.5, BIG, BIG), Payout(ALICE.lower(), 3, 0.0, 2**64, 2**64 + 1)]
    ledger.record_graph(
        session_id=session, graph_id=hex32(5), n_tasks=7, result_root=bytes(range(32)), payouts=payouts, label="cell 3"
    )
    graph = ledger.graph(hex32(5))
    assert (graph.graph_id, graph.session_id, graph.label, graph.n_tasks) == (hex32(5), session, "cell 3", 7)
    assert graph.result_root == "0x" + bytes(range(32)).hex()
    assert graph.payouts == (Payout(BOB, 0.0, 2.5, BIG, BIG), Payout(ALICE, 3.0, 0.0, 2**64, 2**64 + 1))
    assert graph.total == BIG + 2**64
    assert (graph.status, graph.tx_hash, graph.block_number, graph.gas_used) == ("pending", None, None, None)
    assert (graph.error, graph.attempts, graph.created_at) == (None, 0, graph.updated_at)
    assert ledger.graph(hex32(6)) is None

    ledger.record_graph(session_id=session, graph_id=hex32(6), n_tasks=0, result_root=hex32(0), payouts=())
    assert (ledger.graph(hex32(6)).total, ledger.graph(hex32(6)).payouts) == (0, ())


def test_duplicate_graph_writes_nothing(ledger: Ledger, session: str) -> None:
    add_graph(ledger, 1)
    before = ledger.graph(hex32(1))
    with pytest.raises(LedgerError, match="already in the ledger"):
        add_graph(ledger, 1, payouts=[Payout(CAROL, 1.0, 0.0, 5, 5)], label="again")
    assert ledger.graph(hex32(1)) == before
    assert ledger.count_graphs() == 1
    assert ledger.provider_totals(session) == {ALICE: 10, BOB: BIG}


def test_record_graph_is_all_or_nothing(ledger: Ledger, session: str) -> None:
    # A trigger outside the ledger's control makes the second payout insert fail, mid-transaction.
    with sqlite3.connect(ledger.path) as connection:
        connection.execute(
            f"CREATE TRIGGER refuse_bob BEFORE INSERT ON payouts WHEN NEW.provider = '{BOB}'"
            " BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
        )
    with pytest.raises(LedgerError, match="nothing was written"):
        add_graph(ledger, 1)  # ALICE's payout goes in first, then BOB's is refused
    assert ledger.graph(hex32(1)) is None
    assert raw(ledger.path, "SELECT COUNT(*) FROM graphs") == [(0,)]
    assert raw(ledger.path, "SELECT COUNT(*) FROM payouts") == [(0,)]
    # The ledger is still usable, and the same graph id can be recorded once the cause is gone.
    add_graph(ledger, 1, payouts=[Payout(ALICE, 1.0, 0.0, 1, 1)])
    assert ledger.graph(hex32(1)).total == 1


def test_a_provider_paid_twice_in_one_graph_is_refused(ledger: Ledger, session: str) -> None:
    with pytest.raises(InvalidInput, match="two payouts for one provider"):
        add_graph(ledger, 1, payouts=[Payout(ALICE, 1.0, 0.0, 1, 1), Payout(ALICE.lower(), 1.0, 0.0, 2, 3)])
    assert raw(ledger.path, "SELECT (SELECT COUNT(*) FROM graphs) + (SELECT COUNT(*) FROM payouts)") == [(0,)]


def test_graph_of_an_unknown_session_is_refused(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="record_session first"):
        add_graph(ledger, 1)
    assert ledger.count_graphs() == 0


def test_graph_status_moves(ledger: Ledger, session: str) -> None:
    graph = add_graph(ledger, 1)
    ledger.update_graph(graph, status="submitted", tx_hash=hex32(70), attempts_increment=True)
    ledger.update_graph(graph, status="failed", error="replacement underpriced")
    ledger.update_graph(graph, status="pending")  # anything not final may move anywhere
    ledger.update_graph(graph, status="submitted", tx_hash=hex32(71), attempts_increment=True)
    ledger.update_graph(graph, status="confirmed", block_number=2**40, gas_used=123_456)
    record = ledger.graph(graph)
    assert (record.status, record.tx_hash) == ("confirmed", hex32(71))
    assert (record.block_number, record.gas_used) == (2**40, 123456)
    assert (record.attempts, record.error) == (2, "replacement underpriced")
    assert record.updated_at >= record.created_at

    other = add_graph(ledger, 2)
    ledger.update_graph(other, status="abandoned", error="session closed before settlement")
    for final in (graph, other):
        before = ledger.graph(final)
        for status in ("pending", "submitted", "confirmed", "failed", "abandoned"):
            with pytest.raises(LedgerError, match="final"):
                ledger.update_graph(final, status=status, attempts_increment=True)
        assert ledger.graph(final) == before
    with pytest.raises(LedgerError, match="record_graph first"):
        ledger.update_graph(hex32(99), status="submitted")


def test_a_graph_keeps_the_settlement_number_it_was_prepared_with(ledger: Ledger, session: str) -> None:
    graph = add_graph(ledger, 1)
    assert ledger.graph(graph).seq is None
    ledger.update_graph(graph, status="submitted", seq=7, attempts_increment=True)
    ledger.update_graph(graph, status="failed", error="node went away")  # None keeps it
    ledger.update_graph(graph, status="submitted", seq=7)  # the same number again: a retry
    with pytest.raises(LedgerError, match="settlement 7"):
        ledger.update_graph(graph, status="submitted", seq=8)
    with pytest.raises(InvalidInput):
        ledger.update_graph(graph, status="submitted", seq=-1)
    ledger.update_graph(graph, status="confirmed")
    assert (ledger.graph(graph).status, ledger.graph(graph).seq) == ("confirmed", 7)


def test_graphs_paging_filters_and_queue(ledger: Ledger) -> None:
    add_session(ledger, hex32(1))
    add_session(ledger, hex32(2))
    statuses = ["pending", "confirmed", "failed", "submitted", "abandoned", "pending"]
    for graph, status in enumerate(statuses, 1):
        add_graph(ledger, graph, session_id=hex32(1 + graph % 2), status=status)

    assert [g.graph_id for g in ledger.graphs()] == [hex32(n) for n in (6, 5, 4, 3, 2, 1)]
    assert [g.graph_id for g in ledger.graphs(limit=2, offset=2)] == [hex32(4), hex32(3)]
    assert [g.graph_id for g in ledger.graphs(session_id=hex32(1))] == [hex32(6), hex32(4), hex32(2)]
    assert [g.graph_id for g in ledger.graphs(status="pending")] == [hex32(6), hex32(1)]
    assert [g.graph_id for g in ledger.graphs(hex32(2), status="pending")] == [hex32(1)]
    assert ledger.graphs(offset=6) == []
    assert (ledger.count_graphs(), ledger.count_graphs(hex32(1)), ledger.count_graphs(status="pending")) == (6, 3, 2)
    assert ledger.count_graphs(hex32(2), "abandoned") == 1
    assert all(len(g.payouts) == 2 for g in ledger.graphs())

    assert [g.graph_id for g in ledger.unsettled_graphs()] == [hex32(n) for n in (1, 3, 4, 6)]  # oldest first
    assert [g.graph_id for g in ledger.unsettled_graphs(hex32(2))] == [hex32(1), hex32(3)]


def test_provider_totals_and_last_cumulative(ledger: Ledger, session: str) -> None:
    add_session(ledger, hex32(2))
    add_graph(ledger, 1, payouts=[Payout(ALICE, 1, 0, 2**70, 2**70), Payout(BOB, 1, 0, 3, 3)])
    add_graph(ledger, 2, payouts=[Payout(ALICE, 1, 0, 2**70, 2**71)], status="confirmed")
    add_graph(ledger, 3, payouts=[Payout(ALICE, 1, 0, 9, 2**71 + 9), Payout(BOB, 1, 0, 9, 12)], status="abandoned")
    add_graph(ledger, 4, session_id=hex32(2), payouts=[Payout(ALICE, 1, 0, 2**80, 2**80)])
    assert ledger.provider_totals(session) == {ALICE: 2**71, BOB: 3}  # abandoned graph 3 left out
    assert ledger.last_cumulative(session, ALICE) == 2**71 + 9  # as text, "9..." would sort above "2..."
    assert ledger.last_cumulative(session, BOB.lower()) == 12
    assert ledger.last_cumulative(session, CAROL) == 0
    assert ledger.provider_totals(hex32(3)) == {}


# -- validation


GOOD_PAYOUT = Payout(ALICE, 1.0, 0.0, 1, 1)


@pytest.mark.parametrize(
    "call",
    [
        lambda ledger: add_session(ledger, hex32(2), budget=-1),
        lambda ledger: add_session(ledger, hex32(2), budget=2**256),
        lambda ledger: add_session(ledger, hex32(2), budget=1.0),
        lambda ledger: add_session(ledger, hex32(2), budget=True),
        lambda ledger: add_session(ledger, hex32(2), budget="1"),
        lambda ledger: add_session(ledger, "0x1234"),
        lambda ledger: add_session(ledger, "0x" + "zz" * 32),
        lambda ledger: add_session(ledger, hex32(2), escrow="0x1234"),
        lambda ledger: add_session(ledger, hex32(2), requestor=TOKEN),
        lambda ledger: add_session(ledger, hex32(2), status="done"),
        lambda ledger: add_session(ledger, hex32(2), deadline=-5),
        lambda ledger: add_session(ledger, hex32(2), deadline=1.5e9),
        lambda ledger: add_session(ledger, hex32(2), network=""),
        lambda ledger: add_session(ledger, hex32(2), label=3),
        lambda ledger: add_graph(ledger, 2, payouts=[Payout(ALICE, 1.0, 0.0, -1, 1)]),
        lambda ledger: add_graph(ledger, 2, payouts=[Payout(ALICE, -1.0, 0.0, 1, 1)]),
        lambda ledger: add_graph(ledger, 2, payouts=[Payout(ALICE, float("nan"), 0.0, 1, 1)]),
        lambda ledger: add_graph(ledger, 2, payouts=[GOOD_PAYOUT, Payout(BOB, 1.0, 0.0, 1, -1)]),
        lambda ledger: add_graph(ledger, 2, payouts=[GOOD_PAYOUT, (BOB, 1.0, 0.0, 1, 1)]),
        lambda ledger: add_graph(ledger, 2, payouts=GOOD_PAYOUT),
        lambda ledger: add_graph(ledger, 2, n_tasks=-1),
        lambda ledger: add_graph(ledger, 2, status="done"),
        lambda ledger: add_graph(ledger, 2, result_root=b"short"),
        lambda ledger: ledger.update_session(SESSION, refund=-1),
        lambda ledger: ledger.update_graph(hex32(1), status="settled"),
        lambda ledger: ledger.update_graph(hex32(1), status="failed", gas_used=-1),
        lambda ledger: ledger.update_graph(hex32(1), status="failed", attempts_increment=1),
        lambda ledger: ledger.update_agreement(SESSION, ALICE, status="happy"),
        lambda ledger: add_agreement(ledger, BOB, price_per_cpu_second=-1),
        lambda ledger: add_agreement(ledger, BOB, gpus=-1),
        lambda ledger: add_agreement(ledger, BOB, endpoint=None),
        lambda ledger: ledger.graphs(limit=-1),
        lambda ledger: ledger.graphs(status="settled"),
        lambda ledger: ledger.sessions(offset=None),
    ],
)
def test_invalid_input_is_refused_before_anything_is_written(ledger: Ledger, session: str, call) -> None:
    add_graph(ledger, 1)
    add_agreement(ledger, ALICE)
    snapshot = (ledger.sessions(), ledger.graphs(), ledger.agreements(SESSION))
    with pytest.raises(InvalidInput):
        call(ledger)
    assert (ledger.sessions(), ledger.graphs(), ledger.agreements(SESSION)) == snapshot


# -- concurrency


def test_threads_write_concurrently_and_nothing_is_lost(ledger: Ledger, session: str) -> None:
    errors: list[BaseException] = []
    seen_partial: list[str] = []
    done = threading.Event()

    def write(thread: int) -> None:
        try:
            for i in range(50):
                add_graph(ledger, 1000 * thread + i)
        except BaseException as error:  # noqa: BLE001 (reported by the main thread)
            errors.append(error)

    def read() -> None:
        while not done.is_set():
            seen_partial.extend(g.graph_id for g in ledger.graphs(limit=20) if len(g.payouts) != 2)

    writers = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    reader = threading.Thread(target=read)
    for thread in [*writers, reader]:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()
    assert errors == [] and seen_partial == []
    assert ledger.count_graphs(session) == 400
    expected = [1000 * t + i for t in range(8) for i in range(50)]
    assert ledger.provider_totals(session) == {ALICE: sum(10 * g for g in expected), BOB: 400 * BIG}
    assert ledger.last_cumulative(session, BOB) == BIG * 7049


def test_connections_of_ended_threads_are_closed(ledger: Ledger) -> None:
    for _ in range(10):
        thread = threading.Thread(target=ledger.sessions)
        thread.start()
        thread.join()
    assert len(ledger._connections) <= 2  # this thread's, and at most the last worker's


def write_in_process(path: str, worker: int, n: int) -> None:
    """Run in a spawned process: its own session and ``n`` graphs, on a file others write too."""
    with Ledger(path) as ledger:
        add_session(ledger, hex32(worker))
        for i in range(n):
            add_graph(ledger, 1000 * worker + i, session_id=hex32(worker))


def test_processes_write_to_one_file_and_nothing_is_lost(path: Path) -> None:
    # Both start on a file that does not exist yet, so they race to create the schema too.
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=write_in_process, args=(str(path), w, 50)) for w in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    with Ledger(path) as ledger:
        assert ledger.count_graphs() == 100
        for w in (1, 2):
            assert ledger.count_graphs(hex32(w)) == 50
            assert ledger.session(hex32(w)).spent == sum(10 * (1000 * w + i) + BIG for i in range(50))


def test_a_forked_child_opens_its_own_connection(ledger: Ledger, session: str) -> None:
    add_graph(ledger, 1)
    child = multiprocessing.get_context("fork").Process(target=add_graph, args=(ledger, 2))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    add_graph(ledger, 3)  # the parent's connection still works
    assert ledger.count_graphs() == 3


def test_readers_see_only_committed_graphs(ledger: Ledger, session: str) -> None:
    inside, release = threading.Event(), threading.Event()

    def pause_at_payouts(statement: str) -> None:
        if statement.startswith("INSERT INTO payouts") and not inside.is_set():
            inside.set()  # the graph row is written, its payouts are not, nothing is committed
            release.wait(10)

    def write() -> None:
        ledger._connection().set_trace_callback(pause_at_payouts)
        add_graph(ledger, 1)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert inside.wait(10)
        with Ledger(ledger.path) as reader:  # another connection, as a server extension would have
            assert reader.graph(hex32(1)) is None
            assert (reader.graphs(), reader.count_graphs(), reader.unsettled_graphs()) == ([], 0, [])
            assert reader.session(session).spent == 0
    finally:
        release.set()
        writer.join()
    with Ledger(ledger.path) as reader:
        assert len(reader.graph(hex32(1)).payouts) == 2
        assert reader.session(session).spent == 10 + BIG


# -- runs

RUN = hex32(500)


def add_run(ledger: Ledger, run_id: str = RUN, **overrides) -> str:
    fields = dict(run_id=run_id, notebook="train.ipynb", output="train.out.ipynb", kernel="golem", parameters={})
    ledger.record_run(**(fields | overrides))
    return run_id


def test_run_round_trip(ledger: Ledger) -> None:
    before = time.time()
    parameters = {"epochs": 3, "lr": 0.5, "name": "x", "day": datetime.date(2024, 5, 6), "nested": {"a": [1, None]}}
    add_run(ledger, RUN.upper().replace("0X", "0x"), parameters=parameters, network="devnet", budget=BIG)
    run = ledger.run(RUN)
    assert (run.run_id, run.notebook, run.output, run.kernel) == (RUN, "train.ipynb", "train.out.ipynb", "golem")
    assert run.parameters == {"epochs": 3, "lr": 0.5, "name": "x", "day": "2024-05-06", "nested": {"a": [1, None]}}
    assert (run.network, run.budget, run.status, run.exit_code, run.error) == ("devnet", BIG, "running", None, None)
    assert (run.finished_at, run.spent, run.settled, run.sessions) == (None, 0, 0, 0)
    assert before <= run.created_at == run.updated_at <= time.time()
    assert raw(ledger.path, "SELECT parameters FROM runs") == [(json.dumps(parameters, sort_keys=True, default=str),)]

    ledger.finish_run(bytes.fromhex(RUN[2:]), status="failed", exit_code=1, error="cell 4 raised ValueError")
    run = ledger.run(RUN)
    assert (run.status, run.exit_code, run.error) == ("failed", 1, "cell 4 raised ValueError")
    assert run.created_at <= run.finished_at <= run.updated_at <= time.time()

    add_run(ledger, hex32(501))
    ledger.finish_run(hex32(501), status="succeeded", exit_code=0)
    other = ledger.run(hex32(501))
    assert (other.network, other.budget, other.parameters, other.status, other.error) == (
        None,
        None,
        {},
        "succeeded",
        None,
    )
    assert ledger.run(hex32(502)) is None
    assert RUN_STATUSES == ("running", "succeeded", "failed", "interrupted")


def test_runs_newest_first_with_paging(ledger: Ledger) -> None:
    for n in range(1, 6):
        add_run(ledger, hex32(n))
    assert [r.run_id for r in ledger.runs()] == [hex32(n) for n in (5, 4, 3, 2, 1)]
    assert [r.run_id for r in ledger.runs(limit=2, offset=1)] == [hex32(4), hex32(3)]
    assert ledger.runs(offset=5) == []


def test_a_run_is_recorded_and_finished_once(ledger: Ledger) -> None:
    add_run(ledger)
    with pytest.raises(LedgerError, match="already in the ledger"):
        add_run(ledger, notebook="other.ipynb")
    assert ledger.run(RUN).notebook == "train.ipynb"
    ledger.finish_run(RUN, status="interrupted", exit_code=130)
    before = ledger.run(RUN)
    for status in RUN_STATUSES[1:]:
        with pytest.raises(LedgerError, match="finished once"):
            ledger.finish_run(RUN, status=status, exit_code=0, error="again")
    assert ledger.run(RUN) == before
    with pytest.raises(LedgerError, match="record_run first"):
        ledger.finish_run(hex32(99), status="succeeded", exit_code=0)
    assert len(ledger.runs()) == 1


def test_spent_settled_and_sessions_of_a_run(ledger: Ledger) -> None:
    add_run(ledger)
    add_run(ledger, hex32(501))
    add_session(ledger, hex32(1), run_id=RUN)
    add_session(ledger, hex32(2), run_id=bytes.fromhex(RUN[2:]))
    add_session(ledger, hex32(3))  # no run: its graphs count for no run
    add_session(ledger, hex32(4), run_id=hex32(777))  # a run this ledger never saw
    statuses = ["pending", "confirmed", "abandoned", "submitted", "confirmed", "failed"]
    for graph, status in enumerate(statuses, 1):
        payouts = [Payout(ALICE, 1.0, 0.0, BIG * graph, BIG * graph)]
        add_graph(ledger, graph, session_id=hex32(1 + graph % 2), payouts=payouts)
        if status != "pending":
            ledger.update_graph(hex32(graph), status=status)
    add_graph(ledger, 7, session_id=hex32(3), status="confirmed")
    add_graph(ledger, 8, session_id=hex32(4), status="confirmed")

    run = ledger.run(RUN)
    assert run.sessions == 2
    assert run.spent == BIG * (1 + 2 + 4 + 5 + 6)  # graph 3 was abandoned
    assert run.settled == BIG * (2 + 5)
    assert run.spent == ledger.session(hex32(1)).spent + ledger.session(hex32(2)).spent
    assert ledger.runs()[1] == run
    assert (ledger.run(hex32(501)).spent, ledger.run(hex32(501)).settled, ledger.run(hex32(501)).sessions) == (0, 0, 0)

    assert ledger.session(hex32(1)).run_id == RUN
    assert ledger.session(hex32(3)).run_id is None
    assert ledger.session(hex32(4)).run_id == hex32(777)
    assert [s.session_id for s in ledger.sessions(run_id=RUN)] == [hex32(2), hex32(1)]
    assert [s.session_id for s in ledger.sessions(run_id=RUN, limit=1, offset=1)] == [hex32(1)]
    assert [s.session_id for s in ledger.sessions(run_id=hex32(777))] == [hex32(4)]
    assert ledger.sessions(run_id=hex32(501)) == []
    assert len(ledger.sessions()) == 4


@pytest.mark.parametrize(
    "call",
    [
        lambda ledger: add_run(ledger, hex32(2), parameters=None),
        lambda ledger: add_run(ledger, hex32(2), parameters=[("a", 1)]),
        lambda ledger: add_run(ledger, hex32(2), parameters={1: "a"}),
        lambda ledger: add_run(ledger, hex32(2), parameters={"a": {1: 2, "b": 3}}),  # keys json cannot sort
        lambda ledger: add_run(ledger, "0x1234"),
        lambda ledger: add_run(ledger, hex32(2), notebook=""),
        lambda ledger: add_run(ledger, hex32(2), output=None),
        lambda ledger: add_run(ledger, hex32(2), kernel=3),
        lambda ledger: add_run(ledger, hex32(2), network=""),
        lambda ledger: add_run(ledger, hex32(2), budget=-1),
        lambda ledger: add_run(ledger, hex32(2), budget=1.5),
        lambda ledger: ledger.finish_run(RUN, status="running", exit_code=0),
        lambda ledger: ledger.finish_run(RUN, status="done", exit_code=0),
        lambda ledger: ledger.finish_run(RUN, status="failed", exit_code=-1),
        lambda ledger: ledger.finish_run(RUN, status="failed", exit_code=256),
        lambda ledger: ledger.finish_run(RUN, status="failed", exit_code=1.0),
        lambda ledger: ledger.finish_run(RUN, status="failed", exit_code=True),
        lambda ledger: ledger.finish_run(RUN, status="failed", exit_code=None),
        lambda ledger: ledger.finish_run(RUN, status="failed", exit_code=1, error=7),
        lambda ledger: ledger.finish_run("run-1", status="failed", exit_code=1),
        lambda ledger: add_session(ledger, hex32(2), run_id="0x12"),
        lambda ledger: ledger.sessions(run_id="0x12"),
        lambda ledger: ledger.run(None),
        lambda ledger: ledger.runs(limit=-1),
    ],
)
def test_invalid_run_input_is_refused_before_anything_is_written(ledger: Ledger, session: str, call) -> None:
    add_run(ledger)
    snapshot = (ledger.runs(), ledger.sessions())
    with pytest.raises(InvalidInput):
        call(ledger)
    assert (ledger.runs(), ledger.sessions()) == snapshot


# -- upgrading a version 1 file

# The schema of version 1, exactly as golem-jupyter wrote it.
V1_SCHEMA = """
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL UNIQUE, network TEXT NOT NULL, chain_id INTEGER NOT NULL,
    escrow TEXT NOT NULL, requestor TEXT NOT NULL, token TEXT NOT NULL, budget TEXT NOT NULL,
    deadline INTEGER NOT NULL, tx_hash TEXT, status TEXT NOT NULL, label TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, close_tx TEXT, refund TEXT);
CREATE TABLE agreements (
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL REFERENCES sessions (session_id), provider TEXT NOT NULL,
    endpoint TEXT NOT NULL, price_per_cpu_second TEXT NOT NULL, price_per_gpu_second TEXT NOT NULL,
    start_fee TEXT NOT NULL, gpus INTEGER NOT NULL, worker_name TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, UNIQUE (session_id, provider));
CREATE TABLE graphs (
    id INTEGER PRIMARY KEY, graph_id TEXT NOT NULL UNIQUE, session_id TEXT NOT NULL REFERENCES sessions (session_id),
    label TEXT, n_tasks INTEGER NOT NULL, result_root TEXT NOT NULL, total TEXT NOT NULL, status TEXT NOT NULL,
    tx_hash TEXT, block_number INTEGER, gas_used INTEGER, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX graphs_by_session ON graphs (session_id, status);
CREATE INDEX graphs_by_status ON graphs (status);
CREATE TABLE payouts (
    graph_id TEXT NOT NULL REFERENCES graphs (graph_id), position INTEGER NOT NULL, provider TEXT NOT NULL,
    cpu_seconds REAL NOT NULL, gpu_seconds REAL NOT NULL, amount TEXT NOT NULL, cumulative TEXT NOT NULL,
    PRIMARY KEY (graph_id, position), UNIQUE (graph_id, provider));
"""


def write_v1_file(path: Path) -> None:
    """A ledger file as version 1 left it: WAL, one session with a confirmed graph paying BIG."""
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.executescript(V1_SCHEMA)
        connection.execute(
            "INSERT INTO sessions (session_id, network, chain_id, escrow, requestor, token, budget, deadline,"
            " status, label, created_at, updated_at) VALUES (?, 'devnet', 1337, ?, ?, ?, ?, 1900000000, 'open',"
            " 'old', 1.0, 2.0)",
            (SESSION, ESCROW, REQUESTOR, TOKEN, str(BIG)),
        )
        connection.execute(
            "INSERT INTO graphs (graph_id, session_id, n_tasks, result_root, total, status, created_at, updated_at)"
            " VALUES (?, ?, 1, ?, ?, 'confirmed', 3.0, 3.0)",
            (hex32(1), SESSION, hex32(2), str(BIG)),
        )
        connection.execute(
            "INSERT INTO payouts VALUES (?, 0, ?, 1.0, 0.0, ?, ?)", (hex32(1), ALICE, str(BIG), str(BIG))
        )
        connection.execute("PRAGMA user_version = 1")
    connection.close()


def columns_and_indexes(path: Path) -> dict[str, list]:
    with sqlite3.connect(path) as connection:
        tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        shape = {t: connection.execute(f"PRAGMA table_info({t})").fetchall() for t in sorted(tables)}
        shape["indexes"] = sorted(
            connection.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'").fetchall()
        )
    connection.close()
    return shape


def test_a_version_1_file_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    old, new = tmp_path / "old.sqlite", tmp_path / "new.sqlite"
    write_v1_file(old)
    with Ledger(old) as ledger:
        session = ledger.session(SESSION)
        assert (session.label, session.budget, session.run_id, session.created_at) == ("old", BIG, None, 1.0)
        assert (session.spent, session.settled) == (BIG, BIG)
        assert ledger.graph(hex32(1)).payouts == (Payout(ALICE, 1.0, 0.0, BIG, BIG),)
        add_run(ledger)
        add_session(ledger, hex32(2), run_id=RUN)
        assert ledger.run(RUN).sessions == 1
        assert [s.session_id for s in ledger.sessions(run_id=RUN)] == [hex32(2)]
    assert raw(old, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    Ledger(new).close()
    assert columns_and_indexes(old) == columns_and_indexes(new)  # upgraded or new, one schema
    with Ledger(old) as again:  # opening it again changes nothing
        assert len(again.sessions()) == 2
    assert raw(old, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def open_and_record_run(path: str, worker: int, ready) -> None:
    """Run in a spawned process: wait for the other, then open a version 1 file and record a run."""
    ready.wait(30)
    with Ledger(path) as ledger:
        add_run(ledger, hex32(worker))
        add_session(ledger, hex32(worker), run_id=hex32(worker))


def test_processes_upgrade_one_file_at_once(path: Path) -> None:
    write_v1_file(path)
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Barrier(2)
    workers = [spawn.Process(target=open_and_record_run, args=(str(path), w, ready)) for w in (11, 12)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    with Ledger(path) as ledger:
        assert [r.run_id for r in ledger.runs()] in ([hex32(12), hex32(11)], [hex32(11), hex32(12)])
        assert all(ledger.run(hex32(w)).sessions == 1 for w in (11, 12))
        assert ledger.session(SESSION).run_id is None
