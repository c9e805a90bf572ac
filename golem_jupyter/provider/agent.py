"""The provider agent: an offer on-chain, a negotiation server, one Dask worker per agreement.

``golem provider run`` builds a :class:`ProviderConfig` and runs :class:`ProviderAgent` under
trio. The agent

1. publishes (or updates) its offer in the ProviderRegistry, with the endpoint it listens on;
2. answers signed negotiation messages on TCP (:mod:`golem_jupyter.market.messages`): a
   ``propose`` is accepted only if the session exists on-chain, belongs to the sender, holds
   enough unallocated deposit and offers at least the provider's prices; the accept carries a
   CSR and the exposure the provider wants allocated, the requestor's ``confirm`` returns a
   certificate from its per-session CA, and the agent starts a ``dask worker`` that joins the
   requestor's TLS scheduler under the provider's address;
3. serves only against an allocation it has seen on-chain: the requestor's ``allocated`` is
   checked against the escrow (the allocation must cover the exposure asked for) before the
   agent answers ``ack``, and a worker that computes before that ends the agreement;
4. checks every voucher against its own meter (:mod:`.meter`) and against its allocation (it
   counts as paid only what the allocation backs), and stops serving a session that underpays
   or whose unpaid exposure passes its limit (:class:`.agreements.PaymentPolicy`);
5. at the end, signs the EIP-712 release of its allocation the requestor asks for if the final
   amount covers its own meter (``released``), and otherwise refuses; when an agreement ends
   unpaid (the requestor vanished, or was cut off, or a release was refused), claims on-chain
   with the last voucher, then withdraws what it earned.

Every request gets a signed answer; a bad one gets a ``reject`` with a reason code and a
sentence and changes nothing. One bad peer never stops the agent.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from ..chain import Chain
from ..chain.escrow import Allocation
from ..chain.network import Network
from ..chain.registry import Offer
from ..chain.types import NATIVE, as_address
from ..chain.vouchers import Voucher
from ..chain.wallet import Wallet
from ..errors import GolemError
from ..home import golem_home
from ..market.agreements import AgreementStatus
from ..market.certificates import CertificateError, certificate_common_name, make_key_and_csr, verify_issued_by
from ..market.messages import (
    MAX_MESSAGE_BYTES,
    TO_PROVIDER,
    Message,
    Reason,
    Rejection,
    ReplayGuard,
    decode_line,
    encode,
    sign_message,
    verify_message,
)
from ..market.pricing import Tariff
from ..worker.meter import read_meter
from ._connections import ConnectionLimits
from .agreements import Agreement, PaymentPolicy
from .gpu import detect_gpus
from .sandbox import default_sandbox, require_sandbox
from .workers import WorkerSpec, run_worker

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
CONFIRM_TIMEOUT = 30.0
"""Seconds a proposal stays open for its confirmation. It holds no worker slot meanwhile."""
"""How long an accepted proposal waits for the requestor's certificate."""
WATCH_INTERVAL = 0.25
MAX_CONNECTIONS = 256
"""Negotiation connections held at once; past it, the oldest still waiting for its request goes."""
MAX_CONNECTIONS_PER_ADDRESS = 32
"""Connections held at once from one IP address."""
MAX_OPEN_PROPOSALS = 2
"""Proposals one requestor may have accepted and not yet confirmed."""
MAX_PROPOSALS = 64
"""Open proposals of all requestors together; past it, the oldest is dropped."""
MAX_PROPOSALS_PER_MINUTE = 60
"""Proposals one requestor may send in a minute, withdrawn ones included."""
DEADLINE_MARGIN = 60
"""A session must run at least this many seconds more for a new agreement."""
ALLOCATION_REFRESH = 1.0
"""Seconds between two reads of an allocation that does not back the last voucher yet."""
RELEASE_WAIT = 5.0
"""How long a release request waits for the worker to stop, so that the meter is final."""
RELEASE_SUBMIT_WAIT = 30.0
"""How long, after signing a release, the agent waits for it on-chain before claiming with its voucher."""


