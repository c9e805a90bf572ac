"""``GolemCluster``: a Dask cluster whose workers are rented from providers on the market.

>>> with GolemCluster(n_providers=2, budget=10**15) as cluster, Client(cluster) as client:
...     client.gather(client.map(inc, range(1000)))

Starting one:

1. reads the active offers from the ProviderRegistry and ranks them against the demand
   (GPU or not, maximum prices, memory, reputation from escrow events);
2. starts a TLS scheduler with mutual authentication and a per-session CA, in its own process,
   with the :class:`~.metering.GraphMeter` plugin;
3. opens an escrow session holding the budget;
4. negotiates with the best providers (signed messages; a certificate for each worker) and
   waits until their workers have joined.

While it runs, every finished graph is priced by the meter, recorded in the ledger, paid with a
cumulative voucher to each provider and settled on-chain by the :class:`~.settlement.Settler`,
off the notebook's critical path. Results pass through the restricted decoder
(:mod:`.decoding`), installed in this process for as long as a GolemCluster is open.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed.core import Status, rpc
from distributed.deploy.cluster import Cluster

from .. import trust
from ..chain import Chain
from ..chain.network import Network, resolve
from ..chain.registry import Offer
from ..chain.types import new_id
from ..chain.wallet import KEY_ENV, Wallet
from ..errors import ConfigurationError, GolemError, InvalidInput, MarketError
from ..ledger import Ledger, Payout
from ..market.certificates import SessionCA, security_for
from ..market.matching import Demand, rank, reputations
from ..market.messages import Rejection
from . import labels
from .negotiation import Negotiator
from .settlement import Settler

logger = logging.getLogger(__name__)

SCHEDULER_START_TIMEOUT = 30.0
DEFAULT_SESSION_SECONDS = 24 * 3600
RUN_ID_ENV = "GOLEM_RUN_ID"
"""Set by ``golem run`` for its kernel: the run each session of that kernel belongs to."""
GRAPH_POLL_SECONDS = 1.0


@dataclass
class Rental:
    """One provider rented for this session."""

    offer: Offer
    agreement_id: bytes = b""
    status: str = "negotiating"
    cumulative: int = 0
    """What the vouchers sent so far promise in total (start fee included)."""
    compute_seconds: float = 0.0
    voucher_error: str = ""

    @property
    def provider(self) -> str:
        return self.offer.provider


class GolemCluster(Cluster):
    """A Dask cluster of workers rented on the market and paid through the escrow.

    Parameters
    ----------
    n_providers:
        How many providers to rent (one worker each).
    gpu:
        Rent GPU providers; their workers offer the ``GPU`` resource.
    budget:
        The most this session may spend, in wei; deposited in the escrow and refundable (less
        what was paid) after the session's deadline and claim window.
    max_price_cpu, max_price_gpu:
        Offers above these prices (wei per second) are never contacted.
    network:
        A JSON-RPC URL, a connection file or a :class:`Network`; ``None`` is the running devnet.
    wallet:
        The requestor's :class:`Wallet`; ``None`` takes ``$GOLEM_PRIVATE_KEY`` or, on a devnet,
        its first dev account.
    session_seconds:
        How long the session accepts work (its on-chain deadline is now plus this).
    label:
        What the ledger calls this session; each graph is labelled with the notebook cell that
        submitted it (see :mod:`.labels`), or with this label outside a notebook.
    run_id:
        The ``golem run`` this session belongs to; default ``$GOLEM_RUN_ID``.
    """

    def __init__(
        self,
        n_providers: int = 2,
        *,
        gpu: bool = False,
        budget: int,
        max_price_cpu: int | None = None,
        max_price_gpu: int | None = None,
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
        self.n_providers = n_providers
        self.demand = Demand(gpu=gpu, max_price_cpu=max_price_cpu, max_price_gpu=max_price_gpu, min_memory=min_memory)
        self.budget = budget
        self.deposit = budget
        """What the escrow holds for this session; ``budget`` may be set lower (see :meth:`set_budget`)."""
        self._spending_cap: int | None = None
        self._network_spec = network
        self._wallet = wallet
        self.session_seconds = session_seconds
        self.scheduler_host = scheduler_host
        self.timeout = timeout
        self.dashboard = dashboard
        self.ledger = ledger or Ledger()
        self.label = label
        self.run_id = run_id if run_id is not None else os.environ.get(RUN_ID_ENV) or None
        self.rentals: dict[str, Rental] = {}
        self.session_id = new_id()
        self.spent = 0
        """Recorded in graphs so far (what vouchers promise), start fees included."""
        self.budget_exceeded = False
        self.graphs: list[dict[str, Any]] = []
        self._graphs_seen = 0
        self.chain: Chain | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix="golem-session-"))
        self._scheduler_process: asyncio.subprocess.Process | None = None
        self._collector: asyncio.Task | None = None
        self._voucher_tasks: set[asyncio.Task] = set()
        self._settler: Settler | None = None
        self._negotiator: Negotiator | None = None
        self._ranked: list[Offer] = []
        self._decoder_installed = False
        super().__init__(asynchronous=asynchronous, loop=loop, quiet=quiet, name=name)
        if not self.asynchronous:
            self._loop_runner.start()
            self.sync(self._start)

    def __await__(self):
        async def _() -> GolemCluster:
            if self.status == Status.created:
                await self._start()
            return self

        return _().__await__()

    # ------------------------------------------------------------------ start

    async def _start(self) -> None:
        if self.status != Status.created:
            return
        self.status = Status.starting
        try:
            await self._start_session()
        except BaseException:
            await self._teardown()
            self.status = Status.failed
            raise

    async def _start_session(self) -> None:
        trust.hold_decoder()
        self._decoder_installed = True
        network = await asyncio.to_thread(resolve, self._network_spec)
        wallet = self._wallet or _default_wallet(network)
        self.chain = await asyncio.to_thread(Chain.connect, network, wallet)
        self.wallet = wallet
        self._negotiator = Negotiator(wallet.account, network.chain_id)
        ca = SessionCA.create(f"golem session 0x{self.session_id.hex()[:16]}")
        self._ca = ca
        credentials = self._workdir / "tls"
        ca.write_credentials(credentials, "scheduler")
        ca.write_credentials(credentials, "client")
        self.security = security_for(credentials, "client")
        # The scheduler takes the longest to start: overlap it with the chain work.
        scheduler = asyncio.create_task(self._start_scheduler(credentials))
        self._ranked = await asyncio.to_thread(self._rank_offers)
        if len(self._ranked) < self.n_providers:
            scheduler.cancel()
            raise MarketError(self._shortage_message())
        await asyncio.to_thread(self._open_session, network, wallet)
        address = await scheduler
        self.scheduler_comm = rpc(address, connection_args=self.security.get_connection_args("client"))
        await super()._start()
        await self._configure_meter()
        self._settler = Settler(self.chain.escrow, self.ledger, self.session_id)
        self._collector = asyncio.create_task(self._collect_graphs())
        await self._rent(self.n_providers)

    def _rank_offers(self) -> list[Offer]:
        offers = self.chain.registry.active_offers()
        self._offers_seen = offers
        known = reputations(self.chain.escrow, self.chain.network.deployed_at_block)
        return rank(offers, self.demand, known)

    def _shortage_message(self) -> str:
        kind = "GPU providers" if self.demand.gpu else "providers"
        seen = len(getattr(self, "_offers_seen", []))
        return (
            f"Asked for {self.n_providers} {kind}, but only {len(self._ranked)} of the {seen} offers on the market "
            "match (prices, GPUs, memory). Raise max_price_cpu/max_price_gpu, ask for fewer providers, "
            "or start more with `golem devnet --providers N`."
        )

    def _open_session(self, network: Network, wallet: Wallet) -> None:
        deadline = int(time.time()) + self.session_seconds
        self.deadline = deadline
        self.ledger.record_session(
            session_id=self.session_id,
            network=network.name,
            chain_id=network.chain_id,
            escrow=network.escrow,
            requestor=wallet.address,
            token="0x0000000000000000000000000000000000000000",
            budget=self.budget,
            deadline=deadline,
            label=self.label,
            run_id=self.run_id,
        )
        try:
            receipt = self.chain.escrow.open_session(self.session_id, self.budget, deadline)
        except GolemError as error:
            self.ledger.update_session(self.session_id, status="failed")
            raise GolemError(f"Could not open the escrow session: {error}") from error
        self.ledger.update_session(self.session_id, status="open", tx_hash=receipt.tx_hash)
        self._log(f"Opened session 0x{self.session_id.hex()} with {self.budget} wei (tx {receipt.tx_hash})")

    async def _start_scheduler(self, credentials: Path) -> str:
        scheduler_file = self._workdir / "scheduler.json"
        log = open(self._workdir / "scheduler.log", "ab")  # closed in _stop_scheduler
        self._scheduler_log = log
        command = [
            sys.executable,
            "-m",
            "golem_jupyter.scheduler",
            "--credentials",
            str(credentials),
            "--scheduler-file",
            str(scheduler_file),
            "--host",
            self.scheduler_host,
            "--parent-pid",
            str(os.getpid()),
        ]
        if self.dashboard:
            command.append("--dashboard")
        self._scheduler_process = await asyncio.create_subprocess_exec(
            *command, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + SCHEDULER_START_TIMEOUT
        while not scheduler_file.exists():
            if self._scheduler_process.returncode is not None or time.monotonic() > deadline:
                raise GolemError(
                    f"The session's scheduler did not start; its log is {self._workdir / 'scheduler.log'}."
                )
            await asyncio.sleep(0.05)
        return json.loads(scheduler_file.read_text())["address"]

    # ------------------------------------------------------------------ renting

    async def _rent(self, n: int) -> None:
        """Rent ``n`` more providers, best offers first, skipping those that refuse."""
        wanted = n
        candidates = [o for o in self._ranked if o.provider not in self.rentals]
        failures: list[str] = []
        while wanted > 0 and candidates:
            batch, candidates = candidates[:wanted], candidates[wanted:]
            results = await asyncio.gather(*(self._negotiate(offer) for offer in batch), return_exceptions=True)
            for offer, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, GolemError):
                        raise result
                    why = f"refused ({result.code}): {result}" if isinstance(result, Rejection) else str(result)
                    failures.append(f"{offer.provider} {why}")
                    self._log(f"Provider {offer.provider} was not rented: {why}")
                else:
                    wanted -= 1
        if wanted > 0:
            detail = "; ".join(failures) or "no more offers"
            raise MarketError(f"Could rent only {n - wanted} of {n} providers ({detail}).")
        names = [r.provider for r in self.rentals.values() if r.status == "running"]
        await self._wait_for_names(names)

    async def _negotiate(self, offer: Offer) -> Rental:
        rental = Rental(offer)
        gpus = 1 if self.demand.gpu else 0
        accept = await self._negotiator.request(
            offer.endpoint,
            offer.provider,
            "propose",
            {
                "sessionId": self.session_id,
                "escrow": self.chain.escrow.address,
                "chainId": self.chain.network.chain_id,
                "pricePerCpuSecond": offer.price_per_cpu_second,
                "pricePerGpuSecond": offer.price_per_gpu_second if gpus else 0,
                "startFee": offer.start_fee,
                "gpus": gpus,
                "schedulerAddress": self.scheduler_address,
                "caCertificate": self._ca.certificate_pem,
                "deadline": self.deadline,
            },
        )
        rental.agreement_id = accept.body["agreementId"]
        certificate = self._ca.issue(accept.body["csr"], common_name=offer.provider)
        await asyncio.to_thread(
            self.ledger.record_agreement,
            session_id=self.session_id,
            provider=offer.provider,
            endpoint=offer.endpoint,
            price_per_cpu_second=offer.price_per_cpu_second,
            price_per_gpu_second=offer.price_per_gpu_second if gpus else 0,
            start_fee=offer.start_fee,
            gpus=gpus,
            worker_name=offer.provider,
        )
        self.rentals[offer.provider] = rental
        # Prices and the budget limit reach the meter before the worker can run anything.
        await self._configure_meter()
        try:
            await self._negotiator.request(
                offer.endpoint,
                offer.provider,
                "confirm",
                {"agreementId": rental.agreement_id, "certificate": certificate},
            )
        except BaseException:
            rental.status = "failed"
            await asyncio.to_thread(self.ledger.update_agreement, self.session_id, offer.provider, status="failed")
            raise
        rental.status = "running"
        await asyncio.to_thread(self.ledger.update_agreement, self.session_id, offer.provider, status="active")
        self._log(f"Rented {offer.provider} at {offer.endpoint} ({offer.price_per_cpu_second} wei/CPU-s)")
        return rental

    async def _wait_for_names(self, names: list[str]) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            info = await self.scheduler_comm.identity()
            joined = {str(w["name"]) for w in info["workers"].values()}
            if set(names) <= joined:
                self.scheduler_info.update(info)
                return
            if time.monotonic() > deadline:
                missing = sorted(set(names) - joined)
                raise MarketError(
                    f"The workers of {', '.join(missing)} did not join within {self.timeout:.0f} s; "
                    "their providers accepted but could not connect to the scheduler."
                )
            await asyncio.sleep(0.05)

    async def _configure_meter(self) -> None:
        fees = sum(r.offer.start_fee for r in self.rentals.values())
        prices = {
            p: [r.offer.price_per_cpu_second, r.offer.price_per_gpu_second if self.demand.gpu else 0]
            for p, r in self.rentals.items()
        }
        limit = max(0, self.budget - fees)
        cap = None
        if self._spending_cap is not None:
            state = await self.scheduler_comm.golem_meter_state()
            if int(state["spent"]) + self._spending_cap < limit:
                limit, cap = int(state["spent"]) + self._spending_cap, self._spending_cap
        await self.scheduler_comm.golem_configure(prices=prices, limit=limit, cap=cap)

    def set_budget(self, amount: int) -> None:
        """Change what this session may spend: above the deposit tops the escrow up (a transaction)."""
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise InvalidInput(f"A budget must be a positive amount of wei, got {amount!r}.")
        if amount < self.spent:
            raise InvalidInput(
                f"This session has already spent {self.spent} wei; a budget of {amount} wei is below that."
            )
        if amount > self.deposit:
            receipt = self.chain.escrow.top_up(self.session_id, amount - self.deposit)
            self.deposit = amount
            self.ledger.update_session(self.session_id, budget=amount)
            self._log(f"Topped the session up to {amount} wei (tx {receipt.tx_hash})")
        self.budget = amount
        self.sync(self._configure_meter)

    def cap_next_graphs(self, cap: int | None) -> None:
        """Let the graphs submitted from now on spend at most ``cap`` wei in total (None: up to the budget)."""
        self._spending_cap = cap
        self.sync(self._configure_meter)

    # ------------------------------------------------------------------ graphs and payment

    async def _collect_graphs(self) -> None:
        while True:
            try:
                finished = await self.scheduler_comm.golem_finished_graphs(timeout=GRAPH_POLL_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 (the scheduler is gone: close() reports it)
                logger.warning("Lost the scheduler's meter: %s", error)
                return
            for graph in finished:
                await self._pay_graph(graph)
                self._graphs_seen += 1

    async def _pay_graph(self, graph: dict[str, Any]) -> None:
        graph_id = "0x" + graph["graph_id"]
        payouts: list[Payout] = []
        remaining = self.budget - self.spent
        for provider, usage in sorted(graph["payouts"].items()):
            rental = self.rentals.get(provider)
            if rental is None:
                continue
            amount = usage["amount"]
            if rental.cumulative == 0:
                amount += rental.offer.start_fee
            amount = min(amount, remaining)  # the deposit is the hard limit
            remaining -= amount
            if amount == 0:
                continue
            rental.cumulative += amount
            rental.compute_seconds += usage["cpu_seconds"] + usage["gpu_seconds"]
            payouts.append(Payout(provider, usage["cpu_seconds"], usage["gpu_seconds"], amount, rental.cumulative))
        if graph["budget_exceeded"]:
            self.budget_exceeded = True
        total = sum(p.amount for p in payouts)
        paid = {p.provider: p.amount for p in payouts}
        self.graphs.append({**graph, "graph_id": graph_id, "total": total, "paid": bool(payouts), "paid_amounts": paid})
        if not payouts:
            return
        self.spent += total
        await asyncio.to_thread(
            self.ledger.record_graph,
            session_id=self.session_id,
            graph_id=graph_id,
            n_tasks=graph["n_tasks"],
            result_root=graph["result_root"],
            payouts=payouts,
            label=labels.label_at(graph["started"]) or self.label,
        )
        for payout in payouts:
            task = asyncio.create_task(self._send_voucher(graph_id, self.rentals[payout.provider], payout.cumulative))
            self._voucher_tasks.add(task)
            task.add_done_callback(self._voucher_tasks.discard)
        self._settler.submit(graph_id)

    async def _send_voucher(self, graph_id: str, rental: Rental, cumulative: int) -> None:
        voucher = self.chain.escrow.sign_voucher(self.session_id, rental.provider, cumulative)
        try:
            await self._negotiator.request(
                rental.offer.endpoint,
                rental.provider,
                "voucher",
                {
                    "agreementId": rental.agreement_id,
                    "graphId": bytes.fromhex(graph_id[2:]),
                    "cumulativeAmount": cumulative,
                    "signature": voucher.signature,
                },
            )
        except GolemError as error:
            # A later voucher supersedes this one (they are cumulative); the chain settles anyway.
            rental.voucher_error = str(error)
            logger.warning("Voucher to %s not delivered: %s", rental.provider, error)

    # ------------------------------------------------------------------ scaling

    def scale(self, n: int) -> Any:
        """Rent providers or let them go until ``n`` are serving this session."""
        return self.sync(self._scale, n)

    async def _scale(self, n: int) -> None:
        running = [r for r in self.rentals.values() if r.status == "running"]
        if n > len(running):
            self.n_providers = n
            await self._rent(n - len(running))
        elif n < len(running):
            self.n_providers = n
            leaving = running[n:]
            await self.scheduler_comm.retire_workers(names=[r.provider for r in leaving], close_workers=True)
            await asyncio.gather(*(self._terminate(r, "scaled down") for r in leaving))

    async def _terminate(self, rental: Rental, reason: str) -> None:
        if rental.status != "running":
            return
        rental.status = "ended"
        try:
            await self._negotiator.request(
                rental.offer.endpoint,
                rental.provider,
                "terminate",
                {"agreementId": rental.agreement_id, "reason": reason},
            )
        except (GolemError, Rejection) as error:
            logger.warning("Provider %s did not take the termination: %s", rental.provider, error)
        await asyncio.to_thread(self.ledger.update_agreement, self.session_id, rental.provider, status="terminated")

    # ------------------------------------------------------------------ close

    async def _close(self) -> None:
        if self.status == Status.closed:
            return
        await self._teardown()
        await super()._close()

    async def _teardown(self) -> None:
        """Settle what ran, end the agreements, stop the scheduler. Safe to call on a half start."""
        if self.scheduler_comm is not None and self._collector is not None:
            try:
                await asyncio.wait_for(self.scheduler_comm.golem_flush(), 10)
                while batch := await self.scheduler_comm.golem_finished_graphs(timeout=0):
                    for graph in batch:
                        await self._pay_graph(graph)
                        self._graphs_seen += 1
            except Exception as error:  # noqa: BLE001 (closing must go on: the providers hold vouchers)
                logger.warning("Could not read the last graphs from the meter: %s", error)
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        if self._voucher_tasks:
            await asyncio.gather(*self._voucher_tasks, return_exceptions=True)
        if self._settler is not None:
            settled = await asyncio.to_thread(self._settler.close, 60.0)
            if not settled:
                logger.warning("Some graphs of this session are not settled yet; the ledger lists them as failed.")
        await asyncio.gather(*(self._terminate(r, "session closed") for r in list(self.rentals.values())))
        await self._stop_scheduler()
        if self._decoder_installed:
            trust.release_decoder()
            self._decoder_installed = False
        shutil.rmtree(self._workdir, ignore_errors=True)

    async def _stop_scheduler(self) -> None:
        process = self._scheduler_process
        if process is not None and process.returncode is None:
            if self.scheduler_comm is not None:
                try:
                    await asyncio.wait_for(self.scheduler_comm.terminate(), 5)
                except (OSError, TimeoutError):
                    pass  # already gone, or not answering: it is stopped below
            if process.returncode is None:
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        if getattr(self, "_scheduler_log", None) is not None:
            self._scheduler_log.close()

    # ------------------------------------------------------------------ display

    @property
    def remaining(self) -> int:
        return self.budget - self.spent

    def __repr__(self) -> str:
        running = sum(r.status == "running" for r in self.rentals.values())
        return (
            f"GolemCluster({self.scheduler_address!r}, providers={running}, "
            f"spent={self.spent} wei of {self.budget} wei, status={self.status.name})"
        )

    def _repr_html_(self, cluster_status: Any = None) -> str:
        rows = "".join(
            "<tr>"
            f"<td><code>{html.escape(r.provider)}</code></td><td>{html.escape(r.offer.endpoint)}</td>"
            f"<td>{r.offer.price_per_cpu_second}</td><td>{r.offer.price_per_gpu_second}</td>"
            f"<td>{r.compute_seconds:.2f}</td><td>{r.cumulative}</td><td>{html.escape(r.status)}</td>"
            "</tr>"
            for r in self.rentals.values()
        )
        link = self.dashboard_link
        dashboard = f' &middot; <a href="{html.escape(link)}" target="_blank">dashboard</a>' if link else ""
        return (
            f"<div><strong>GolemCluster</strong> {html.escape(self.scheduler_address)}{dashboard}<br>"
            f"session <code>0x{self.session_id.hex()}</code> &middot; spent {self.spent} wei &middot; "
            f"remaining {self.remaining} wei of {self.budget} wei &middot; {len(self.graphs)} graph(s)"
            "<table><thead><tr><th>provider</th><th>endpoint</th><th>wei/CPU-s</th><th>wei/GPU-s</th>"
            "<th>compute s</th><th>paid (wei)</th><th>status</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>"
        )

    def wait_for_settlement(self, timeout: float | None = None) -> bool:
        """Block until every finished graph so far is confirmed on-chain."""
        if self._settler is None:
            return True

        async def _drain() -> bool:
            start = time.monotonic()
            while True:  # every graph the meter finished has been handed over and recorded
                state = await self.scheduler_comm.golem_meter_state()
                if state["open_graphs"] == 0 and state["finished_total"] == self._graphs_seen:
                    break
                if timeout is not None and time.monotonic() - start > timeout:
                    return False
                await asyncio.sleep(0.05)
            left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
            return await asyncio.to_thread(self._settler.drain, left)

        return self.sync(_drain)


def _default_wallet(network: Network) -> Wallet:
    if os.environ.get(KEY_ENV):
        return Wallet.from_env()
    if network.accounts:
        return Wallet.from_key(network.accounts[0].private_key, "devnet account 0")
    raise ConfigurationError(
        f"No wallet given: pass wallet=Wallet.load(...) or set {KEY_ENV}. Only a devnet comes with funded accounts."
    )
