"""Paying the providers of one session: graph by graph, as the scheduler's meter prices them.

:class:`Payments` keeps an :class:`Account` per provider ever rented in the session (a provider
that was let go is still paid for the late work it reports). It tells the meter in the
scheduler each provider's :class:`~golem_jupyter.market.pricing.Tariff` and the budget limit,
collects the graphs the meter finished, records each in the ledger, sends every provider a
cumulative voucher and hands the graph to the :class:`~.settlement.Settler`, which settles it
on-chain off the notebook's critical path.

Every provider is paid from its own allocation of the deposit (escrow version 2, DESIGN.md
sections 3 and 4). :meth:`Payments.back` allocates a provider's share once its worker joined (at
least the exposure the provider asked for in its acceptance; by default a tenth of the budget)
and has the provider confirm it saw it; before each graph's vouchers go out, allocations that
would run low are topped up, so every voucher a provider holds is backed on-chain. At the end,
:meth:`Payments.close_session` asks every provider for its signed release (final amount: its
last voucher), submits them and closes the session, so the rest of the deposit is back at once;
the allocation of a provider that does not release stays locked until the claim window ends,
and everything else is reclaimed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from distributed.core import rpc

from ..errors import GolemError, MarketError
from ..ledger import Payout
from ..market.pricing import Tariff
from . import closing
from .escrow_session import EscrowSession
from .negotiation import Negotiator
from .settlement import Settler

logger = logging.getLogger(__name__)

GRAPH_POLL_SECONDS = 1.0
FLUSH_TIMEOUT = 10.0
SETTLE_TIMEOUT = 60.0
ALLOCATION_SHARE = 10
"""A provider's allocation is made, and topped up, a tenth of the budget at a time (or the exposure
it asked for, if that is more); it is topped up when less than half of that is left beyond what its
vouchers promise."""


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
    exposure: int = 0
    """The allocation the provider asked for before it serves (0: it named none)."""
    allocated: int = 0
    """What this session allocated to the provider in the escrow, in total."""
    released: bool = False
    """The provider released its allocation (the session's end)."""
    threads: int = 0
    """The CPUs its offer states: the most threads its worker is paid for at once (0: no cap)."""
    release_error: str = ""


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
        self.closing: closing.Closing | None = None
        """What closing the session did (None until it is closed)."""
        self.close_note = ""
        """What closing the session gave back, in a sentence (empty until it is closed)."""

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

    def share(self, account: Account) -> int:
        """How much is allocated to ``account``'s provider at a time."""
        return max(account.exposure, self.session.budget // ALLOCATION_SHARE, 1)

    async def back(self, account: Account) -> None:
        """Allocate the provider's share (its worker joined) and have the provider confirm it saw it on-chain.

        Raises :class:`~golem_jupyter.errors.MarketError` when the deposit's unallocated remainder
        cannot cover the exposure the provider asked for, or when the provider does not confirm.
        """
        escrow = self.session.chain.escrow
        sid = self.session.session_id
        unallocated = (await asyncio.to_thread(escrow.session, sid)).unallocated
        amount = min(self.share(account), unallocated)
        if amount < max(account.exposure, 1):
            raise MarketError(
                f"asks for an allocation of {account.exposure} wei before it serves, but only {unallocated} wei of "
                "the session's deposit is unallocated; raise the budget"
            )
        await asyncio.to_thread(escrow.allocate, sid, {account.provider: amount})
        account.allocated += amount
        await self.negotiator.request(  # an "ack" says it saw the allocation on-chain; a refusal raises
            account.endpoint,
            account.provider,
            "allocated",
            {"agreementId": account.agreement_id, "amount": account.allocated},
        )

    async def _back_graph(self, shares: list[tuple[Account, dict[str, Any], int]]) -> None:
        """Top up the allocations ``shares`` (account, usage, amount) would run low on, before any voucher
        promises them; an amount no allocation can back (the deposit is allocated elsewhere) is cut."""
        needs: dict[str, tuple[int, int]] = {}
        for account, _, amount in shares:
            after = account.cumulative + amount
            if account.allocated - after < self.share(account) // 2:
                needs[account.provider] = (max(0, after - account.allocated), after + self.share(account))
        if not needs:
            return
        escrow = self.session.chain.escrow
        try:
            left = (await asyncio.to_thread(escrow.session, self.session.session_id)).unallocated
        except GolemError as error:  # the settler allocates what is missing when it can
            logger.warning("Could not read the session to top allocations up: %s", error)
            return
        top_ups: dict[str, int] = {}
        for i, (account, usage, amount) in enumerate(shares):  # first what the vouchers will promise
            if account.provider not in needs:
                continue
            must = needs[account.provider][0]
            if must > left:
                logger.warning(
                    "Only %d wei of the deposit can back %s's %d wei for this graph; it is paid %d wei less.",
                    left,
                    account.provider,
                    amount,
                    must - left,
                )
                shares[i] = (account, usage, amount - (must - left))
                must = left
            top_ups[account.provider] = must
            left -= must
        for account, _, _ in shares:  # then room for the work to come, as far as the deposit goes
            if account.provider in top_ups:
                room = needs[account.provider][1] - account.allocated - top_ups[account.provider]
                extra = min(max(0, room), left)
                top_ups[account.provider] += extra
                left -= extra
        top_ups = {p: a for p, a in top_ups.items() if a}
        if not top_ups:
            return
        try:
            await asyncio.to_thread(escrow.allocate, self.session.session_id, top_ups)
        except GolemError as error:
            logger.warning("Could not top allocations up (%s); the settler will allocate what is missing.", error)
            return
        for provider, amount in top_ups.items():
            self.accounts[provider].allocated += amount

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
        threads = {p: a.threads for p, a in self.accounts.items() if a.threads > 0}
        # Amounts as decimal strings: msgpack stops at 2**64 wei (18.4 ETH), budgets need not.
        await self._scheduler.golem_configure(
            prices=prices, limit=str(limit), cap=None if cap is None else str(cap), threads=threads
        )

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
        shares: list[tuple[Account, dict[str, Any], int]] = []
        for provider, usage in sorted(graph["payouts"].items()):
            account = self.accounts.get(provider)
            if account is None:
                continue
            amount = usage["amount"] + (account.tariff.start_fee if account.cumulative == 0 else 0)
            amount = min(amount, remaining)  # the budget is the hard limit
            remaining -= amount
            if amount:
                shares.append((account, usage, amount))
        await self._back_graph(shares)
        for account, usage, amount in shares:
            if amount == 0:
                continue
            provider = account.provider
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
            verification=graph.get("verification"),
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

    async def close_session(self) -> None:
        """Ask every provider for its signed release, submit them, and close the session (or, when some
        provider did not release, reclaim everything else); the ledger's session row says which."""
        session = self.session
        if session.tx_hash is None:
            return  # never opened
        sid = session.session_id
        await asyncio.to_thread(session.ledger.update_session, sid, status="closing")
        allocated = [a for a in self.accounts.values() if a.allocated and not a.released]
        refused = await closing.release_all(
            self.negotiator,
            session.chain,
            sid,
            (closing.Releasable(a.provider, a.endpoint, a.agreement_id, a.cumulative) for a in allocated),
        )
        for account in allocated:
            account.released = account.provider not in refused
            account.release_error = refused.get(account.provider, "")
        self.closing = await asyncio.to_thread(closing.finish, session.chain, session.ledger, sid, refused)
        self.close_note = self.closing.describe()

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
