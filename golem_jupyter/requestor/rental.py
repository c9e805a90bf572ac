"""One rented provider as a :class:`~distributed.deploy.spec.ProcessInterface`, and the offers to rent from.

A :class:`~.cluster.GolemCluster` is a ``SpecCluster`` whose worker spec names providers: each
spec entry is a :class:`Rental` of one offer, taken from the session's :class:`OfferPool`.
``Rental.start()`` follows DESIGN.md section 4: it negotiates (propose, accept with a CSR and the
exposure the provider asks to have allocated, confirm with a certificate from the session's CA),
waits until the provider's worker has joined the scheduler (held there by the scheduler's
:class:`~golem_jupyter.scheduler.gate.WorkerGate`, so no task reaches it yet), allocates the
provider's share of the deposit, waits for the provider to confirm it saw the allocation
on-chain, and only then admits the worker to tasks. ``close()`` lets the worker go and ends the
agreement. A rental that fails (a refusal, no answer, a worker that never joins, an allocation
the provider does not confirm) raises :class:`RentalFailed`; the cluster then puts the next offer
of the pool in its place. A provider whose worker never joins was allocated nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from distributed.core import Status
from distributed.deploy.spec import ProcessInterface

from ..chain.registry import Offer
from ..errors import GolemError, MarketError
from ..market.agreements import AgreementStatus
from ..market.certificates import Role
from ..market.messages import Rejection
from ..market.pricing import Tariff
from .payments import Account

if TYPE_CHECKING:
    from .cluster import GolemCluster

logger = logging.getLogger(__name__)

JOIN_POLL_SECONDS = 0.05
WHY_IT_ENDED_SECONDS = 15.0
"""How long to keep asking a provider why its worker ended (its agent sees the exit a moment
after the scheduler does)."""


class RentalFailed(MarketError):
    """A provider could not be rented: it refused, did not answer, or its worker never joined."""

    def __init__(self, provider: str, reason: str) -> None:
        self.provider = provider
        self.reason = reason
        super().__init__(f"{provider} {reason}")


class OfferPool:
    """The session's acceptable offers, best first; each is rented by at most one rental at a time.

    An offer whose rental failed is not tried again in this session; one whose rental was let go
    (scaled down) may be rented again.
    """

    def __init__(self, ranked: list[Offer]) -> None:
        self.ranked = list(ranked)
        self._taken: set[str] = set()
        self.failures: dict[str, str] = {}
        """Provider address to why its rental failed, in the order they failed."""

    def available(self) -> int:
        return sum(self._free(o) for o in self.ranked)

    def take(self) -> Offer | None:
        """The best offer that is neither rented nor failed, now taken; None when there is none."""
        for offer in self.ranked:
            if self._free(offer):
                self._taken.add(offer.provider)
                return offer
        return None

    def give_back(self, offer: Offer) -> None:
        self._taken.discard(offer.provider)

    def fail(self, offer: Offer, reason: str) -> None:
        self._taken.discard(offer.provider)
        self.failures[offer.provider] = reason

    def _free(self, offer: Offer) -> bool:
        return offer.provider not in self._taken and offer.provider not in self.failures


class Rental(ProcessInterface):
    """One provider's worker in the session, from the first proposal to the end of the agreement.

    ``status`` is the process's (distributed's :class:`~distributed.core.Status`, as for every
    spec worker); ``agreement`` is where the agreement stands (:class:`AgreementStatus`).
    """

    def __init__(self, scheduler: str, *, name: str, offer: Offer, cluster: GolemCluster) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.name = name
        self.offer = offer
        self.cluster = cluster
        self.gpus = 1 if cluster.demand.gpu else 0
        self.tariff = Tariff.from_offer(offer, gpu=bool(self.gpus))
        self.agreement = AgreementStatus.NEGOTIATING
        self.account: Account | None = None
        self.worker_left = False
        """Its worker left the scheduler (killed, or its provider stopped serving)."""
        self.fault: str | None = None
        """Why it was dropped, when verification outvoted one of its results (it was reported)."""
        self.ended_because: str | None = None
        """Why the provider says its worker ended, once asked (e.g. past its memory limit)."""

    @property
    def provider(self) -> str:
        return self.offer.provider

    @property
    def serving(self) -> bool:
        """The agreement is active and its worker joined."""
        return self.status == Status.running and self.agreement == AgreementStatus.ACTIVE and not self.worker_left

    @property
    def cumulative(self) -> int:
        return self.account.cumulative if self.account else 0

    @property
    def compute_seconds(self) -> float:
        return self.account.compute_seconds if self.account else 0.0

    async def start(self) -> None:
        try:
            await self._negotiate()
            await self._wait_for_worker()
            await self.cluster.payments.back(self.account)  # its share of the deposit, confirmed on-chain
            await self.cluster.scheduler_comm.golem_admit(name=self.provider)
        except BaseException as error:
            self.status = Status.failed
            reason = f"refused ({error.code}): {error}" if isinstance(error, Rejection) else str(error)
            self.cluster.pool.fail(self.offer, reason)
            self.cluster._log(f"Provider {self.provider} was not rented: {reason}")
            await self._end(AgreementStatus.FAILED, reason)
            if isinstance(error, GolemError):
                raise RentalFailed(self.provider, reason) from error
            raise
        await super().start()
        self.cluster._log(f"Rented {self.provider} at {self.offer.endpoint} ({self.tariff.cpu_second} wei/CPU-s)")

    async def _negotiate(self) -> None:
        cluster, offer = self.cluster, self.offer
        session = cluster.session
        accept = await cluster.negotiator.request(
            offer.endpoint,
            offer.provider,
            "propose",
            {
                "sessionId": session.session_id,
                "escrow": session.chain.escrow.address,
                "chainId": session.chain.network.chain_id,
                "pricePerCpuSecond": self.tariff.cpu_second,
                "pricePerGpuSecond": self.tariff.gpu_second,
                "startFee": self.tariff.start_fee,
                "gpus": self.gpus,
                "schedulerAddress": self.scheduler,
                "caCertificate": cluster.ca.certificate_pem,
                "deadline": session.deadline,
            },
        )
        agreement_id = accept.body["agreementId"]
        exposure = accept.body.get("exposure", 0)
        certificate = cluster.ca.issue(accept.body["csr"], common_name=offer.provider, role=Role.WORKER)
        await asyncio.to_thread(
            session.ledger.record_agreement,
            session_id=session.session_id,
            provider=offer.provider,
            endpoint=offer.endpoint,
            price_per_cpu_second=self.tariff.cpu_second,
            price_per_gpu_second=self.tariff.gpu_second,
            start_fee=self.tariff.start_fee,
            gpus=self.gpus,
            worker_name=offer.provider,
            agreement_id=agreement_id,
        )
        self.account = Account(
            offer.provider, offer.endpoint, agreement_id, self.tariff, exposure=exposure, threads=offer.cpus
        )
        await cluster.payments.add(self.account)
        await cluster.negotiator.request(
            offer.endpoint,
            offer.provider,
            "confirm",
            {"agreementId": agreement_id, "certificate": certificate},
        )
        self.agreement = AgreementStatus.ACTIVE
        await asyncio.to_thread(
            session.ledger.update_agreement, session.session_id, offer.provider, status=AgreementStatus.ACTIVE
        )

    async def _wait_for_worker(self) -> None:
        """Until the scheduler lists a worker named after the provider (its certificate says so too)."""
        timeout = self.cluster.join_timeout
        deadline = time.monotonic() + timeout
        while not self._joined():
            if time.monotonic() > deadline:
                raise MarketError(
                    f"accepted, but its worker did not join within {timeout:.0f} s (it could not reach the scheduler)"
                )
            await asyncio.sleep(JOIN_POLL_SECONDS)

    async def ask_why_it_left(self) -> str | None:
        """Ask the provider why its worker ended, as its agent recorded it (the kernel's OOM killer
        and the memory limit, a payment verdict, an exit code); log it and keep it in
        :attr:`ended_because`. The provider's word, for the user: nothing is decided on it."""
        if self.account is None:
            return None
        deadline = time.monotonic() + WHY_IT_ENDED_SECONDS
        while time.monotonic() < deadline:
            try:
                answer = await self.cluster.negotiator.request(
                    self.offer.endpoint, self.provider, "status", {"agreementId": self.account.agreement_id}
                )
            except GolemError as error:
                logger.info("Provider %s did not say why its worker ended: %s", self.provider, error)
                return None
            state, *_, reason = answer.body["detail"].split("; ", 3)
            if state != AgreementStatus.ACTIVE and reason and not reason.startswith("voucher "):
                self.ended_because = reason
                self.cluster.lost_workers[self.provider] = reason
                self.cluster._log(f"Provider {self.provider} ended its worker: {reason}")
                return reason
            await asyncio.sleep(0.25)
        return None

    def _joined(self) -> bool:
        workers = self.cluster.scheduler_info.get("workers", {})
        return any(str(w.get("name")) == self.provider for w in workers.values())

    async def close(self) -> None:
        left_before = self.worker_left
        self.status = Status.closing  # its worker leaving from now on is the plan, not a loss
        if self.agreement == AgreementStatus.ACTIVE:
            cluster = self.cluster
            if cluster.status == Status.running and self._joined() and not left_before:
                try:  # move its results elsewhere first, as scaling down any Dask cluster does
                    await cluster.scheduler_comm.retire_workers(names=[self.provider], close_workers=True)
                except OSError as error:
                    logger.warning("Could not retire the worker of %s: %s", self.provider, error)
            if self.fault is not None:
                await self._end(AgreementStatus.FAILED, self.fault)
            elif left_before:
                await self._end(AgreementStatus.FAILED, "its worker left the scheduler")
            else:
                reason = "session closed" if cluster.status != Status.running else "scaled down"
                await self._end(AgreementStatus.TERMINATED, reason)
            cluster.pool.give_back(self.offer)
        await super().close()

    async def _end(self, status: AgreementStatus, reason: str) -> None:
        """Tell the provider the agreement is over (if it got that far) and record why."""
        if self.account is None:
            return
        was = self.agreement
        self.agreement = status
        if was == AgreementStatus.ACTIVE or status == AgreementStatus.FAILED:
            try:
                await self.cluster.negotiator.request(
                    self.offer.endpoint,
                    self.provider,
                    "terminate",
                    {"agreementId": self.account.agreement_id, "reason": reason[:200]},
                )
            except GolemError as error:
                logger.warning("Provider %s did not take the termination: %s", self.provider, error)
        session = self.cluster.session
        await asyncio.to_thread(
            session.ledger.update_agreement, session.session_id, self.provider, status=status, reason=reason
        )

    def __repr__(self) -> str:
        return f"<Rental {self.provider}: {self.agreement}, {self.status.name}>"
