"""Paying the providers of one session: graph by graph, as the scheduler's meter prices them.

:class:`Payments` keeps an :class:`Account` per provider ever rented in the session (a provider
that was let go is still paid for the late work it reports). It tells the meter in the
scheduler each provider's :class:`~golem_jupyter.market.pricing.Tariff` and the budget limit,
collects the graphs the meter finished, records each in the ledger, sends every provider a
cumulative voucher and hands the graph to the :class:`~.settlement.Settler`, which settles it
on-chain off the notebook's critical path.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from distributed.core import rpc

from ..errors import GolemError
from ..ledger import Payout
from ..market.pricing import Tariff
from .escrow_session import EscrowSession
from .negotiation import Negotiator
from .settlement import Settler

logger = logging.getLogger(__name__)

GRAPH_POLL_SECONDS = 1.0
FLUSH_TIMEOUT = 10.0
SETTLE_TIMEOUT = 60.0


@dataclass
class Account:
    """What one provider of the session is owed and was promised."""

    provider: str
    endpoint: str
    agreement_id: bytes
    tariff: Tariff
    cumulative: int = 0
    """What the vouchers sent so far promise in total (start fee included)."""
    compute_seconds: float = 0.0
    voucher_error: str = ""


class Payments:
    """The session's money loop: meter configuration, graph collection, vouchers, settlement."""

    def __init__(self, session: EscrowSession, negotiator: Negotiator, *, label: str | None) -> None:
        self.session = session
        self.negotiator = negotiator
        self.label = label
        self.accounts: dict[str, Account] = {}
        self.spent = 0
        """Recorded in graphs so far (what vouchers promise), start fees included."""
        self.budget_exceeded = False
        self.graphs: list[dict[str, Any]] = []
        self._graph_added = threading.Condition()  # the kernel's thread waits on it for a cell's graph
        self.spending_cap: int | None = None
        self._graphs_seen = 0
        self._scheduler: rpc | None = None
        self._collector: asyncio.Task | None = None
        self._voucher_tasks: set[asyncio.Task] = set()
        self._settler: Settler | None = None

    @property
    def remaining(self) -> int:
        return self.session.budget - self.spent

    async def start(self, scheduler: rpc) -> None:
        """Configure the meter and start collecting the graphs it finishes."""
        self._scheduler = scheduler
        await self.configure()
        self._settler = Settler(self.session.chain.escrow, self.session.ledger, self.session.session_id)
        self._collector = asyncio.create_task(self._collect())

    async def add(self, account: Account) -> None:
        """A provider accepted: its tariff reaches the meter before its worker can run anything."""
        self.accounts[account.provider] = account
        await self.configure()

    async def configure(self) -> None:
        """Send the tariffs and the budget limit (less every start fee, which the meter does not see)."""
        if self._scheduler is None:
            return
        fees = sum(a.tariff.start_fee for a in self.accounts.values())
        limit = max(0, self.session.budget - fees)
        cap = None
        if self.spending_cap is not None:
            state = await self._scheduler.golem_meter_state()
            if int(state["spent"]) + self.spending_cap < limit:
                limit, cap = int(state["spent"]) + self.spending_cap, self.spending_cap
        prices = {p: a.tariff.to_wire() for p, a in self.accounts.items()}
        await self._scheduler.golem_configure(prices=prices, limit=limit, cap=cap)

    # ------------------------------------------------------------------ graphs

    def graph_with_output(self, key: str, timeout: float) -> dict[str, Any] | None:
        """The priced graph whose outputs include ``key``, waiting up to ``timeout`` seconds for it
        (from any thread but the cluster's event loop)."""
        deadline = time.monotonic() + timeout
        with self._graph_added:
            while True:
                for graph in reversed(self.graphs):
                    if key in graph.get("outputs", ()):
                        return graph
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._graph_added.wait(left)

    async def _collect(self) -> None:
        while True:
            try:
                finished = await self._scheduler.golem_finished_graphs(timeout=GRAPH_POLL_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 (the scheduler is gone: close() reports it)
                logger.warning("Lost the scheduler's meter: %s", error)
                return
            for graph in finished:
                await self._pay(graph)
                self._graphs_seen += 1

    async def _pay(self, graph: dict[str, Any]) -> None:
        graph_id = "0x" + graph["graph_id"]
        payouts: list[Payout] = []
        remaining = self.remaining
        for provider, usage in sorted(graph["payouts"].items()):
            account = self.accounts.get(provider)
            if account is None:
                continue
            amount = usage["amount"] + (account.tariff.start_fee if account.cumulative == 0 else 0)
            amount = min(amount, remaining)  # the deposit is the hard limit
            remaining -= amount
            if amount == 0:
                continue
            account.cumulative += amount
            account.compute_seconds += usage["cpu_seconds"] + usage["gpu_seconds"]
            payouts.append(Payout(provider, usage["cpu_seconds"], usage["gpu_seconds"], amount, account.cumulative))
        if graph["budget_exceeded"]:
            self.budget_exceeded = True
        total = sum(p.amount for p in payouts)
        paid = {p.provider: p.amount for p in payouts}
        with self._graph_added:
            self.graphs.append(
                {**graph, "graph_id": graph_id, "total": total, "paid": bool(payouts), "paid_amounts": paid}
            )
            self._graph_added.notify_all()
        if not payouts:
            return
        self.spent += total
        await asyncio.to_thread(
            self.session.ledger.record_graph,
            session_id=self.session.session_id,
            graph_id=graph_id,
            n_tasks=graph["n_tasks"],
            result_root=graph["result_root"],
            payouts=payouts,
            label=graph.get("cell") or self.label,
        )
        for payout in payouts:
            account = self.accounts[payout.provider]
            task = asyncio.create_task(self._send_voucher(graph_id, account, payout.cumulative))
            self._voucher_tasks.add(task)
            task.add_done_callback(self._voucher_tasks.discard)
        self._settler.submit(graph_id)

    async def _send_voucher(self, graph_id: str, account: Account, cumulative: int) -> None:
        voucher = self.session.chain.escrow.sign_voucher(self.session.session_id, account.provider, cumulative)
        try:
            await self.negotiator.request(
                account.endpoint,
                account.provider,
                "voucher",
                {
                    "agreementId": account.agreement_id,
                    "graphId": bytes.fromhex(graph_id[2:]),
                    "cumulativeAmount": cumulative,
                    "signature": voucher.signature,
                },
            )
        except GolemError as error:
            # A later voucher supersedes this one (they are cumulative); the chain settles anyway.
            account.voucher_error = str(error)
            logger.warning("Voucher to %s not delivered: %s", account.provider, error)

    async def vouchers_sent(self) -> None:
        """Wait until every voucher sent so far was delivered or given up on."""
        while self._voucher_tasks:
            await asyncio.gather(*self._voucher_tasks, return_exceptions=True)

    # ------------------------------------------------------------------ the end

    async def wait_for_settlement(self, timeout: float | None) -> bool:
        """Every graph the meter finished so far handed over, recorded and confirmed on-chain."""
        if self._settler is None:
            return True
        start = time.monotonic()
        while True:
            state = await self._scheduler.golem_meter_state()
            if state["open_graphs"] == 0 and state["finished_total"] == self._graphs_seen:
                break
            if timeout is not None and time.monotonic() - start > timeout:
                return False
            await asyncio.sleep(0.05)
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        return await asyncio.to_thread(self._settler.drain, left)

    async def finish(self) -> None:
        """Price what the meter still holds, pay it, deliver the vouchers, settle everything."""
        if self._collector is None:
            return
        try:
            await asyncio.wait_for(self._scheduler.golem_flush(), FLUSH_TIMEOUT)
            while batch := await self._scheduler.golem_finished_graphs(timeout=0):
                for graph in batch:
                    await self._pay(graph)
                    self._graphs_seen += 1
        except Exception as error:  # noqa: BLE001 (closing must go on: the providers hold vouchers)
            logger.warning("Could not read the last graphs from the meter: %s", error)
        self._collector.cancel()
        await asyncio.gather(self._collector, return_exceptions=True)
        self._collector = None
        await self.vouchers_sent()
        if self._settler is not None:
            settled = await asyncio.to_thread(self._settler.close, SETTLE_TIMEOUT)
            if not settled:
                logger.warning("Some graphs of this session are not settled yet; the ledger lists them as failed.")
