"""On-chain settlement of finished graphs, in order, off the notebook's critical path.

Graphs are recorded in the ledger (``pending``) before anything is sent, then settled one at a
time by a background thread with one ``settleGraph`` each. A failure (a reverted transaction,
an RPC node that went away) is recorded (``failed``, with the error) and retried with backoff;
the queue does not move past an unsettled graph, so nothing is ever lost or paid twice.

The escrow (version 2) takes a session's settlements strictly in order: each carries ``seq``, the
session's ``nextSeq``. A graph's ``seq`` is read from the contract at its first attempt and written
to the ledger *before* the transaction is sent, and every retry sends that same ``seq``: a retry of
a transaction that was in fact mined then reverts with ``GraphAlreadySettled`` (a replay), which
confirms the graph instead of settling it twice.

Each provider is settled *up to the graph's cumulative amount*: the amount sent is what the
cumulative voucher promises minus what the contract has already paid it, capped at the graph's
own amount. A provider that already claimed with a voucher (or released its allocation) is then
not paid twice. Amounts are drawn from the providers' allocations, which :class:`~.payments.Payments`
tops up before it promises anything; should an allocation still fall short (a top-up that did
not get through), the settler allocates the difference from the unallocated remainder first.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from ..chain.backends import EscrowBackend
from ..chain.errors import GraphAlreadySettled
from ..ledger import GraphRecord, Ledger

logger = logging.getLogger(__name__)

BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)

Listener = Callable[[str, str, str | None], None]
"""Called with (graph_id, status, tx_hash) whenever a graph's settlement status changes."""


class Settler:
    """Settles one session's graphs in the order they were queued."""

    def __init__(
        self, escrow: EscrowBackend, ledger: Ledger, session_id: bytes, on_update: Listener | None = None
    ) -> None:
        self.escrow = escrow
        self.ledger = ledger
        self.session_id = session_id
        self.on_update = on_update
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._idle = threading.Condition()
        self._outstanding = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="golem-settler", daemon=True)
        self._thread.start()

    def submit(self, graph_id: str) -> None:
        """Queue a graph already recorded in the ledger as ``pending``."""
        with self._idle:
            self._outstanding += 1
        self._queue.put(graph_id)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued graph is confirmed; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._outstanding == 0, timeout)

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def close(self, timeout: float = 30.0) -> bool:
        """Settle what is queued (up to ``timeout``), then stop; False if some graphs stay unsettled."""
        done = self.drain(timeout)
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(5)
        return done

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            graph_id = self._queue.get()
            if graph_id is None:
                return
            attempt = 0
            while not self._settle(graph_id):
                if self._stopping.is_set():
                    return  # stays 'failed' in the ledger; settled at the next resume
                self._stopping.wait(BACKOFF[min(attempt, len(BACKOFF) - 1)])
                attempt += 1
            with self._idle:
                self._outstanding -= 1
                self._idle.notify_all()

    def _settle(self, graph_id: str) -> bool:
        """One attempt; True once the graph is confirmed (or had nothing to pay)."""
        graph = self.ledger.graph(graph_id)
        if graph is None or graph.status in ("confirmed", "abandoned"):
            return True
        try:
            seq = graph.seq if graph.seq is not None else self.escrow.session(self.session_id).next_seq
            self.ledger.update_graph(graph_id, status="submitted", attempts_increment=True, seq=seq)
            payouts = self._amounts(graph)
            self._back(payouts)
            receipt = self.escrow.settle_graph(self.session_id, seq, graph_id, payouts, graph.result_root)
        except GraphAlreadySettled:
            # Only this settler settles the session, in order: settlement `seq` was this graph's
            # earlier attempt, mined although its answer was lost.
            self._update(graph, "confirmed", graph.tx_hash, note="already settled on-chain")
            return True
        except Exception as error:  # noqa: BLE001 (any failure is recorded and retried; the thread must live)
            logger.warning("Settling graph %s failed (will retry): %s", graph_id[:18], error)
            self.ledger.update_graph(graph_id, status="failed", error=str(error))
            self._notify(graph_id, "failed", None)
            return False
        self.ledger.update_graph(
            graph_id,
            status="confirmed",
            tx_hash=receipt.tx_hash,
            block_number=receipt.block_number,
            gas_used=receipt.gas_used,
        )
        self._notify(graph_id, "confirmed", receipt.tx_hash)
        return True

    def _amounts(self, graph: GraphRecord) -> dict[str, int]:
        amounts = {}
        for payout in graph.payouts:
            credited = self.escrow.paid(self.session_id, payout.provider)
            amounts[payout.provider] = max(0, min(payout.amount, payout.cumulative - credited))
        return amounts

    def _back(self, amounts: dict[str, int]) -> None:
        """Allocate what the providers' allocations lack for ``amounts`` (normally nothing)."""
        short = {}
        for provider, amount in amounts.items():
            if amount:
                allocation = self.escrow.allocation(self.session_id, provider)
                if not allocation.released and amount > allocation.available:
                    short[provider] = amount - allocation.available
        if short:
            logger.warning("Allocating %s before settling: the allocations fell short", short)
            self.escrow.allocate(self.session_id, short)

    def _update(self, graph: GraphRecord, status: str, tx_hash: str | None, note: str | None = None) -> None:
        self.ledger.update_graph(graph.graph_id, status=status, tx_hash=tx_hash, error=note)
        self._notify(graph.graph_id, status, tx_hash)

    def _notify(self, graph_id: str, status: str, tx_hash: str | None) -> None:
        if self.on_update is not None:
            try:
                self.on_update(graph_id, status, tx_hash)
            except Exception:  # a display callback must not stop settlement
                logger.exception("Settlement listener failed")