@dataclass(frozen=True)
class ProviderConfig:
    """Everything a provider agent needs; prices in wei per second of compute."""

    wallet: Wallet
    network: Network | str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    price_per_cpu_second: int = 10**9
    price_per_gpu_second: int = 10**10
    start_fee: int = 0
    cpus: int = 1
    """Threads per worker."""
    gpus: int | None = None
    """GPUs offered; ``None`` offers what CuPy finds."""
    memory_bytes: int | None = None
    """Memory limit per worker; ``None`` splits the machine's memory over ``max_agreements``."""
    max_agreements: int = 4
    min_deposit_seconds: float = 10.0
    """A session's remaining deposit must cover the start fee plus this much compute."""
    policy: PaymentPolicy = field(default_factory=PaymentPolicy)
    claim_grace: float = 3.0
    """Seconds an ended agreement waits for the requestor's settlement before claiming."""
    work_dir: Path | None = None
    withdraw_offer_on_exit: bool = False
    ready_file: Path | None = None
    """Written (JSON: address, endpoint, pid) once the offer is published and the port is open."""
    sandbox: str = field(default_factory=default_sandbox)
    """What requestors' code runs in (:data:`.sandbox.SANDBOX_TIERS`): "bwrap" unless the operator
    chose "none" (here or with ``GOLEM_SANDBOX=none``); without bubblewrap, "bwrap" starts no worker."""
    lie_fraction: float | None = None
    """DEVNET ONLY: this agent's workers return wrong results for this fraction of their tasks
    (:mod:`golem_jupyter.worker._liar`), so that ``--verify`` has a liar to catch. Set only by
    ``golem devnet --liars`` (through :mod:`._devnet_liar`); ``golem provider run`` has no way to
    set it, and an agent refuses it on any chain but a devnet's."""


