"""``GolemCluster``: a Dask ``SpecCluster`` whose workers are rented from providers on the market.

>>> with GolemCluster(n_providers=2, budget=10**15) as cluster, Client(cluster) as client:
...     client.gather(client.map(inc, range(1000)))

It is shaped like distributed's own deployments (``deploy/spec.py``, ``subprocess.py``):

* the scheduler spec is a :class:`~.scheduler_process.SchedulerProcess`: a TLS scheduler with
  mutual authentication and a per-session CA, in its own process, with the meter plugin;
* each worker spec is a :class:`~.rental.Rental` of one offer from the session's
  :class:`~.rental.OfferPool` (the active offers that match the demand, ranked by price and
  reputation); a rental that fails is replaced by the next acceptable offer; a worker gets tasks
  only once its provider confirmed its allocation (:class:`~golem_jupyter.scheduler.gate.WorkerGate`);
* the deposit is an :class:`~.escrow_session.EscrowSession`, and the money loop (allocations,
  meter configuration, vouchers, settlement, releases) is :class:`~.payments.Payments`.

``close()`` settles what ran, lets every worker go, asks every provider for its signed release
and closes the escrow session: the rest of the deposit is back in the wallet within seconds.

So ``scale(n)`` rents or lets go of providers, ``adapt(minimum=, maximum=)`` does it as the load
asks, and the widget, ``get_logs``, ``dashboard_link``, context managers and async use work as in
every Dask cluster. Results pass through the restricted decoder (:mod:`golem_jupyter.trust`),
installed in this process for as long as a GolemCluster is open.
"""

from __future__ import annotations

import asyncio
import datetime
import html
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from distributed.core import Status
from distributed.deploy.spec import SpecCluster
from distributed.protocol.pickle import dumps
from eth_utils import to_checksum_address

from .. import trust
from ..chain import Chain
from ..chain.network import Network, resolve
from ..chain.types import NATIVE, new_id
from ..chain.wallet import Wallet, default_wallet
from ..errors import GolemError, InvalidInput, MarketError
from ..ledger import Ledger
from ..market.certificates import Role, SessionCA, security_for
from ..market.matching import Demand, offers_with_reputations
from ..scheduler.gate import WorkerGate
from .escrow_session import EscrowSession
from .negotiation import Negotiator
from .payments import Payments
from .rental import OfferPool, Rental, RentalFailed
from .scheduler_process import SchedulerProcess
from .verification import Fault, Verification

logger = logging.getLogger(__name__)

DEFAULT_SESSION_SECONDS = 24 * 3600
RUN_ID_ENV = "GOLEM_RUN_ID"
"""Set by ``golem run`` for its kernel: the run each session of that kernel belongs to."""