class ProviderAgent:
    """A running provider: see the module docstring."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.account = config.wallet.account
        self.address = config.wallet.address
        self.replay = ReplayGuard()
        self.agreements: dict[bytes, Agreement] = {}
        self.earned_claims: list[str] = []
        self.chain: Chain | None = None
        self.offer: Offer | None = None
        self.endpoint = ""
        self._nursery: trio.Nursery | None = None
        self._scopes: dict[bytes, trio.CancelScope] = {}
        self._shutting_down = False
        self._connections = ConnectionLimits(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS)
        self._proposed: dict[str, list[float]] = {}
        """Requestor -> when it proposed, for the last minute."""

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Publish the offer and serve until cancelled; then stop every worker cleanly.

        Raises :class:`.sandbox.SandboxUnavailable` before publishing anything when the sandbox
        chosen (``"bwrap"`` unless the operator said ``--no-sandbox``) cannot run here."""
        await trio.to_thread.run_sync(require_sandbox, self.config.sandbox)
        self.chain = await trio.to_thread.run_sync(Chain.connect, self.config.network, self.config.wallet)
        self.chain_id = self.chain.network.chain_id
        if self.config.lie_fraction is not None:
            if self.chain.network.name != "devnet":
                raise GolemError("A lying provider (lie_fraction) runs only on a devnet, for testing --verify.")
            logger.warning(
                "DEVNET LIAR: this provider's workers return WRONG results for %.0f%% of their tasks "
                "(golem devnet --liars). It exists to test --verify; never a real provider.",
                100 * self.config.lie_fraction,
            )
        self.work_dir = self.config.work_dir or golem_home() / "provider" / self.address
        self.work_dir.mkdir(parents=True, exist_ok=True)
        gpu = await trio.to_thread.run_sync(detect_gpus)
        self.gpus = gpu.count if self.config.gpus is None else self.config.gpus
        if self.gpus > gpu.count:
            raise GolemError(
                f"This machine has {gpu.count} GPU(s) that CuPy can use; it cannot offer {self.gpus}. "
                "Offer at most what it has."
            )
        self.gpu_model = gpu.model
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                listeners = await nursery.start(
                    partial(trio.serve_tcp, self._serve_connection, self.config.port, host=self.config.host)
                )
                port = listeners[0].socket.getsockname()[1]
                self.endpoint = f"{self.config.host}:{port}"
                self.offer = self._make_offer()
                await trio.to_thread.run_sync(self.chain.registry.publish_or_update, self.offer)
                logger.info("Offer published for %s at %s", self.address, self.endpoint)
                self._write_ready_file()
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self._on_exit()

    def _make_offer(self) -> Offer:
        memory = self._memory_per_worker()
        return Offer(
            endpoint=self.endpoint,
            price_per_cpu_second=self.config.price_per_cpu_second,
            price_per_gpu_second=self.config.price_per_gpu_second if self.gpus else 0,
            start_fee=self.config.start_fee,
            cpus=self.config.cpus,
            gpus=self.gpus,
            gpu_model=self.gpu_model if self.gpus else "",
            memory_bytes=memory,
            capabilities={
                "numpy": True,
                "cupy": bool(self.gpus),
                "max_agreements": self.config.max_agreements,
                "sandbox": self.config.sandbox,
                "token": NATIVE,  # prices are in the chain's own currency; sessions in others are refused
            },
        )

    def _memory_per_worker(self) -> int:
        if self.config.memory_bytes is not None:
            return self.config.memory_bytes
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return total // max(1, self.config.max_agreements)

    def _write_ready_file(self) -> None:
        if self.config.ready_file is None:
            return
        path = Path(self.config.ready_file)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"address": self.address, "endpoint": self.endpoint, "pid": os.getpid()}))
        os.replace(tmp, path)

    async def _on_exit(self) -> None:
        self._shutting_down = True
        if self.config.withdraw_offer_on_exit and self.chain is not None and self.offer is not None:
            try:
                await trio.to_thread.run_sync(self.chain.registry.withdraw)
                logger.info("Offer withdrawn.")
            except GolemError as error:
                logger.warning("Could not withdraw the offer: %s", error)

    # ------------------------------------------------------------------ the negotiation server

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        try:
            address = stream.socket.getpeername()[0]
        except OSError:  # gone already
            address = ""
        try:
            with self._connections.hold(address) as connection, trio.move_on_after(REQUEST_TIMEOUT):
                if connection is None:  # every connection held is busy with a request
                    return
                line = None  # stays None for a connection let go while it waited
                with connection.waiting_for_request():
                    line = await _read_line(stream, MAX_MESSAGE_BYTES)
                if line is None:
                    return
                reply = await self.respond(line)
                await stream.send_all(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:  # one connection never stops the server (trio's serve_tcp would re-raise it)
            logger.exception("Failed to serve a connection from %s", address)
        finally:
            await stream.aclose()

    async def respond(self, line: bytes) -> bytes:
        """The encoded, signed answer to one request line. Never raises for bad input."""
        claimed_sender = None
        try:
            wire = decode_line(line)
            claimed_sender = wire.get("sender")
            message = verify_message(
                wire, chain_id=self.chain_id, recipient=self.address, kinds=TO_PROVIDER, replay=self.replay
            )
            kind, body = await self._handle(message)
        except Rejection as rejection:
            logger.info("Rejected a message from %s: %s %s", claimed_sender, rejection.code, rejection.sentence)
            kind, body = "reject", rejection.to_body()
        except Exception:  # a bug must not take the server down; the peer hears INTERNAL
            logger.exception("Failed to handle a message from %s", claimed_sender)
            kind, body = "reject", Rejection(Reason.INTERNAL, "The provider failed to handle this message.").to_body()
        try:
            recipient = as_address(claimed_sender, "sender")
        except GolemError:
            # Nobody to sign for: an unsigned rejection, which carries no authority anyway.
            return encode({"kind": kind, "body": body})
        return encode(sign_message(self.account, chain_id=self.chain_id, kind=kind, recipient=recipient, body=body))

    async def _handle(self, message: Message) -> tuple[str, dict[str, Any]]:
        handler = {
            "propose": self._on_propose,
            "confirm": self._on_confirm,
            "allocated": self._on_allocated,
            "voucher": self._on_voucher,
            "release": self._on_release,
            "terminate": self._on_terminate,
            "status": self._on_status,
            "ping": self._on_ping,
        }.get(message.kind)
        if handler is None:
            raise Rejection(Reason.UNEXPECTED_KIND, f"A provider does not act on {message.kind} messages.")
        return await handler(message)

    async def _on_ping(self, message: Message) -> tuple[str, dict[str, Any]]:
        return "pong", {"endpoint": self.endpoint}

    async def _on_propose(self, message: Message) -> tuple[str, dict[str, Any]]:
        body = message.body
        if self._shutting_down:
            raise Rejection(Reason.SHUTTING_DOWN, "This provider is shutting down.")
        if body["chainId"] != self.chain_id or body["escrow"] != self.chain.escrow.address:
            raise Rejection(
                Reason.WRONG_CHAIN,
                f"This provider is paid by the escrow {self.chain.escrow.address} on chain {self.chain_id}.",
            )
        self._check_capacity()
        self._count_proposal(message.sender)
        open_proposals = self._open_proposals()
        if sum(a.requestor == message.sender for a in open_proposals) >= MAX_OPEN_PROPOSALS:
            raise Rejection(
                Reason.TOO_MANY_PROPOSALS,
                f"You have {MAX_OPEN_PROPOSALS} proposals open with this provider: confirm or let them expire "
                f"({CONFIRM_TIMEOUT:g} s) first.",
            )
        if body["gpus"] > self.gpus:
            raise Rejection(Reason.NO_GPU, f"This provider offers {self.gpus} GPU(s), not {body['gpus']}.")
        self._check_prices(body)
        exposure = await self._check_session(message.sender, body)
        agreement_id = os.urandom(32)
        directory = self.work_dir / "agreements" / agreement_id.hex()[:16]  # made on confirmation
        key_pem, csr_pem = make_key_and_csr(self.address)
        agreement = Agreement(
            agreement_id=agreement_id,
            session_id=body["sessionId"],
            requestor=message.sender,
            tariff=_tariff(body),
            gpus=body["gpus"],
            scheduler_address=body["schedulerAddress"],
            ca_certificate=body["caCertificate"],
            directory=directory,
            key_pem=key_pem,
            exposure=exposure,
        )
        for oldest in open_proposals[: max(0, len(open_proposals) + 1 - MAX_PROPOSALS)]:
            self._drop_proposal(oldest, "dropped: too many open proposals")
        self.agreements[agreement_id] = agreement
        self._nursery.start_soon(self._expire_proposal, agreement)
        logger.info("Accepted a proposal for session 0x%s from %s", body["sessionId"].hex(), message.sender)
        return "accept", {"agreementId": agreement_id, "csr": csr_pem, "exposure": exposure}

    def _check_prices(self, body: dict[str, Any]) -> None:
        wanted = (
            ("pricePerCpuSecond", self.config.price_per_cpu_second, "CPU-second"),
            ("pricePerGpuSecond", self.config.price_per_gpu_second if body["gpus"] else 0, "GPU-second"),
            ("startFee", self.config.start_fee, "start fee"),
        )
        for name, minimum, what in wanted:
            if body[name] < minimum:
                raise Rejection(
                    Reason.PRICE_TOO_LOW, f"The price per {what} offered, {body[name]} wei, is below {minimum} wei."
                )

    async def _check_session(self, requestor: str, body: dict[str, Any]) -> int:
        """Refuse a session this provider cannot be paid from; returns the exposure it asks to have allocated."""
        session = await trio.to_thread.run_sync(self.chain.escrow.session, body["sessionId"])
        session_hex = "0x" + body["sessionId"].hex()
        if not session.exists:
            raise Rejection(Reason.SESSION_NOT_FOUND, f"Session {session_hex} does not exist on chain {self.chain_id}.")
        if session.closed:
            raise Rejection(Reason.SESSION_CLOSED, f"Session {session_hex} is closed.")
        if session.requestor != requestor:
            raise Rejection(Reason.WRONG_REQUESTOR, f"Session {session_hex} belongs to {session.requestor}.")
        token = self.offer.capabilities["token"]
        if session.token != token:
            raise Rejection(
                Reason.WRONG_TOKEN,
                f"Session {session_hex} pays in token {session.token}; this provider is priced in "
                f"{'the native currency' if token == NATIVE else token} ({token}).",
            )
        if session.deadline < time.time() + DEADLINE_MARGIN:
            raise Rejection(Reason.SESSION_ENDING, f"Session {session_hex} ends too soon to start work.")
        # One thread computing for min_deposit_seconds at the rate the agreement bills most: the
        # exposure this provider asks to have allocated to it before it serves.
        needed = _tariff(body).bound(self.config.min_deposit_seconds, threads=1, gpu=bool(body["gpus"]))
        if session.unallocated < needed:
            raise Rejection(
                Reason.INSUFFICIENT_DEPOSIT,
                f"Session {session_hex} holds {session.unallocated} wei unallocated; this provider needs an "
                f"allocation of at least {needed} wei (start fee plus {self.config.min_deposit_seconds:g} s of "
                "compute).",
            )
        return needed

    def _check_capacity(self) -> None:
        """Only confirmed agreements take worker slots: a proposal reserves nothing."""
        serving = sum(a.state == AgreementStatus.ACTIVE for a in self.agreements.values())
        if serving >= self.config.max_agreements:
            raise Rejection(Reason.NO_CAPACITY, f"All {self.config.max_agreements} worker slots are taken.")

    def _count_proposal(self, requestor: str) -> None:
        """At most MAX_PROPOSALS_PER_MINUTE proposals from one requestor, withdrawn ones included:
        each costs a key and a read of the chain."""
        now = time.monotonic()
        recent = [t for t in self._proposed.get(requestor, ()) if t > now - 60]
        if len(recent) >= MAX_PROPOSALS_PER_MINUTE:
            self._proposed[requestor] = recent
            raise Rejection(
                Reason.TOO_MANY_PROPOSALS,
                f"You sent {MAX_PROPOSALS_PER_MINUTE} proposals to this provider in the last minute; wait a moment.",
            )
        self._proposed[requestor] = [*recent, now]
        if len(self._proposed) > 4096:  # forget requestors quiet for a minute
            self._proposed = {r: ts for r, ts in self._proposed.items() if ts[-1] > now - 60}

    def _open_proposals(self) -> list[Agreement]:
        """Accepted proposals waiting for their confirmation, oldest first."""
        return [a for a in self.agreements.values() if a.state == AgreementStatus.NEGOTIATING]

    async def _expire_proposal(self, agreement: Agreement) -> None:
        await trio.sleep(CONFIRM_TIMEOUT)
        self._drop_proposal(agreement, "never confirmed")

    def _drop_proposal(self, agreement: Agreement, reason: str) -> None:
        if agreement.state == AgreementStatus.NEGOTIATING:
            agreement.state = AgreementStatus.TERMINATED
            agreement.end_reason = reason
            shutil.rmtree(agreement.directory, ignore_errors=True)
            # Ended proposals are forgotten: a flood of them must not grow the agent's memory.
            self.agreements.pop(agreement.agreement_id, None)

    def _agreement_of(self, message: Message) -> Agreement:
        agreement = self.agreements.get(message.body["agreementId"])
        if agreement is None or agreement.requestor != message.sender:
            raise Rejection(Reason.UNKNOWN_AGREEMENT, "No agreement with this id was made with you.")
        return agreement

    def _confirmed_agreement_of(self, message: Message) -> Agreement:
        """The agreement ``message`` names, once confirmed: an allocation, a voucher or a release of a
        mere proposal (which has no worker, no directory and no meter) is refused."""
        agreement = self._agreement_of(message)
        if agreement.state == AgreementStatus.NEGOTIATING:
            raise Rejection(Reason.BAD_VALUE, "This agreement is not confirmed yet.")
        return agreement

    async def _on_confirm(self, message: Message) -> tuple[str, dict[str, Any]]:
        agreement = self._agreement_of(message)
        if agreement.state != AgreementStatus.NEGOTIATING:
            raise Rejection(Reason.BAD_VALUE, f"This agreement is {agreement.state}; it can be confirmed only once.")
        self._check_capacity()
        certificate = message.body["certificate"]
        try:
            issued_right = verify_issued_by(certificate, agreement.ca_certificate)
            name = certificate_common_name(certificate)
        except (CertificateError, ValueError):
            raise Rejection(Reason.BAD_CERTIFICATE, "The certificate does not parse.") from None
        if not issued_right or name != self.address:
            raise Rejection(
                Reason.BAD_CERTIFICATE,
                f"The certificate must be issued by the session's CA to {self.address}, not to {name}.",
            )
        agreement.directory.mkdir(parents=True, exist_ok=True)
        _write_private(agreement.directory / "worker.key", agreement.key_pem)
        (agreement.directory / "worker.pem").write_text(certificate)
        (agreement.directory / "ca.pem").write_text(agreement.ca_certificate)
        (agreement.directory / "scratch").mkdir(exist_ok=True)
        agreement.state = AgreementStatus.ACTIVE
        self._nursery.start_soon(self._serve_agreement, agreement)
        return "started", {"agreementId": agreement.agreement_id, "workerName": self.address}

    async def _on_allocated(self, message: Message) -> tuple[str, dict[str, Any]]:
        """The requestor says it allocated this provider's share: check it on-chain before serving."""
        agreement = self._confirmed_agreement_of(message)
        if agreement.state.is_final:
            raise Rejection(Reason.BAD_VALUE, f"This agreement is {agreement.state}.")
        allocation = await self._read_allocation(agreement)
        if allocation.released:
            raise Rejection(Reason.INSUFFICIENT_ALLOCATION, "The allocation in this session was already released.")
        covers = allocation.available - max(0, agreement.paid - allocation.paid)
        if allocation.allocated < message.body["amount"] or covers < max(agreement.exposure, 1):
            raise Rejection(
                Reason.INSUFFICIENT_ALLOCATION,
                f"The escrow shows an allocation of {allocation.allocated} wei ({allocation.paid} wei of it paid) "
                f"for this provider; it serves against at least {agreement.exposure} wei unpaid.",
            )
        agreement.allocation_seen = True
        detail = f"allocation of {allocation.allocated} wei seen; serving"
        logger.info("Agreement %s: %s", agreement.agreement_id.hex()[:16], detail)
        return "ack", {"agreementId": agreement.agreement_id, "detail": detail}

    async def _read_allocation(self, agreement: Agreement) -> Allocation:
        allocation = await trio.to_thread.run_sync(self.chain.escrow.allocation, agreement.session_id, self.address)
        agreement.allocated = allocation.allocated
        agreement.allocation_read = time.monotonic()
        return allocation

    async def _read_allocation_quietly(self, agreement: Agreement) -> bool:
        """Whether this provider's allocation in the agreement's session is released (False if unread)."""
        try:
            return (await self._read_allocation(agreement)).released
        except GolemError:
            return False

    async def _on_voucher(self, message: Message) -> tuple[str, dict[str, Any]]:
        agreement = self._confirmed_agreement_of(message)
        body = message.body
        voucher = Voucher(agreement.session_id, self.address, body["cumulativeAmount"], body["signature"])
        signer = voucher.signer(self.chain.escrow.domain)
        if signer != agreement.requestor:
            raise Rejection(Reason.BAD_SIGNATURE, "The voucher is not signed by the session's requestor.")
        newer = agreement.accept_voucher(voucher)
        if voucher.cumulative_amount > agreement.allocated:  # a top-up the voucher relies on
            await self._read_allocation(agreement)
        meter = read_meter(agreement.meter_file)
        detail = (
            f"voucher for {voucher.cumulative_amount} wei {'kept' if newer else 'older than the one held'}; "
            f"allocation backs {agreement.backed} wei; meter says {agreement.owed(meter)} wei"
        )
        return "ack", {"agreementId": agreement.agreement_id, "detail": detail}

    async def _on_release(self, message: Message) -> tuple[str, dict[str, Any]]:
        """Sign the release of this provider's allocation if the final amount covers its own meter."""
        agreement = self._confirmed_agreement_of(message)
        final = message.body["finalAmount"]
        if not agreement.state.is_final:  # a release ends the agreement: the meter must be final
            self._end(agreement, "released by the requestor")
            with trio.move_on_after(RELEASE_WAIT):
                while not agreement.state.is_final:
                    await trio.sleep(0.05)
        meter = read_meter(agreement.meter_file)
        owed = agreement.owed_at_end(meter)
        allocation = await self._read_allocation(agreement)
        if allocation.released:
            raise Rejection(Reason.BAD_VALUE, "This provider's allocation in the session is already released.")
        if not allocation.paid <= final <= allocation.allocated:
            raise Rejection(
                Reason.BAD_VALUE,
                f"A final amount of {final} wei is outside what was paid ({allocation.paid} wei) and the "
                f"allocation ({allocation.allocated} wei).",
            )
        if final < agreement.paid or not self.config.policy.releases(owed, final, allocation.allocated):
            raise Rejection(
                Reason.UNDERPAID,
                f"A final amount of {final} wei does not cover this provider's meter ({owed} wei) or the voucher it "
                f"holds ({agreement.paid} wei); it will claim with its voucher instead.",
            )
        release = await trio.to_thread.run_sync(self.chain.escrow.sign_release, agreement.session_id, final)
        agreement.release = release
        logger.info("Signed the release of session 0x%s for %d wei", agreement.session_id.hex(), final)
        return "released", {"agreementId": agreement.agreement_id, "finalAmount": final, "signature": release.signature}

    async def _on_terminate(self, message: Message) -> tuple[str, dict[str, Any]]:
        agreement = self._agreement_of(message)
        self._drop_proposal(agreement, "withdrawn by the requestor")  # an unconfirmed one is forgotten
        self._end(agreement, f"terminated by the requestor: {message.body['reason']}")
        return "ack", {"agreementId": agreement.agreement_id, "detail": "terminating"}

    async def _on_status(self, message: Message) -> tuple[str, dict[str, Any]]:
        agreement = self._agreement_of(message)
        meter = read_meter(agreement.meter_file)
        detail = (
            f"{agreement.state}; owed {agreement.owed(meter)} wei; voucher {agreement.paid} wei, "
            f"allocated {agreement.allocated} wei"  # one field: the requestor reads the reason after the third
        )
        if agreement.end_reason:
            detail += f"; {agreement.end_reason}"
        return "ack", {"agreementId": agreement.agreement_id, "detail": detail[:500]}

    # ------------------------------------------------------------------ serving one agreement

    def _end(self, agreement: Agreement, reason: str) -> None:
        if agreement.state == AgreementStatus.NEGOTIATING:
            agreement.state = AgreementStatus.TERMINATED
        if not agreement.end_reason:
            agreement.end_reason = reason
        scope = self._scopes.get(agreement.agreement_id)
        if scope is not None:
            scope.cancel()

    async def _serve_agreement(self, agreement: Agreement) -> None:
        """Serve one agreement, then collect what it earned. Nothing that goes wrong in one agreement
        (an ``OSError`` when descriptors or disk run out, a bug) reaches the agent or its others."""
        try:
            await self._run_worker(agreement)
        except Exception as error:
            logger.exception("Agreement %s failed", agreement.agreement_id.hex()[:16])
            agreement.end_reason = agreement.end_reason or f"the provider failed to serve it: {error!r}"
        finally:
            self._scopes.pop(agreement.agreement_id, None)
            agreement.state = AgreementStatus.TERMINATED
            logger.info("Agreement %s ended: %s", agreement.agreement_id.hex()[:16], agreement.end_reason)
        with trio.CancelScope(shield=True):
            try:
                await self._collect(agreement)
            except Exception:
                logger.exception("Could not collect for agreement %s", agreement.agreement_id.hex()[:16])

    async def _run_worker(self, agreement: Agreement) -> None:
        worker = WorkerSpec(
            scheduler=agreement.scheduler_address,
            name=self.address,
            directory=agreement.directory,
            nthreads=self.config.cpus,
            gpus=agreement.gpus,
            memory_limit=self._memory_per_worker(),
            sandbox=self.config.sandbox,
            lie_fraction=self.config.lie_fraction,
        )
        with trio.CancelScope() as scope:
            self._scopes[agreement.agreement_id] = scope
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_payment, agreement)
                ended = await run_worker(worker)
                agreement.end_reason = agreement.end_reason or ended.reason
                nursery.cancel_scope.cancel()

    async def _watch_payment(self, agreement: Agreement) -> None:
        while True:
            await trio.sleep(WATCH_INTERVAL)
            try:
                meter = read_meter(agreement.meter_file)
            except OSError as error:  # no descriptor free this moment: look again at the next tick
                logger.warning("Could not read the meter of %s: %s", agreement.agreement_id.hex()[:16], error)
                continue
            if not agreement.allocation_seen and meter.get("tasks", 0) > 0:
                self._end(agreement, "stopped serving: UNBACKED (work arrived before an allocation was seen)")
                return
            if (
                agreement.paid > agreement.allocated
                and time.monotonic() - agreement.allocation_read > ALLOCATION_REFRESH
            ):
                try:
                    await self._read_allocation(agreement)
                except GolemError as error:
                    logger.warning("Could not read the allocation of %s: %s", agreement.agreement_id.hex()[:16], error)
            owed, used = agreement.owed(meter), agreement.used(meter)
            verdict = self.config.policy.verdict(owed, agreement.backed, meter, used=used)
            if verdict is not None:
                counted = f", the kernel counted {used}" if used > owed else ""
                paid = f"paid {agreement.backed}: voucher {agreement.paid}, allocated {agreement.allocated}"
                self._end(agreement, f"stopped serving: {verdict} (owed {owed}{counted}, {paid})")
                return

    async def _collect(self, agreement: Agreement) -> None:
        """Claim what the last voucher promises beyond what was settled, then withdraw."""
        if agreement.voucher is None:
            return
        if not self._shutting_down:
            await trio.sleep(self.config.claim_grace)
            if agreement.release is not None:  # signed: give the requestor time to submit it, saving a claim
                with trio.move_on_after(RELEASE_SUBMIT_WAIT):
                    while not (await self._read_allocation_quietly(agreement)):
                        await trio.sleep(0.5)
        with trio.move_on_after(60):
            try:
                receipt = await trio.to_thread.run_sync(self._claim_and_withdraw, agreement)
            except GolemError as error:
                logger.warning("Could not claim for agreement %s: %s", agreement.agreement_id.hex()[:16], error)
                return
            if receipt:
                self.earned_claims.append(receipt)

    def _claim_and_withdraw(self, agreement: Agreement) -> str | None:
        escrow = self.chain.escrow
        allocation = escrow.allocation(agreement.session_id, self.address)
        claimed = None
        if not allocation.released and allocation.available and agreement.voucher.cumulative_amount > allocation.paid:
            claimed = escrow.claim(agreement.voucher).tx_hash
            logger.info(
                "Claimed up to %d wei with the last voucher of session 0x%s (tx %s)",
                agreement.voucher.cumulative_amount - allocation.paid,
                agreement.session_id.hex(),
                claimed,
            )
        session = escrow.session(agreement.session_id)
        if escrow.balance_of(self.address, session.token) > 0:
            escrow.withdraw(session.token)
        return claimed

    def status(self) -> dict[str, Any]:
        """A summary for ``golem provider status`` and tests."""
        return {
            "address": self.address,
            "endpoint": self.endpoint,
            "agreements": [
                {
                    "agreement": a.agreement_id.hex(),
                    "session": "0x" + a.session_id.hex(),
                    "state": str(a.state),
                    "owed": a.owed(read_meter(a.meter_file)),
                    "voucher": a.paid,
                    "allocated": a.allocated,
                    "released": a.release.final_amount if a.release else None,
                    "reason": a.end_reason,
                }
                for a in self.agreements.values()
            ],
        }


def _tariff(body: dict[str, Any]) -> Tariff:
    """The tariff a proposal offers (no GPU price without a GPU)."""
    return Tariff(body["pricePerCpuSecond"], body["pricePerGpuSecond"] if body["gpus"] else 0, body["startFee"])


async def _read_line(stream: trio.SocketStream, limit: int) -> bytes | None:
    buffer = bytearray()
    while b"\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return bytes(buffer) if buffer else None
        buffer += chunk
        if len(buffer) > limit + 1:
            return bytes(buffer)  # decode_line refuses it as TOO_LARGE
    return bytes(buffer[: buffer.index(b"\n")])


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