class GolemCluster(SpecCluster):
    """A Dask cluster of workers rented on the market and paid through the escrow.

    Parameters
    ----------
    n_providers:
        How many providers to rent (one worker each); ``scale`` and ``adapt`` change it later.
    gpu:
        Rent GPU providers; their workers offer the ``GPU`` resource.
    budget:
        The most this session may spend, in wei; deposited in the escrow. Closing the cluster
        refunds what was not paid at once (a provider that does not release its allocation keeps
        that allocation until the session's deadline and claim window are over).
    max_price_cpu, max_price_gpu:
        Offers above these prices (wei per second) are never contacted.
    sandbox:
        The weakest isolation acceptable for this session's code on a provider (DESIGN.md section 6):
        ``"bwrap"`` rents only providers that run each agreement's workers in a bubblewrap sandbox;
        ``"none"`` or ``None`` (the default) also rents those that run it unconfined (their operator
        passed ``--no-sandbox``). An offer that does not state its sandbox counts as ``"none"``.
        Offers are ranked and rented as the market states them: the tier is the provider's word.
    network:
        A JSON-RPC URL, a connection file or a :class:`Network`; ``None`` is the running devnet.
    wallet:
        The requestor's :class:`Wallet`; ``None`` takes ``$GOLEM_PRIVATE_KEY`` or, on a devnet,
        its first dev account.
    session_seconds:
        How long the session accepts work (its on-chain deadline is now plus this).
    timeout:
        How long a provider that accepted has for its worker to join before the next offer is
        rented in its place.
    label:
        What the ledger calls this session; each graph is labelled with the notebook cell that
        submitted it (the graph carries it: :mod:`golem_jupyter.notebook._cells`), or with this label
        outside a notebook.
    run_id:
        The ``golem run`` this session belongs to; default ``$GOLEM_RUN_ID``.
    verify:
        The fraction of tasks whose results are checked (DESIGN.md section 6): each task is drawn
        with this probability (randomness no provider sees), its result held back, the task run
        again under a fresh key on another provider, and the two compared (a referee decides a
        mismatch: a third provider, or this machine). A provider outvoted is reported on-chain,
        paid nothing for the graph, and replaced; its results are computed again elsewhere.
        ``0`` (the default) checks nothing and costs nothing. A cell's ``%%golem --verify F``
        overrides it for that cell.
    verify_rtol, verify_atol:
        Tolerances for floating-point results (``None``: per dtype, see
        :func:`golem_jupyter.trust.compare`); integers, strings and other values compare exactly.
    allow_reported:
        Rent providers this ledger recorded a fault of, too (by default they are not rented again).
    quiet:
        Kept for compatibility: status goes to :mod:`logging` and ``get_logs()``, never to print.
    """

    def __init__(
        self,
        n_providers: int = 2,
        *,
        gpu: bool = False,
        budget: int,
        max_price_cpu: int | None = None,
        max_price_gpu: int | None = None,
        sandbox: str | None = None,
        network: Network | str | None = None,
        wallet: Wallet | None = None,
        min_memory: int = 0,
        session_seconds: int = DEFAULT_SESSION_SECONDS,
        scheduler_host: str = "127.0.0.1",
        timeout: float = 60.0,
        dashboard: bool = False,
        ledger: Ledger | None = None,
        label: str | None = None,
        run_id: str | None = None,
        verify: float = 0.0,
        verify_rtol: float | None = None,
        verify_atol: float | None = None,
        allow_reported: bool = False,
        asynchronous: bool = False,
        loop: Any = None,
        quiet: bool = False,
        name: str | None = None,
    ) -> None:
        if isinstance(n_providers, bool) or not isinstance(n_providers, int) or n_providers < 0:
            raise InvalidInput(f"n_providers must be a whole number of providers, got {n_providers!r}.")
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise InvalidInput(f"budget must be an integer amount of wei, got {budget!r}.")
        if budget <= 0:
            raise InvalidInput(f"A budget of {budget} wei cannot pay for any work; give a budget above zero (in wei).")
        self.verify = trust.Sampler(verify).fraction  # checked here, so a bad fraction fails before anything starts
        self.verify_rtol = verify_rtol
        self.verify_atol = verify_atol
        self.allow_reported = allow_reported
        self.verification: Verification | None = None
        self.faults: list[dict[str, Any]] = []
        """Providers reported in this session: provider, graph, task key, transaction, why."""
        self._reported: set[str] = set()
        self.n_providers = n_providers
        # The session always pays in the native currency (EscrowSession), so only offers priced in it fit.
        self.demand = Demand(
            gpu=gpu,
            max_price_cpu=max_price_cpu,
            max_price_gpu=max_price_gpu,
            min_memory=min_memory,
            sandbox=sandbox,
            token=NATIVE,
        )
        self.join_timeout = timeout
        self.ledger = ledger or Ledger()
        self.label = label
        self.run_id = run_id if run_id is not None else os.environ.get(RUN_ID_ENV) or None
        self._budget = budget
        self._network_spec = network
        self._wallet = wallet
        self._session_seconds = session_seconds
        self.chain: Chain | None = None
        self.session: EscrowSession | None = None
        self.payments: Payments | None = None
        self.negotiator: Negotiator | None = None
        self.pool = OfferPool([])
        self._offers_seen = 0
        self._refusals: list[str] = []
        self._left_out_reported: list[str] = []
        self.lost_workers: dict[str, str] = {}
        """Provider address -> why its worker ended during the session, as its provider said."""
        self._inquiries: set[asyncio.Future] = set()
        self._decoder_held = False
        self._workdir = Path(tempfile.mkdtemp(prefix="golem-session-"))
        self._session_id = new_id()
        self.ca = SessionCA.create(f"golem session 0x{self._session_id.hex()[:16]}")
        # Two directories: the scheduler process is handed its own key and never the client's.
        credentials = self._workdir / "tls"
        self.ca.write_credentials(credentials / "scheduler", "scheduler", role=Role.SCHEDULER)
        self.ca.write_credentials(credentials / "client", "client", role=Role.CLIENT)
        scheduler = {
            "cls": SchedulerProcess,
            "options": {
                "credentials": credentials / "scheduler",
                "workdir": self._workdir,
                "host": scheduler_host,
                "dashboard": dashboard,
            },
        }
        try:
            super().__init__(
                scheduler=scheduler,
                worker={"cls": Rental, "options": {}},  # new_worker_spec fills in the offer
                security=security_for(credentials / "client", "client"),
                asynchronous=asynchronous,
                loop=loop,
                name=name,
            )
        except BaseException:
            if not self.asynchronous:
                self._loop_runner.stop()
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise

    # ------------------------------------------------------------------ start

    async def _start(self) -> None:
        if self.status != Status.created:
            return await super()._start()
        scheduler: asyncio.Task | None = None
        try:
            trust.hold_decoder()
            self._decoder_held = True
            scheduler = asyncio.create_task(super()._start())  # the slowest part: overlap it with the chain
            await asyncio.to_thread(self._connect_and_rank)
            if self.pool.available() < self.n_providers:
                raise MarketError(self._shortage_message(self.n_providers))
            await asyncio.to_thread(self.session.open)
            self._log(f"Opened session 0x{self.session_id.hex()} with {self.budget} wei (tx {self.session.tx_hash})")
            await scheduler
            # Before any worker can join: each is held from tasks until its allocation is confirmed.
            await self.scheduler_comm.register_scheduler_plugin(
                plugin=dumps(WorkerGate()), name=WorkerGate.name, idempotent=True
            )
            await self.payments.start(self.scheduler_comm)
            self.verification = Verification(
                self.scheduler_comm, rtol=self.verify_rtol, atol=self.verify_atol, on_fault=self._on_fault
            )
            await self.verification.start(self.verify)
            for _ in range(self.n_providers):
                self.worker_spec.update(self.new_worker_spec())
        except BaseException:
            if scheduler is not None:
                await asyncio.gather(scheduler, return_exceptions=True)
            if self.status != Status.closed:
                self.status = Status.failed
                await self._close()
            raise

    def _connect_and_rank(self) -> None:
        network = resolve(self._network_spec)
        self.wallet = self._wallet or default_wallet(network)
        self.chain = Chain.connect(network, self.wallet)
        self.negotiator = Negotiator(self.wallet.account, network.chain_id)
        self.session = EscrowSession(
            self.chain,
            self.ledger,
            session_id=self._session_id,
            budget=self._budget,
            seconds=self._session_seconds,
            label=self.label,
            run_id=self.run_id,
        )
        self.payments = Payments(self.session, self.negotiator, label=self.label)
        ranked = offers_with_reputations(self.chain, self.demand)
        self._offers_seen = len(ranked)
        self._refusals = [r.reason for r in ranked if r.reason is not None]
        fitting = [r.offer for r in ranked if r.fits]
        # A provider this ledger recorded a wrong result of is not rented again unless the user asks.
        reported = {to_checksum_address(p) for p in self.ledger.reported_providers()}
        of_reported = [o for o in fitting if o.provider and to_checksum_address(o.provider) in reported]
        if of_reported and self.allow_reported:
            self._log(
                f"Renting {len(of_reported)} provider(s) this ledger recorded a wrong result of, as "
                f"allow_reported=True asks: {', '.join(o.provider for o in of_reported)}"
            )
        elif of_reported:
            fitting = [o for o in fitting if o not in of_reported]
            self._left_out_reported = [o.provider for o in of_reported]
            self._log(
                f"Left out {len(of_reported)} provider(s) this ledger recorded a wrong result of "
                f"(GolemCluster(allow_reported=True) rents them anyway): {', '.join(self._left_out_reported)}"
            )
        self.pool = OfferPool(fitting)

    def _shortage_message(self, wanted: int) -> str:
        kind = "GPU providers" if self.demand.gpu else "providers"
        sandbox = ", accept a weaker sandbox" if self.demand.sandbox else ""
        return (
            f"Asked for {wanted} {kind}, but only {len(self.pool.ranked)} of the {self._offers_seen} offers on the "
            f"market match (prices, GPUs, memory, sandbox, token){_refused(self._refusals)}. "
            f"Raise max_price_cpu/max_price_gpu{sandbox}, ask for fewer providers, "
            "or start more with `golem devnet --providers N`." + _left_out(self._left_out_reported)
        )

    # ------------------------------------------------------------------ the spec: one rental per provider

    def new_worker_spec(self) -> dict[str, dict[str, Any]]:
        """The next acceptable offer as a worker spec, named after its provider."""
        offer = self.pool.take()
        if offer is None:
            raise MarketError(self._shortage_message(len(self.worker_spec) + 1))
        return {offer.provider: {"cls": Rental, "options": {"offer": offer, "cluster": self}}}

    def scale(self, n: int = 0, memory: Any = None, cores: Any = None) -> Any:
        """Rent providers or let them go until ``n`` are serving this session.

        Asking for more providers than the market has acceptable offers rents what there is and
        says so in the log (``get_logs()``), as ``adapt`` needs; the start of a cluster, which
        needs its ``n_providers``, raises instead.
        """
        if self.status in (Status.running, Status.starting):
            possible = len(self.worker_spec) + self.pool.available()
            if n > possible:
                self._log(f"Asked for {n} providers; {self._shortage_message(n)}")
                n = possible
        for name in list(self.worker_spec)[n:] if n < len(self.worker_spec) else ():
            offer = self.worker_spec[name]["options"].get("offer")
            if name not in self.workers and offer is not None:
                self.pool.give_back(offer)  # never started: its offer is free again
        self.n_providers = n
        return super().scale(n, memory=memory, cores=cores)

    async def _correct_state_internal(self) -> None:
        """Start and stop rentals until they match the spec, renting the next offer for each that fails."""
        while True:
            try:
                await super()._correct_state_internal()
                return
            except RentalFailed:
                pass
            failed = [name for name, rental in self.workers.items() if rental.status == Status.failed]
            for name in failed:
                del self.workers[name]
                del self.worker_spec[name]
            wanted = len(self.worker_spec) + len(failed)
            while len(self.worker_spec) < wanted and self.pool.available():
                self.worker_spec.update(self.new_worker_spec())
            if len(self.worker_spec) < wanted:
                detail = "; ".join(f"{p} {why}" for p, why in self.pool.failures.items())
                raise MarketError(f"Could rent only {len(self.worker_spec)} of {wanted} providers ({detail}).")

    async def scale_down(self, workers: Any) -> None:
        for name in workers:  # offers let go are free to rent again
            if name in self.worker_spec:
                self.pool.give_back(self.worker_spec[name]["options"]["offer"])
        await super().scale_down(workers)

    def _update_worker_status(self, op: str, msg: Any) -> None:
        if op == "remove":  # a provider's worker left: its rental no longer serves
            rental = self.workers.get(str(self.scheduler_info["workers"].get(msg, {}).get("name")))
            if rental is not None and rental.status == Status.running:
                rental.worker_left = True
                task = asyncio.ensure_future(rental.ask_why_it_left())  # for the user's error message
                self._inquiries.add(task)
                task.add_done_callback(self._inquiries.discard)
        super()._update_worker_status(op, msg)

    @property
    def rentals(self) -> dict[str, Rental]:
        """The providers of this session now: provider address to its :class:`~.rental.Rental`."""
        return dict(self.workers)

    # ------------------------------------------------------------------ money

    @property
    def session_id(self) -> bytes:
        return self._session_id

    @property
    def budget(self) -> int:
        return self.session.budget if self.session else self._budget

    @property
    def deposit(self) -> int:
        """What the escrow holds for this session; ``budget`` may be set lower (see :meth:`set_budget`)."""
        return self.session.deposit if self.session else self._budget

    @property
    def deadline(self) -> int:
        return self.session.deadline

    @property
    def close_note(self) -> str:
        """What closing gave back, in a sentence (empty before the session is closed)."""
        return self.payments.close_note if self.payments is not None else ""

    @property
    def spent(self) -> int:
        """Recorded in graphs so far (what vouchers promise), start fees included."""
        return self.payments.spent if self.payments else 0

    @property
    def remaining(self) -> int:
        return self.budget - self.spent

    @property
    def graphs(self) -> list[dict[str, Any]]:
        """Every graph the meter priced, in the order it finished."""
        return self.payments.graphs if self.payments else []

    @property
    def budget_exceeded(self) -> bool:
        return bool(self.payments and self.payments.budget_exceeded)

    def set_budget(self, amount: int) -> None:
        """Change what this session may spend: above the deposit tops the escrow up (a transaction)."""
        if isinstance(amount, int) and not isinstance(amount, bool) and amount < self.spent:
            raise InvalidInput(
                f"This session has already spent {self.spent} wei; a budget of {amount} wei is below that."
            )
        tx_hash = self.session.raise_budget(amount)
        if tx_hash:
            self._log(f"Topped the session up to {amount} wei (tx {tx_hash})")
        self.sync(self.payments.configure)

    def cap_next_graphs(self, cap: int | None) -> None:
        """Let the graphs submitted from now on spend at most ``cap`` wei in total (None: up to the budget)."""
        self.payments.spending_cap = cap
        self.sync(self.payments.configure)

    def set_verify(self, fraction: float) -> None:
        """Check this fraction of the session's tasks from now on (a cell's ``--verify`` overrides it)."""
        self.verify = trust.Sampler(fraction).fraction
        if self.verification is not None:
            self.sync(self.verification.configure, self.verify)

    async def _on_fault(self, fault: Fault) -> None:
        """A provider was outvoted: report it on-chain, record it, and rent the next offer in its place.

        Once per provider: checks of its other tasks that were under way when it was caught may
        outvote it again, but it is dropped already (its workers are gone, it is paid nothing more)."""
        if fault.provider in self._reported:
            return
        self._reported.add(fault.provider)
        tx_hash, error = None, None
        if fault.graph_id is not None:
            try:
                receipt = await asyncio.to_thread(
                    self.chain.escrow.report_fault, self.session_id, bytes.fromhex(fault.graph_id), fault.provider,
                    fault.evidence,
                )  # fmt: skip
                tx_hash = receipt.tx_hash
            except GolemError as failure:
                error = str(failure)
                self._log(f"Could not report {fault.provider} on-chain: {failure}")
        reason = f"reported: a wrong result for task {fault.key[:60]}" + (f" (tx {tx_hash})" if tx_hash else "")
        self.faults.append(
            {"provider": fault.provider, "graph_id": fault.graph_id, "key": fault.key, "tx_hash": tx_hash,
             "error": error, "reason": reason}
        )  # fmt: skip
        self._log(f"Provider {fault.provider} returned a wrong result and was {reason}; it is replaced.")
        await asyncio.to_thread(
            self.ledger.record_fault, session_id=self.session_id, graph_id=fault.graph_id, provider=fault.provider,
            key=fault.key, evidence=fault.evidence, tx_hash=tx_hash,
        )  # fmt: skip
        rental = self.workers.get(fault.provider)
        if rental is not None:
            rental.fault = reason
            self.pool.fail(rental.offer, reason)
        if fault.provider in self.worker_spec and self.status == Status.running:
            del self.worker_spec[fault.provider]
            if self.pool.available():
                self.worker_spec.update(self.new_worker_spec())
            await self._correct_state()

    def wait_for_settlement(self, timeout: float | None = None) -> bool:
        """Block until every finished graph so far is confirmed on-chain, and every provider caught
        lying so far is reported there (``faults`` then holds each report's transaction)."""
        return self.sync(self._settled, timeout)

    def wait_for_reports(self, timeout: float | None = None) -> bool:
        """Block until every provider caught lying so far is reported on-chain and listed in ``faults``
        (a held result is released as soon as its verdict is in: a gather can return first)."""
        return self.sync(self._reports_done, timeout)

    async def _reports_done(self, timeout: float | None) -> bool:
        if self.verification is None:
            return True
        try:
            await asyncio.wait_for(self.verification.reported(), timeout)
        except TimeoutError:
            return False
        return True

    async def _settled(self, timeout: float | None) -> bool:
        start = time.monotonic()
        if not await self._reports_done(timeout):
            return False
        if self.payments is None:
            return True
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        return await self.payments.wait_for_settlement(left)

    # ------------------------------------------------------------------ close

    async def _close(self) -> None:
        """Settle what ran, end the agreements, stop the scheduler, then have the providers release their
        allocations and close the escrow session. Safe on a half-started cluster."""
        if self.status == Status.closed:
            return
        for inquiry in list(self._inquiries):  # why a worker ended matters no more
            inquiry.cancel()
        closing = self.payments is not None and self.status != Status.closing
        if self.verification is not None:
            await self.verification.close()  # checks under way end first: their graphs can then be priced
        if closing:
            await self.payments.finish()
        await super()._close()
        if closing:
            try:
                await self.payments.close_session()
            except GolemError as error:
                self._log(f"Could not close session 0x{self.session_id.hex()} on-chain: {error}")
        if self._decoder_held:
            trust.release_decoder()
            self._decoder_held = False
        shutil.rmtree(self._workdir, ignore_errors=True)

    # ------------------------------------------------------------------ display

    def _log(self, log: str) -> None:
        """Status for ``get_logs()`` and the widget, and :mod:`logging`; never ``print``."""
        self._cluster_manager_logs.append((datetime.datetime.now(), log))
        logger.info(log)

    def __repr__(self) -> str:
        serving = sum(r.serving for r in self.workers.values())
        return (
            f"GolemCluster({self.scheduler_address!r}, providers={serving}, "
            f"spent={self.spent} wei of {self.budget} wei, status={self.status.name})"
        )

    def _repr_html_(self, cluster_status: Any = None) -> str:
        rows = "".join(
            "<tr>"
            f"<td><code>{html.escape(r.provider)}</code></td><td>{html.escape(r.offer.endpoint)}</td>"
            f"<td>{r.tariff.cpu_second}</td><td>{r.tariff.gpu_second}</td>"
            f"<td>{r.compute_seconds:.2f}</td><td>{r.cumulative}</td><td>{html.escape(str(r.agreement))}</td>"
            "</tr>"
            for r in self.workers.values()
        )
        link = self.dashboard_link if self.scheduler_info.get("services") else ""
        dashboard = f' &middot; <a href="{html.escape(link)}" target="_blank">dashboard</a>' if link else ""
        session = f"session <code>0x{self.session_id.hex()}</code> &middot; " if self.session else ""
        return (
            f"<div><strong>GolemCluster</strong> {html.escape(self.scheduler_address)}{dashboard}<br>"
            f"{session}spent {self.spent} wei &middot; "
            f"remaining {self.remaining} wei of {self.budget} wei &middot; {len(self.graphs)} graph(s)"
            "<table><thead><tr><th>provider</th><th>endpoint</th><th>wei/CPU-s</th><th>wei/GPU-s</th>"
            "<th>compute s</th><th>paid (wei)</th><th>agreement</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>"
        )


def _left_out(reported: list[str]) -> str:
    """The shortage message's note on offers left out for a fault in this ledger; empty when none were."""
    if not reported:
        return ""
    return (
        f" {len(reported)} provider{'s were' if len(reported) != 1 else ' was'} left out because this ledger "
        f"recorded a wrong result of theirs; GolemCluster(allow_reported=True) rents them anyway."
    )


def _refused(reasons: list[str], shown: int = 3) -> str:
    """Why offers did not match, for the shortage message: the first few reasons, and how many more."""
    if not reasons:
        return ""
    more = f"; and {len(reasons) - shown} more" if len(reasons) > shown else ""
    return ": " + "; ".join(reasons[:shown]) + more
